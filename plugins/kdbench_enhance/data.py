"""Noisy/clean pairs: clean speech from any registered speech dataset, mixed with offline noise.

Test sets get their own noise: held-out noise types, and babble built only from the test
split's own talkers, so the test is not a memory test. Mixtures are reproducible from the
recipe and cached next to the clean corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from kdbench.cache import Cache
from kdbench.errors import DataError
from kdbench.hashing import stable_hash
from kdbench.interfaces import Corpus, Example
from kdbench.options import Options

from kdbench_enhance.noise import NOISES, mix

FORMAT = 1  # bump when mixing changes


class CleanSource(Options):
    name: str = Field(description="a registered dataset (synth-digits, fsdd-digits, manifest, ...)")
    options: dict[str, Any] = Field(default_factory=dict)


def _clean_component(name: str):
    from kdbench.plugins import get_registry

    return get_registry().get("datasets", name)


class NoisySpeech:
    """Each clean utterance mixed with one noise at one SNR, drawn from the utterance's id."""

    class Options(Options):
        clean: CleanSource = Field(default_factory=lambda: CleanSource(
            name="synth-digits", options={"train_utterances": 600, "test_utterances": 100, "sample_rate": 16000}))
        train_noises: list[str] = Field(["white", "pink", "babble"], min_length=1)
        test_noises: list[str] = Field(["brown", "hum", "babble"], min_length=1,
                                       description="types used in test sets (babble from test talkers only)")
        snrs: list[float] = Field([-5.0, 0.0, 5.0, 10.0], min_length=1, description="SNRs in dB")
        seed: int = 0

        @field_validator("train_noises", "test_noises")
        @classmethod
        def _known(cls, names: list[str]) -> list[str]:
            unknown = [n for n in names if n not in NOISES]
            if unknown:
                raise ValueError(f"unknown noise {unknown[0]!r}; available: {', '.join(sorted(NOISES))}")
            return names

        @field_validator("clean")
        @classmethod
        def _clean_options(cls, clean: CleanSource) -> CleanSource:
            from pydantic import ValidationError

            from kdbench.errors import UnknownComponentError
            from kdbench.suite import format_location

            try:
                component = _clean_component(clean.name)  # unknown names say what is available
            except UnknownComponentError as exc:
                raise ValueError(f"name: {exc}") from None
            try:
                component.options.model_validate(clean.options)
            except ValidationError as exc:
                first = exc.errors()[0]
                msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                raise ValueError(f"options.{format_location(tuple(first['loc']))}: {msg}") from None
            return clean

    def __init__(self, options: "NoisySpeech.Options", cache_dir: Path | None = None, **context):
        self.options = options
        self.cache_dir = cache_dir

    def load(self) -> Corpus:
        o = self.options
        clean = _clean_component(o.clean.name).build(o.clean.options, cache_dir=self.cache_dir).load()
        sample_rate = int(clean.info["sample_rate"])
        recipe = {"format": FORMAT, "clean": clean.fingerprint, **o.model_dump(exclude={"clean"})}
        key = stable_hash(recipe)
        cache = Cache(self.cache_dir)
        stored = cache.load("datasets", f"noisy-speech-{key}")
        if stored is None:
            splits = {"train": self._mix(clean.train, o.train_noises, sample_rate, "train")}
            for name, examples in clean.tests.items():
                splits[name] = self._mix(examples, o.test_noises, sample_rate, name)
            stored = {name: _pack(examples) for name, examples in splits.items()}
            cache.save("datasets", f"noisy-speech-{key}", stored)
        splits = {name: _unpack(packed) for name, packed in stored.items()}
        info = {**clean.info, "task": "enhancement", "clean_source": o.clean.name,
                "train_noises": o.train_noises, "test_noises": o.test_noises, "snrs": o.snrs}
        return Corpus(f"noisy-{clean.name}", splits["train"], {k: v for k, v in splits.items() if k != "train"},
                      info, stable_hash({"recipe": recipe}))

    def _mix(self, examples: list[Example], noises: list[str], sample_rate: int, split: str) -> list[Example]:
        waves = [np.asarray(e.input, dtype=np.float32) for e in examples]
        out = []
        for i, (example, clean) in enumerate(zip(examples, waves)):
            if len(clean) == 0 or not np.any(clean):
                raise DataError(f"{split} utterance {example.id!r} is silent: nothing to enhance")
            rng = np.random.default_rng(int(stable_hash([self.options.seed, split, example.id]), 16))
            kind = noises[rng.integers(len(noises))]
            snr = float(self.options.snrs[rng.integers(len(self.options.snrs))])
            others = [w for j, w in enumerate(waves) if j != i and examples[j].meta.get("speaker") != example.meta.get("speaker")] \
                or [w for j, w in enumerate(waves) if j != i]
            noisy, target = mix(clean, NOISES[kind](len(clean), sample_rate, rng, _sample(others, rng)), snr)
            meta = {**example.meta, "noise": kind, "snr_db": snr, "sample_rate": sample_rate,
                    "transcript": example.target if isinstance(example.target, str) else ""}
            out.append(Example(example.id, torch.from_numpy(noisy), torch.from_numpy(target), meta))
        return out


def _sample(others: list[np.ndarray], rng: np.random.Generator, k: int = 8) -> list[np.ndarray]:
    picks = rng.choice(len(others), size=min(k, len(others)), replace=False) if others else []
    return [others[i] for i in picks]


# one int16 tensor per signal and split: torch.load's safe unpickler is fast on a few big tensors
def _pack(examples: list[Example]) -> dict[str, Any]:
    lengths = torch.tensor([len(e.input) for e in examples], dtype=torch.int64)

    def pcm(tensors):
        return (torch.cat(tensors) * 32768.0).round().clamp(-32768, 32767).to(torch.int16)

    return {"noisy": pcm([e.input for e in examples]), "clean": pcm([e.target for e in examples]),
            "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
            "meta": json.dumps([[e.id, dict(e.meta)] for e in examples])}


def _unpack(packed: dict[str, Any]) -> list[Example]:
    noisy, clean = packed["noisy"].float() / 32768.0, packed["clean"].float() / 32768.0
    bounds = packed["offsets"].tolist()
    return [Example(ident, noisy[a:b], clean[a:b], meta)
            for (ident, meta), a, b in zip(json.loads(packed["meta"]), bounds, bounds[1:])]
