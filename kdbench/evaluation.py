"""Evaluate one model on one target: predictions on every test set, then every metric."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from kdbench.interfaces import Evaluation, Example, Frontend, Measurement, Metric, Model, ModelOutput, Target, Task


class Deployable(nn.Module):
    """Front end and model together: what a target runs and times (feature extraction
    included, file decoding not). A model that runs outside PyTorch (``Model.external``) has a
    front end of its own and hears the inputs themselves."""

    def __init__(self, frontend: Frontend, model: Model):
        super().__init__()
        self.frontend = frontend
        self.model = model
        self.external = bool(getattr(model, "external", False))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        if self.external:
            return self.model(inputs, lengths)
        feats, feat_lengths = self.frontend(inputs, lengths)
        return self.model(feats, feat_lengths)


@dataclass
class EvaluationResult:
    measurements: list[Measurement]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # metric name -> {"ids", "samples", "weights", "groups"}: per-utterance scores for paired
    # statistics; groups: the speaker of each utterance (None when the corpus does not say)
    scores: dict[str, dict[str, list]] = field(default_factory=dict)
    # a few predictions per test set a person can listen to, as the task wrote them (WAV)
    audio: list[Path] = field(default_factory=list)

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
            predictions += task.predict(task.infer(deployed, batch))
    return predictions


def evaluate(
    model: Model,
    frontend: Frontend,
    task: Task,
    tests: dict[str, list[Example]],
    metrics: Sequence[Metric],
    target: Target,
    audio_dir: Path | None = None,
    keep_audio: int = 3,
    scopes: Sequence[str] = ("split", "model"),
) -> EvaluationResult:
    """``audio_dir``: where the task writes the first ``keep_audio`` predictions of each test
    set it can save as audio (``Task.save_prediction``), as ``<split>/<example id>.<ext>``.
    ``scopes``: which metrics to compute: ``split`` (quality, over each test set's predictions)
    and ``model`` (timing, size, FLOPs: once per model), so the two can run at different times."""
    threads = torch.get_num_threads()  # a target sets its own; the caller's training keeps theirs
    try:
        return _evaluate(model, frontend, task, tests, metrics, target, audio_dir, keep_audio, scopes)
    finally:
        torch.set_num_threads(threads)


def _save_audio(task: Task, split: str, examples: Sequence[Example], preds: Sequence[Any], audio_dir: Path | None,
                keep: int) -> list[Path]:
    if audio_dir is None or keep <= 0:
        return []
    saved = []
    for example, pred in zip(examples[:keep], preds[:keep]):
        stem = Path(audio_dir) / split / example.id.replace("/", "_")
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = task.save_prediction(pred, stem)
        if path is None:  # the task keeps its predictions as text only
            return saved
        saved.append(Path(path))
    return saved


def _with_method(metric: Metric, measurements: list[Measurement]) -> list[Measurement]:
    """Each value carries how it was measured: the metric's ``config()``, unless it said so itself."""
    config = getattr(metric, "config", None)
    if callable(config):
        method = config()
        for m in measurements:
            if m.method is None:
                m.method = method
    return measurements


def _listener(task: Task, preds: Sequence[Any]) -> Callable[[int], Any]:
    """``Evaluation.audio``: each prediction rendered once (a synthesizer's vocoding is slow),
    however many metrics listen to it."""
    heard: dict[int, Any] = {}

    def audio(i: int) -> Any:
        if i not in heard:
            heard[i] = task.audio(preds[i])
        return heard[i]

    return audio


def _evaluate(model, frontend, task, tests, metrics, target, audio_dir, keep_audio, scopes) -> EvaluationResult:
    eager = Deployable(frontend, model).eval()
    deployed = target.prepare(Deployable(frontend, model).eval())
    measurements: list[Measurement] = []
    predictions: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, dict[str, list]] = {}
    audio: list[Path] = []
    for split, examples in (tests.items() if "split" in scopes else ()):
        preds = predict(deployed, task, examples)
        audio += _save_audio(task, split, examples, preds, audio_dir, keep_audio)
        refs = [task.reference(e) for e in examples]
        predictions[split] = [{"id": e.id, "prediction": _jsonable(p), "reference": _jsonable(r)}
                              for e, p, r in zip(examples, preds, refs)]
        ev = Evaluation(split, list(examples), preds, refs, None, eager, None, audio=_listener(task, preds))
        # who spoke each utterance, when the corpus says: confidence intervals resample speakers too
        speakers = ([str(e.meta["speaker"]) for e in examples]
                    if examples and all(e.meta.get("speaker") not in (None, "") for e in examples) else None)
        for metric in metrics:
            if metric.scope == "split":
                for m in _with_method(metric, metric.compute(ev)):
                    m.name = f"{split}/{m.name}"
                    if m.samples is not None:
                        if len(m.samples) != len(examples):
                            raise ValueError(f"metric {m.name}: {len(m.samples)} samples for {len(examples)} utterances")
                        scores[m.name] = {"ids": [e.id for e in examples], "samples": list(m.samples),
                                          "weights": list(m.weights) if m.weights is not None else None,
                                          "groups": speakers}
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

    # the seconds speed is normalised by: the input's, unless the task reads them from the
    # output (a synthesizer), which then costs one untimed run of the example: once per example,
    # however many metrics (latency, FLOPs) ask
    reads_output = type(task).seconds is not Task.seconds
    known: dict[str, float] = {}

    def seconds(example: Example) -> float:
        if example.id not in known:
            known[example.id] = task.seconds(example, run_one(example) if reads_output else None)
        return known[example.id]

    def startup() -> Callable[[], Callable[[Any], Any]]:
        load = target.startup(deployed, Deployable(frontend, model).eval())  # untimed: serialising
        return lambda: forward_with(load())

    # a model outside PyTorch is the files it loads, not a state dict
    size = model.artifact_bytes() if eager.external else target.artifact_bytes(deployed)
    ev = Evaluation(None, list(first), [], [], run_one, eager, size,
                    prepare_input=prepare_input, forward=forward_with(deployed), startup=startup,
                    threads=getattr(target, "threads", None), seconds=seconds)
    for metric in metrics:
        if metric.scope == "model" and "model" in scopes:
            measurements += _with_method(metric, metric.compute(ev))
    return EvaluationResult(measurements, predictions, scores, audio)
