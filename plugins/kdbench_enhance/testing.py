"""The conformance kit's inputs for the ``enhancement`` task (``kdbench.testing.inputs``): a
tiny corpus of noisy/clean pairs and a stand-in enhancer.

Clips are 0.5 to 0.9 s at 8 kHz: long enough for PESQ (0.25 s) and STOI (30 frames after
silence removal) to score them, so the metric checks see real numbers, not only NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kdbench.hashing import stable_hash
from kdbench.interfaces import Corpus, Example, Model, ModelOutput, ModelSpec
from kdbench.testing.inputs import KitInputs


def tiny_corpus(train: int = 8, test: int = 4, sample_rate: int = 8000, seed: int = 0) -> Corpus:
    """Voiced 'syllables' (a gliding fundamental with three harmonics under a Hann envelope)
    mixed with white noise at 0 to 10 dB SNR; deterministic, and of different lengths so
    batches carry padding."""
    rng = np.random.default_rng(seed)

    def syllable(f0: float, seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        phase = 2 * np.pi * np.cumsum(np.linspace(f0, 1.2 * f0, len(t))) / sample_rate
        return np.hanning(len(t)) * sum(np.sin(k * phase) / k for k in (1, 2, 3))

    def split(name: str, n: int) -> list[Example]:
        examples = []
        for k in range(n):
            seconds = 0.5 + 0.1 * (k % 5)
            clean = 0.3 * syllable(float(rng.uniform(110, 220)), seconds)
            noise = rng.standard_normal(len(clean))
            snr = float(rng.uniform(0, 10))
            noise *= np.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) * 10 ** (snr / 10)))
            examples.append(Example(f"kit-{name}-{k}", torch.tensor(clean + noise, dtype=torch.float32),
                                    torch.tensor(clean, dtype=torch.float32),
                                    {"duration": seconds, "sample_rate": sample_rate, "snr_db": snr}))
        return examples

    recipe = {"kdbench_enhance.testing": 1, "train": train, "test": test, "sample_rate": sample_rate, "seed": seed}
    return Corpus("kdbench-enhance-testing", split("train", train), {"test": split("test", test)},
                  {"sample_rate": sample_rate, "modality": "audio", "task": "enhancement"}, stable_hash(recipe))


class TinyEnhancer(Model):
    """The noisy waveform plus a per-sample correction from a sample-wise layer: the kit's
    stand-in teacher and student. The output keeps the input's length, as the task requires;
    the ``encoder`` state keeps every ``stride``-th sample, so a hint loss meets two frame rates."""

    def __init__(self, model_spec: ModelSpec, hidden: int = 8, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(model_spec.input_dim, hidden)
        self.head = nn.Linear(hidden, model_spec.output_dim)
        self.hidden_dims = {"encoder": hidden}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        keep = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        h = torch.tanh(self.proj(features)) * keep
        return ModelOutput((features + self.head(h)) * keep, lengths, {"encoder": h[:, ::self.stride]})


KIT_INPUTS = {
    "enhancement": KitInputs(corpus=tiny_corpus, frontend="waveform",
                             student=lambda spec: TinyEnhancer(spec, hidden=8, stride=2),
                             teacher=lambda spec: TinyEnhancer(spec, hidden=12, stride=1),
                             # a model that returns nothing: every metric must call it unscorable
                             empty_prediction=np.zeros(0, np.float32)),
}
