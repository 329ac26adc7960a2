"""From examples to model features: augment inputs, collate, front end, augment features.

Augmentation randomness comes from a generator per example. In cached teacher-output mode
the generator is seeded from (example, copy), so the teacher (when its outputs are cached)
and every student later replay exactly the same perturbation of that copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from kdbench.errors import DataError
from kdbench.hashing import stable_hash
from kdbench.interfaces import Augmentation, Batch, Corpus, Example, Frontend, Task


@dataclass
class Features:
    batch: Batch
    features: torch.Tensor
    lengths: torch.Tensor


def check_input_lengths(corpus: Corpus, frontend: Frontend) -> None:
    """Refuse an example shorter than the front end can featurise (``min_input_length``) before
    anything trains: inside the front end it surfaces mid-run as a framework error naming no
    example, after every row before it was trained."""
    need = getattr(frontend, "min_input_length", 0)  # a duck-typed front end declares none
    for split, examples in {"train": corpus.train, **corpus.tests}.items():
        for ex in examples:
            if len(ex.input) < need:
                source = ex.meta.get("audio_filepath")  # the file, when the example is one (manifests)
                raise DataError(f"{split} example {ex.id}" + (f" ({source})" if source else "") +
                                f": {len(ex.input)} samples, shorter than the front end's {need}-sample window")


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
