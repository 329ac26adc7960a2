"""CTC acoustic models built from torchaudio.models, at any size their options give.

Each returns raw logits (log-softmax is the loss's business) and exposes named hidden states
(``encoder``, ``layer1`` ...) for hint losses.
"""

from __future__ import annotations

import torch
import torchaudio
from pydantic import Field
from torch import nn

from kdbench.interfaces import Model, ModelOutput, ModelSpec
from kdbench.options import Options


def _padding_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class Conv1dSubsampler(nn.Module):
    """Strided 1-D convolutions: ``factor`` (a power of two) times fewer frames. Padding is
    zeroed after every stage so an utterance's frames never depend on its batch-mates."""

    def __init__(self, in_dim: int, out_dim: int, factor: int):
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"subsampling factor must be a power of two, got {factor}")
        steps = factor.bit_length() - 1
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else out_dim, out_dim, kernel_size=3, stride=2, padding=1) for i in range(steps))
        self.proj = nn.Linear(in_dim, out_dim) if steps == 0 else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        x = x.transpose(1, 2)  # (batch, dim, time)
        for conv in self.convs:
            x = nn.functional.gelu(conv(x))
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
            x = x * _padding_mask(lengths, x.shape[2]).unsqueeze(1)
        return self.proj(x.transpose(1, 2)), lengths


class PaddingMasked(nn.Module):
    """Zeroes padded frames before a wrapped (batch, channels, time) convolution. torchaudio's
    conformer convolution module does not mask padding, so without this an utterance's output
    would depend on how long its batch-mates are, and cached teacher outputs would not match
    the same teacher run on a training batch."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.keep: torch.Tensor | None = None  # (batch, 1, time), set by the model per forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep is not None and self.keep.shape[-1] == x.shape[-1]:
            x = x * self.keep
        return self.inner(x)


class ValidFramesBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics (and running averages) come from valid frames only.
    torchaudio's conformer convolution module normalises over every frame of the padded batch,
    so in training an utterance's output moved with its batch-mates' padding (the plugin kit's
    normalisation check). Same parameters and buffers as the module it replaces, so a state dict
    keeps its keys."""

    keep: torch.Tensor | None = None  # (batch, 1, time), set by the model per forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep is None or self.keep.shape[-1] != x.shape[-1]:
            return super().forward(x)  # inference: running statistics, frame by frame
        valid = self.keep[:, 0, :].bool()
        frames = x.transpose(1, 2)  # (batch, time, channels)
        out = torch.zeros_like(frames)
        out[valid] = super().forward(frames[valid])  # (valid frames, channels)
        return out.transpose(1, 2)

    @classmethod
    def replacing(cls, norm: nn.BatchNorm1d) -> "ValidFramesBatchNorm":
        new = cls(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                  track_running_stats=norm.track_running_stats)
        new.load_state_dict(norm.state_dict())
        return new


class ConformerCtc(Model):
    """Conformer encoder (torchaudio.models.Conformer) with a CTC head."""

    # 2: padding masked inside the model (outputs independent of batch-mates); 3: and the
    # convolution module's BatchNorm takes its training statistics over valid frames only
    version = 3

    class Options(Options):
        d_model: int = Field(144, ge=8)
        layers: int = Field(4, ge=1)
        heads: int = Field(4, ge=1)
        ffn_dim: int = Field(576, ge=8)
        kernel_size: int = Field(15, ge=3)
        subsampling: int = Field(4, ge=1)
        dropout: float = Field(0.1, ge=0, lt=1)

    def __init__(self, options: "ConformerCtc.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.subsample = Conv1dSubsampler(model_spec.input_dim, o.d_model, o.subsampling)
        self.conformer = torchaudio.models.Conformer(
            input_dim=o.d_model, num_heads=o.heads, ffn_dim=o.ffn_dim, num_layers=o.layers,
            depthwise_conv_kernel_size=o.kernel_size, dropout=o.dropout)
        self.masked = []  # the modules that need the valid frames of each forward
        for layer in self.conformer.conformer_layers:
            masked = PaddingMasked(layer.conv_module.sequential[2])  # the depthwise convolution
            layer.conv_module.sequential[2] = masked
            norm = ValidFramesBatchNorm.replacing(layer.conv_module.sequential[3])
            layer.conv_module.sequential[3] = norm
            self.masked += [masked, norm]
        self.head = nn.Linear(o.d_model, model_spec.output_dim)
        self.hidden_dims = {"encoder": o.d_model, **{f"layer{i + 1}": o.d_model for i in range(o.layers)}}

    def forward(self, features, lengths) -> ModelOutput:
        x, lengths = self.subsample(features, lengths)
        pad = ~_padding_mask(lengths, x.shape[1])
        hidden = {}
        keep = (~pad).unsqueeze(1).to(x.dtype)
        for masked in self.masked:
            masked.keep = keep
        x = x.transpose(0, 1)  # the layers take (time, batch, dim)
        for i, layer in enumerate(self.conformer.conformer_layers):
            x = layer(x, pad)
            hidden[f"layer{i + 1}"] = x.transpose(0, 1)
        x = x.transpose(0, 1)
        hidden["encoder"] = x
        return ModelOutput(self.head(x), lengths, hidden)


class GruCtc(Model):
    """Convolutional subsampling, a (bi)GRU stack and a CTC head: a small, fast student."""

    version = 2  # 2: padding masked inside the model (outputs independent of batch-mates)

    class Options(Options):
        hidden: int = Field(64, ge=4)
        layers: int = Field(2, ge=1)
        bidirectional: bool = True
        subsampling: int = Field(4, ge=1)
        dropout: float = Field(0.1, ge=0, lt=1)

    def __init__(self, options: "GruCtc.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.subsample = Conv1dSubsampler(model_spec.input_dim, o.hidden, o.subsampling)
        directions = 2 if o.bidirectional else 1
        self.grus = nn.ModuleList(
            nn.GRU(o.hidden if i == 0 else o.hidden * directions, o.hidden, batch_first=True, bidirectional=o.bidirectional)
            for i in range(o.layers))
        self.dropout = nn.Dropout(o.dropout)
        self.head = nn.Linear(o.hidden * directions, model_spec.output_dim)
        width = o.hidden * directions
        self.hidden_dims = {"encoder": width, **{f"layer{i + 1}": width for i in range(o.layers)}}

    def forward(self, features, lengths) -> ModelOutput:
        x, lengths = self.subsample(features, lengths)
        hidden = {}
        for i, gru in enumerate(self.grus):
            if x.shape[0] == 1:  # one unpadded utterance: packing changes nothing, and exports to ONNX
                x, _ = gru(x)
            else:
                packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                                           enforce_sorted=False)
                x, _ = gru(packed)
                x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True)
            x = self.dropout(x)
            hidden[f"layer{i + 1}"] = x
        hidden["encoder"] = x
        return ModelOutput(self.head(x), lengths, hidden)


class DeepSpeechCtc(Model):
    """torchaudio.models.DeepSpeech (Hannun et al., 2014) on log-mel frames; no subsampling.
    Its bidirectional RNN runs on packed sequences, so an utterance's outputs do not depend on
    its batch-mates and it can be a teacher."""

    version = 3  # 3: RNN packed (outputs independent of batch-mates); 2: hidden state batch-major

    class Options(Options):
        hidden: int = Field(256, ge=4)
        dropout: float = Field(0.0, ge=0, lt=1)

    def __init__(self, options: "DeepSpeechCtc.Options", model_spec: ModelSpec, **context):
        super().__init__()
        self.net = torchaudio.models.DeepSpeech(model_spec.input_dim, options.hidden, model_spec.output_dim, options.dropout)
        self.hidden_dims = {"encoder": options.hidden}

    def forward(self, features, lengths) -> ModelOutput:
        # torchaudio's DeepSpeech.forward, with the RNN packed: run over padding, its backward
        # direction starts in the padding, so outputs would change with the longest batch-mate
        # and cached teacher outputs would not match the teacher inside a batch. Same modules,
        # so checkpoints of version 2 still load.
        net = self.net
        x = net.fc3(net.fc2(net.fc1(features)))  # per frame: (batch, time, hidden)
        if x.shape[0] == 1:  # one unpadded utterance: packing changes nothing, and exports to ONNX
            x, _ = net.bi_rnn(x.transpose(0, 1))
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x.transpose(0, 1), lengths.clamp(min=1).cpu(),
                                                       enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(net.bi_rnn(packed)[0], total_length=x.shape[1])
        x = x[:, :, :net.n_hidden] + x[:, :, net.n_hidden:]  # the two directions summed, as torchaudio does
        encoder = net.fc4(x).transpose(0, 1)  # (batch, time, hidden)
        return ModelOutput(net.out(encoder).log_softmax(-1), lengths, {"encoder": encoder})


class Wav2LetterCtc(Model):
    """torchaudio.models.Wav2Letter (Collobert et al., 2016) on log-mel frames: a large
    fixed-width convolutional model (about 23M parameters), usable as a teacher."""

    class Options(Options):
        pass

    def __init__(self, options, model_spec: ModelSpec, **context):
        super().__init__()
        self.net = torchaudio.models.Wav2Letter(num_classes=model_spec.output_dim, input_type="mfcc",
                                                num_features=model_spec.input_dim)

    def forward(self, features, lengths) -> ModelOutput:
        out = self.net(features.transpose(1, 2)).transpose(1, 2)
        lengths = (torch.div(lengths + 2 * 23 - 48, 2, rounding_mode="floor") + 1).clamp(min=1, max=out.shape[1])
        return ModelOutput(out, lengths, {})
