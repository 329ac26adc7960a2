"""Bring teacher frames onto the student's frame grid.

Teacher and student may subsample differently (4x vs 2x) and convolution padding can leave
them a frame apart (s3prl #331: 302 vs 301). Each item's valid frames are resampled linearly
to the student's count, so probabilities stay probabilities (convex combinations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def hidden_lengths(hidden: torch.Tensor, output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Valid frames of a hidden state that may run at another frame rate than the output."""
    if hidden.shape[1] == output.shape[1]:
        return lengths
    return torch.ceil(lengths.float() * hidden.shape[1] / output.shape[1]).long().clamp(max=hidden.shape[1])
