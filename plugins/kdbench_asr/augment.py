"""Training augmentations. Every random draw uses the generator kdbench passes in, so the
harness can replay the same perturbation for the teacher and the student."""

from __future__ import annotations

import numpy as np
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


class VocalTractLengthPerturb(Augmentation):
    """Vocal tract length perturbation (Jaitly & Hinton, 2013) on log-mel features: each filter's
    centre frequency f is read at warp(f), where warp scales frequencies by a factor drawn
    uniformly from ``factors`` up to a boundary and then runs linearly to the Nyquist frequency,
    which stays put. A factor above 1 reads the spectrum higher up (a shorter vocal tract's
    formants move down to where a longer one's are), so a few training voices stand in for more.

    Applied to the features of the ``log-mel`` front end (torchaudio's HTK mel scale from 0 Hz to
    the Nyquist frequency), by linear interpolation between neighbouring filters."""

    stage = "features"

    class Options(Options):
        factors: tuple[float, float] = Field((0.9, 1.1), description="the warp factor's range [low, high]")
        boundary: float = Field(0.8, gt=0, lt=1, description="where the warp turns, as a fraction of the "
                                "Nyquist frequency, for a factor of 1")

    def __init__(self, options: "VocalTractLengthPerturb.Options", corpus_info: dict, **context):
        low, high = options.factors
        if not 0 < low <= high:
            raise ValueError(f"vtlp: factors must be [low, high] with 0 < low <= high, got [{low}, {high}]")
        self.o = options
        self.nyquist = int(corpus_info["sample_rate"]) / 2

    @staticmethod
    def _mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def warp(self, hz: torch.Tensor, factor: float) -> torch.Tensor:
        """Jaitly & Hinton's piecewise-linear warp: ``factor * f`` below the turning point, then a
        straight line to (Nyquist, Nyquist)."""
        turn = self.o.boundary * self.nyquist * min(factor, 1.0) / factor
        slope = (self.nyquist - factor * turn) / (self.nyquist - turn)
        return torch.where(hz <= turn, factor * hz, factor * turn + slope * (hz - turn))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        low, high = self.o.factors
        factor = low + float(torch.rand(1, generator=generator)) * (high - low)
        bins = x.shape[1]
        # the centres torchaudio's MelSpectrogram puts its triangles at (HTK scale, 0 Hz to Nyquist)
        centres = torch.linspace(0.0, float(self._mel(torch.tensor(self.nyquist))), bins + 2, dtype=torch.float64)[1:-1]
        hz = 700.0 * (10 ** (centres / 2595.0) - 1.0)
        # fractional filter index of each warped centre, then linear interpolation between filters
        pos = torch.from_numpy(np.interp(self._mel(self.warp(hz, factor)).numpy(), centres.numpy(),
                                         np.arange(bins, dtype=np.float64))).to(x.dtype)
        left = pos.floor().long().clamp(0, bins - 1)
        right = (left + 1).clamp(max=bins - 1)
        frac = pos - left.to(x.dtype)
        return x[:, left] * (1 - frac) + x[:, right] * frac


class PitchShift(Augmentation):
    """Pitch shift that keeps duration and formants (a phase-vocoder stretch by torchaudio, then
    resampling back to the original length): a shift drawn uniformly from ``semitones``. With speed
    perturbation, which moves pitch and formants together, it lets the two vary apart as they do
    between speakers."""

    stage = "input"

    class Options(Options):
        semitones: tuple[float, float] = Field((-3.0, 3.0), description="the shift's range [low, high]")
        probability: float = Field(0.5, ge=0, le=1, description="share of examples shifted")

    # The frequency ratio is rounded to a multiple of 1/RATIO_STEPS (a fifth of a semitone near 1).
    # torchaudio.functional.pitch_shift resamples between rates whose ratio is 2^(k/n); their
    # greatest common divisor is tiny, so its polyphase kernel is huge (0.64 s per 2.5 s utterance
    # at 8 kHz, measured). A ratio m/80 keeps the kernel at most ~80 phases long (under 1 ms).
    RATIO_STEPS = 80
    N_FFT, HOP = 256, 64

    def __init__(self, options: "PitchShift.Options", corpus_info: dict, **context):
        low, high = options.semitones
        if low > high:
            raise ValueError(f"pitch-shift: semitones must be [low, high] with low <= high, got [{low}, {high}]")
        self.o = options
        self.window = torch.hann_window(self.N_FFT)
        self.advance = torch.linspace(0, torch.pi * self.HOP, self.N_FFT // 2 + 1)[:, None]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = torch.as_tensor(x)
        # both draws always happen, so the generator's state after an example never depends on it
        shifted = float(torch.rand(1, generator=generator)) < self.o.probability
        low, high = self.o.semitones
        semitones = low + float(torch.rand(1, generator=generator)) * (high - low)
        ratio = round(2.0 ** (semitones / 12) * self.RATIO_STEPS)  # new pitch / old, in 1/RATIO_STEPS
        if not shifted or ratio == self.RATIO_STEPS:
            return x
        # stretch by ratio (longer when shifting up), then resample back: pitch moves by ratio,
        # duration stays, and the spectral envelope (formants) is kept by the vocoder
        spec = torch.stft(x, self.N_FFT, self.HOP, window=self.window, return_complex=True)
        spec = torchaudio.functional.phase_vocoder(spec, self.RATIO_STEPS / ratio, self.advance)
        stretched = torch.istft(spec, self.N_FFT, self.HOP, window=self.window)
        out = torchaudio.functional.resample(stretched, ratio, self.RATIO_STEPS)
        out = out[: x.shape[-1]]
        return torch.nn.functional.pad(out, (0, x.shape[-1] - out.shape[-1]))
