"""The conformance kit's inputs for the ``asr-ctc`` task (``kdbench.testing.inputs``): a tiny
corpus of tone "words" and a stand-in CTC model. Components of plugins that register no task
of their own are checked on these too, as kdbench loads this plugin first."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kdbench.hashing import stable_hash
from kdbench.interfaces import Corpus, Example, Model, ModelOutput, ModelSpec
from kdbench.testing.inputs import KitInputs

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def tiny_corpus(train: int = 8, test: int = 4, sample_rate: int = 8000, seed: int = 0) -> Corpus:
    """Utterances of one to three digit 'words', each a pair of tones (its own two formants)
    under a Hann envelope, plus noise: speech-shaped enough for any front end, deterministic,
    and of different lengths so batches carry padding."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    gap = np.zeros(int(0.05 * sample_rate))

    def word(d: int) -> np.ndarray:
        tones = np.sin(2 * np.pi * (300 + 60 * d) * t) + 0.5 * np.sin(2 * np.pi * (1200 + 150 * d) * t)
        return np.concatenate([np.hanning(len(t)) * tones, gap])

    def split(name: str, n: int) -> list[Example]:
        examples = []
        for k in range(n):
            digits = rng.integers(0, 10, size=1 + k % 3)
            wave = np.concatenate([gap, *map(word, digits)])
            wave = 0.3 * wave + 0.01 * rng.standard_normal(len(wave))
            examples.append(Example(f"kit-{name}-{k}", torch.tensor(wave, dtype=torch.float32),
                                    " ".join(WORDS[d] for d in digits),
                                    {"duration": len(wave) / sample_rate, "speaker": "kit"}))
        return examples

    # the recipe's first key is unchanged since this corpus lived in kdbench/testing.py, so
    # its fingerprint, and any teacher outputs cached under it, stay the same
    recipe = {"kdbench.testing": 1, "train": train, "test": test, "sample_rate": sample_rate, "seed": seed}
    return Corpus("kdbench-testing", split("train", train), {"test": split("test", test)},
                  {"sample_rate": sample_rate, "modality": "audio", "task": "asr"}, stable_hash(recipe))


class TinyCtcModel(Model):
    """A frame-wise layer and a head, keeping every ``stride``-th frame: the kit's stand-in
    teacher and student for loss, metric and target checks on ASR."""

    def __init__(self, model_spec: ModelSpec, hidden: int = 16, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(model_spec.input_dim, hidden)
        self.head = nn.Linear(hidden, model_spec.output_dim)
        self.hidden_dims = {"encoder": hidden}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        x = features[:, ::self.stride]
        lengths = torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")
        keep = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        h = torch.tanh(self.proj(x)) * keep
        return ModelOutput(self.head(h), lengths, {"encoder": h})


KIT_INPUTS = {
    # teacher and student differ in width and frame rate, as real pairs do, so a KD loss is
    # checked on the frame alignment it will meet
    "asr-ctc": KitInputs(corpus=tiny_corpus, frontend="log-mel",
                         student=lambda spec: TinyCtcModel(spec, hidden=16, stride=2),
                         teacher=lambda spec: TinyCtcModel(spec, hidden=24, stride=1),
                         empty_prediction=""),
}
