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


def guided_attention(alignments: torch.Tensor, frames: torch.Tensor, phonemes: torch.Tensor,
                     sigma: float) -> torch.Tensor:
    """Guided-attention loss (Tachibana et al., 2018): the attention mass a frame puts far from
    the diagonal, ``sum_n A[t, n] W[t, n]`` with ``W[t, n] = 1 - exp(-(n/N - t/T)^2 / (2
    sigma^2))``, averaged over each utterance's valid frames ``T`` (``N``: its phonemes). Per
    frame rather than per cell (ESPnet's mean over cells is this divided by N), so its scale
    (0 to 1) does not shrink with the sentence. ``alignments`` (batch, frames, phonemes)."""
    steps, width = alignments.shape[1], alignments.shape[2]
    t = torch.arange(steps, device=alignments.device, dtype=alignments.dtype)[None, :, None]
    n = torch.arange(width, device=alignments.device, dtype=alignments.dtype)[None, None, :]
    f = frames.to(alignments.dtype).clamp(min=1)[:, None, None]
    p = phonemes.to(alignments.dtype).clamp(min=1)[:, None, None]
    weight = 1.0 - torch.exp(-((n / p - t / f) ** 2) / (2 * sigma ** 2))
    mask = (t < f) & (n < p)
    return (alignments * weight * mask).sum() / (t < f).sum().clamp(min=1)


class GroundTruthMel(Loss):
    """The recording's log-mel (and durations) as the target: no distillation.

    A model whose training pass exposes attention weights (``hidden["alignments"]``: Tacotron2)
    also gets a guided-attention term, decayed linearly to zero by ``guided_attention_until`` of
    training: on a 2-core budget it is what makes Tacotron2's attention diagonal at all (field
    notes: within 2 minutes), and dropping it later lets the attention loosen from the rigid
    diagonal to real phoneme durations."""

    class Options(Options):
        guided_attention: float = Field(1.0, ge=0, description="initial weight of the guided-attention term")
        guided_attention_sigma: float = Field(0.4, gt=0, description="width of the allowed band around the diagonal")
        guided_attention_until: float = Field(0.5, gt=0, le=1,
                                              description="fraction of training by which the weight has decayed to 0")

    def __init__(self, options: "GroundTruthMel.Options | None" = None, **context):
        super().__init__()
        self.options = options or self.Options()

    def guided_weight(self) -> float:
        o = self.options
        return o.guided_attention * max(0.0, 1.0 - self.progress / o.guided_attention_until)

    def forward(self, student: ModelOutput, batch: Batch, teacher=None) -> torch.Tensor:
        loss = synthesis_loss(student, batch)
        weight = self.guided_weight()
        if weight > 0 and "alignments" in student.hidden:
            loss = loss + weight * guided_attention(student.hidden["alignments"], batch.target_lengths,
                                                    batch.input_lengths, self.options.guided_attention_sigma)
        return loss


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
