"""Acoustic models: phoneme ids ``(batch, phonemes)`` int64 -> log-mel ``(batch, frames, n_mels)``.

``forward`` is what a deployed model does (free-running); ``forward_train`` is what the TTS task
calls in training, with the batch's ground truth: log-mel targets (teacher forcing) and
``batch.extras["durations"]`` (frames per phoneme).

- ``Tacotron2Teacher``: torchaudio's Tacotron2 (Shen et al., 2018), autoregressive with
  location-sensitive attention, sized to train on a 2-core CPU.
- ``FastSpeech``: a FastSpeech-style non-autoregressive model (Ren et al., 2019), the student
  and a non-autoregressive teacher:
  transformer encoder, duration predictor, length regulator, transformer decoder.

Both give an utterance the same output alone as inside a padded batch (convolutions see zeros
past an utterance's end, attention never attends to padding, the teacher's inference dropout is
seeded per step and shared by the rows), which is what lets cached teacher outputs stand for
the teacher inside any batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from kdbench.interfaces import Batch, Model, ModelOutput, ModelSpec
from kdbench.options import Options
from kdbench.torch_pair import import_torchaudio

torchaudio = import_torchaudio()  # a torch/torchaudio mismatch names both versions

from kdbench_tts.audio import N_MELS  # noqa: E402


def _keep(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(batch, steps) bool: True at valid positions."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def monotonic_durations(attention: np.ndarray) -> np.ndarray:
    """Frames per phoneme from one utterance's attention weights ``(frames, phonemes)``: the
    most probable monotonic path (each frame on the same phoneme as the previous one or the
    next, from the first phoneme to the last, every phoneme at least one frame). The argmax of
    each frame is not monotonic and, per the field notes, barely correlates with true
    durations; this is the alignment FastSpeech-style students need. With fewer frames than
    phonemes no such path exists and the argmax counts are returned instead."""
    frames, phonemes = attention.shape
    if frames < phonemes:
        return np.bincount(attention.argmax(1), minlength=phonemes).astype(np.int64)
    logp = np.log(np.clip(attention, 1e-8, None))
    score = np.full(phonemes, -np.inf)
    score[0] = logp[0, 0]
    moved = np.zeros((frames, phonemes), dtype=bool)
    for t in range(1, frames):
        advance = np.concatenate(([-np.inf], score[:-1]))
        moved[t] = advance > score
        score = np.maximum(score, advance) + logp[t]
    durations = np.zeros(phonemes, dtype=np.int64)
    j = phonemes - 1
    for t in range(frames - 1, -1, -1):
        durations[j] += 1
        if t > 0 and moved[t, j]:
            j -= 1
    return durations


class Tacotron2Teacher(Model):
    """torchaudio.models.Tacotron2, trained here: the autoregressive teacher.

    ``forward`` decodes free-running (prenet dropout on, as Tacotron2 requires, but seeded so
    outputs are reproducible) for at most ``min(max_decoder_steps, max_frames_per_phoneme x
    phonemes)`` steps per utterance; ``hidden["stopped"]`` (batch, 1, 1) is 1 where the stop
    token fired within that bound and 0 where decoding was cut off (its length is then the
    bound). ``hidden["durations"]`` (batch, phonemes, 1) are frames per phoneme from the
    monotonic path through the decoder's attention (see ``monotonic_durations``), the teacher
    durations of FastSpeech's sequence-level KD; ``hidden["alignments"]`` (batch, frames,
    phonemes) are the attention weights themselves (not in ``hidden_dims``: their width is the
    batch's phoneme count).

    ``forward_train`` decodes with teacher forcing on ``batch.targets`` and also returns
    ``hidden["mel_before_postnet"]`` (batch, frames, n_mels) and ``hidden["gate"]`` (batch,
    frames, 1) stop-token logits, for Tacotron2's loss (MSE before and after the postnet + BCE
    on the stop token, masked by the caller: torchaudio's ``mask_padding`` fails in backward).
    """

    version = 1

    class Options(Options):
        encoder_dim: int = Field(128, ge=8, description="symbol embedding and encoder width")
        encoder_convolutions: int = Field(3, ge=1)
        encoder_kernel_size: int = Field(5, ge=1)
        attention_rnn_dim: int = Field(256, ge=8)
        decoder_rnn_dim: int = Field(256, ge=8)
        prenet_dim: int = Field(128, ge=8)
        attention_hidden_dim: int = Field(96, ge=8)
        attention_location_filters: int = Field(16, ge=1)
        attention_location_kernel_size: int = Field(31, ge=1)
        postnet_convolutions: int = Field(5, ge=1)
        postnet_kernel_size: int = Field(5, ge=1)
        postnet_dim: int = Field(128, ge=8)
        dropout: float = Field(0.1, ge=0, lt=1, description="decoder and attention RNN dropout")
        gate_threshold: float = Field(0.5, gt=0, lt=1)
        max_decoder_steps: int = Field(1000, ge=1, description="hard bound on frames per utterance (16 s)")
        max_frames_per_phoneme: float = Field(25.0, gt=0, description="per-utterance bound: this x phonemes frames")
        inference_seed: int = Field(0, description="seeds the inference prenet dropout")

    def __init__(self, options: "Tacotron2Teacher.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.options = o
        self.net = torchaudio.models.Tacotron2(
            mask_padding=False, n_mels=N_MELS, n_symbol=model_spec.input_dim, n_frames_per_step=1,
            symbol_embedding_dim=o.encoder_dim, encoder_embedding_dim=o.encoder_dim,
            encoder_n_convolution=o.encoder_convolutions, encoder_kernel_size=o.encoder_kernel_size,
            decoder_rnn_dim=o.decoder_rnn_dim, decoder_max_step=o.max_decoder_steps, decoder_dropout=o.dropout,
            decoder_early_stopping=True, attention_rnn_dim=o.attention_rnn_dim,
            attention_hidden_dim=o.attention_hidden_dim, attention_location_n_filter=o.attention_location_filters,
            attention_location_kernel_size=o.attention_location_kernel_size, attention_dropout=o.dropout,
            prenet_dim=o.prenet_dim, postnet_n_convolution=o.postnet_convolutions,
            postnet_kernel_size=o.postnet_kernel_size, postnet_embedding_dim=o.postnet_dim,
            gate_threshold=o.gate_threshold)
        if model_spec.output_dim != N_MELS:
            raise ValueError(f"Tacotron2Teacher predicts {N_MELS} mel bands, "
                             f"but the task asks for {model_spec.output_dim}")
        self.hidden_dims = {"encoder": o.encoder_dim, "durations": 1}

    # torchaudio's encoder and postnet run convolutions over the padding (an utterance's last
    # frames would see its batch-mates' padding) and its encoder packs sequences only when
    # sorted by length; these re-run the same modules with padding zeroed between layers.
    def _encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoder = self.net.encoder
        keep = _keep(lengths, tokens.shape[1]).unsqueeze(1)
        x = self.net.embedding(tokens).transpose(1, 2) * keep
        for conv in encoder.convolutions:
            x = F.dropout(F.relu(conv(x)), 0.5, self.training) * keep
        packed = nn.utils.rnn.pack_padded_sequence(x.transpose(1, 2), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = encoder.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out

    def _postnet(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """mel (batch, n_mels, frames) -> mel + postnet residual, zero past each length."""
        postnet = self.net.postnet
        keep = _keep(lengths, mel.shape[2]).unsqueeze(1)
        mel = mel * keep
        x = mel
        for i, conv in enumerate(postnet.convolutions):
            x = conv(x)
            if i < postnet.n_convs - 1:
                x = torch.tanh(x)
            x = F.dropout(x, 0.5, self.training) * keep
        return mel + x

    def _trim(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # torchaudio's attention mask is as wide as the longest utterance, not the padded batch
        return features[:, :int(lengths.max())]

    def forward_train(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        features = self._trim(features, lengths)
        memory = self._encode(features, lengths)
        targets, target_lengths = batch.targets, batch.target_lengths
        mel, gate, alignments = self.net.decoder(memory, targets.transpose(1, 2), memory_lengths=lengths)
        post = self._postnet(mel, target_lengths)
        keep = _keep(target_lengths, mel.shape[2]).unsqueeze(1)
        with torch.no_grad():
            durations = self._durations(alignments, target_lengths, lengths)
        hidden = {"encoder": memory, "durations": durations, "alignments": alignments,
                  "mel_before_postnet": (mel * keep).transpose(1, 2), "gate": gate.unsqueeze(2)}
        return ModelOutput(post.transpose(1, 2), target_lengths, hidden)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        features = self._trim(features, lengths)
        memory = self._encode(features, lengths)
        mel, mel_lengths, stopped, alignments = self._decode_free_running(memory, lengths)
        post = self._postnet(mel, mel_lengths)
        hidden = {"encoder": memory, "durations": self._durations(alignments, mel_lengths, lengths),
                  "alignments": alignments, "stopped": stopped.to(mel.dtype).view(-1, 1, 1)}
        # per-phoneme states: their valid length is the phoneme count, not a share of the frames
        return ModelOutput(post.transpose(1, 2), mel_lengths, hidden,
                           hidden_lengths={"encoder": lengths, "durations": lengths})

    def _prenet(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Tacotron2 keeps prenet dropout on at inference (without it the decoder degenerates).
        # One mask per step drawn from a seeded generator and shared by the batch keeps each
        # utterance's output reproducible and independent of its batch-mates.
        for linear in self.net.decoder.prenet.layers:
            x = F.relu(linear(x))
            keep = torch.rand(x.shape[-1], generator=generator, device=x.device) >= 0.5
            x = x * keep.to(x.dtype) * 2.0
        return x

    def _decode_free_running(self, memory: torch.Tensor, lengths: torch.Tensor):
        decoder, o = self.net.decoder, self.options
        batch = memory.shape[0]
        bound = (lengths.to(torch.float64) * o.max_frames_per_phoneme).ceil().clamp(1, o.max_decoder_steps).long()
        generator = torch.Generator(device=memory.device).manual_seed(o.inference_seed)
        mask = ~_keep(lengths, memory.shape[1])
        (attention_hidden, attention_cell, decoder_hidden, decoder_cell, attention_weights, attention_weights_cum,
         attention_context, processed_memory) = decoder._initialize_decoder_states(memory)
        frame = decoder._get_go_frame(memory)
        mel_lengths = torch.zeros(batch, dtype=torch.long, device=memory.device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        mels, alignments = [], []
        for step in range(int(bound.max())):
            (frame, gate, attention_hidden, attention_cell, decoder_hidden, decoder_cell, attention_weights,
             attention_weights_cum, attention_context) = decoder.decode(
                self._prenet(frame, generator), attention_hidden, attention_cell, decoder_hidden, decoder_cell,
                attention_weights, attention_weights_cum, attention_context, memory, processed_memory, mask)
            mels.append(frame)
            alignments.append(attention_weights)
            running = ~stopped & (step < bound)
            mel_lengths += running.long()  # the frame where the stop token fires is kept, as torchaudio does
            stopped |= running & (torch.sigmoid(gate.squeeze(1)) > o.gate_threshold)
            if not bool((~stopped & (step + 1 < bound)).any()):
                break
        return (torch.stack(mels, 2), mel_lengths.clamp(min=1), stopped, torch.stack(alignments, 1))

    @staticmethod
    def _durations(alignments: torch.Tensor, frames: torch.Tensor, phonemes: torch.Tensor) -> torch.Tensor:
        """(batch, phonemes, 1) float frames per phoneme; zero in the padding."""
        out = torch.zeros(alignments.shape[0], alignments.shape[2], 1, dtype=alignments.dtype,
                          device=alignments.device)
        weights = alignments.detach().float().cpu().numpy()
        for i, (f, p) in enumerate(zip(frames.tolist(), phonemes.tolist())):
            out[i, :p, 0] = torch.from_numpy(monotonic_durations(weights[i, :f, :p])).to(out.dtype)
        return out


class _SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position encodings (Vaswani et al., 2017); extended on demand so no
    utterance is too long for them."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, steps: int, device, dtype) -> torch.Tensor:
        position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
        even = torch.arange(0, self.dim, 2, device=device, dtype=torch.float32)
        rate = torch.exp(even * (-math.log(10000.0) / self.dim))
        pe = torch.zeros(steps, self.dim, device=device)
        pe[:, 0::2] = torch.sin(position * rate)
        pe[:, 1::2] = torch.cos(position * rate)[:, : self.dim // 2]
        return pe.to(dtype)


class _FftBlock(nn.Module):
    """FastSpeech's feed-forward transformer block: self-attention, then a two-layer 1-D
    convolution instead of the position-wise linear layers; post-norm as in the paper."""

    def __init__(self, dim: int, heads: int, conv_dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, conv_dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.conv2 = nn.Conv1d(conv_dim, dim, 1)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (batch, steps, dim); keep (batch, steps) bool."""
        a, _ = self.attention(x, x, x, key_padding_mask=~keep, need_weights=False)
        x = self.norm1(x + self.dropout(a)) * keep.unsqueeze(2)
        y = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + self.dropout(y)) * keep.unsqueeze(2)


class _DurationPredictor(nn.Module):
    """Two convolutions with layer norm and a linear output: log(1 + frames) per phoneme."""

    def __init__(self, dim: int, filters: int, kernel_size: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(dim, filters, kernel_size, padding=(kernel_size - 1) // 2),
                                    nn.Conv1d(filters, filters, kernel_size, padding=(kernel_size - 1) // 2)])
        self.norms = nn.ModuleList([nn.LayerNorm(filters), nn.LayerNorm(filters)])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(filters, 1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        k = keep.unsqueeze(2)
        for conv, norm in zip(self.convs, self.norms):
            x = self.dropout(norm(F.relu(conv(x.transpose(1, 2)).transpose(1, 2)))) * k
        return self.out(x) * k


def length_regulate(x: torch.Tensor, durations: torch.Tensor, max_frames: int | None = None):
    """Repeat each phoneme's vector ``durations`` times: x (batch, phonemes, dim), durations
    (batch, phonemes) int -> (batch, frames, dim) and frames per utterance. Batched with a
    search over cumulative durations rather than a loop of ``repeat_interleave``."""
    ends = durations.cumsum(1)  # (batch, phonemes)
    frames = ends[:, -1]
    if max_frames is not None:
        frames = frames.clamp(max=max_frames)
    steps = max(int(frames.max()) if frames.numel() else 0, 1)
    position = torch.arange(steps, device=x.device).expand(x.shape[0], steps).contiguous()
    index = torch.searchsorted(ends, position, right=True).clamp(max=x.shape[1] - 1)
    out = torch.gather(x, 1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))
    return out * _keep(frames, steps).unsqueeze(2), frames


class FastSpeech(Model):
    """FastSpeech-style non-autoregressive acoustic model: the student, and (wider, trained on
    the recordings' durations) a non-autoregressive teacher whose ``hidden["durations"]`` (frames
    per phoneme, as regulated) and mels sequence-level KD can distil.

    ``hidden["log_durations"]`` (batch, phonemes, 1) is the duration predictor's output,
    log(1 + frames) per phoneme (zero in the padding); a loss trains it against
    ``log1p(batch.extras["durations"])`` or the teacher's ``hidden["durations"]``. At inference
    the frames per phoneme are ``round(exp(log_durations) - 1)``, at least 0 (at least one frame
    per utterance), and an utterance stops at ``max_frames``; ``hidden["stopped"]`` (batch, 1,
    1) is 0 where it was cut there, 1 otherwise (as the teacher's). ``forward_train`` regulates with
    ``batch.extras["durations"]`` instead and returns exactly ``batch.targets``' frames with
    ``batch.target_lengths`` as lengths (durations must sum to those lengths; frames they do
    not cover are decoded from zeros)."""

    version = 1

    class Options(Options):
        dim: int = Field(96, ge=8)
        heads: int = Field(2, ge=1)
        encoder_layers: int = Field(2, ge=1)
        decoder_layers: int = Field(2, ge=1)
        conv_dim: int = Field(192, ge=8, description="inner width of each block's convolution")
        conv_kernel_size: int = Field(5, ge=1)
        duration_filters: int = Field(96, ge=8)
        duration_kernel_size: int = Field(3, ge=1)
        dropout: float = Field(0.1, ge=0, lt=1)
        max_frames: int = Field(1000, ge=1, description="frames per utterance at inference (16 s)")

    def __init__(self, options: "FastSpeech.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        if o.dim % o.heads:
            raise ValueError(f"dim {o.dim} is not divisible by heads {o.heads}")
        self.max_frames = o.max_frames
        self.embedding = nn.Embedding(model_spec.input_dim, o.dim)
        self.positions = _SinusoidalPositions(o.dim)
        self.encoder = nn.ModuleList(_FftBlock(o.dim, o.heads, o.conv_dim, o.conv_kernel_size, o.dropout)
                                     for _ in range(o.encoder_layers))
        self.duration_predictor = _DurationPredictor(o.dim, o.duration_filters, o.duration_kernel_size, o.dropout)
        self.decoder = nn.ModuleList(_FftBlock(o.dim, o.heads, o.conv_dim, o.conv_kernel_size, o.dropout)
                                     for _ in range(o.decoder_layers))
        self.head = nn.Linear(o.dim, model_spec.output_dim)
        self.hidden_dims = {"encoder": o.dim, "decoder": o.dim, "log_durations": 1, "durations": 1}

    def _encode(self, features: torch.Tensor, lengths: torch.Tensor):
        keep = _keep(lengths, features.shape[1])
        x = self.embedding(features) + self.positions(features.shape[1], features.device, self.head.weight.dtype)
        x = x * keep.unsqueeze(2)
        for block in self.encoder:
            x = block(x, keep)
        return x, self.duration_predictor(x, keep), keep

    def _decode(self, encoder, durations, max_frames=None, target_lengths=None, total_frames=None):
        x, frames = length_regulate(encoder, durations, max_frames)
        if total_frames is not None:
            # training: exactly the targets' frames; target frames the durations do not cover
            # (a mismatch) are decoded from zeros, so the loss still sees every one of them
            x = F.pad(x, (0, 0, 0, max(total_frames - x.shape[1], 0)))[:, :total_frames]
            frames = target_lengths
        x = x + self.positions(x.shape[1], x.device, x.dtype)
        keep = _keep(frames, x.shape[1])
        x = x * keep.unsqueeze(2)
        for block in self.decoder:
            x = block(x, keep)
        return self.head(x) * keep.unsqueeze(2), x, frames

    def forward_train(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        encoder, log_durations, keep = self._encode(features, lengths)
        durations = batch.extras["durations"][:, :features.shape[1]].to(features.device) * keep
        mel, x, frames = self._decode(encoder, durations, target_lengths=batch.target_lengths,
                                      total_frames=batch.targets.shape[1])
        return ModelOutput(mel, frames, {"encoder": encoder, "decoder": x, "log_durations": log_durations,
                                         "durations": durations.unsqueeze(2).to(mel.dtype)},
                           hidden_lengths={"encoder": lengths, "log_durations": lengths, "durations": lengths})

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        encoder, log_durations, keep = self._encode(features, lengths)
        durations = (log_durations.squeeze(2).exp() - 1).round().clamp(min=0).long() * keep
        durations[:, 0] += (durations.sum(1) == 0).long()  # never an empty utterance
        mel, x, frames = self._decode(encoder, durations, max_frames=self.max_frames)
        # as Tacotron2's: 0 where the utterance was cut at max_frames, so the task can say so
        stopped = (durations.sum(1) <= self.max_frames).to(mel.dtype).view(-1, 1, 1)
        # as a teacher, its durations are what sequence-level KD regulates a student with
        return ModelOutput(mel, frames, {"encoder": encoder, "decoder": x, "log_durations": log_durations,
                                         "durations": durations.unsqueeze(2).to(mel.dtype), "stopped": stopped},
                           hidden_lengths={"encoder": lengths, "log_durations": lengths, "durations": lengths})
