"""The inputs every check runs on: a ``Bench`` assembled from a task's ``KitInputs``.

The core kit knows no task. A plugin that registers a task gives the kit tiny real inputs for
it in a module ``testing`` of the task's package, as kdbench's own task plugins do::

    KIT_INPUTS = {"my-task": KitInputs(corpus=tiny_corpus, frontend="my-frontend",
                                       student=lambda spec: Tiny(spec, stride=2),
                                       teacher=lambda spec: Tiny(spec))}

When a check is given no bench, it runs on the inputs of a task registered by the checked
component's own plugin, else on those of the first loaded plugin that has any (kdbench loads
its own plugins first, by entry-point name, so the choice is the same on every machine).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from kdbench.errors import UnknownComponentError
from kdbench.interfaces import Corpus, Frontend, Model, ModelSpec, Task
from kdbench.pipeline import Features, InputPipeline
from kdbench.plugins import Component, Registry, get_registry
from kdbench.testing.errors import ConformanceError

#: where a task's package keeps its kit inputs, and the name they go by there
KIT_MODULE, KIT_ATTRIBUTE = "testing", "KIT_INPUTS"


@dataclass(frozen=True)
class KitInputs:
    """What a task's plugin gives the kit so that components can be checked on its task."""

    #: a tiny deterministic corpus in the task's shape; utterances of different lengths, so
    #: batches carry padding
    corpus: Callable[[], Corpus]
    #: the registered front end that featurises it, and its options
    frontend: str
    #: stand-in models for loss, metric and target checks: ``factory(model_spec) -> Model``.
    #: They should differ in width and frame rate, as real teacher/student pairs do, and each
    #: should declare at least one hidden layer, so hint losses have something to read.
    student: Callable[[ModelSpec], Model]
    teacher: Callable[[ModelSpec], Model]
    frontend_options: dict[str, Any] = field(default_factory=dict)
    #: what a metric sees when a model predicts nothing (an empty transcript, a silent clip)
    empty_prediction: Any = ""


@dataclass
class Bench:
    """Tiny real inputs and what the runner would derive from them."""

    registry: Registry
    corpus: Corpus
    task: Task
    frontend: Frontend
    pipeline: InputPipeline
    model_spec: ModelSpec
    inputs: KitInputs

    def features(self, n: int = 4, split: str = "train") -> Features:
        """A batch of ``n`` utterances of different lengths, as a model receives it."""
        examples = self.corpus.train if split == "train" else self.corpus.tests[split]
        return self.pipeline(examples[:n])

    def student(self) -> Model:
        """A fresh stand-in student for this task."""
        return self.inputs.student(self.model_spec)

    def teacher(self) -> Model:
        """A fresh stand-in teacher for this task (at the input's frame rate)."""
        return self.inputs.teacher(self.model_spec)


def kit_inputs(task: Component) -> KitInputs | None:
    """The inputs ``task``'s package provides for it, if any."""
    package = getattr(task.factory, "__module__", "").split(".")[0]
    name = f"{package}.{KIT_MODULE}"
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # not a package, or a module built in memory (a docs example)
        return None
    if found is None:
        return None
    return getattr(importlib.import_module(name), KIT_ATTRIBUTE, {}).get(task.name)


def _tasks_with_inputs(registry: Registry, plugin: str | None) -> list[tuple[Component, KitInputs]]:
    """Tasks that have kit inputs: ``plugin``'s own first, then in plugin load order."""
    order = {p.name: i for i, p in enumerate(registry.plugins)}
    tasks = sorted(registry.qualified["tasks"].values(),
                   key=lambda c: (c.plugin != plugin, order.get(c.plugin, len(order)), c.name))
    return [(task, inputs) for task in tasks if (inputs := kit_inputs(task)) is not None]


def default_task(registry: Registry, plugin: str | None = None) -> tuple[Component, KitInputs]:
    """The task, and its kit inputs, that components of ``plugin`` are checked on by default."""
    found = _tasks_with_inputs(registry, plugin)
    if not found:
        tasks = ", ".join(sorted(registry.qualified["tasks"])) or "none"
        raise ConformanceError(
            f"the conformance kit has no inputs: no loaded task provides {KIT_ATTRIBUTE} in its package's "
            f"{KIT_MODULE!r} module (tasks: {tasks}; is KDBENCH_LOAD_PLUGINS excluding the plugin that "
            "registers yours?). Pass bench=tiny_bench(task=..., inputs=KitInputs(...))")
    return found[0]


def tiny_bench(registry: Registry | None = None, task: str | None = None, frontend: str | None = None,
               corpus: Corpus | None = None, *, inputs: KitInputs | None = None, plugin: str | None = None) -> Bench:
    """The inputs every check runs on: ``corpus`` set up by the registered ``task`` and
    featurised by the registered ``frontend``. What is not given comes from the task's kit
    inputs; a task without its own (a new task being tried out) borrows the default task's
    corpus, front end and stand-in models. With no ``task``, the default task for components
    of ``plugin`` (see the module docstring)."""
    registry = registry or get_registry()
    if task is None:
        task_component, default_inputs = default_task(registry, plugin)
        task = task_component.name
    else:
        try:
            task_component = registry.get("tasks", task)
        except UnknownComponentError as exc:
            raise ConformanceError(f"the conformance kit's inputs need the task {task!r}: {exc}") from None
        default_inputs = kit_inputs(task_component) or (None if inputs else default_task(registry, plugin)[1])
    inputs = inputs or default_inputs
    corpus = corpus or inputs.corpus()
    frontend = frontend or inputs.frontend
    fe_options = inputs.frontend_options if frontend == inputs.frontend else {}
    try:
        task_obj: Task = task_component.build()
        task_obj.setup(corpus)
        fe: Frontend = registry.get("frontends", frontend).build(fe_options, corpus_info=corpus.info)
    except UnknownComponentError as exc:
        raise ConformanceError(f"the conformance kit's inputs for the {task!r} task need the {frontend!r} front end "
                               f"(is KDBENCH_LOAD_PLUGINS excluding the plugin that registers it?): {exc}") from None
    spec = ModelSpec(input_dim=fe.output_dim, output_dim=task_obj.output_dim(), extras=dict(corpus.info))
    return Bench(registry, corpus, task_obj, fe, InputPipeline(task_obj, fe), spec, inputs)
