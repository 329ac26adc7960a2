"""Text-to-speech corpora: a multi-speaker corpus synthesized offline by eSpeak NG (with exact
phoneme durations), and the Example shape every TTS corpus here shares.

Each utterance is an ``Example``:

- ``id``: ``"<split>-<nnnnn>"``, unique in the corpus;
- ``input``: the phoneme ids, a 1-D ``torch.LongTensor`` indexing ``text.SYMBOLS`` (never
  padding id 0): what a synthesizer reads;
- ``target``: the waveform, a 1-D float32 ``numpy.ndarray`` in [-1, 1] at 16 kHz: what it
  must say (mels are computed from it with ``audio.log_mel``, the one shared config);
- ``meta``:

  - ``text``: the normalised text (``text.normalize``);
  - ``phonemes``: ``list[str]``, the symbols of ``input``;
  - ``speaker``: the eSpeak NG voice variant (``"m3"``), ``speaker_id``: its index in
    ``corpus.info["speaker_ids"]`` (training speakers first, then held-out ones);
  - ``durations``: ``list[int]``, one per phoneme, in mel frames at hop 256, summing to
    ``frames``. Phoneme *k* spans eSpeak's exact sample boundaries; a boundary at sample
    *s* (16 kHz) falls on frame ``round(s / 256)``, the first on 0 and the last on
    ``frames``, so a short phoneme can get 0 frames. Absent when a corpus does not know
    them (``ljspeech``): a consumer tests ``"durations" in meta``;
  - ``frames``: ``audio.frame_count(len(target))``, the log-mel length;
  - ``sample_rate`` (16000), ``duration`` (seconds);
  - synthetic corpus only: ``rate`` (words per minute) and ``pitch`` (0-100) eSpeak used.

Waveforms are stored as 16-bit PCM and always returned from the stored form, so a fresh
build and a cache hit are identical. eSpeak NG carries state from one utterance to the next,
so the corpus is reproducible bit for bit when it is built in a process where eSpeak has not
spoken yet (the cache makes that the usual case); after other synthesis the same recipe
gives slightly different timings and samples. Speech starts at the first phoneme (eSpeak's leading
silence is cut) and ends with eSpeak's own sentence-final pause phoneme.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torchaudio
from pydantic import Field, model_validator

from kdbench.cache import Cache
from kdbench.errors import DataError
from kdbench.hashing import canonical_json, file_hash, stable_hash
from kdbench.interfaces import Corpus, Example
from kdbench.options import Options

from . import sentences, text
from .audio import AUDIO_CONFIG, HOP_LENGTH, SAMPLE_RATE, frame_count

Splits = dict[str, list[Example]]  # "train" plus one entry per test set

#: distinct voices (two male, two female; f2, f3 and f5 add breath noise).
DEFAULT_SPEAKERS = ("m1", "m3", "f1", "f4")
_VERSION = 2  # bump when the recipe changes, to invalidate caches (2: seeded, isolated synthesis)


def make_example(id: str, ids: list[int], wave: np.ndarray, meta: dict[str, Any]) -> Example:
    meta = {**meta, "frames": frame_count(len(wave)), "sample_rate": SAMPLE_RATE,
            "duration": round(len(wave) / SAMPLE_RATE, 4)}
    return Example(id=id, input=torch.tensor(ids, dtype=torch.int64), target=wave, meta=meta)


def frame_durations(bounds: list[int], num_samples: int) -> list[int]:
    """Per-phoneme frame counts from sample boundaries (``len(phonemes) + 1`` offsets at
    SAMPLE_RATE); they sum to ``frame_count(num_samples)``."""
    total = frame_count(num_samples)
    edges = np.clip(np.rint(np.asarray(bounds, dtype=np.float64) / HOP_LENGTH), 0, total).astype(np.int64)
    edges[0], edges[-1] = 0, total
    edges = np.maximum.accumulate(edges)
    return np.diff(edges).tolist()


def fingerprint(splits: Splits, recipe: Any) -> str:
    """Hash of every id, phoneme sequence, meta field and waveform plus the recipe."""
    h = hashlib.sha256()
    for split in sorted(splits):
        for ex in splits[split]:
            h.update(canonical_json([split, ex.id, ex.input.tolist(), dict(ex.meta)]).encode())
            h.update(np.ascontiguousarray(ex.target, dtype=np.float32).tobytes())
    return stable_hash({"recipe": recipe, "content": h.hexdigest()})


def make_corpus(name: str, splits: Splits, fingerprint: str, **info: Any) -> Corpus:
    if not splits.get("train"):
        raise DataError(f"dataset {name!r}: the training split is empty")
    info = {"sample_rate": SAMPLE_RATE, "modality": "text", "task": "tts", "audio": AUDIO_CONFIG,
            "text": text.TEXT_STATE,
            "utterances": {s: len(exs) for s, exs in splits.items()},
            "hours": {s: round(sum(ex.meta["duration"] for ex in exs) / 3600, 3) for s, exs in splits.items()},
            "speakers": {s: sorted({ex.meta["speaker"] for ex in exs}) for s, exs in splits.items()},
            "durations": all("durations" in ex.meta for exs in splits.values() for ex in exs), **info}
    return Corpus(name, splits["train"], {s: e for s, e in splits.items() if s != "train"}, info, fingerprint)


# --- on-disk cache: per split one int16 audio tensor, one id tensor, offsets and a JSON string,
# because torch.load's safe unpickler is slow on thousands of small objects.

def _pack(examples: list[Example]) -> dict[str, Any]:
    def offsets(items):
        return torch.tensor([0, *np.cumsum([len(x) for x in items]).tolist()], dtype=torch.int64)

    waves = [torch.from_numpy(np.asarray(ex.target, dtype=np.float32)) for ex in examples]
    return {"meta": json.dumps([[ex.id, dict(ex.meta)] for ex in examples]),
            "audio": (torch.cat(waves) * 32768.0).round().clamp(-32768, 32767).to(torch.int16),
            "audio_offsets": offsets(waves),
            "ids": torch.cat([ex.input for ex in examples]), "id_offsets": offsets([ex.input for ex in examples])}


def _unpack(packed: dict[str, Any]) -> list[Example]:
    audio = (packed["audio"].float() / 32768.0).numpy()
    a, i = packed["audio_offsets"].tolist(), packed["id_offsets"].tolist()
    return [Example(id=uid, input=packed["ids"][i[k]:i[k + 1]].clone(), target=audio[a[k]:a[k + 1]].copy(), meta=meta)
            for k, (uid, meta) in enumerate(json.loads(packed["meta"]))]


def cached_corpus(cache_dir: Path, name: str, recipe: Any,
                  build: Callable[[], tuple[Splits, dict[str, Any]]]) -> Corpus:
    """Load corpus ``name`` from ``cache_dir/datasets/<name>-<hash(recipe)>.pt`` or build it
    (``build() -> (splits, extra_info)``) and store it."""
    cache, key = Cache(cache_dir), f"{name}-{stable_hash(recipe)}"
    stored = cache.load("datasets", key)
    if stored is None:
        splits, extra = build()
        packed = {s: _pack(exs) for s, exs in splits.items()}
        stored = {"splits": packed, "info": json.dumps(extra),
                  "fingerprint": fingerprint({s: _unpack(p) for s, p in packed.items()}, recipe)}
        cache.save("datasets", key, stored)
    splits = {s: _unpack(p) for s, p in stored["splits"].items()}
    return make_corpus(name, splits, stored["fingerprint"], **json.loads(stored["info"]))


class EspeakSentences:
    """Short English commands, times and digits spoken by several eSpeak NG voices, with
    exact phoneme durations (offline, no download). Test sentences never occur in training;
    ``held_out_speakers`` adds a ``test-unseen-speakers`` set of voices never heard in training."""

    class Options(Options):
        train_utterances: int = Field(400, ge=1)
        test_utterances: int = Field(100, ge=1)
        speakers: list[str] = Field(default_factory=lambda: list(DEFAULT_SPEAKERS), min_length=1,
                                    description="eSpeak NG voice variants of the training and 'test' sets")
        held_out_speakers: list[str] = Field(default_factory=list,
                                             description="variants heard only in 'test-unseen-speakers'")
        seed: int = 0
        rate_wpm: tuple[int, int] = Field((150, 190), description="speaking rate drawn per utterance (inclusive)")
        pitch: tuple[int, int] = Field((40, 60), description="pitch 0-100 drawn per utterance (inclusive)")
        sample_rate: Literal[16000] = 16000  # the audio config shared with the models

        @model_validator(mode="after")
        def _ranges(self):
            for field in ("rate_wpm", "pitch"):
                low, high = getattr(self, field)
                if low > high:
                    raise ValueError(f"{field}: low {low} exceeds high {high}")
            both = sorted(set(self.speakers) & set(self.held_out_speakers))
            if both:
                raise ValueError(f"speaker(s) {', '.join(both)} are both training and held-out speakers")
            return self

    def __init__(self, options: Options, cache_dir: Path, **context):
        self.options = options
        self.cache_dir = Path(cache_dir)

    def load(self) -> Corpus:
        from kdbench_asr import espeak

        ok, reason = espeak.available()
        if not ok:
            raise DataError(f"the synthetic TTS corpus needs eSpeak NG (pip install espeakng-loader): {reason}")
        o = self.options
        unknown = sorted(set(o.speakers + o.held_out_speakers) - set(espeak.list_variants()))
        if unknown:
            raise DataError(f"unknown eSpeak NG variant(s) {', '.join(unknown)}; "
                            f"see kdbench_asr.espeak.list_variants()")
        recipe = {"version": _VERSION, "grammar": sentences.GRAMMAR_VERSION, "text": text.TEXT_STATE,
                  "audio": AUDIO_CONFIG, "engine": _engine_id(), **o.model_dump(mode="json")}
        return cached_corpus(self.cache_dir, "tts-espeak", recipe, self._build)

    def _build(self) -> tuple[Splits, dict[str, Any]]:
        from kdbench_asr import espeak

        o = self.options
        train_sentences, test_sentences = sentences.split_sentences()
        speaker_ids = {s: i for i, s in enumerate([*o.speakers, *o.held_out_speakers])}
        plan = {"train": (o.train_utterances, train_sentences, o.speakers),
                "test": (o.test_utterances, test_sentences, o.speakers)}
        if o.held_out_speakers:
            plan["test-unseen-speakers"] = (o.test_utterances, test_sentences, o.held_out_speakers)
        splits: Splits = {split: [] for split in plan}
        utterances = []  # (split, id, sentence, speaker, rate, pitch), in synthesis order
        for index, (split, (count, pool, speakers)) in enumerate(plan.items()):
            rng = np.random.default_rng([o.seed, index])
            # Cycle through a shuffled pool so every sentence is used before any repeats.
            order = [pool[j] for _ in range(-(-count // len(pool))) for j in rng.permutation(len(pool))][:count]
            for i, sentence in enumerate(order):
                speaker = speakers[int(rng.integers(len(speakers)))]
                rate = int(rng.integers(o.rate_wpm[0], o.rate_wpm[1] + 1))
                pitch = int(rng.integers(o.pitch[0], o.pitch[1] + 1))
                utterances.append((split, f"{split}-{i:05d}", sentence, speaker, rate, pitch))
        # a fresh process: the same corpus on every build, whatever this process synthesized before
        spoken_all = espeak.isolated(_speak_all, [(sentence, uid, speaker, rate, pitch)
                                                  for _, uid, sentence, speaker, rate, pitch in utterances])
        for (split, uid, _, speaker, rate, pitch), spoken in zip(utterances, spoken_all):
            with torch.no_grad():
                wave = _resampler(spoken.sample_rate)(torch.from_numpy(spoken.wave)).numpy()
            bounds = [round(b * SAMPLE_RATE / spoken.sample_rate) for b in spoken.bounds]
            splits[split].append(make_example(uid, text.encode(spoken.phonemes, uid), wave, {
                "text": spoken.text, "phonemes": spoken.phonemes, "speaker": speaker,
                "speaker_id": speaker_ids[speaker], "durations": frame_durations(bounds, len(wave)),
                "rate": rate, "pitch": pitch}))
        info = {"source": "eSpeak NG synthesis", "speaker_ids": speaker_ids,
                "sentences": {"train": len(train_sentences), "test": len(test_sentences)}}
        return splits, info


def _speak_all(requests: list[tuple[str, str, str, int, int]]) -> list[text.Spoken]:
    return [text.speak(sentence, uid, variant=speaker, rate=rate, pitch=pitch)
            for sentence, uid, speaker, rate, pitch in requests]


@functools.cache
def _resampler(source_rate: int) -> torch.nn.Module:
    # One module per rate: building the kernel took as long as synthesis itself.
    return torchaudio.transforms.Resample(source_rate, SAMPLE_RATE)


def _engine_id() -> dict:
    """What identifies the synthesizer: another eSpeak NG build may sound different."""
    import espeakng_loader

    return {"loader": importlib.metadata.version("espeakng-loader"),
            "library": file_hash(espeakng_loader.get_library_path()),
            "phontab": file_hash(Path(espeakng_loader.get_data_path()) / "phontab")}
