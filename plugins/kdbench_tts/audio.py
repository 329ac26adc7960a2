"""The audio configuration every kdbench_tts component shares (fixed by the lead; models,
vocoders, losses and the corpus's phoneme durations all count frames with it).

Log-mel = natural log of a *magnitude* mel spectrogram (torchaudio ``MelSpectrogram`` with
``power=1``, its default HTK mel scale and no filter normalisation), clamped at 1e-5.
Frames are centred (torchaudio's default), so a waveform of ``n`` samples has
``1 + n // HOP_LENGTH`` frames: :func:`frame_count` is the one place that says so.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
LOG_CLAMP = 1e-5

#: recorded in corpus info and cache keys: a change here changes every frame count
AUDIO_CONFIG = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH,
                "n_mels": N_MELS, "f_min": F_MIN, "f_max": F_MAX, "log_clamp": LOG_CLAMP, "mel_power": 1.0,
                "center": True}


def frame_count(num_samples: int) -> int:
    """Mel frames of a waveform of ``num_samples`` samples (centred frames)."""
    return 1 + int(num_samples) // HOP_LENGTH


@functools.cache
def _mel() -> torch.nn.Module:
    import torchaudio

    # Built outside inference mode whoever asks first: made inside an evaluation's collate, its
    # window and filterbank would be inference tensors, and a later training step's mel loss
    # (autograd) would refuse them.
    with torch.inference_mode(False):
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
            f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, power=1.0).eval()


def log_mel(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(..., samples) waveform at SAMPLE_RATE -> (..., N_MELS, frame_count(samples)) log-mel.

    Differentiable (a mel loss may use it); the transform has no parameters."""
    if not isinstance(wave, torch.Tensor):
        wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    mel = _mel().to(wave.device)
    return torch.log(torch.clamp(mel(wave.float()), min=LOG_CLAMP))
