"""Training objectives for acoustic models: ground truth (no KD) and sequence-level KD.

Every term is masked to valid frames and phonemes. What a model exposes decides which terms
apply: Tacotron2's stop-token logits (``hidden["gate"]``) and pre-postnet mels, a FastSpeech
student's predicted log-durations (``hidden["log_durations"]``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.interfaces import Batch, Loss, ModelOutput
from kdbench.options import Options


def _frame_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()


def mel_l1(predicted: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Mean absolute log-mel error over the frames both sequences have (a free-running teacher's
    mel may be shorter or longer than the recording)."""
    steps = min(predicted.shape[1], target.shape[1])
    valid = torch.minimum(lengths, target_lengths).clamp(max=steps)
    mask = _frame_mask(valid, steps).unsqueeze(-1)
    diff = (predicted[:, :steps] - target[:, :steps]).abs() * mask
    return diff.sum() / (mask.sum() * predicted.shape[-1]).clamp(min=1)


def synthesis_loss(out: ModelOutput, batch: Batch) -> torch.Tensor:
    """Mel L1 to ``batch.targets``, plus whichever of the model's own terms it exposes."""
    loss = mel_l1(out.output, out.lengths, batch.targets, batch.target_lengths)
    if "mel_before_postnet" in out.hidden:
        loss = loss + mel_l1(out.hidden["mel_before_postnet"], out.lengths, batch.targets, batch.target_lengths)
    if "gate" in out.hidden:  # Tacotron2's stop token: 1 on each utterance's last frame
        gate = out.hidden["gate"].squeeze(-1)
        steps = gate.shape[1]
        target = torch.zeros_like(gate)
        last = (batch.target_lengths - 1).clamp(min=0, max=steps - 1)
        target[torch.arange(len(last)), last] = 1.0
        mask = _frame_mask(batch.target_lengths.clamp(max=steps), steps)
        loss = loss + (F.binary_cross_entropy_with_logits(gate, target, reduction="none") * mask).sum() / mask.sum()
    durations = batch.extras.get("durations")
    if "log_durations" in out.hidden and durations is not None:
        predicted = out.hidden["log_durations"].squeeze(-1)[:, :durations.shape[1]]
        mask = (torch.arange(durations.shape[1])[None, :] < batch.input_lengths[:, None]).float()
        error = (predicted - torch.log1p(durations.float())) ** 2 * mask
        loss = loss + error.sum() / mask.sum().clamp(min=1)
    return loss


class GroundTruthMel(Loss):
    """The recording's log-mel (and durations) as the target: no distillation."""

    def __init__(self, options=None, **context):
        super().__init__()

    def forward(self, student: ModelOutput, batch: Batch, teacher=None) -> torch.Tensor:
        return synthesis_loss(student, batch)


class SequenceKd(Loss):
    """Sequence-level KD (FastSpeech): the teacher's free-running log-mels and per-phoneme
    durations replace the recording's as targets, mixed with the ground truth by ``alpha``
    (1: the teacher only, as FastSpeech; the mix keeps what distilled mels lose)."""

    requires_teacher = True

    class Options(Options):
        alpha: float = Field(1.0, ge=0, le=1, description="weight of the teacher's targets; 1 - alpha: ground truth")

    def __init__(self, options: "SequenceKd.Options", **context):
        super().__init__()
        self.alpha = options.alpha

    @classmethod
    def teacher_layers_for(cls, options) -> tuple[str, ...]:
        return ("durations",)

    def student_batch(self, batch: Batch, teacher: ModelOutput | None) -> Batch:
        if teacher is None or self.alpha == 0:
            return batch
        durations = teacher.hidden["durations"].squeeze(-1).round().long()
        # the student is regulated by the teacher's durations, so its frames line up with the
        # teacher's mels; the recording's stay in extras for the ground-truth term
        extras = {**batch.extras, "durations": durations, "recorded": (batch.targets, batch.target_lengths)}
        return replace(batch, targets=teacher.output, target_lengths=teacher.lengths, extras=extras)

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None) -> torch.Tensor:
        kd = synthesis_loss(student, batch)
        if self.alpha == 1 or "recorded" not in batch.extras:
            return kd
        recorded, recorded_lengths = batch.extras["recorded"]
        truth = mel_l1(student.output, student.lengths, recorded, recorded_lengths)
        return self.alpha * kd + (1 - self.alpha) * truth
