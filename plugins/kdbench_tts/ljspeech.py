"""A real single-speaker corpus in the LJSpeech layout: ``<root>/metadata.csv`` with lines
``id|text|normalized text`` (the third field optional) and ``<root>/wavs/<id>.wav``.

Examples have the shape of :mod:`kdbench_tts.data` (phoneme ids in, a 16 kHz float32
waveform out), with the normalized text when a line has one (else the raw text) run through
:func:`kdbench_tts.text.phonemize`. Durations are unknown (eSpeak's timings are not the
recording's), so ``meta`` has no ``durations``: a model that needs them gets them from an
aligner or a teacher. The last ``test_utterances`` lines of ``metadata.csv`` are the test
set (LJSpeech has no official split; the file is in a fixed order). Nothing is downloaded or
cached: phonemizing runs eSpeak on every line, a few minutes for the full 13,100.

Bad lines are refused with one line naming ``metadata.csv``, the line number and the utterance,
before any audio is read or eSpeak runs when the fault is in the text (an empty transcript, one
with no letter or digit, a character outside the text table: :func:`kdbench_tts.text.normalize`).
A recording longer than ``max_frames`` log-mel frames (default 1000 = 16 s, the output bound
of ``tacotron2``'s ``max_decoder_steps`` and ``fastspeech``'s ``max_frames``) is refused too:
no model could synthesize it whole, so it would only be scored cut off. LJSpeech's longest
clip is about 10 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import Field

from kdbench.errors import DataError
from kdbench.interfaces import Corpus
from kdbench.options import Options

from . import text
from .audio import HOP_LENGTH, SAMPLE_RATE, frame_count
from .data import Splits, fingerprint, make_corpus, make_example


class LJSpeech:
    """A local corpus in the LJSpeech layout (metadata.csv + wavs/), one speaker, no durations."""

    class Options(Options):
        root: Path
        test_utterances: int = Field(100, ge=1, description="the last lines of metadata.csv")
        max_train_utterances: int | None = Field(None, ge=1, description="keep only the first n training lines")
        speaker: str = "LJ"
        max_frames: int = Field(1000, ge=1, description="refuse a recording longer than this many log-mel frames "
                                                        "(1000 = 16 s, the models' default output bound)")

    def __init__(self, options: Options, cache_dir: Path | None = None, **context):
        self.options = options

    def load(self) -> Corpus:
        o = self.options
        path = Path(o.root) / "metadata.csv"
        rows = read_metadata(path)
        if len(rows) <= o.test_utterances:
            raise DataError(f"{o.root}/metadata.csv lists {len(rows)} utterances; test_utterances={o.test_utterances} "
                            "leaves none for training")
        train, test = rows[:-o.test_utterances], rows[-o.test_utterances:]
        if o.max_train_utterances is not None:
            train = train[:o.max_train_utterances]
        # Every chosen line's text first: normalising is instant, while phonemizing and reading
        # audio take minutes on the full corpus, so a bad line near the end is named at once.
        for row in (*train, *test):
            at(path, row, text.normalize, row.text, row.uid)
        splits: Splits = {split: [self._example(path, row) for row in chosen]
                          for split, chosen in (("train", train), ("test", test))}
        # Where the corpus lives does not change the data, so the root stays out of the recipe;
        # nor does max_frames, which only refuses (a corpus that loads is the same under any).
        recipe = {"layout": "ljspeech", "text": text.TEXT_STATE,
                  **o.model_dump(mode="json", exclude={"root", "max_frames"})}
        return make_corpus("ljspeech", splits, fingerprint(splits, recipe), source=str(o.root),
                           speaker_ids={o.speaker: 0})

    def _example(self, path: Path, row: Row):
        uid, max_frames = row.uid, self.options.max_frames
        wave = read_wave(path.parent / "wavs" / f"{uid}.wav", uid)
        frames = frame_count(len(wave))
        if frames > max_frames:
            limit = max_frames * HOP_LENGTH / SAMPLE_RATE
            raise DataError(f"{path}:{row.line}: utterance {uid} is {len(wave) / SAMPLE_RATE:.2f} s ({frames} log-mel "
                            f"frames), longer than max_frames={max_frames} ({limit:g} s): "
                            "a model bounded there would only say it cut off; drop the line, or raise max_frames with "
                            "the models' bounds (tacotron2 max_decoder_steps, fastspeech max_frames)")
        phonemes = at(path, row, text.phonemize, row.text, uid)
        return make_example(uid, at(path, row, text.encode, phonemes, uid), wave, {
            "text": text.normalize(row.text, uid), "phonemes": phonemes, "speaker": self.options.speaker,
            "speaker_id": 0})


class Row(NamedTuple):
    """One line of metadata.csv: the id, the text to speak (the normalized column when given)
    and the line number, so every error names where to fix it."""

    uid: str
    text: str
    line: int


def at(path: Path, row: Row, fn, *args):
    """``fn(*args)``, its one-line DataError (which names the utterance) prefixed with the file
    and line it came from."""
    try:
        return fn(*args)
    except DataError as exc:
        raise DataError(f"{path}:{row.line}: {exc}") from None


def read_metadata(path: Path) -> list[Row]:
    """A ``Row`` per line, with the normalized text when given; one-line DataError otherwise."""
    if not path.is_file():
        raise DataError(f"LJSpeech metadata not found: {path} (expected <root>/metadata.csv)")
    rows, seen = [], set()
    # Not the csv module: LJSpeech's texts contain unbalanced double quotes.
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise DataError(f"{path}:{lineno}: expected 'id|text|normalized text', got {len(fields)} field(s)")
        uid = fields[0].strip()
        if uid in seen:
            raise DataError(f"{path}:{lineno}: utterance id {uid!r} occurs twice")
        seen.add(uid)
        words = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        rows.append(Row(uid, words, lineno))
    if not rows:
        raise DataError(f"{path} lists no utterances")
    return rows


def read_wave(path: Path, uid: str) -> np.ndarray:
    """A mono float32 waveform at SAMPLE_RATE (the ASR plugin's reader, which resamples); its
    one-line errors name the utterance."""
    from kdbench_asr.data.audio import read_audio

    try:
        wave = read_audio(path, SAMPLE_RATE)
    except DataError as exc:
        raise DataError(f"utterance {uid}: {exc}") from None
    return np.ascontiguousarray(wave.numpy(), dtype=np.float32)
