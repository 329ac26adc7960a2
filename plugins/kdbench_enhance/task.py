"""Speech enhancement as a kdbench Task: noisy waveform in, enhanced waveform out.

Models see ``(batch, samples, 1)`` waveforms (the ``waveform`` front end) and return the
enhanced waveform the same shape; predictions are unpadded float32 arrays at the corpus rate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kdbench.errors import DataError
from kdbench.interfaces import Batch, Corpus, Example, Frontend, ModelOutput, Task
from kdbench.options import Options


def _pad(waves: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)


class Enhancement(Task):
    default_loss = "si-sdr"

    class Options(Options):
        pass

    def __init__(self, options, **context):
        self.sample_rate = 0

    def setup(self, corpus: Corpus) -> None:
        self.sample_rate = int(corpus.info.get("sample_rate", 0))
        if self.sample_rate <= 0:
            raise DataError(f"dataset {corpus.name!r} does not say its sample rate (info['sample_rate'])")
        for split, examples in [("train", corpus.train), *corpus.tests.items()]:
            for e in examples:
                if not isinstance(e.target, torch.Tensor) or e.target.shape != torch.as_tensor(e.input).shape:
                    raise DataError(f"{split} utterance {e.id!r}: enhancement needs a clean waveform of the "
                                    "noisy input's length as its target")

    def output_dim(self) -> int:
        return 1

    def collate(self, examples: Sequence[Example]) -> Batch:
        noisy = [torch.as_tensor(e.input, dtype=torch.float32) for e in examples]
        clean = [torch.as_tensor(e.target, dtype=torch.float32) for e in examples]
        lengths = torch.tensor([len(w) for w in noisy])
        return Batch(ids=[e.id for e in examples], inputs=_pad(noisy), input_lengths=lengths,
                     targets=_pad(clean), target_lengths=lengths.clone())

    def audio(self, prediction: np.ndarray) -> tuple[np.ndarray, int]:
        """The enhanced clip itself (kept as WAV, heard by DNSMOS)."""
        return np.asarray(prediction, dtype=np.float32), self.sample_rate

    def predict(self, output: ModelOutput) -> list[np.ndarray]:
        return [output.output[i, : int(n), 0].detach().float().numpy().copy() for i, n in enumerate(output.lengths)]

    def reference(self, example: Example) -> np.ndarray:
        return torch.as_tensor(example.target).numpy()

    def state(self) -> dict:
        return {"sample_rate": self.sample_rate}


class Waveform(Frontend):
    """The raw waveform as a one-channel feature sequence."""

    output_dim = 1
    export_lengths = (8000, 5477)  # samples: STFT models need more than a window's worth

    class Options(Options):
        pass

    def __init__(self, options, corpus_info: dict, **context):
        super().__init__()

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor):
        return waves.unsqueeze(-1), lengths
