"""Audio files in and out, and turning utterances into a fingerprinted, cacheable Corpus.

Every corpus builder in this package ends with the same steps (content fingerprint,
speaker lists, optional on-disk cache), so they live here next to the audio I/O.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from kdbench.cache import Cache
from kdbench.errors import DataError
from kdbench.hashing import canonical_json, stable_hash
from kdbench.interfaces import Corpus, Example

Splits = dict[str, list[Example]]  # "train" plus one entry per test set


def read_audio(path: str | Path, sample_rate: int | None) -> torch.Tensor:
    """A mono float32 waveform, resampled to ``sample_rate`` (None keeps the file's rate)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt or unsupported files with several types
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} contains no samples")
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():  # a float WAV can hold them; in training they become a NaN loss, in a test an empty prediction
        raise DataError(f"audio file {path}: {int(bad.sum())} of {len(bad)} samples are NaN or infinite "
                        f"(the first at {int(bad.argmax()) / file_rate:.3f} s)")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sample_rate is not None and file_rate != sample_rate:
        wave = AF.resample(wave, file_rate, sample_rate)
    return wave


def write_audio(path: str | Path, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono waveform in [-1, 1] as 16-bit PCM (format from the suffix, e.g. .wav, .flac)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    sf.write(path, data.astype(np.float32), sample_rate, subtype="PCM_16")


def make_example(id: str, wave: torch.Tensor, target: str, sample_rate: int, /, **meta: Any) -> Example:
    meta["duration"] = round(len(wave) / sample_rate, 4)
    return Example(id=id, input=wave, target=target, meta=meta)


def content_fingerprint(splits: Splits, recipe: Any) -> str:
    """Hash of every id, transcript and waveform plus the recipe that produced them."""
    h = hashlib.sha256()
    for split in sorted(splits):
        for ex in splits[split]:
            h.update(canonical_json([split, ex.id, ex.target]).encode())
            h.update(ex.input.numpy().tobytes())
    return stable_hash({"recipe": recipe, "content": h.hexdigest()})


def make_corpus(name: str, splits: Splits, sample_rate: int, fingerprint: str, **info: Any) -> Corpus:
    if not splits.get("train"):
        raise DataError(f"dataset {name!r}: the training split is empty")
    speakers = {s: sorted({str(ex.meta.get("speaker", "")) for ex in exs}) for s, exs in splits.items()}
    info = {"sample_rate": sample_rate, "modality": "audio", "task": "asr",
            "utterances": {s: len(exs) for s, exs in splits.items()},
            "hours": {s: round(sum(ex.meta["duration"] for ex in exs) / 3600, 3) for s, exs in splits.items()},
            "speakers": speakers, **info}
    tests = {s: exs for s, exs in splits.items() if s != "train"}
    return Corpus(name, splits["train"], tests, info, fingerprint)


# --- on-disk cache for generated corpora ----------------------------------------------
# One .pt file per corpus: per split a single int16 tensor plus offsets and one JSON
# string for the text fields, because torch.load's safe unpickler is slow on thousands
# of small objects and fast on a few large ones.

def _pack(examples: list[Example]) -> dict[str, Any]:
    waves = [ex.input for ex in examples]
    audio = torch.cat(waves) if waves else torch.zeros(0)
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.int64)
    return {
        "text": json.dumps([[ex.id, ex.target, dict(ex.meta)] for ex in examples]),
        "audio": (audio * 32768.0).round().clamp(-32768, 32767).to(torch.int16),
        "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
    }


def _unpack(packed: dict[str, Any]) -> list[Example]:
    audio = packed["audio"].float() / 32768.0
    bounds = packed["offsets"].tolist()
    return [Example(id=i, input=audio[a:b], target=t, meta=m)
            for (i, t, m), a, b in zip(json.loads(packed["text"]), bounds, bounds[1:])]


def cached_corpus(cache_dir: Path, name: str, key: str,
                  build: Callable[[], tuple[Splits, int, Any, dict[str, Any]]]) -> Corpus:
    """Load corpus ``name`` from ``cache_dir/datasets/<name>-<key>.pt`` or build and store it.

    ``build()`` returns ``(splits, sample_rate, recipe, extra_info)``. Waveforms are stored
    as int16 and the corpus is always returned from the stored form, so a fresh build and
    a cache hit give identical tensors and fingerprints.
    """
    cache = Cache(cache_dir)
    stored = cache.load("datasets", f"{name}-{key}")
    if stored is None:
        splits, sample_rate, recipe, extra = build()
        packed = {s: _pack(exs) for s, exs in splits.items()}
        stored = {"splits": packed, "sample_rate": sample_rate, "info": json.dumps(extra),
                  "fingerprint": content_fingerprint({s: _unpack(p) for s, p in packed.items()}, recipe)}
        cache.save("datasets", f"{name}-{key}", stored)
    splits = {s: _unpack(p) for s, p in stored["splits"].items()}
    # The stored fingerprint saves re-hashing all audio on every load.
    return make_corpus(name, splits, stored["sample_rate"], stored["fingerprint"], **json.loads(stored["info"]))
