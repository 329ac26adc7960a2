"""Bring teacher frames onto the student's frame grid, and find each layer's valid frames.

Teacher and student may subsample differently (4x vs 2x) and convolution padding can leave
them a frame apart (s3prl #331: 302 vs 301). Each item's valid frames are resampled linearly
to the student's count, so probabilities stay probabilities (convex combinations).

A hidden layer may run at its own frame rate (a 2x-subsampled encoder beside a full-rate
output, a synthesizer's per-phoneme states beside its per-frame mels): its valid frames are
``layer_lengths(out, name)``, never the output's lengths nor the other model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.interfaces import ModelOutput


def align_frames(teacher: torch.Tensor, teacher_lengths: torch.Tensor, student_lengths: torch.Tensor,
                 frames: int) -> torch.Tensor:
    """(B, Tt, C) teacher sequences -> (B, frames, C), item i stretched to ``student_lengths[i]``."""
    out = teacher.new_zeros(teacher.shape[0], frames, teacher.shape[2])
    for i, (nt, ns) in enumerate(zip(teacher_lengths.tolist(), student_lengths.tolist())):
        nt, ns = max(1, int(nt)), min(int(ns), frames)
        if ns <= 0:
            continue
        seq = teacher[i, :nt]
        if nt != ns:
            seq = F.interpolate(seq.T.unsqueeze(0), size=ns, mode="linear", align_corners=True)[0].T
        out[i, :ns] = seq
    return out


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def layer_lengths(out: ModelOutput, layer: str) -> torch.Tensor:
    """Valid frames of ``out.hidden[layer]`` per item: the model's own
    ``out.hidden_lengths[layer]`` when it gives them (teacher outputs from the cache always do),
    else inferred from the output's lengths at the layer's frame rate (``hidden_lengths``)."""
    known = out.hidden_lengths.get(layer)
    if known is not None:
        return known
    return hidden_lengths(out.hidden[layer], out.output, out.lengths)


def hidden_lengths(hidden: torch.Tensor, output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Valid frames of a hidden state inferred from the output's: the output's lengths scaled by
    the ratio of their padded lengths, rounded up. Exact for a layer whose frame count is a fixed
    multiple of the output's; a model whose layer is not so (a per-phoneme state) gives its
    lengths in ``ModelOutput.hidden_lengths``: read them with ``layer_lengths``."""
    if hidden.shape[1] == output.shape[1]:
        return lengths
    return torch.ceil(lengths.float() * hidden.shape[1] / output.shape[1]).long().clamp(max=hidden.shape[1])
