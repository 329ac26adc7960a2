"""Log-mel features with per-utterance mean and variance normalisation."""

from __future__ import annotations

import torch
import torchaudio
from pydantic import Field

from kdbench.interfaces import Frontend
from kdbench.options import Options


class LogMel(Frontend):
    class Options(Options):
        n_mels: int = Field(40, ge=8, le=256)
        win_ms: float = Field(25.0, gt=0)
        hop_ms: float = Field(10.0, gt=0)
        normalize: bool = Field(True, description="per-utterance mean/variance normalisation")

    def __init__(self, options: "LogMel.Options", corpus_info: dict, **context):
        super().__init__()
        sr = int(corpus_info["sample_rate"])
        win = int(sr * options.win_ms / 1000)
        self.hop = int(sr * options.hop_ms / 1000)
        n_fft = 1 << (win - 1).bit_length()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=n_fft, win_length=win,
                                                        hop_length=self.hop, n_mels=options.n_mels)
        self.normalize = options.normalize
        self.output_dim = options.n_mels

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor):
        feats = torch.log(self.mel(waves) + 1e-6).transpose(1, 2)  # (B, T, n_mels)
        frames = torch.div(lengths, self.hop, rounding_mode="floor") + 1
        frames = frames.clamp(max=feats.shape[1])
        mask = (torch.arange(feats.shape[1])[None, :] < frames[:, None]).unsqueeze(-1)
        if self.normalize:
            n = frames.clamp(min=1).view(-1, 1, 1).to(feats.dtype)
            mean = (feats * mask).sum(1, keepdim=True) / n
            var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
            feats = (feats - mean) / torch.sqrt(var + 1e-5)
        return feats * mask, frames
