"""The short-time Fourier transform and its inverse as fixed convolutions.

Numerically ``torch.stft``/``torch.istft`` (Hann window, ``center=True``, reflect padding,
one-sided), but built from real-valued ``conv1d``/``conv_transpose1d``: neither ONNX exporter
handles complex tensors or ``istft``, and an enhancer that cannot be exported cannot be
measured on ONNX Runtime.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ConvStft(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64), torch.arange(n_fft, dtype=torch.float64)) / n_fft
        analysis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # X_k = sum_t w[t] x[t] e^{-i 2pi k t / N}
        # the one-sided inverse counts every bin but DC and Nyquist twice; irfft ignores their imaginary parts
        edges = [0, bins - 1] if n_fft % 2 == 0 else [0]  # DC, and Nyquist when there is one
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
        imag_weight = weight.clone()
        weight[edges], imag_weight[edges] = 1.0, 0.0
        synthesis = torch.cat([weight * torch.cos(angle), -imag_weight * torch.sin(angle)]) * window / n_fft
        self.register_buffer("analysis", analysis.float().unsqueeze(1), persistent=False)    # (2 * bins, 1, n_fft)
        self.register_buffer("synthesis", synthesis.float().unsqueeze(1), persistent=False)  # (2 * bins, 1, n_fft)
        self.register_buffer("window_sq", (window ** 2).float().reshape(1, 1, n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One waveform ``(samples,)`` -> real and imaginary parts, each ``(frames, bins)``."""
        padded = F.pad(wave.reshape(1, 1, -1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        spec = F.conv1d(padded, self.analysis, stride=self.hop)[0].transpose(0, 1)  # (frames, 2 * bins)
        return spec.chunk(2, dim=1)

    def inverse(self, real: torch.Tensor, imag: torch.Tensor, length: int | torch.Tensor) -> torch.Tensor:
        """``(frames, bins)`` real and imaginary parts -> a waveform of ``length`` samples:
        windowed overlap-add, divided by the summed squared window."""
        spec = torch.cat([real, imag], dim=1).transpose(0, 1).unsqueeze(0)  # (1, 2 * bins, frames)
        wave = F.conv_transpose1d(spec, self.synthesis, stride=self.hop)
        envelope = F.conv_transpose1d(torch.ones_like(spec[:, :1]), self.window_sq, stride=self.hop)
        wave = (wave / envelope.clamp_min(1e-11))[0, 0, self.n_fft // 2:]
        # the last partial hop has no frame of its own: torch.istft pads it with zeros
        wave = F.pad(wave, (0, self.n_fft))
        return wave[:length]
