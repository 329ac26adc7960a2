"""The built-in default corpus: digit strings and short commands synthesized with eSpeak NG.

It needs no download, so a suite runs anywhere the ``espeakng-loader`` wheel installs.
Voice variants stand in for speakers: the test voices never occur in training.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from pydantic import Field

from kdbench.errors import DataError
from kdbench.hashing import file_hash, stable_hash
from kdbench.interfaces import Corpus
from kdbench.options import Options

from .. import espeak
from .audio import Splits, cached_corpus, make_example

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = (
    "turn on the light", "turn off the light", "stop", "go", "go left", "go right",
    "go forward", "go back", "volume up", "volume down", "yes", "no", "open the door",
    "close the door", "play music", "pause", "next song", "call home", "start", "cancel",
)
COMMAND_SHARE = 0.3  # digits stay the majority so the corpus resembles FSDD
RATE_WPM = (130, 200)
PITCH = (30, 70)
TEST_SHARE = 4  # by default every 4th variant (sorted) is a test voice: ~25%, spread over the list
_VERSION = 2  # bump when the recipe changes, to invalidate caches (2: seeded, isolated synthesis)


class EspeakDigitsCommands:
    """Digit strings and short commands spoken by eSpeak NG voice variants (offline, no download)."""

    class Options(Options):
        train_utterances: int = Field(600, ge=1)
        test_utterances: int = Field(150, ge=1)
        seed: int = 0
        include_commands: bool = True
        sample_rate: int = Field(16000, gt=0)
        test_variants: list[str] | None = Field(None, description="default: every 4th available variant")

    def __init__(self, options: Options, cache_dir: Path, **context):
        self.options = options
        self.cache_dir = Path(cache_dir)

    def load(self) -> Corpus:
        ok, reason = espeak.available()
        if not ok:
            raise DataError(f"the synthetic corpus needs eSpeak NG (pip install espeakng-loader): {reason}")
        variants = espeak.list_variants()
        test = self.options.test_variants
        test = sorted(test) if test is not None else variants[::TEST_SHARE]
        unknown = sorted(set(test) - set(variants))
        if unknown:
            raise DataError(f"unknown eSpeak NG variant(s) {', '.join(unknown)}; available: {', '.join(variants)}")
        train = [v for v in variants if v not in test]
        if not train or not test:
            raise DataError("test_variants must leave at least one variant for training and name at least one")
        recipe = {"version": _VERSION, "engine": engine_id(), "train_variants": train, "test_variants": test,
                  **self.options.model_dump(mode="json", exclude={"test_variants"})}
        return cached_corpus(self.cache_dir, "espeak", stable_hash(recipe),
                             lambda: self._build(train, test, recipe))

    def _build(self, train_variants, test_variants, recipe):
        o = self.options
        plan = {"train": (o.train_utterances, train_variants), "test": (o.test_utterances, test_variants)}
        utterances = []  # (split, index, text, kind, variant, rate, pitch), in synthesis order
        for index, (split, (count, variants)) in enumerate(plan.items()):
            rng = np.random.default_rng([o.seed, index])
            for i in range(count):
                variant = variants[rng.integers(len(variants))]
                rate, pitch = int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)), int(rng.integers(PITCH[0], PITCH[1] + 1))
                if o.include_commands and rng.random() < COMMAND_SHARE:
                    kind, text = "command", COMMANDS[rng.integers(len(COMMANDS))]
                else:
                    kind, text = "digits", " ".join(DIGITS[d] for d in rng.integers(0, 10, rng.integers(2, 6)))
                utterances.append((split, i, text, kind, variant, rate, pitch))
        # a fresh process: the same corpus on every build, whatever this process synthesized before
        spoken = espeak.isolated(_synthesize_all, [(text, variant, rate, pitch)
                                                   for _, _, text, _, variant, rate, pitch in utterances])
        splits: Splits = {split: [] for split in plan}
        for (split, i, text, kind, variant, rate, pitch), (wave, sr) in zip(utterances, spoken):
            wave = AF.resample(torch.from_numpy(_trim(wave, sr)), sr, o.sample_rate)
            splits[split].append(make_example(f"{split}-{i:05d}", wave, text, o.sample_rate,
                                              speaker=variant, kind=kind, rate=rate, pitch=pitch))
        info = {"source": "eSpeak NG synthesis", "variants": {"train": train_variants, "test": test_variants}}
        return splits, o.sample_rate, recipe, info


def synthetic_voices(count: int, seed: int, sample_rate: int, min_digits: int = 2, max_digits: int = 6,
                     id_prefix: str = "synth") -> list:
    """``count`` digit strings spoken by every eSpeak NG voice variant in turn, at random rates and
    pitches, trimmed and resampled to ``sample_rate``: extra training voices for a corpus of few
    real speakers (``fsdd-digits``'s ``synthetic_utterances``)."""
    ok, reason = espeak.available()
    if not ok:
        raise DataError(f"synthetic voices need eSpeak NG (pip install espeakng-loader): {reason}")
    variants = espeak.list_variants()
    rng = np.random.default_rng([seed, 7919])  # apart from every split's generator
    requests = []
    for i in range(count):
        digits = rng.integers(0, 10, rng.integers(min_digits, max_digits + 1))
        requests.append((" ".join(DIGITS[d] for d in digits), variants[i % len(variants)],
                         int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)), int(rng.integers(PITCH[0], PITCH[1] + 1))))
    spoken = espeak.isolated(_synthesize_all, requests)
    out = []
    for i, ((text, variant, rate, pitch), (wave, sr)) in enumerate(zip(requests, spoken)):
        wave = AF.resample(torch.from_numpy(_trim(wave, sr)), sr, sample_rate)
        out.append(make_example(f"{id_prefix}-{i:05d}", wave, text, sample_rate, speaker=f"espeak:{variant}",
                                rate=rate, pitch=pitch))
    return out


def _synthesize_all(requests: list[tuple[str, str, int, int]]) -> list[tuple[np.ndarray, int]]:
    return [espeak.synthesize(text, variant=variant, rate=rate, pitch=pitch) for text, variant, rate, pitch in requests]


def _trim(wave: np.ndarray, sr: int, threshold_db: float = -40.0, margin: float = 0.02) -> np.ndarray:
    """Cut leading/trailing frames quieter than ``threshold_db`` below the loudest one.

    eSpeak pads its output with silence; FSDD recordings are trimmed close to the speech.
    """
    hop = max(1, int(0.01 * sr))
    frames = len(wave) // hop
    if frames == 0:
        return wave
    energy = np.sqrt(np.mean(wave[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 20))
    if loud.size == 0:  # all silence: nothing to trim against
        return wave
    pad = int(margin * sr)
    return np.ascontiguousarray(wave[max(0, loud[0] * hop - pad): min(len(wave), (loud[-1] + 1) * hop + pad)])


def engine_id() -> dict:
    """What identifies the synthesizer: another eSpeak NG build may sound different."""
    import espeakng_loader

    return {"loader": importlib.metadata.version("espeakng-loader"),
            "library": file_hash(espeakng_loader.get_library_path()),
            "phontab": file_hash(Path(espeakng_loader.get_data_path()) / "phontab")}
