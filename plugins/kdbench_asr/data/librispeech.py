"""LibriSpeech (read English audiobooks, 16 kHz) through ``torchaudio.datasets.LIBRISPEECH``.

torchaudio's own loader needs torchcodec, so only its file index and transcripts are
used (``get_metadata``) and the audio goes through soundfile like every other corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from torchaudio.datasets import LIBRISPEECH

from kdbench.errors import DataError
from kdbench.interfaces import Corpus, Example
from kdbench.options import Options

from .audio import Splits, content_fingerprint, make_corpus, make_example, read_audio

Subset = Literal["dev-clean", "dev-other", "test-clean", "test-other",
                 "train-clean-100", "train-clean-360", "train-other-500"]
SAMPLE_RATE = 16000
FOLDER = "LibriSpeech"  # torchaudio's folder_in_archive: <root>/LibriSpeech/<subset>/...


class LibriSpeech:
    """LibriSpeech read speech (torchaudio layout: <root>/LibriSpeech/<subset>/...)."""

    class Options(Options):
        root: Path
        train_subset: Subset = "train-clean-100"
        test_subsets: list[Subset] = Field(default_factory=lambda: ["test-clean"], min_length=1)
        max_train_utterances: int | None = Field(None, ge=1)
        download: bool = False

        @model_validator(mode="after")
        def _disjoint(self):
            if self.train_subset in self.test_subsets:
                raise ValueError(f"{self.train_subset} cannot be both the training and a test subset")
            return self

    def __init__(self, options: Options, cache_dir: Path | None = None, **context):
        self.options = options

    def load(self) -> Corpus:
        o = self.options
        splits: Splits = {"train": self._subset(o.train_subset, "train", o.max_train_utterances)}
        for subset in o.test_subsets:
            splits[subset] = self._subset(subset, subset, None)
        recipe = {k: v for k, v in o.model_dump(mode="json").items() if k not in ("root", "download")}
        return make_corpus("librispeech", splits, SAMPLE_RATE, content_fingerprint(splits, recipe),
                           source="LibriSpeech (CC BY 4.0)")

    def _subset(self, subset: str, split: str, limit: int | None) -> list[Example]:
        root = self.options.root
        if not self.options.download and not (root / FOLDER / subset).is_dir():
            raise DataError(f"LibriSpeech subset not found: {root / FOLDER / subset} "
                            f"(check `root`, or set `download: true`)")
        try:
            dataset = LIBRISPEECH(root, url=subset, folder_in_archive=FOLDER, download=self.options.download)
        except Exception as exc:  # download or extraction failure
            raise DataError(f"cannot prepare LibriSpeech {subset} under {root}: {exc}") from None
        if len(dataset) == 0:
            raise DataError(f"LibriSpeech subset {root / FOLDER / subset} holds no .flac files")
        indices = range(len(dataset))
        if limit is not None and limit < len(dataset):
            # Evenly spaced over the sorted index, so a small limit still spans many
            # speakers instead of exhausting the first few.
            indices = np.unique(np.linspace(0, len(dataset) - 1, limit).round().astype(int)).tolist()
        examples = []
        for n in indices:
            try:
                relpath, _, transcript, speaker, chapter, utterance = dataset.get_metadata(n)
            except (FileNotFoundError, ValueError) as exc:  # missing or malformed *.trans.txt
                raise DataError(f"LibriSpeech {subset}: {exc}") from None
            if not transcript.strip():
                raise DataError(f"LibriSpeech {subset}: empty transcript for {relpath}")
            wave = read_audio(root / FOLDER / relpath, SAMPLE_RATE)  # relpath is relative to <root>/LibriSpeech
            examples.append(make_example(f"{split}-{speaker}-{chapter}-{utterance:04d}", wave, transcript,
                                         SAMPLE_RATE, speaker=str(speaker), chapter=chapter))
        return examples
