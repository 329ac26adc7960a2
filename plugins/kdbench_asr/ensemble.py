"""Several teachers for one student: the suite's CTC teachers combined into one (Model.combines),
with SpeechBrain's three multi-teacher strategies (Ravanelli et al.'s SpeechBrain KD recipes):

* ``average``: the mean of the teachers' frame posteriors;
* ``weighted``: their weighted mean (``weights``);
* ``best``: per utterance, the posteriors of the teacher whose CTC loss on that utterance's
  transcript is lowest. Only a training batch has transcripts, so this choice is made where a
  student's soft targets are made (``teacher_forward``); the ensemble's own evaluated row is the
  average, which never sees the transcript.

Each member is a teacher of the suite, trained and cached once as any other; posteriors are put
on the first member's frames (``kdbench.alignment``), so members may run at other frame rates.
The combination is a log-probability sequence, so every KD loss reads it as it reads one teacher's
logits.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from kdbench.alignment import align_frames
from kdbench.interfaces import Batch, Model, ModelOutput, ModelSpec
from kdbench.options import Options
from kdbench.suite import OptionMismatch

_FLOOR = 1e-8  # log of a posterior that no member gives any mass


class CtcTeacherEnsemble(Model):
    """The suite's teachers named in ``teachers``, combined frame by frame."""

    combines = True

    class Options(Options):
        teachers: list[str] = Field(min_length=2, description="labels of the suite's teachers to combine, "
                                    "each listed before this one")
        strategy: Literal["average", "weighted", "best"] = "average"
        weights: list[float] | None = Field(None, description="one per teacher, for strategy: weighted")

        @model_validator(mode="after")
        def _weights(self):
            if self.strategy == "weighted":
                if self.weights is None or len(self.weights) != len(self.teachers):
                    raise ValueError(f"weights: strategy weighted needs one weight per teacher "
                                     f"({len(self.teachers)}), got {self.weights}")
                if min(self.weights) < 0 or sum(self.weights) <= 0:
                    raise ValueError("weights: non-negative, and not all zero")
            elif self.weights is not None:
                raise ValueError(f"weights: only strategy weighted reads them, not {self.strategy}")
            if len(set(self.teachers)) != len(self.teachers):
                raise ValueError("teachers: a teacher is named twice")
            return self

    @staticmethod
    def check_suite(options: "CtcTeacherEnsemble.Options", suite) -> None:
        """Before anything trains: members that are teachers of the suite, listed before it."""
        position = next((i for i, t in enumerate(suite.teachers) if t.options is options), None)
        if position is None:
            raise ValueError("an ensemble combines the suite's teachers: list it under teachers:")
        earlier = [t.label for t in suite.teachers[:position]]
        for label in options.teachers:
            if label not in earlier:
                from kdbench.suggest import unknown_name_message

                later = label in [t.label for t in suite.teachers]
                raise OptionMismatch("teachers", f"{label!r} is listed after the ensemble; list it before"
                                     if later else unknown_name_message("teacher", label, earlier))

    def __init__(self, options: "CtcTeacherEnsemble.Options", model_spec: ModelSpec,
                 teachers: dict[str, Model] | None = None, **context):
        super().__init__()
        if teachers is None:
            raise ValueError("ctc-ensemble combines teachers the suite trains: list it under teachers:")
        self.names = list(options.teachers)
        self.members = nn.ModuleList(teachers[name] for name in self.names)
        self.strategy = options.strategy
        weights = options.weights or [1.0] * len(self.names)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.hidden_dims = {}  # no one layer to hint from
        probe = torch.zeros(1, 64, model_spec.input_dim)
        with torch.no_grad():
            classes = {name: m.eval()(probe, torch.tensor([64])).output.shape[-1] for name, m in zip(self.names, self.members)}
        if len(set(classes.values())) > 1:
            raise ValueError("ctc-ensemble: teachers: the teachers write different output vocabularies ("
                             + ", ".join(f"{k}: {v} classes" for k, v in classes.items()) + ")")

    def _posteriors(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[list[ModelOutput], torch.Tensor]:
        """Each member's output, and its posteriors on the first member's frames: (members, B, T, C)."""
        outs = [m(features, lengths) for m in self.members]
        first = outs[0]
        probs = [align_frames(F.softmax(o.output, -1), o.lengths, first.lengths, first.output.shape[1]) for o in outs]
        return outs, torch.stack(probs)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        outs, probs = self._posteriors(features, lengths)
        mean = (probs * self.weights[:, None, None, None]).sum(0)
        return ModelOutput(torch.log(mean.clamp_min(_FLOOR)), outs[0].lengths)

    def teacher_forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        if self.strategy != "best":
            return self(features, lengths)
        outs, probs = self._posteriors(features, lengths)
        logp = torch.log(probs.clamp_min(_FLOOR))  # (members, B, T, C)
        frames = outs[0].lengths
        losses = torch.stack([F.ctc_loss(lp.transpose(0, 1), batch.targets, frames, batch.target_lengths, blank=0,
                                         reduction="none", zero_infinity=True) for lp in logp])  # (members, B)
        best = losses.argmin(0)
        return ModelOutput(logp[best, torch.arange(len(best))], frames)
