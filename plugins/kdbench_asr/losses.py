"""Training losses for CTC recognisers: the no-KD baseline and four kinds of distillation.

``alpha`` always weights the distillation term and ``1 - alpha`` the CTC loss on the
ground truth, so ``alpha=0`` is the baseline and ``alpha=1`` pure distillation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.errors import SuiteError
from kdbench.interfaces import Batch, Loss, ModelOutput
from kdbench.layers import check_hint_layers
from kdbench.options import Options

from kdbench.alignment import align_frames, frame_mask, layer_lengths


def ctc(output: ModelOutput, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    log_probs = output.output.log_softmax(-1).transpose(0, 1)
    # mean over the batch of per-utterance loss divided by target length (PyTorch's "mean")
    return F.ctc_loss(log_probs, targets, output.lengths, target_lengths, blank=0, zero_infinity=True)


def frame_kd(student: ModelOutput, teacher: ModelOutput, temperature: float) -> torch.Tensor:
    """T^2-scaled KL(teacher || student) of temperature-softened frame posteriors (Hinton et al.,
    2015), averaged over the student's valid frames."""
    frames = student.output.shape[1]
    t_probs = align_frames(F.softmax(teacher.output / temperature, -1), teacher.lengths, student.lengths, frames)
    s_logp = F.log_softmax(student.output / temperature, -1)
    kl = (t_probs * (torch.log(t_probs.clamp_min(1e-8)) - s_logp)).sum(-1)
    mask = frame_mask(student.lengths, frames)
    return temperature ** 2 * (kl * mask).sum() / mask.sum().clamp(min=1)


class CtcLoss(Loss):
    """CTC on the ground-truth transcripts (no distillation)."""

    def __init__(self, options, **context):
        super().__init__()

    def forward(self, student: ModelOutput, batch: Batch, teacher=None) -> torch.Tensor:
        return ctc(student, batch.targets, batch.target_lengths)


class _KdOptions(Options):
    temperature: float = Field(2.0, gt=0, description="softmax temperature of both posteriors (at the start)")
    # left out of the configuration while unset: a run without a schedule keeps the key it had
    # before the option existed, so its finished weights are reused
    temperature_end: float | None = Field(
        None, gt=0, exclude_if=lambda v: v is None,
        description="if set, T moves linearly from `temperature` to this over training")


class LogitKd(Loss):
    """Frame-level logit distillation only (alpha = 1)."""

    requires_teacher = True

    class Options(_KdOptions):
        pass

    def __init__(self, options, **context):
        super().__init__()
        self.o = options

    def forward(self, student, batch, teacher) -> torch.Tensor:
        return frame_kd(student, teacher, self.annealed(self.o.temperature, self.o.temperature_end))


class CtcKd(Loss):
    """(1 - alpha) * CTC + alpha * frame-level logit KD."""

    requires_teacher = True

    class Options(_KdOptions):
        alpha: float = Field(0.5, ge=0, le=1)

    def __init__(self, options, **context):
        super().__init__()
        self.o = options

    def forward(self, student, batch, teacher) -> torch.Tensor:
        hard = ctc(student, batch.targets, batch.target_lengths)
        soft = frame_kd(student, teacher, self.annealed(self.o.temperature, self.o.temperature_end))
        return (1 - self.o.alpha) * hard + self.o.alpha * soft


class HintLoss(Loss):
    """FitNets hint (Romero et al., 2015) next to CTC: a learned linear projection of a student
    layer regresses the teacher's layer. Teacher features are standardised per frame because
    their scale differs between architectures and would otherwise set the loss weight."""

    requires_teacher = True

    class Options(Options):
        student_layer: str = "encoder"
        teacher_layer: str = "encoder"
        alpha: float = Field(0.5, ge=0, le=1)

    @classmethod
    def teacher_layers_for(cls, options) -> tuple[str, ...]:
        return (options.teacher_layer,)

    @classmethod
    def check_suite(cls, options, suite) -> None:
        """Every teacher and student has the named layers (else a run fails after training)."""
        check_hint_layers(options, suite)

    def __init__(self, options, student, teacher, **context):
        super().__init__()
        self.o = options
        for who, model, layer in (("student", student, options.student_layer), ("teacher", teacher, options.teacher_layer)):
            if layer not in model.hidden_dims:
                available = ", ".join(model.hidden_dims) or "none"
                raise SuiteError(f"hint loss: the {who} has no layer {layer!r} (available: {available})")
        self.proj = torch.nn.Linear(student.hidden_dims[options.student_layer], teacher.hidden_dims[options.teacher_layer])

    def forward(self, student, batch, teacher) -> torch.Tensor:
        s_hidden = student.hidden[self.o.student_layer]
        t_hidden = teacher.hidden[self.o.teacher_layer]
        # each layer's own valid frames: it may run at another frame rate than its model's output
        s_len = layer_lengths(student, self.o.student_layer)
        t_len = layer_lengths(teacher, self.o.teacher_layer)
        target = align_frames(F.layer_norm(t_hidden, t_hidden.shape[-1:]), t_len, s_len, s_hidden.shape[1])
        mask = frame_mask(s_len, s_hidden.shape[1]).unsqueeze(-1)
        mse = (((self.proj(s_hidden) - target) ** 2) * mask).sum() / (mask.sum() * target.shape[-1]).clamp(min=1)
        return (1 - self.o.alpha) * ctc(student, batch.targets, batch.target_lengths) + self.o.alpha * mse


class SequenceKd(Loss):
    """Sequence-level KD (Kim & Rush, 2016): CTC towards the teacher's greedy transcripts,
    mixed with CTC on the ground truth."""

    requires_teacher = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1)

    def __init__(self, options, task, **context):
        super().__init__()
        self.o = options
        self.task = task

    def forward(self, student, batch, teacher) -> torch.Tensor:
        paths = self.task.greedy_ids(teacher.output, teacher.lengths)
        targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(p or [0], dtype=torch.long) for p in paths], batch_first=True)
        lengths = torch.tensor([len(p) for p in paths])
        seq = ctc(student, targets, lengths)
        return (1 - self.o.alpha) * ctc(student, batch.targets, batch.target_lengths) + self.o.alpha * seq
