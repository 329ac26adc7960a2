"""The hidden layers a suite's models expose, known before any data loads, so a loss that reads
them (a hint) is checked by ``kdbench validate`` instead of failing after a teacher has trained."""

from __future__ import annotations

from typing import Any

import torch

from kdbench.interfaces import ModelSpec
from kdbench.suite import OptionMismatch, Resolved, ResolvedSuite


def hidden_layers(model: Resolved) -> tuple[str, ...] | None:
    """A model may declare its layers, ``hidden_layers_for(options)``, when building it is not
    cheap (a hub pipeline that downloads). Otherwise it is built on PyTorch's meta device (no
    memory, no initialisation) for a stand-in ModelSpec: the real one needs the corpus and the
    front end, and a model's layer names follow from its options. None when it cannot be built
    so: its layers are then checked when the loss is built."""
    declared = getattr(model.component.factory, "hidden_layers_for", None)
    if declared is not None:
        return tuple(declared(model.options))
    try:
        with torch.device("meta"):
            built = model.build(model_spec=ModelSpec(input_dim=16, output_dim=8))
        return tuple(built.hidden_dims)
    except Exception:  # e.g. a model that needs the real input size: the run-time check applies
        return None


def check_hint_layers(options: Any, suite: ResolvedSuite, student_option: str = "student_layer",
                      teacher_option: str = "teacher_layer") -> None:
    """Every teacher has the layer ``options.<teacher_option>`` names and every student the one
    ``options.<student_option>`` names; else OptionMismatch pointing at that option."""
    for role, option, models in (("teacher", teacher_option, suite.teachers),
                                 ("student", student_option, suite.students)):
        layer = getattr(options, option)
        for model in models:
            layers = hidden_layers(model)
            if layers is not None and layer not in layers:
                raise OptionMismatch(option, f"no layer {layer!r} in {role} {model.label!r} "
                                             f"(has: {', '.join(layers) or 'none'})")
