"""From examples to model features: augment inputs, collate, front end, augment features.

Augmentation randomness comes from a generator per example. In cached teacher-output mode
the generator is seeded from (example, copy), so the teacher (when its outputs are cached)
and every student later replay exactly the same perturbation of that copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from kdbench.hashing import stable_hash
from kdbench.interfaces import Augmentation, Batch, Example, Frontend, Task


@dataclass
class Features:
    batch: Batch
    features: torch.Tensor
    lengths: torch.Tensor


def example_generator(example_id: str, copy: int, salt: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(stable_hash([example_id, copy, salt]), 16) % (2**63))
    return g


class InputPipeline:
    def __init__(self, task: Task, frontend: Frontend, augmentations: Sequence[Augmentation] = (), salt: str = ""):
        self.task = task
        self.frontend = frontend
        self.input_augs = [a for a in augmentations if a.stage == "input"]
        self.feature_augs = [a for a in augmentations if a.stage == "features"]
        self.salt = salt

    @property
    def augments(self) -> bool:
        return bool(self.input_augs or self.feature_augs)

    def __call__(self, examples: Sequence[Example], copy: int | None = None,
                 generator: torch.Generator | None = None) -> Features:
        """``copy`` given: replayable augmentation of that copy. ``generator`` given: fresh
        random augmentation. Neither: no augmentation (evaluation)."""
        gens: list[torch.Generator] | None = None
        if self.augments and (copy is not None or generator is not None):
            gens = [example_generator(e.id, copy, self.salt) if copy is not None else generator for e in examples]
        if gens and self.input_augs:
            examples = [replace(e, input=self._apply(self.input_augs, e.input, g)) for e, g in zip(examples, gens)]
        batch = self.task.collate(examples)
        with torch.no_grad():
            feats, lengths = self.frontend(batch.inputs, batch.input_lengths)
        if gens and self.feature_augs:
            feats = feats.clone()
            for i, g in enumerate(gens):
                n = int(lengths[i])
                feats[i, :n] = self._apply(self.feature_augs, feats[i, :n], g)
        return Features(batch, feats, lengths)

    @staticmethod
    def _apply(augs: Sequence[Augmentation], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for aug in augs:
            x = aug(x, g)
        return x
