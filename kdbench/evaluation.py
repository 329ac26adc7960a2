"""Evaluate one model on one target: predictions on every test set, then every metric."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from kdbench.interfaces import Evaluation, Example, Frontend, Measurement, Metric, Model, ModelOutput, Target, Task


class Deployable(nn.Module):
    """Front end and model together: what a target runs and times (feature extraction
    included, file decoding not)."""

    def __init__(self, frontend: Frontend, model: Model):
        super().__init__()
        self.frontend = frontend
        self.model = model

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        feats, feat_lengths = self.frontend(inputs, lengths)
        return self.model(feats, feat_lengths)


@dataclass
class EvaluationResult:
    measurements: list[Measurement]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # metric name -> {"ids", "samples", "weights"}: per-utterance scores for paired statistics
    scores: dict[str, dict[str, list]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {m.name: m.value for m in self.measurements}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return None


def predict(deployed: nn.Module, task: Task, examples: Sequence[Example], batch_size: int = 16) -> list[Any]:
    predictions: list[Any] = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = task.collate(examples[start:start + batch_size])
            predictions += task.predict(deployed(batch.inputs, batch.input_lengths))
    return predictions


def evaluate(
    model: Model,
    frontend: Frontend,
    task: Task,
    tests: dict[str, list[Example]],
    metrics: Sequence[Metric],
    target: Target,
) -> EvaluationResult:
    threads = torch.get_num_threads()  # a target sets its own; the caller's training keeps theirs
    try:
        return _evaluate(model, frontend, task, tests, metrics, target)
    finally:
        torch.set_num_threads(threads)


def _evaluate(model, frontend, task, tests, metrics, target) -> EvaluationResult:
    eager = Deployable(frontend, model).eval()
    deployed = target.prepare(Deployable(frontend, model).eval())
    measurements: list[Measurement] = []
    predictions: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, dict[str, list]] = {}
    for split, examples in tests.items():
        preds = predict(deployed, task, examples)
        refs = [task.reference(e) for e in examples]
        predictions[split] = [{"id": e.id, "prediction": _jsonable(p), "reference": _jsonable(r)}
                              for e, p, r in zip(examples, preds, refs)]
        ev = Evaluation(split, list(examples), preds, refs, None, eager, None)
        for metric in metrics:
            if metric.scope == "split":
                for m in metric.compute(ev):
                    m.name = f"{split}/{m.name}"
                    if m.samples is not None:
                        if len(m.samples) != len(examples):
                            raise ValueError(f"metric {m.name}: {len(m.samples)} samples for {len(examples)} utterances")
                        scores[m.name] = {"ids": [e.id for e in examples], "samples": list(m.samples),
                                          "weights": list(m.weights) if m.weights is not None else None}
                    measurements.append(m)

    first = next(iter(tests.values()))

    # collation is outside the timed region, the front end and the model inside (kdbench.measurement)
    def prepare_input(example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        batch = task.collate([example])
        return batch.inputs, batch.input_lengths

    def forward_with(module: Callable) -> Callable[[Any], Any]:
        def forward(inputs: tuple[torch.Tensor, torch.Tensor]) -> Any:
            with torch.inference_mode():
                return module(*inputs)
        return forward

    def run_one(example: Example) -> Any:
        return forward_with(deployed)(prepare_input(example))

    def startup() -> Callable[[], Callable[[Any], Any]]:
        load = target.startup(deployed, Deployable(frontend, model).eval())  # untimed: serialising
        return lambda: forward_with(load())

    ev = Evaluation(None, list(first), [], [], run_one, eager, target.artifact_bytes(deployed),
                    prepare_input=prepare_input, forward=forward_with(deployed), startup=startup,
                    threads=getattr(target, "threads", None))
    for metric in metrics:
        if metric.scope == "model":
            measurements += metric.compute(ev)
    return EvaluationResult(measurements, predictions, scores)
