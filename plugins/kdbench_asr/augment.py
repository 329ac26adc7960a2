"""Training augmentations. Every random draw uses the generator kdbench passes in, so the
harness can replay the same perturbation for the teacher and the student."""

from __future__ import annotations

import torch
import torchaudio
from pydantic import Field

from kdbench.interfaces import Augmentation
from kdbench.options import Options


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


class SpecAugment(Augmentation):
    """Frequency and time masks on log-mel features (Park et al., 2019). torchaudio's
    masking transforms draw from the global RNG, which the teacher cache cannot replay, so
    the mask positions are drawn here and the masking itself is a slice assignment."""

    stage = "features"

    class Options(Options):
        freq_masks: int = Field(2, ge=0)
        freq_width: int = Field(8, ge=1)
        time_masks: int = Field(2, ge=0)
        time_width: int = Field(10, ge=1)
        max_time_fraction: float = Field(0.2, gt=0, le=1)

    def __init__(self, options: "SpecAugment.Options", **context):
        self.o = options

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = x.clone()
        frames, bins = x.shape
        for _ in range(self.o.freq_masks):
            width = _randint(generator, 0, min(self.o.freq_width, bins))
            start = _randint(generator, 0, bins - width)
            x[:, start:start + width] = 0.0
        max_width = max(0, min(self.o.time_width, int(frames * self.o.max_time_fraction)))
        for _ in range(self.o.time_masks):
            width = _randint(generator, 0, max_width)
            start = _randint(generator, 0, max(0, frames - width))
            x[start:start + width, :] = 0.0
        return x


class SpeedPerturb(Augmentation):
    """Speed perturbation by resampling (Ko et al., 2015): changes duration and pitch."""

    stage = "input"

    class Options(Options):
        factors: list[float] = Field(default_factory=lambda: [0.9, 1.0, 1.1], min_length=1)

    def __init__(self, options: "SpeedPerturb.Options", corpus_info: dict, **context):
        self.factors = options.factors
        self.sample_rate = int(corpus_info["sample_rate"])

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factor = self.factors[_randint(generator, 0, len(self.factors) - 1)]
        if factor == 1.0:
            return x
        # playing sr*factor samples per second: resample from sr*factor to sr
        return torchaudio.functional.resample(torch.as_tensor(x), int(self.sample_rate * factor), self.sample_rate)


class AdditiveNoise(Augmentation):
    """White noise at a signal-to-noise ratio drawn uniformly from [min_snr_db, max_snr_db]."""

    stage = "input"

    class Options(Options):
        min_snr_db: float = 5.0
        max_snr_db: float = 30.0
        probability: float = Field(0.5, ge=0, le=1)

    def __init__(self, options: "AdditiveNoise.Options", **context):
        self.o = options

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = torch.as_tensor(x)
        if float(torch.rand(1, generator=generator)) >= self.o.probability:
            return x
        snr = self.o.min_snr_db + float(torch.rand(1, generator=generator)) * (self.o.max_snr_db - self.o.min_snr_db)
        noise = torch.randn(x.shape, generator=generator)
        return torchaudio.functional.add_noise(x[None], noise[None], torch.tensor([snr]))[0]
