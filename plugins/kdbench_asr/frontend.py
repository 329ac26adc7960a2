"""Log-mel features with per-utterance mean and variance normalisation."""

from __future__ import annotations

import torch
import torchaudio
from pydantic import Field

from kdbench.interfaces import Frontend
from kdbench.options import Options


class LogMel(Frontend):
    """Log-mel filterbank (torchaudio.transforms.MelSpectrogram), one utterance at a time."""

    version = 2  # 2: per-utterance STFT, features independent of padding
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
        # one window's worth: a shorter wave has no frame, and the STFT's reflect padding of
        # n_fft // 2 (<= win) samples a side fails on it with a bare PyTorch error
        self.min_input_length = win
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=n_fft, win_length=win,
                                                        hop_length=self.hop, n_mels=options.n_mels)
        self.normalize = options.normalize
        self.output_dim = options.n_mels

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor):
        # one utterance at a time: a batched STFT would let the zero padding leak into the
        # last frames, making features (and cached teacher outputs) depend on batch-mates
        feats = [self._one(waves[i, : int(n)]) for i, n in enumerate(lengths)]
        frames = torch.tensor([f.shape[0] for f in feats])
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), frames

    def _one(self, wave: torch.Tensor) -> torch.Tensor:
        feats = torch.log(self.mel(wave) + 1e-6).T  # (frames, n_mels)
        if self.normalize:
            feats = (feats - feats.mean(0)) / torch.sqrt(feats.var(0, unbiased=False) + 1e-5)
        return feats
