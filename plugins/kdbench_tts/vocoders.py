"""Vocoders: log-mel frames ``(batch, frames, n_mels)`` -> waveform ``(batch, frames * hop, 1)``.

``HifiGan`` is the HiFi-GAN generator (Kong et al., 2020): transposed-convolution upsampling
and multi-receptive-field residual blocks, non-autoregressive. Its defaults are the V3 size
(256 channels, upsampling 8x8x4 = the hop of 256, resblock type 2), the teacher vocoder.
``HifiGanStudent`` is the same generator, much narrower and with one residual block per stage.

Why HiFi-GAN and not torchaudio's WaveRNN as the default teacher: its ``infer`` draws one
sample per Python-level step; measured on this machine (1 thread, 0.38 s of audio) it ran at
RTF 52 at the paper's size (n_rnn 512) and still RTF 10 at n_rnn 64, so a test set of a few
minutes of speech would take hours to vocode and no autoregressive student could be real time.
WaveRNN is here all the same, in ``wavernn.py``, for KD through a distribution over sample
classes (suites/tts-wavernn.yaml, on a tiny test set).

``GriffinLim`` inverts the log-mel without parameters (inverse mel filterbank by least
squares, then Griffin-Lim phase recovery): the ``references:`` row every neural vocoder is
compared with.

Every vocoder gives an utterance the same output alone as inside a padded batch: the
generator zeroes padded positions after every convolution (exactly the zeros a convolution
pads an unbatched utterance with), and Griffin-Lim runs each utterance at its own length.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from kdbench.interfaces import Model, ModelOutput, ModelSpec
from kdbench.options import Options
from kdbench.torch_pair import import_torchaudio

torchaudio = import_torchaudio()  # a torch/torchaudio mismatch names both versions

# a vocoder inverts exactly the task's log-mels, so their configuration is fixed, not options
from kdbench_tts.audio import F_MAX, F_MIN, HOP_LENGTH, N_FFT, SAMPLE_RATE, WIN_LENGTH  # noqa: E402

_LRELU_SLOPE = 0.1  # HiFi-GAN's


def _keep(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(batch, 1, steps): 1 at valid positions, 0 in the padding."""
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1)


class _ResBlock2(nn.Module):
    """HiFi-GAN's residual block type 2 (the V3 block): one dilated convolution per dilation."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, _LRELU_SLOPE)) * keep
        return x


class HifiGan(Model):
    """HiFi-GAN generator, V3-sized by default (about 1.5M parameters)."""

    version = 1

    class Options(Options):
        channels: int = Field(256, ge=4, description="channels after the input convolution; halved per upsampling")
        upsample_rates: tuple[int, ...] = Field((8, 8, 4), description="their product must be the hop (256)")
        upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
        resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)
        resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))
        input_kernel_size: int = Field(7, ge=1)
        output_kernel_size: int = Field(7, ge=1)

    def __init__(self, options: "HifiGan.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        if math.prod(o.upsample_rates) != HOP_LENGTH:
            raise ValueError(f"upsample_rates {o.upsample_rates} multiply to {math.prod(o.upsample_rates)}, "
                             f"not the hop of {HOP_LENGTH} samples per frame")
        if len(o.upsample_kernel_sizes) != len(o.upsample_rates):
            raise ValueError("upsample_kernel_sizes needs one kernel per upsample rate")
        for k, u in zip(o.upsample_kernel_sizes, o.upsample_rates):
            if k < u or (k - u) % 2:
                # output = input * u exactly only when (k - u) is even and non-negative
                raise ValueError(f"upsample kernel {k} does not fit rate {u}: need kernel >= rate, kernel - rate even")
        if len(o.resblock_dilations) != len(o.resblock_kernel_sizes):
            raise ValueError("resblock_dilations needs one tuple of dilations per resblock kernel size")
        self.rates = tuple(o.upsample_rates)
        self.conv_pre = nn.Conv1d(model_spec.input_dim, o.channels, o.input_kernel_size,
                                  padding=(o.input_kernel_size - 1) // 2)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        ch = o.channels
        for u, k in zip(o.upsample_rates, o.upsample_kernel_sizes):
            self.ups.append(nn.ConvTranspose1d(ch, ch // 2, k, stride=u, padding=(k - u) // 2))
            ch //= 2
            self.blocks.append(nn.ModuleList(
                _ResBlock2(ch, k_r, tuple(d)) for k_r, d in zip(o.resblock_kernel_sizes, o.resblock_dilations)))
        self.conv_post = nn.Conv1d(ch, model_spec.output_dim, o.output_kernel_size,
                                   padding=(o.output_kernel_size - 1) // 2)
        self.hidden_dims = {"encoder": o.channels}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        frames = features.shape[1]
        keep = _keep(lengths, frames)
        x = features.transpose(1, 2) * keep  # padding as zeros, the same as a lone utterance's conv padding
        x = self.conv_pre(x) * keep
        encoder = x.transpose(1, 2)
        steps, valid = frames, lengths
        for up, blocks in zip(self.ups, self.blocks):
            steps, valid = steps * up.stride[0], valid * up.stride[0]
            keep = _keep(valid, steps)
            x = up(F.leaky_relu(x, _LRELU_SLOPE))[..., :steps] * keep
            x = sum(block(x, keep) for block in blocks) / len(blocks)
        x = torch.tanh(self.conv_post(F.leaky_relu(x))) * keep
        return ModelOutput(x.transpose(1, 2), lengths * HOP_LENGTH, {"encoder": encoder})


class HifiGanStudent(HifiGan):
    """The same generator, about 14x fewer parameters: a real-time student vocoder."""

    class Options(HifiGan.Options):
        channels: int = Field(64, ge=4, description="channels after the input convolution; halved per upsampling")
        upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
        resblock_kernel_sizes: tuple[int, ...] = (3,)
        resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3),)


class GriffinLim(Model):
    """Log-mel -> linear magnitude (least squares on the mel filterbank, torchaudio's
    InverseMelScale) -> Griffin-Lim phase recovery (torchaudio). No parameters: a reference."""

    version = 1

    class Options(Options):
        n_iter: int = Field(32, ge=1, description="Griffin-Lim iterations")
        momentum: float = Field(0.99, ge=0, lt=1)

    def __init__(self, options: "GriffinLim.Options", model_spec: ModelSpec, **context):
        super().__init__()
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=N_FFT // 2 + 1, n_mels=model_spec.input_dim, sample_rate=SAMPLE_RATE, f_min=F_MIN, f_max=F_MAX)
        # rand_init=False: the same log-mel always gives the same waveform (a reproducible row)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=N_FFT, n_iter=options.n_iter, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, power=1.0,
            momentum=options.momentum, rand_init=False)
        self.hidden_dims = {}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        gl = self.griffin_lim
        out = features.new_zeros(features.shape[0], features.shape[1] * HOP_LENGTH, 1)
        for i, n in enumerate(lengths.tolist()):  # each at its own length: no batch-mate's padding in its STFT
            magnitude = self.inverse_mel(features[i, :n].exp().T)  # (n_stft, frames)
            # a centred STFT of (n - 1) * hop samples has n frames; the last hop of the
            # contract's n * hop samples stays silent
            wave = torchaudio.functional.griffinlim(
                magnitude, gl.window, gl.n_fft, gl.hop_length, gl.win_length, gl.power, gl.n_iter, gl.momentum,
                (n - 1) * HOP_LENGTH, gl.rand_init)
            out[i, :wave.shape[-1], 0] = wave
        return ModelOutput(out, lengths * HOP_LENGTH, {})
