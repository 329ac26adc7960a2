"""A small convolutional CTC student in the spirit of QuartzNet (Kriman et al., 2020):
a strided convolution, then residual blocks of depthwise-separable 1-D convolutions."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from kdbench.interfaces import Model, ModelOutput, ModelSpec
from kdbench.options import Options


def _keep(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, 1, frames) mask of valid frames."""
    return (torch.arange(frames)[None, :] < lengths[:, None]).unsqueeze(1).float()


class SeparableBlock(nn.Module):
    """Depthwise conv (one filter per channel, across time), pointwise conv (across
    channels), per-frame LayerNorm, GELU, residual. Padding is zeroed before the
    depthwise conv, so an utterance's output never depends on its batch-mates; LayerNorm
    rather than BatchNorm for the same reason."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # x: (batch, channels, time)
        y = self.pointwise(self.depthwise(x * keep))
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        return (x + self.dropout(nn.functional.gelu(y))) * keep


class DepthwiseConvCtc(Model):
    """Strided conv subsampling, ``blocks`` depthwise-separable residual blocks, CTC head."""

    version = 1  # bump when outputs change for the same options (invalidates cached runs)

    class Options(Options):
        channels: int = Field(64, ge=4)
        blocks: int = Field(3, ge=1)
        kernel: int = Field(11, ge=1, description="odd, so frames stay centred")
        subsampling: int = Field(2, ge=1, le=2, description="1 or 2 (stride of the first convolution)")
        dropout: float = Field(0.1, ge=0, lt=1)

        @field_validator("kernel")
        @classmethod
        def _odd(cls, kernel: int) -> int:
            if kernel % 2 == 0:
                raise ValueError("kernel must be odd")
            return kernel

    def __init__(self, options: "DepthwiseConvCtc.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.stride = o.subsampling
        self.subsample = nn.Conv1d(model_spec.input_dim, o.channels, kernel_size=3, stride=o.subsampling, padding=1)
        self.blocks = nn.ModuleList(SeparableBlock(o.channels, o.kernel, o.dropout) for _ in range(o.blocks))
        self.head = nn.Linear(o.channels, model_spec.output_dim)
        self.hidden_dims = {"encoder": o.channels, **{f"block{i + 1}": o.channels for i in range(o.blocks)}}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        x = features.transpose(1, 2) * _keep(lengths, features.shape[1])
        x = self.subsample(x)
        lengths = torch.div(lengths - 1, self.stride, rounding_mode="floor") + 1
        keep = _keep(lengths, x.shape[2])
        x = x * keep
        hidden = {}
        for i, block in enumerate(self.blocks):
            x = block(x, keep)
            hidden[f"block{i + 1}"] = x.transpose(1, 2)
        hidden["encoder"] = x.transpose(1, 2)
        return ModelOutput(self.head(hidden["encoder"]), lengths, hidden)
