"""Enhancement models: ``(batch, samples, 1)`` noisy waveform -> enhanced waveform, with named
hidden states (``encoder``: (batch, frames, dim)) for hint losses.

All run each utterance at its own length, so an output never depends on batch-mates
(ConvTasNet's global layer norm would otherwise normalise over the padding), which is what
makes cached teacher outputs equal what the teacher says inside any batch.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kdbench.interfaces import Model, ModelOutput, ModelSpec
from kdbench.options import Options
from kdbench.torch_pair import import_torchaudio

torchaudio = import_torchaudio()  # a torch/torchaudio mismatch names both versions

from kdbench_enhance.stft import ConvStft


def _pad_frames(seqs: list[torch.Tensor]) -> torch.Tensor:
    if len(seqs) == 1:  # no padding to do, and ONNX has no pad_sequence
        return seqs[0].unsqueeze(0)
    return nn.utils.rnn.pad_sequence(seqs, batch_first=True)


class ConvTasNetEnhancer(Model):
    """torchaudio.models.ConvTasNet with one source (Luo and Mesgarani, 2019): a learned
    filterbank, a TCN mask estimator, and the decoder back to a waveform."""

    class Options(Options):
        enc_kernel_size: int = Field(16, ge=2, description="encoder window (samples); stride is half")
        enc_num_feats: int = Field(128, ge=8, description="N: filterbank size")
        msk_kernel_size: int = Field(3, ge=2)
        msk_num_feats: int = Field(64, ge=8, description="B: bottleneck channels")
        msk_num_hidden_feats: int = Field(128, ge=8, description="H: channels inside each conv block")
        msk_num_layers: int = Field(6, ge=1, description="X: blocks per stack (dilations 1..2^(X-1))")
        msk_num_stacks: int = Field(2, ge=1, description="R: stacks")

    def __init__(self, options: "ConvTasNetEnhancer.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.net = torchaudio.models.ConvTasNet(
            num_sources=1, enc_kernel_size=o.enc_kernel_size, enc_num_feats=o.enc_num_feats,
            msk_kernel_size=o.msk_kernel_size, msk_num_feats=o.msk_num_feats,
            msk_num_hidden_feats=o.msk_num_hidden_feats, msk_num_layers=o.msk_num_layers,
            msk_num_stacks=o.msk_num_stacks)
        self.hidden_dims = {"encoder": o.enc_num_feats}
        self._encoded: list[torch.Tensor] = []
        self.net.encoder.register_forward_hook(lambda _m, _i, out: self._encoded.append(out))

    def forward(self, features, lengths) -> ModelOutput:
        outs, encoded = [], []
        for i, n in enumerate(lengths.tolist()):
            self._encoded.clear()
            wave = features[i, :n, 0].reshape(1, 1, n)
            outs.append(self.net(wave)[0, 0, :n])
            encoded.append(self._encoded[0][0].transpose(0, 1))  # (frames, N)
        self._encoded.clear()
        return ModelOutput(_pad_frames(outs).unsqueeze(-1), lengths, {"encoder": _pad_frames(encoded)})


class _StftMasker(Model):
    """STFT magnitude -> a mask estimator (a subclass's ``_masks``) -> sigmoid mask on the complex
    STFT -> inverse STFT. Window 32 ms, hop 8 ms at any sample rate; the STFT is fixed
    convolutions (``ConvStft``), so the whole enhancer exports to ONNX."""

    def _stft(self, sample_rate: int, window_ms: float, hop_ms: float) -> int:
        n_fft = 1 << (int(sample_rate * window_ms / 1000) - 1).bit_length()
        self.stft = ConvStft(n_fft, max(1, int(sample_rate * hop_ms / 1000)))  # exportable to ONNX
        return n_fft // 2 + 1

    def _masks(self, x: torch.Tensor, frames: torch.Tensor, several: bool) -> torch.Tensor:
        """``(batch, frames, bins)`` log-magnitudes -> ``(batch, frames, hidden)`` mask features."""
        raise NotImplementedError

    def forward(self, features, lengths) -> ModelOutput:
        if features.shape[0] == 1:
            # one utterance fills its batch: its length is the tensor's, so an exported graph
            # keeps a dynamic length instead of the one read back from ``lengths`` while tracing
            waves, sizes = [features[0, :, 0]], [features.shape[1]]
        else:
            sizes = lengths.tolist()
            waves = [features[i, :n, 0] for i, n in enumerate(sizes)]
        specs = [self.stft(w) for w in waves]  # each utterance from its own samples only
        frames = torch.tensor([re.shape[0] for re, _ in specs])
        real, imag = _pad_frames([re for re, _ in specs]), _pad_frames([im for _, im in specs])
        magnitude = torch.sqrt(real ** 2 + imag ** 2 + 1e-10)  # + eps: a finite gradient on padding
        hidden = self._masks(torch.log1p(magnitude), frames, len(specs) > 1 and int(frames.min()) < real.shape[1])
        mask = torch.sigmoid(self.mask(hidden))
        if len(specs) == 1:
            outs = [self.stft.inverse(real[0] * mask[0], imag[0] * mask[0], sizes[0])]
        else:
            outs = [self.stft.inverse(real[i, :f] * mask[i, :f], imag[i, :f] * mask[i, :f], n)
                    for i, (f, n) in enumerate(zip(frames.tolist(), sizes))]
        # the encoder runs at the STFT's frame rate, which is no fixed multiple of the samples:
        # its own valid frames, so hint losses and the teacher-output cache read no padding
        return ModelOutput(_pad_frames(outs).unsqueeze(-1), lengths, {"encoder": hidden},
                           hidden_lengths={"encoder": frames})


class StftMaskGru(_StftMasker):
    """STFT magnitude -> GRU -> mask. Unidirectional it is a real-time enhancer (a student);
    bidirectional it hears the whole utterance (a teacher that trains fast on CPU)."""

    class Options(Options):
        hidden: int = Field(64, ge=4)
        layers: int = Field(1, ge=1)
        bidirectional: bool = Field(False, description="hear the whole utterance (not real time)")
        window_ms: float = Field(32.0, gt=0)
        hop_ms: float = Field(8.0, gt=0)

    def __init__(self, options: "StftMaskGru.Options", model_spec: ModelSpec, **context):
        super().__init__()
        bins = self._stft(int(model_spec.extras.get("sample_rate", 16000)), options.window_ms, options.hop_ms)
        self.inp = nn.Linear(bins, options.hidden)
        self.gru = nn.GRU(options.hidden, options.hidden, num_layers=options.layers, batch_first=True,
                          bidirectional=options.bidirectional)
        out_dim = options.hidden * (2 if options.bidirectional else 1)
        self.mask = nn.Linear(out_dim, bins)
        self.hidden_dims = {"encoder": out_dim}

    def _masks(self, x, frames, several):
        x = torch.relu(self.inp(x))
        if self.gru.bidirectional and several:
            # packed, so the backward direction starts at each utterance's own end, not in padding
            packed = nn.utils.rnn.pack_padded_sequence(x, frames, batch_first=True, enforce_sorted=False)
            hidden, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True,
                                                         total_length=x.shape[1])
            return hidden
        return self.gru(x)[0]  # unidirectional: padding after an utterance never reaches its frames


class StftMaskMlp(_StftMasker):
    """STFT magnitude of the current and ``context`` past frames -> a feed-forward network -> mask:
    causal and real-time like the GRU student, but made of linear layers only, the layers
    quantization-aware training and the int8 targets quantize and structured pruning thins (the
    GRU student is out of reach of both)."""

    class Options(Options):
        hidden: int = Field(64, ge=4)
        layers: int = Field(2, ge=1, description="hidden layers")
        context: int = Field(3, ge=0, description="past frames heard besides the current one")
        window_ms: float = Field(32.0, gt=0)
        hop_ms: float = Field(8.0, gt=0)

    def __init__(self, options: "StftMaskMlp.Options", model_spec: ModelSpec, **context):
        super().__init__()
        bins = self._stft(int(model_spec.extras.get("sample_rate", 16000)), options.window_ms, options.hop_ms)
        self.context = options.context
        widths = [bins * (options.context + 1)] + [options.hidden] * options.layers
        self.net = nn.Sequential(*[layer for i in range(options.layers)
                                   for layer in (nn.Linear(widths[i], widths[i + 1]), nn.ReLU())])
        self.mask = nn.Linear(options.hidden, bins)
        self.hidden_dims = {"encoder": options.hidden}

    def _masks(self, x, frames, several):
        # frames t-context .. t side by side, zeros before the start: shifted copies, which ONNX exports
        padded = nn.functional.pad(x, (0, 0, self.context, 0))
        steps = x.shape[1]
        window = torch.cat([padded[:, i:i + steps] for i in range(self.context + 1)], dim=-1)
        return self.net(window)


class Passthrough(Model):
    """The unprocessed noisy input: the reference row every enhancer must beat."""

    class Options(Options):
        pass

    def __init__(self, options, model_spec: ModelSpec, **context):
        super().__init__()

    def forward(self, features, lengths) -> ModelOutput:
        return ModelOutput(features.clone(), lengths, {})
