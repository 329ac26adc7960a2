"""Training objectives for vocoders: the recording as the target (no KD), and the teacher
vocoder's waveform as a second target (KD), both as spectral distances.

The distance is HiFi-GAN's and Parallel WaveGAN's generator loss without discriminators:
multi-resolution STFT loss (spectral convergence + L1 of log magnitudes at three resolutions,
Yamamoto et al., 2020) plus an L1 between log-mels (HiFi-GAN's mel loss, in the task's shared
mel configuration). A sample-wise loss would punish a vocoder for a plausible phase; these do not.

Padding never counts: each waveform is zeroed past its valid length and the STFTs pad with zeros
(not by reflection), so every frame up to the last one centred inside the valid samples is the
same as the utterance's alone, and frames past it are left out of every sum and mean.
"""

from __future__ import annotations

import functools

import torch
from pydantic import Field

from kdbench.interfaces import Batch, Loss, ModelOutput
from kdbench.options import Options
from kdbench_tts import audio

#: (n_fft, hop, window) of Parallel WaveGAN's multi-resolution STFT loss
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
_MAG_FLOOR = 1e-7  # Parallel WaveGAN's clamp, so log |S| of silence stays finite


def _valid(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def _magnitude(wave: torch.Tensor, lengths: torch.Tensor, n_fft: int, hop: int,
               win: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, samples) -> |STFT| (B, n_fft // 2 + 1, frames) and the (B, 1, frames) mask of frames
    centred inside each waveform's valid samples."""
    window = torch.hann_window(win, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave * _valid(lengths, wave.shape[1]), n_fft, hop, win, window, center=True,
                      pad_mode="constant", return_complex=True)
    mag = torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=_MAG_FLOOR))
    frames = 1 + torch.div(lengths, hop, rounding_mode="floor")
    return mag, _valid(frames, mag.shape[-1]).unsqueeze(1).to(mag.dtype)


def _stft_terms(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, n_fft: int, hop: int,
                win: int) -> torch.Tensor:
    """Spectral convergence + mean |log magnitude difference| at one resolution."""
    p, mask = _magnitude(pred, lengths, n_fft, hop, win)
    t, _ = _magnitude(target, lengths, n_fft, hop, win)
    convergence = torch.linalg.vector_norm((t - p) * mask) / torch.linalg.vector_norm(t * mask).clamp(min=1e-7)
    log_l1 = ((t.log() - p.log()).abs() * mask).sum() / (mask.sum() * p.shape[1]).clamp(min=1)
    return convergence + log_l1


@functools.cache
def _mel_basis() -> torch.Tensor:
    # the filterbank torchaudio's MelSpectrogram uses in audio.log_mel: (n_fft // 2 + 1, n_mels)
    import torchaudio

    return torchaudio.functional.melscale_fbanks(audio.N_FFT // 2 + 1, audio.F_MIN, audio.F_MAX, audio.N_MELS,
                                                 audio.SAMPLE_RATE)


def _mel_l1(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean |log-mel difference| in the task's mel configuration (magnitude mel, natural log,
    clamped as audio.log_mel), over valid frames."""
    basis = _mel_basis().to(pred.device, pred.dtype)
    p, mask = _magnitude(pred, lengths, audio.N_FFT, audio.HOP_LENGTH, audio.WIN_LENGTH)
    t, _ = _magnitude(target, lengths, audio.N_FFT, audio.HOP_LENGTH, audio.WIN_LENGTH)
    log_p = torch.log(torch.clamp(torch.einsum("bft,fm->bmt", p, basis), min=audio.LOG_CLAMP))
    log_t = torch.log(torch.clamp(torch.einsum("bft,fm->bmt", t, basis), min=audio.LOG_CLAMP))
    return ((log_p - log_t).abs() * mask).sum() / (mask.sum() * audio.N_MELS).clamp(min=1)


def spectral_loss(pred: torch.Tensor, pred_lengths: torch.Tensor, target: torch.Tensor,
                  target_lengths: torch.Tensor, mel_weight: float = 1.0) -> torch.Tensor:
    """Multi-resolution STFT loss (mean over RESOLUTIONS) + ``mel_weight`` x log-mel L1 between
    two batches of waveforms (B, samples), over the samples both have. A vocoder renders whole
    hops, so its output may run up to a hop past the recording; that tail is not scored."""
    steps = min(pred.shape[1], target.shape[1])
    lengths = torch.minimum(pred_lengths, target_lengths).clamp(max=steps).to(pred.device)
    pred, target = pred[:, :steps].float(), target[:, :steps].to(pred.device).float()
    stft = sum(_stft_terms(pred, target, lengths, *r) for r in RESOLUTIONS) / len(RESOLUTIONS)
    return stft + mel_weight * _mel_l1(pred, target, lengths)


def _wave(out: ModelOutput) -> torch.Tensor:
    return out.output[..., 0]


class WaveLoss(Loss):
    """Multi-resolution STFT + log-mel L1 to the recording: no distillation."""

    class Options(Options):
        mel_weight: float = Field(1.0, ge=0, description="weight of the log-mel L1 next to the STFT terms")

    def __init__(self, options: "WaveLoss.Options", **context):
        super().__init__()
        self.mel_weight = options.mel_weight

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None = None) -> torch.Tensor:
        return spectral_loss(_wave(student), student.lengths, batch.targets, batch.target_lengths, self.mel_weight)


class WaveKd(Loss):
    """The same distance to the teacher vocoder's waveform (alpha) and to the recording
    (1 - alpha): the teacher's rendering of the same log-mel as a soft target."""

    requires_teacher = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's waveform; 1 - alpha: the recording")
        mel_weight: float = Field(1.0, ge=0, description="weight of the log-mel L1 next to the STFT terms")

    def __init__(self, options: "WaveKd.Options", **context):
        super().__init__()
        self.alpha, self.mel_weight = options.alpha, options.mel_weight

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None) -> torch.Tensor:
        wave = _wave(student)
        # cached teacher outputs arrive re-padded, in fp16 (spectral_loss compares in float32)
        kd = spectral_loss(wave, student.lengths, _wave(teacher), teacher.lengths, self.mel_weight)
        if self.alpha == 1:
            return kd
        truth = spectral_loss(wave, student.lengths, batch.targets, batch.target_lengths, self.mel_weight)
        return self.alpha * kd + (1 - self.alpha) * truth
