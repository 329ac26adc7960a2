"""Connected-digit utterances (TIDIGITS style) spliced from the Free Spoken Digit Dataset.

FSDD holds isolated digits ``{digit}_{speaker}_{take}.wav``. Each utterance here is 2-6
digits of one speaker joined by short silences. Following FSDD's own convention, takes
0-4 are test material and takes 5-49 training material; held-out speakers never reach
training and form ``test-unseen`` from all their takes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator

from kdbench.errors import DataError
from kdbench.hashing import stable_hash
from kdbench.interfaces import Corpus
from kdbench.options import Options

from .audio import Splits, cached_corpus, make_example, read_audio

ROOT_ENV = "KDBENCH_FSDD_ROOT"
ZIP_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_TAKES = range(0, 5)
FADE_SECONDS = 0.005  # long enough to remove the click at a cut, too short to touch the word
_NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$")
_VERSION = 1  # bump when the splicing recipe changes, to invalidate caches


class FsddConnectedDigits:
    """Connected digit strings spliced from real FSDD recordings (8 kHz, 5+ speakers)."""

    class Options(Options):
        root: Path | None = Field(None, description=f"FSDD checkout (default: ${ROOT_ENV})")
        download: bool = False
        held_out_speakers: list[str] = []
        min_digits: int = Field(2, ge=1)
        max_digits: int = Field(6, ge=1)
        gap_seconds: tuple[float, float] = (0.05, 0.25)
        train_utterances: int = Field(2000, ge=1)
        test_utterances: int = Field(200, ge=1)
        seed: int = 0
        sample_rate: int = Field(8000, gt=0)
        # left out of the recipe at 0: a corpus without them keeps the cache key it had before
        synthetic_utterances: int = Field(0, ge=0, exclude_if=lambda v: v == 0,
                                          description="extra training utterances of digit strings spoken by "
                                          "eSpeak NG's voice variants (more voices than FSDD's few)")

        @model_validator(mode="after")
        def _ranges(self):
            if self.min_digits > self.max_digits:
                raise ValueError("min_digits must not exceed max_digits")
            if not 0 <= self.gap_seconds[0] <= self.gap_seconds[1]:
                raise ValueError("gap_seconds must be [low, high] with 0 <= low <= high")
            return self

    def __init__(self, options: Options, cache_dir: Path, **context):
        self.options = options
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def check_suite(options: "FsddConnectedDigits.Options", suite) -> None:
        """Held-out speakers the recordings lack, before anything trains (every fold of a suite is
        checked before the first runs). Without a local checkout yet (``download: true``), load() checks."""
        root = options.root or (Path(os.environ[ROOT_ENV]) if os.environ.get(ROOT_ENV) else None)
        if root is None or not root.is_dir():
            return
        recordings = root / "recordings" if (root / "recordings").is_dir() else root
        try:
            files = _scan(recordings)
        except DataError:  # no recordings there: load() says so, where it has always said it
            return
        try:
            _check_speakers(options, files, recordings)
        except DataError as exc:
            from kdbench.suite import OptionMismatch

            raise OptionMismatch("held_out_speakers", str(exc)) from None

    def load(self) -> Corpus:
        recordings = self._recordings_dir()
        files = _scan(recordings)
        _check_speakers(self.options, files, recordings)
        # The checkout's location does not change the data, so it stays out of the key.
        recipe = {"version": _VERSION, **self.options.model_dump(mode="json", exclude={"root", "download"})}
        if self.options.synthetic_utterances:  # another eSpeak NG build speaks differently
            from .synth import engine_id

            recipe["engine"] = engine_id()
        listing = sorted((name, (recordings / name).stat().st_size) for name in files.values())
        key = stable_hash({"recipe": recipe, "files": listing})
        return cached_corpus(self.cache_dir, "fsdd", key, lambda: self._build(recordings, files, recipe))

    def _recordings_dir(self) -> Path:
        root = self.options.root or (Path(os.environ[ROOT_ENV]) if os.environ.get(ROOT_ENV) else None)
        if root is None or not root.exists():
            if not self.options.download:
                where = f"FSDD root {root} does not exist" if root else "no FSDD root given"
                raise DataError(f"{where}: set ${ROOT_ENV}, pass the `root` option, or set `download: true`")
            root = _download(self.cache_dir / "downloads" / "free-spoken-digit-dataset")
        # Accept both the checkout (with recordings/ inside) and the recordings folder itself.
        recordings = root / "recordings" if (root / "recordings").is_dir() else root
        return recordings

    def _build(self, recordings: Path, files: dict, recipe: dict):
        o = self.options
        train_speakers = sorted({spk for _, spk, _ in files} - set(o.held_out_speakers))
        all_takes = sorted({take for _, _, take in files})
        test_takes = [t for t in all_takes if t in TEST_TAKES]
        train_takes = [t for t in all_takes if t not in TEST_TAKES]
        plan = {"train": (o.train_utterances, train_speakers, train_takes),
                "test-seen": (o.test_utterances, train_speakers, test_takes)}
        if o.held_out_speakers:
            plan["test-unseen"] = (o.test_utterances, sorted(set(o.held_out_speakers)), all_takes)
        else:
            plan["test"] = plan.pop("test-seen")

        waves: dict[tuple, torch.Tensor] = {}  # each recording is read once, even if reused

        def clip(key):
            if key not in waves:
                waves[key] = _fade(read_audio(recordings / files[key], o.sample_rate), o.sample_rate)
            return waves[key]

        splits: Splits = {}
        for index, (split, (count, speakers, takes)) in enumerate(plan.items()):
            # One generator per split: changing one split's size leaves the others unchanged.
            rng = np.random.default_rng([o.seed, index])
            splits[split] = [self._utterance(f"{split}-{i:05d}", rng, speakers, takes, files, clip)
                             for i in range(count)]
        if o.synthetic_utterances:  # training only: the tests stay real speech
            from .synth import synthetic_voices

            splits["train"] += synthetic_voices(o.synthetic_utterances, o.seed, o.sample_rate, o.min_digits,
                                                o.max_digits, id_prefix="train-synth")
        info = {"source": "Free Spoken Digit Dataset (CC BY-SA 4.0)", "test_takes": list(TEST_TAKES)}
        return splits, o.sample_rate, recipe, info

    def _utterance(self, uid, rng, speakers, takes, files, clip):
        o = self.options
        speaker = speakers[rng.integers(len(speakers))]
        # Draw among the recordings that exist, so a checkout missing a few files still works.
        available = [(d, t) for d in range(10) for t in takes if (d, speaker, t) in files]
        if not available:
            raise DataError(f"FSDD speaker {speaker} has no recordings with takes {takes[0]}-{takes[-1]}")
        digits, used = [], []
        for _ in range(rng.integers(o.min_digits, o.max_digits + 1)):
            d, t = available[rng.integers(len(available))]
            digits.append(d)
            used.append(t)
        pieces = []
        for k, (d, t) in enumerate(zip(digits, used)):
            if k:
                gap = rng.uniform(*o.gap_seconds)
                pieces.append(torch.zeros(int(round(gap * o.sample_rate))))
            pieces.append(clip((d, speaker, t)))
        return make_example(uid, torch.cat(pieces), " ".join(DIGITS[d] for d in digits), o.sample_rate,
                            speaker=speaker, digits="".join(map(str, digits)), takes=used)


def _check_speakers(options: FsddConnectedDigits.Options, files: dict, recordings: Path) -> None:
    speakers = sorted({spk for _, spk, _ in files})
    unknown = sorted(set(options.held_out_speakers) - set(speakers))
    if unknown:
        raise DataError(f"FSDD has no speaker(s) {', '.join(unknown)} in {recordings}; "
                        f"available: {', '.join(speakers)}")
    if set(speakers) <= set(options.held_out_speakers):
        raise DataError("held_out_speakers covers every FSDD speaker; none is left for training")


def _scan(recordings: Path) -> dict[tuple[int, str, int], str]:
    """``(digit, speaker, take) -> file name`` for every recording in the folder."""
    if not recordings.is_dir():
        raise DataError(f"FSDD recordings folder not found: {recordings}")
    files = {}
    for name in os.listdir(recordings):
        m = _NAME.match(name)
        if m:
            files[(int(m[1]), m[2], int(m[3]))] = name
    if not files:
        raise DataError(f"no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) in {recordings}")
    return files


def _fade(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    n = min(int(FADE_SECONDS * sample_rate), len(wave) // 2)
    if n:
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, n))
        wave = wave.clone()
        wave[:n] *= ramp
        wave[-n:] *= ramp.flip(0)
    return wave


def _download(target: Path) -> Path:
    """Fetch the FSDD recordings from GitHub into ``target`` (once)."""
    if (target / "recordings").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "fsdd.zip"
        try:
            urllib.request.urlretrieve(ZIP_URL, archive)
        except OSError as exc:
            raise DataError(f"cannot download FSDD from {ZIP_URL}: {exc}") from None
        staging = Path(tmp) / "free-spoken-digit-dataset" / "recordings"
        staging.mkdir(parents=True)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if "/recordings/" in member and member.endswith(".wav"):
                    (staging / Path(member).name).write_bytes(zf.read(member))
        # Rename last so an interrupted download never looks complete.
        shutil.move(str(staging.parent), str(target))
    return target
