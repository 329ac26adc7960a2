"""Enhancement objectives: negative SI-SDR to the clean speech (the no-KD baseline), to the
teacher's enhanced waveform (output KD), their mix, and a FitNets hint on the encoder."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kdbench.alignment import align_frames, frame_mask, layer_lengths
from kdbench.layers import check_hint_layers
from kdbench.interfaces import Batch, Loss, ModelOutput
from kdbench.options import Options


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item over its valid samples (both zero-meaned, as in
    Le Roux et al., 2019), computed in float64 so near-silent items do not give NaN."""
    mask = frame_mask(lengths, estimate.shape[1]).to(torch.float64)
    n = lengths.clamp(min=1).to(torch.float64)[:, None]
    est, ref = estimate.to(torch.float64) * mask, reference.to(torch.float64) * mask
    est = (est - est.sum(1, keepdim=True) / n) * mask
    ref = (ref - ref.sum(1, keepdim=True) / n) * mask
    scale = (est * ref).sum(1, keepdim=True) / ((ref ** 2).sum(1, keepdim=True) + eps)
    target = scale * ref
    residual = est - target
    return 10 * torch.log10(((target ** 2).sum(1) + eps) / ((residual ** 2).sum(1) + eps))


def _wave(out: ModelOutput) -> torch.Tensor:
    return out.output[..., 0]


class SiSdrLoss(Loss):
    """Negative SI-SDR to the clean speech: no teacher."""

    class Options(Options):
        pass

    def __init__(self, options=None, **context):
        super().__init__()

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None = None) -> torch.Tensor:
        return -si_sdr(_wave(student), batch.targets, batch.target_lengths).mean().float()


class _Distilling(Loss):
    requires_teacher = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term; 1 - alpha on the clean target")

    def __init__(self, options, **context):
        super().__init__()
        self.alpha = options.alpha

    def _teacher_wave(self, student: ModelOutput, teacher: ModelOutput) -> torch.Tensor:
        wave = _wave(teacher).to(student.output.dtype)
        if wave.shape[1] < student.output.shape[1]:  # cached outputs are stored unpadded
            wave = nn.functional.pad(wave, (0, student.output.shape[1] - wave.shape[1]))
        return wave[:, : student.output.shape[1]]

    def mixed(self, student: ModelOutput, batch: Batch, teacher_term: torch.Tensor) -> torch.Tensor:
        clean = -si_sdr(_wave(student), batch.targets, batch.target_lengths).mean().float()
        return (1 - self.alpha) * clean + self.alpha * teacher_term


class OutputKd(_Distilling):
    """Negative SI-SDR to the teacher's enhanced waveform only (the teacher as the target)."""

    class Options(Options):
        pass

    def __init__(self, options, **context):
        Loss.__init__(self)
        self.alpha = 1.0

    def forward(self, student, batch, teacher):
        return -si_sdr(_wave(student), self._teacher_wave(student, teacher), batch.target_lengths).mean().float()


class SiSdrKd(_Distilling):
    """(1 - alpha) x SI-SDR loss to the clean speech + alpha x SI-SDR loss to the teacher's output."""

    def forward(self, student, batch, teacher):
        to_teacher = -si_sdr(_wave(student), self._teacher_wave(student, teacher), batch.target_lengths).mean().float()
        return self.mixed(student, batch, to_teacher)


class EncoderHint(_Distilling):
    """FitNets: (1 - alpha) x SI-SDR loss + alpha x MSE between a learned projection of the
    student's encoder and the teacher's (per-frame standardised), frames aligned by resampling."""

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1)
        student_layer: str = "encoder"
        teacher_layer: str = "encoder"

    @classmethod
    def teacher_layers_for(cls, options) -> tuple[str, ...]:
        return (options.teacher_layer,)

    @classmethod
    def check_suite(cls, options, suite) -> None:
        """Every teacher and student has the named layers (else a run fails after training)."""
        check_hint_layers(options, suite)

    def __init__(self, options, student=None, teacher=None, **context):
        super().__init__(options)
        self.student_layer, self.teacher_layer = options.student_layer, options.teacher_layer
        self.proj = nn.Linear(student.hidden_dims[options.student_layer], teacher.hidden_dims[options.teacher_layer])

    def forward(self, student, batch, teacher):
        s = student.hidden[self.student_layer]
        t = teacher.hidden[self.teacher_layer].to(s.dtype)
        s_len = layer_lengths(student, self.student_layer)  # each layer's own valid frames
        t_len = layer_lengths(teacher, self.teacher_layer)
        t = align_frames(t, t_len, s_len, s.shape[1])
        t = (t - t.mean(-1, keepdim=True)) / (t.std(-1, keepdim=True) + 1e-5)
        mask = frame_mask(s_len, s.shape[1]).unsqueeze(-1).to(s.dtype)
        hint = (((self.proj(s) - t) ** 2) * mask).sum() / (mask.sum() * t.shape[-1]).clamp(min=1)
        return self.mixed(student, batch, hint)
