"""CTC speech recognition as a kdbench Task: characters out, greedy decoding."""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field

from kdbench.errors import DataError
from kdbench.interfaces import Batch, Corpus, Example, ModelOutput, Task
from kdbench.options import Options

from kdbench_asr.text import NORMALIZER_VERSION, normalize

BLANK = 0


class CtcAsr(Task):
    """Character-level CTC recognition."""

    default_loss = "ctc"

    class Options(Options):
        vocabulary: str | None = Field(None, description="characters to recognise (default: those in the training transcripts)")

    def __init__(self, options: "CtcAsr.Options", **context):
        self.options = options
        self.chars: str = options.vocabulary or ""
        self._index: dict[str, int] = {}

    def setup(self, corpus: Corpus) -> None:
        for examples in [corpus.train, *corpus.tests.values()]:
            for e in examples:
                if not normalize(str(e.target or "")):
                    raise DataError(f"empty transcript for utterance {e.id!r}")
        if not self.chars:
            self.chars = "".join(sorted({c for e in corpus.train for c in normalize(e.target)}))
        self._index = {c: i + 1 for i, c in enumerate(self.chars)}

    def output_dim(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in normalize(text) if c in self._index]

    def decode_ids(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))

    def collate(self, examples: Sequence[Example]) -> Batch:
        waves = [torch.as_tensor(e.input, dtype=torch.float32) for e in examples]
        lengths = torch.tensor([w.shape[0] for w in waves])
        encoded = [torch.tensor(self.encode(e.target), dtype=torch.long) for e in examples]
        return Batch(
            ids=[e.id for e in examples],
            inputs=torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
            input_lengths=lengths,
            targets=torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True) if encoded else None,
            target_lengths=torch.tensor([len(t) for t in encoded]),
        )

    def greedy_ids(self, output: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Best path: argmax per frame, merge repeats, drop blanks."""
        best = output.argmax(-1)
        results = []
        for row, n in zip(best, lengths.tolist()):
            path = torch.unique_consecutive(row[:n])
            results.append([int(i) for i in path if i != BLANK])
        return results

    def predict(self, output: ModelOutput) -> list[str]:
        return [self.decode_ids(ids) for ids in self.greedy_ids(output.output, output.lengths)]

    def reference(self, example: Example) -> str:
        return example.target

    def state(self) -> dict:
        return {"chars": self.chars, "normalizer": NORMALIZER_VERSION}
