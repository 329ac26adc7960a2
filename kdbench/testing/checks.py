"""The conformance checks: does a registered component honour its interface?

Every check builds the component through its registered factory and drives it through the
code the runner uses (``kdbench.training.train``, ``kdbench.evaluation.evaluate``, the input
pipeline, the teacher-output cache) on a ``Bench`` (``kdbench.testing.inputs``). A failure
raises ``ConformanceError`` naming the component, the plugin that provides it (distribution and
version when installed) and what is wrong. Every check takes ``plugin=``: the name must then
resolve to that plugin's component, so a test never passes on another plugin's class
registered under the same name.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from kdbench.errors import AmbiguousComponentError, UnknownComponentError
from kdbench.evaluation import Deployable, evaluate
from kdbench.interfaces import (Augmentation, Corpus, Evaluation, Example, Frontend, Loss, Measurement, Metric,
                                Model, ModelOutput, ModelSpec, Target, Task)
from kdbench.options import Options
from kdbench.pipeline import Features, InputPipeline
from kdbench.plugins import SINGULAR, Component, LoadedPlugin, Registry, build_registry, get_registry
from kdbench.suite import TrainingConfig
from kdbench.teacher_outputs import TeacherOutputStore, split_output
from kdbench.testing.errors import ConformanceError
from kdbench.testing.inputs import Bench, default_task, tiny_bench
from kdbench.training import train


# ---- plumbing shared by the checks ------------------------------------------------------

def _dist(c: Component) -> str | None:
    p = c.provider
    return f"{p.distribution} {p.version}" if p is not None and p.distribution else None


def _whose(c: Component) -> str:
    """``plugin 'p', dist 1.2.3``: which code a message is about. Two plugins may register one
    name, so the plugin alone may not say whose class was checked; the distribution does."""
    return f"plugin {c.plugin!r}" + (f", {_dist(c)}" if _dist(c) else "")


class _Checker:
    """Prefixes every problem with '<kind> <name> (plugin <plugin>, <distribution> <version>)'."""

    def __init__(self, component: Component):
        self.component = component

    def fail(self, problem: str):
        c = self.component
        raise ConformanceError(f"{SINGULAR[c.kind]} {c.name!r} ({_whose(c)}): {problem}")

    def require(self, ok: Any, problem: str) -> None:
        if not ok:
            self.fail(problem)

    @contextlib.contextmanager
    def step(self, what: str, hint: str = "") -> Iterator[None]:
        """A crash inside the component becomes a failure saying where it happened."""
        try:
            yield
        except ConformanceError:
            raise
        except Exception as exc:
            self.fail(f"{what} raised {type(exc).__name__}: {exc}{hint}")


def _component(kind: str, component: Any, registry: Registry, plugin: str | None = None) -> Component:
    """A registered name (bare or ``plugin:name``), a Component, or a bare factory not
    registered yet. With ``plugin``, a name or Component must be that plugin's: an author's
    test must never pass by checking another plugin's class registered under the same name."""
    if isinstance(component, str):
        found = _resolve(kind, component, registry, plugin)
    elif isinstance(component, Component):
        found = component
    else:  # nobody's registration yet, so there is no plugin to verify
        name = getattr(component, "__name__", repr(component))
        scratch = Registry()  # same validation of the options class as a real registration
        scratch.add(kind, "<not registered>", name, component)
        return scratch.components[kind][name]
    if plugin is not None and found.plugin != plugin:
        raise ConformanceError(_not_plugins(kind, found.name, plugin, [found], registry))
    return found


def _resolve(kind: str, name: str, registry: Registry, plugin: str | None) -> Component:
    if plugin is not None and ":" not in name and f"{plugin}:{name}" in registry.qualified[kind]:
        name = f"{plugin}:{name}"  # the plugin's own, even when another plugin registers the name too
    try:
        return registry.get(kind, name)
    except AmbiguousComponentError:
        owners = [c for c in registry.qualified[kind].values() if c.name == name]
        if plugin is not None:  # registered by others only: the plugin's own was looked up above
            raise ConformanceError(_not_plugins(kind, name, plugin, owners, registry)) from None
        # the registry would refuse the bare name in a suite too; here, say how a check names one
        whose = " and ".join(f"{c.plugin!r} ({_dist(c) or 'not installed'})" for c in owners)
        plugins = " or ".join(f"plugin={c.plugin!r}" for c in owners)
        qualified = " or ".join(repr(f"{c.plugin}:{name}") for c in owners)
        raise ConformanceError(f"{SINGULAR[kind]} {name!r} is registered by both {whose}, so the check cannot tell "
                               f"whose to check: pass {plugins} to the check, or name it as {qualified}") from None
    except UnknownComponentError as exc:
        problems = "".join(f"\n  {p}" for p in registry.problems)
        raise ConformanceError(f"{exc}. Is its distribution installed and its `kdbench` entry point "
                               f"declared? (`kdbench plugins` lists what loaded){problems}") from None


def _not_plugins(kind: str, name: str, plugin: str, owners: list[Component], registry: Registry) -> str:
    """Why ``name`` is not ``plugin``'s: whose it is, and what became of ``plugin``."""
    whose = " and ".join(f"plugin {c.plugin!r} ({c.provider.text() if c.provider else 'not installed'})"
                         for c in owners)
    head = (f"{SINGULAR[kind]} {name!r} is provided by {whose}, not by plugin {plugin!r}: checking it would "
            "check another plugin's code. ")
    loaded = next((p for p in registry.plugins if p.name == plugin), None)
    own = sorted(c.name for c in registry.qualified[kind].values() if c.plugin == plugin)
    if loaded is not None and name in own:  # the caller qualified the name with another plugin
        return head + f"plugin {plugin!r} registers its own: name it {name!r} or {f'{plugin}:{name}'!r}"
    # with what went wrong loading the plugin, or in one of its hooks: often why its own is missing
    if loaded is None:
        why = (f"plugin {plugin!r} is not loaded (loaded: {', '.join(p.name for p in registry.plugins) or 'none'}; "
               "is it installed, and selected by KDBENCH_LOAD_PLUGINS?)")
        notes = [p for p in registry.problems if f"'{plugin}'" in p]
    else:
        why = f"plugin {plugin!r} registers no {SINGULAR[kind]} {name!r} (its {kind}: {', '.join(own) or 'none'})"
        notes = [f"{origin} {stage}: {error}" for origin, (stage, error) in registry.failed.items()
                 if origin.startswith(f"plugin {plugin!r}")]
    return head + why + "".join(f"\n  {n}" for n in notes)


def _setup(kind: str, component: Any, bench: Bench | None, registry: Registry | None,
           plugin: str | None) -> tuple[_Checker, Bench]:
    """The checker for ``component`` and the bench to check it on: the one given, else the
    default for the component's plugin (``kdbench.testing.inputs``)."""
    registry = bench.registry if bench else registry or get_registry()
    ck = _Checker(_component(kind, component, registry, plugin))
    return ck, bench or tiny_bench(registry, plugin=ck.component.plugin)


def _options(ck: _Checker, options: Options | dict | None) -> Options:
    if isinstance(options, Options):
        return options
    with ck.step("validating options", " (pass the options a suite would give, e.g. check_xxx(name, {...}))"):
        return ck.component.options.model_validate(options or {})


def _build(ck: _Checker, options: Options, **context: Any) -> Any:
    try:
        params = inspect.signature(ck.component.factory).parameters.values()
    except (TypeError, ValueError):  # some callables have no introspectable signature
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
        ck.fail("its factory does not accept **context: kdbench may pass new keyword context in later "
                "versions (docs/plugins.md, 'Compatibility'); declare `def __init__(self, options, ..., **context)`")
    with ck.step(f"building it (factory(options, {', '.join(f'{k}=...' for k in context)}))"):
        return ck.component.factory(options, **context)


def _shape(t: Any) -> Any:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_output(ck: _Checker, model: Model, out: Any, batch: int, spec: ModelSpec) -> None:
    ck.require(isinstance(out, ModelOutput),
               f"forward returned {type(out).__name__}; it must return kdbench.interfaces.ModelOutput")
    o, n = out.output, out.lengths
    ck.require(isinstance(o, torch.Tensor) and o.dim() == 3 and o.shape[0] == batch and o.shape[2] == spec.output_dim,
               f"output has shape {_shape(o)}; expected (batch={batch}, time, output_dim={spec.output_dim}): "
               f"the last dimension must be ModelSpec.output_dim")
    ck.require(bool(torch.isfinite(o).all()), "output contains NaN or inf")
    ck.require(isinstance(n, torch.Tensor) and n.shape == (batch,) and not n.is_floating_point(),
               f"lengths must be an integer tensor of shape ({batch},), got {_shape(n)} "
               f"{getattr(n, 'dtype', '')}".rstrip())
    ck.require(bool(((n >= 1) & (n <= o.shape[1])).all()),
               f"lengths {n.tolist()} must lie in 1..{o.shape[1]} (the output's time dimension)")
    ck.require(isinstance(model.hidden_dims, dict), "hidden_dims must be a dict of layer name -> width")
    for name, dim in model.hidden_dims.items():
        h = out.hidden.get(name)
        ck.require(h is not None, f"hidden_dims declares {name!r}, but ModelOutput.hidden has no such entry "
                                  f"(it has: {', '.join(out.hidden) or 'none'})")
        ck.require(isinstance(h, torch.Tensor) and h.dim() == 3 and h.shape[0] == batch and h.shape[2] == dim,
                   f"hidden[{name!r}] has shape {_shape(h)}; expected (batch={batch}, time, {dim}) as hidden_dims says")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _cached_form(teacher: Model, feats: Features, layers: tuple[str, ...], task: Task | None = None) -> ModelOutput:
    """Teacher outputs as a KD loss receives them from the cache: trimmed per utterance,
    stored in fp16, re-padded, with only the hidden layers the loss declared. With ``task``,
    teacher-forced through its ``train_forward`` on the batch (``Loss.teacher_forcing``)."""
    with torch.no_grad():
        if task is not None:
            out = task.train_forward(teacher, feats.features, feats.lengths, feats.batch)
        else:
            out = teacher(feats.features, feats.lengths)
    items = dict(zip(feats.batch.ids, split_output(out, layers)))
    return TeacherOutputStore({0: items}, layers).batch(feats.batch.ids, 0)


def _one_step() -> TrainingConfig:
    return TrainingConfig(steps=1, batch_size=4, warmup_steps=0)


class _EagerTarget(Target):
    def prepare(self, model: nn.Module) -> nn.Module:
        return model.eval()


# ---- the checks -------------------------------------------------------------------------

def check_loaded(plugin: str, registry: Registry | None = None) -> LoadedPlugin:
    """``plugin`` (an entry-point name) loaded from an installed distribution, implements at
    least one hook, and caused no load problem (import error, name clash, failing hook)."""
    registry = registry or build_registry()
    loaded = next((p for p in registry.plugins if p.name == plugin), None)
    mine = [p for p in registry.problems if f"'{plugin}'" in p]
    if loaded is None:
        problems = "".join(f"\n  {p}" for p in mine or registry.problems)
        raise ConformanceError(f"plugin {plugin!r} is not loaded (loaded: {', '.join(p.name for p in registry.plugins)}"
                               f"); is it installed, with `[project.entry-points.kdbench] {plugin} = \"module\"`, "
                               f"and selected by KDBENCH_LOAD_PLUGINS?{problems}")
    if mine:
        raise ConformanceError(f"plugin {plugin!r}: " + "; ".join(mine))
    if not loaded.distribution or not loaded.version:
        raise ConformanceError(f"plugin {plugin!r} has no distribution metadata: it must load through an entry point")
    if not loaded.hooks:
        raise ConformanceError(f"plugin {plugin!r} implements no kdbench hook (misspelt, or missing @hookimpl?)")
    return loaded


def check_dataset(component: Any, options: Options | dict | None = None, *, cache_dir: str | Path | None = None,
                  task: str | None = None, frontend: str | None = None, registry: Registry | None = None,
                  plugin: str | None = None) -> Corpus:
    """``load()`` returns a Corpus with a training set, named test sets, unique ids, info and a
    fingerprint that is stable across loads; the task and front end turn every split into
    features (by default the task of the dataset's plugin and that task's kit front end)."""
    registry = registry or get_registry()
    ck = _Checker(_component("datasets", component, registry, plugin))
    opts = _options(ck, options)
    with tempfile.TemporaryDirectory(prefix="kdbench-kit-") as tmp:
        corpora = []
        for _ in range(2):  # twice: the fingerprint is a cache key, so it must not drift
            dataset = _build(ck, opts, cache_dir=Path(cache_dir or tmp))
            ck.require(callable(getattr(dataset, "load", None)), f"its factory returned {type(dataset).__name__}, "
                                                                  "which has no load() -> kdbench.interfaces.Corpus")
            with ck.step("load()"):
                corpora.append(dataset.load())
    corpus, again = corpora
    ck.require(isinstance(corpus, Corpus), f"load() returned {type(corpus).__name__}, not kdbench.interfaces.Corpus")
    ck.require(isinstance(corpus.train, list) and corpus.train, "the training split is empty")
    ck.require(isinstance(corpus.tests, dict) and corpus.tests, "there are no test sets (Corpus.tests is empty)")
    for split, examples in {"train": corpus.train, **corpus.tests}.items():
        ck.require(isinstance(examples, list) and examples, f"split {split!r} is empty")
        bad = next((e for e in examples if not isinstance(e, Example)), None)
        ck.require(bad is None, f"split {split!r} holds a {type(bad).__name__}, not kdbench.interfaces.Example")
    ids = [e.id for e in corpus.train] + [e.id for t in corpus.tests.values() for e in t]
    dup = next((i for i, count in Counter(ids).items() if count > 1), None)
    ck.require(dup is None, f"example id {dup!r} occurs twice: ids key cached teacher outputs and predictions, "
                            "so they must be unique within the corpus")
    ck.require(isinstance(corpus.info, dict), "info must be a dict (front ends and augmentations read it)")
    ck.require(isinstance(corpus.fingerprint, str) and corpus.fingerprint, "fingerprint must be a non-empty string")
    ck.require(again.fingerprint == corpus.fingerprint and [e.id for e in again.train] == [e.id for e in corpus.train],
               "two loads with the same options give different fingerprints or ids: caches keyed by them would "
               "never hit (draw random choices from a seeded generator)")
    task = task or default_task(registry, ck.component.plugin)[0].name
    with ck.step(f"preparing it with the {task!r} task" + (f" and {frontend!r} front end" if frontend else "")):
        bench = tiny_bench(registry, task=task, frontend=frontend, corpus=corpus, plugin=ck.component.plugin)
        for examples in [corpus.train, *corpus.tests.values()]:
            bench.pipeline(examples[:2])
    return corpus


def check_frontend(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                   registry: Registry | None = None, plugin: str | None = None) -> Frontend:
    """A fixed module mapping (inputs, lengths) to (features (B, T, output_dim), lengths),
    deterministic and independent of batch-mates (it is part of every teacher-output cache key)."""
    ck, bench = _setup("frontends", component, bench, registry, plugin)
    fe = _build(ck, _options(ck, options), corpus_info=bench.corpus.info)
    ck.require(isinstance(fe, Frontend), f"its factory returned {type(fe).__name__}; it must return a "
                                         "kdbench.interfaces.Frontend (a torch.nn.Module)")
    ck.require(isinstance(fe.output_dim, int) and fe.output_dim > 0, f"output_dim is {fe.output_dim!r}; "
                                                                      "it must be the feature size (> 0)")
    trainable = [n for n, p in fe.named_parameters() if p.requires_grad]
    ck.require(not trainable, f"it has trainable parameters {trainable[:3]} that kdbench never trains: a front end "
                              "is a fixed transform (freeze them with requires_grad_(False))")
    batch = bench.task.collate(bench.corpus.train[:4])
    with ck.step("forward(inputs, lengths)"), torch.no_grad():
        result = fe(batch.inputs, batch.input_lengths)
        again = fe(batch.inputs, batch.input_lengths)
    ck.require(isinstance(result, tuple) and len(result) == 2, "forward must return (features, lengths)")
    feats, lengths = result
    b = len(batch.ids)
    if isinstance(feats, torch.Tensor) and not feats.is_floating_point():
        # token ids (a text front end): (batch, time) ids in a vocabulary of output_dim symbols
        ck.require(feats.dim() == 2 and feats.shape[0] == b,
                   f"token features have shape {_shape(feats)}; expected (batch={b}, time) ids")
        ck.require(bool(((feats >= 0) & (feats < fe.output_dim)).all()),
                   f"token ids fall outside 0..{fe.output_dim - 1} (output_dim is the vocabulary size)")
        example = fe.example_features(7)
        ck.require(example.shape == (1, 7) and example.dtype == feats.dtype,
                   f"example_features(7) gives {_shape(example)} {example.dtype}; expected (1, 7) {feats.dtype}, "
                   "what ONNX export feeds the model")
    else:
        ck.require(isinstance(feats, torch.Tensor) and feats.dim() == 3 and feats.shape[0] == b
                   and feats.shape[2] == fe.output_dim,
                   f"features have shape {_shape(feats)}; expected (batch={b}, time, output_dim={fe.output_dim})")
        ck.require(bool(torch.isfinite(feats).all()), "features contain NaN or inf")
    ck.require(isinstance(lengths, torch.Tensor) and lengths.shape == (b,)
               and bool(((lengths >= 1) & (lengths <= feats.shape[1])).all()),
               f"lengths {getattr(lengths, 'tolist', lambda: lengths)()} must be ({b},) within 1..{feats.shape[1]}")
    ck.require(torch.equal(feats, again[0]), "two calls on the same input differ: a front end must be deterministic")
    i = int(batch.input_lengths.argmin())  # the utterance with the most padding around it
    with torch.no_grad():
        alone, alone_len = fe(batch.inputs[i:i + 1, :int(batch.input_lengths[i])], batch.input_lengths[i:i + 1])
    n = int(lengths[i])
    ck.require(int(alone_len[0]) == n and torch.allclose(alone[0, :n], feats[i, :n], atol=1e-4, rtol=1e-3),
               f"utterance {i}'s features change when it is batched with longer ones (max difference "
               f"{_max_diff(alone[0, :n], feats[i, :n]):.3g}): process each utterance's valid samples only")
    return fe


def check_augmentation(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                       registry: Registry | None = None, plugin: str | None = None) -> Augmentation:
    """Replayable (all randomness from the generator passed in), no in-place change of its
    input, and usable inside the input pipeline."""
    ck, bench = _setup("augmentations", component, bench, registry, plugin)
    aug = _build(ck, _options(ck, options), corpus_info=bench.corpus.info)
    ck.require(isinstance(aug, Augmentation), f"its factory returned {type(aug).__name__}; it must return a "
                                              "kdbench.interfaces.Augmentation")
    ck.require(aug.stage in ("input", "features"), f"stage is {aug.stage!r}; it must be 'input' or 'features'")
    example = bench.corpus.train[2]
    if aug.stage == "input":
        x = example.input
    else:
        feats = bench.pipeline([example])
        x = feats.features[0, :int(feats.lengths[0])]
    original = x.clone()
    outputs = []
    for global_seed in (1, 2):  # a different global RNG state must not change the result
        torch.manual_seed(global_seed)
        with ck.step("__call__(x, generator)"):
            outputs.append(aug(x, torch.Generator().manual_seed(1234)))
    y, y2 = outputs
    ck.require(torch.equal(x, original), "it modified its input in place: clone before writing "
                                         "(the same example is replayed for teacher and student)")
    ck.require(isinstance(y, torch.Tensor) and y.dim() == x.dim(),
               f"it returned {_shape(y)} for an input of shape {tuple(x.shape)}; it must return a tensor of the same rank")
    if aug.stage == "features":
        ck.require(y.shape == x.shape, f"a 'features' augmentation must keep the shape {tuple(x.shape)}, got {_shape(y)}")
    ck.require(bool(torch.isfinite(y).all()), "its output contains NaN or inf")
    ck.require(y.shape == y2.shape and torch.equal(y, y2),
               "two calls with identically seeded generators differ: draw all randomness from the `generator` "
               "argument (not torch's global RNG), or cached teacher outputs will not match the student's input")
    pipeline = InputPipeline(bench.task, bench.frontend, [aug], salt="kdbench.testing")
    with ck.step("running inside the input pipeline"):
        first, second = (pipeline(bench.corpus.train[:4], copy=0) for _ in range(2))
    ck.require(torch.equal(first.features, second.features), "the same augmented copy differs between two replays")
    return aug


def check_student(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                  registry: Registry | None = None, plugin: str | None = None) -> Model:
    """Builds from ModelSpec; forward gives ModelOutput with output (B, T, output_dim), lengths
    in 1..T and the hidden layers hidden_dims declares; eval mode is deterministic; one training
    step with the task's default loss changes its weights; its state_dict reloads."""
    return _check_model("students", component, options, bench, registry, plugin, batch_independent=False)


def check_teacher(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                  registry: Registry | None = None, plugin: str | None = None) -> Model:
    """As ``check_student``, and an utterance's outputs do not depend on its batch-mates (its
    outputs are cached per utterance and replayed in other batches), and they survive the cache."""
    return _check_model("teachers", component, options, bench, registry, plugin, batch_independent=True)


def _check_model(kind: str, component: Any, options: Any, bench: Bench | None, registry: Registry | None,
                 plugin: str | None, batch_independent: bool) -> Model:
    ck, bench = _setup(kind, component, bench, registry, plugin)
    opts, spec = _options(ck, options), bench.model_spec
    model = _build(ck, opts, model_spec=spec)
    ck.require(isinstance(model, Model), f"its factory returned {type(model).__name__}; it must return a "
                                         "kdbench.interfaces.Model (forward(features, lengths) -> ModelOutput)")
    feats = bench.features()
    model.eval()
    with ck.step("forward(features, lengths) in eval mode"), torch.no_grad():
        out = model(feats.features, feats.lengths)
        again = model(feats.features, feats.lengths)
    _check_output(ck, model, out, len(feats.batch.ids), spec)
    ck.require(torch.allclose(out.output, again.output, atol=1e-5),
               "two forward passes in eval mode differ: evaluations would not be reproducible")
    if batch_independent:
        i = int(feats.lengths.argmin())
        with torch.no_grad():
            alone = model(feats.features[i:i + 1, :int(feats.lengths[i])], feats.lengths[i:i + 1])
        n = int(out.lengths[i])
        ck.require(int(alone.lengths[0]) == n, f"utterance {i} has {int(alone.lengths[0])} output frames alone "
                                               f"but {n} when batched with longer ones: lengths must not depend on padding")
        ck.require(torch.allclose(alone.output[0, :n], out.output[i, :n], atol=1e-4, rtol=1e-3),
                   f"utterance {i}'s outputs change when it is batched with longer ones (max difference "
                   f"{_max_diff(alone.output[0, :n], out.output[i, :n]):.3g}): mask padded frames, or cached "
                   "teacher outputs will not match this teacher inside a batch")
        layers = tuple(model.hidden_dims)
        with ck.step("storing its outputs in the teacher-output cache"):
            cached = _cached_form(model, feats, layers)
        ck.require(all(torch.allclose(cached.output[j, :k], out.output[j, :k], atol=1e-2, rtol=1e-2)
                       for j, k in enumerate(out.lengths.tolist())),
                   "its outputs do not survive the teacher-output cache (stored per utterance in fp16)")
    ck.require(any(p.requires_grad for p in model.parameters()),
               "it has no trainable parameters: a teacher or student must learn in a training step")
    loss_name = bench.task.default_loss
    loss = bench.registry.get("losses", loss_name).build(student=model, teacher=None, task=bench.task)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with ck.step(f"one training step with the {loss_name!r} loss (kdbench.training.train)"):
        train(model, loss, bench.pipeline, bench.corpus.train, _one_step(), seed=0)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    ck.require(not unused, f"parameters {unused[:3]} got no gradient in a training step: unused layers never "
                           "train and inflate the params metric")
    ck.require(any(not torch.equal(before[n], p) for n, p in model.named_parameters()),
               "no parameter changed in a training step (are they all frozen?)")
    fresh = _build(ck, opts, model_spec=spec)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    with ck.step("loading its state_dict into a freshly built model (how kdbench restores checkpoints)"):
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        ck.require(torch.allclose(fresh.eval()(feats.features, feats.lengths).output,
                                  model.eval()(feats.features, feats.lengths).output, atol=1e-5),
                   "a freshly built model loaded with its state_dict gives other outputs: keep all state in "
                   "parameters or registered buffers")
    return model


def check_loss(component: Any, options: Options | dict | None = None, *, student: Model | None = None,
               teacher: Model | None = None, bench: Bench | None = None, registry: Registry | None = None,
               plugin: str | None = None) -> Loss:
    """A finite scalar with gradients reaching the student's outputs; ``requires_teacher`` and
    ``teacher_layers_for`` declared on the factory (the planner reads them before building);
    works on teacher outputs as the cache returns them (teacher-forced through the task's
    ``train_forward`` when the loss declares ``teacher_forcing``), at another frame rate than the
    student's; its own parameters train in a real training step."""
    ck, bench = _setup("losses", component, bench, registry, plugin)
    opts, spec = _options(ck, options), bench.model_spec
    student = student or bench.student()
    teacher = teacher or bench.teacher()
    factory = ck.component.factory
    declared = getattr(factory, "requires_teacher", False)
    ck.require(isinstance(declared, bool), f"requires_teacher is {declared!r}; it must be a bool class attribute")
    with ck.step("teacher_layers_for(options)"):
        layers = tuple(getattr(factory, "teacher_layers_for", lambda _: ())(opts))
    ck.require(all(isinstance(x, str) for x in layers), f"teacher_layers_for returned {layers!r}; it must be layer names")
    missing = [x for x in layers if x not in teacher.hidden_dims]
    ck.require(not missing, f"it reads teacher layers {missing} the check's teacher lacks "
                            f"(it has {list(teacher.hidden_dims)}): pass teacher=<a Model that has them>")
    loss = _build(ck, opts, student=student, teacher=teacher if declared else None, task=bench.task)
    ck.require(isinstance(loss, Loss), f"its factory returned {type(loss).__name__}; it must return a "
                                       "kdbench.interfaces.Loss (a torch.nn.Module)")
    ck.require(loss.requires_teacher == declared,
               f"the built loss says requires_teacher={loss.requires_teacher} but its factory says {declared}: the "
               "planner reads it from the factory before building, so declare it as a class attribute")
    forcing = getattr(factory, "teacher_forcing", False)
    ck.require(isinstance(forcing, bool), f"teacher_forcing is {forcing!r}; it must be a bool class attribute")
    forced_by = bench.task if forcing else None
    feats = bench.features()
    t_out = _cached_form(teacher.eval(), feats, layers, forced_by) if declared else None
    s = student.train()(feats.features, feats.lengths)
    # leaves, so we can see whether gradients reach the student's outputs
    leaf = ModelOutput(s.output.detach().requires_grad_(), s.lengths,
                       {k: v.detach().requires_grad_() for k, v in s.hidden.items()})
    hint = f" (a KD loss sees only the teacher layers its teacher_layers_for declares: {list(layers)})" if declared else ""
    with ck.step("forward(student, batch, teacher)", hint):
        value = loss(leaf, feats.batch, t_out)
    ck.require(isinstance(value, torch.Tensor), f"it returned {type(value).__name__}; it must return a torch.Tensor")
    ck.require(value.dim() == 0, f"it returned a tensor of shape {tuple(value.shape)}; it must return a scalar "
                                 "(0-dim) tensor: reduce over the batch and frames")
    ck.require(bool(torch.isfinite(value)), f"it returned {value.item()}; the loss must be finite")
    ck.require(value.requires_grad, "it returned a tensor without gradient (detached, .item(), or computed under "
                                    "no_grad): the student cannot learn from it")
    value.backward()
    grads = [t.grad for t in (leaf.output, *leaf.hidden.values()) if t.grad is not None]
    ck.require(any(bool(g.abs().sum() > 0) for g in grads),
               "no gradient reaches the student's outputs (ModelOutput.output or hidden)")
    ck.require(all(bool(torch.isfinite(g).all()) for g in grads), "its gradient contains NaN or inf")
    source = (lambda f, _copy: _cached_form(teacher, f, layers, forced_by)) if declared else None
    with ck.step("one training step (kdbench.training.train)", hint):
        train(student, loss, bench.pipeline, bench.corpus.train, _one_step(), seed=0, teacher=source)
    unused = [n for n, p in loss.named_parameters() if p.requires_grad and p.grad is None]
    ck.require(not unused, f"its own parameters {unused[:3]} got no gradient in a training step")
    return loss


def _check_measurements(ck: _Checker, measurements: Any, where: str, total: int | None) -> list[Measurement]:
    ck.require(isinstance(measurements, list) and measurements,
               f"compute() {where} returned {measurements!r}; it must return a non-empty list of Measurement")
    names = []
    for m in measurements:
        ck.require(isinstance(m, Measurement), f"compute() {where} returned a {type(m).__name__}, not a Measurement")
        label = f"measurement {m.name!r} {where}"
        ck.require(isinstance(m.name, str) and m.name and "/" not in m.name,
                   f"{label}: the name must be a non-empty string without '/' (kdbench adds '<split>/')")
        names.append(m.name)
        ck.require(isinstance(m.unit, str) and m.unit.strip(),
                   f"{label} has no unit: set Measurement.unit (e.g. '%', 'ms', 'MB', 'count', 'ratio')")
        ck.require(isinstance(m.higher_is_better, bool), f"{label}: higher_is_better must be a bool, got "
                                                         f"{m.higher_is_better!r} (leaderboards sort by it)")
        ck.require(isinstance(m.value, (int, float)) and not isinstance(m.value, bool),
                   f"{label}: value {m.value!r} ({type(m.value).__name__}) must be a Python float")
        if m.coverage is not None:
            ok = (isinstance(m.coverage, tuple) and len(m.coverage) == 2 and all(isinstance(c, int) for c in m.coverage)
                  and 0 <= m.coverage[0] <= m.coverage[1] and (total is None or m.coverage[1] == total))
            ck.require(ok, f"{label}: coverage {m.coverage!r} must be (scored, total) with 0 <= scored <= total"
                           + (f" and total = {total} utterances" if total is not None else ""))
        if math.isnan(m.value):
            ck.require(m.coverage is not None and (m.coverage[0] < m.coverage[1] or m.coverage == (0, 0)),
                       f"{label} is NaN without coverage saying what could not be scored (set coverage=(scored, total))")
        else:
            ck.require(math.isfinite(m.value), f"{label} is {m.value}; report NaN (with coverage) rather than inf")
        try:
            json.dumps(m.__dict__)
        except (TypeError, ValueError) as exc:
            ck.fail(f"{label} cannot be stored as JSON ({exc})")
    dup = next((n for n in names if names.count(n) > 1), None)
    ck.require(dup is None, f"compute() {where} returned two measurements named {dup!r}")
    return measurements


def check_metric(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                 registry: Registry | None = None, empty_prediction: Any = None, plugin: str | None = None) -> Metric:
    """Every Measurement declares a unit and higher_is_better, has a JSON-storable float value
    and a valid coverage; a 'split' metric returns NaN with coverage (0, 0) rather than raising
    or inventing a number when a test set is empty, and copes with empty predictions (by
    default the bench's ``KitInputs.empty_prediction``: an empty transcript, a silent clip)."""
    ck, bench = _setup("metrics", component, bench, registry, plugin)
    metric = _build(ck, _options(ck, options))
    ck.require(isinstance(metric, Metric), f"its factory returned {type(metric).__name__}; it must return a "
                                           "kdbench.interfaces.Metric")
    ck.require(metric.scope in ("split", "model"), f"scope is {metric.scope!r}; it must be 'split' or 'model'")
    model = bench.teacher()
    with ck.step("compute() on a model evaluated by kdbench.evaluation.evaluate"):
        result = evaluate(model, bench.frontend, bench.task, bench.corpus.tests, [metric], _EagerTarget())
    if metric.scope == "model":
        _check_measurements(ck, result.measurements, "on a model", None)
        return metric
    for m in result.measurements:  # evaluate() prefixed the split; check the metric's own name
        m.name = m.name.split("/", 1)[1]
    tests = bench.corpus.tests["test"]
    _check_measurements(ck, result.measurements, "on a test set", len(tests))
    refs = [bench.task.reference(e) for e in tests]
    if empty_prediction is None:
        empty_prediction = bench.inputs.empty_prediction
    empty = Evaluation("test", list(tests), [empty_prediction] * len(tests), refs, None, model, None)
    with ck.step(f"compute() when every prediction is {empty_prediction!r}"):
        measurements = metric.compute(empty)
    _check_measurements(ck, measurements, f"when every prediction is {empty_prediction!r}", len(tests))
    nothing = Evaluation("test", [], [], [], None, model, None)
    with ck.step("compute() on an empty test set", " (return NaN with coverage=(0, 0) instead)"):
        measurements = metric.compute(nothing)
    for m in _check_measurements(ck, measurements, "on an empty test set", 0):
        ck.require(math.isnan(m.value) and m.coverage == (0, 0),
                   f"on an empty test set, measurement {m.name!r} is {m.value} with coverage {m.coverage}: "
                   "a metric that scored nothing must return NaN with coverage=(0, 0), not a number that "
                   "looks like a result")
    return metric


class _Timing(Metric):
    scope = "model"

    def compute(self, ev: Evaluation) -> list[Measurement]:
        times = []
        for example in ev.examples[:2]:
            start = time.perf_counter()
            ev.run(example)
            times.append(time.perf_counter() - start)
        return [Measurement("latency_ms", 1000 * min(times), "ms", False)]


def check_target(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                 registry: Registry | None = None, require_available: bool = False,
                 plugin: str | None = None) -> Target:
    """``available()`` returns (bool, reason); if available, ``prepare`` returns a module that
    runs and gives outputs of the eager model's shapes, ``artifact_bytes`` is a positive int,
    ``describe()`` is JSON, and a model is evaluated and timed on it by kdbench.evaluation."""
    ck, bench = _setup("targets", component, bench, registry, plugin)
    target = _build(ck, _options(ck, options))
    ck.require(isinstance(target, Target), f"its factory returned {type(target).__name__}; it must return a "
                                           "kdbench.interfaces.Target")
    with ck.step("available()"):
        availability = target.available()
    ck.require(isinstance(availability, tuple) and len(availability) == 2 and isinstance(availability[0], bool)
               and isinstance(availability[1], str),
               f"available() returned {availability!r}; it must return (bool, str): can this machine run the "
               "target, and if not, why")
    ok, reason = availability
    if not ok:
        ck.require(reason.strip(), "available() says False without a reason (shown in the leaderboard)")
        ck.require(not require_available, f"not available on this machine: {reason}")
        return target
    with ck.step("describe()"):
        description = target.describe()
    try:
        json.dumps(description)
    except (TypeError, ValueError) as exc:
        ck.fail(f"describe() must return a JSON-serialisable dict (it is stored with every evaluation): {exc}")
    threads = torch.get_num_threads()  # targets may set thread counts; do not leak them into the caller
    try:
        model = bench.teacher()
        batch = bench.task.collate(bench.corpus.tests["test"])
        with torch.no_grad():
            eager = Deployable(bench.frontend, model).eval()(batch.inputs, batch.input_lengths)
        with ck.step("prepare(model)"):
            prepared = target.prepare(Deployable(bench.frontend, model).eval())
        ck.require(isinstance(prepared, nn.Module), f"prepare returned {type(prepared).__name__}; it must return "
                                                    "the model as it runs there (a torch.nn.Module)")
        with ck.step("running the prepared model"), torch.inference_mode():
            out = prepared(batch.inputs, batch.input_lengths)
        ck.require(isinstance(out, ModelOutput) and out.output.shape == eager.output.shape
                   and torch.equal(out.lengths, eager.lengths),
                   f"the prepared model returned {type(out).__name__} with output "
                   f"{_shape(getattr(out, 'output', None))}; the model gives {tuple(eager.output.shape)}")
        with ck.step("artifact_bytes(prepared model)"):
            size = target.artifact_bytes(prepared)
        ck.require(isinstance(size, int) and size > 0, f"artifact_bytes returned {size!r}; it must be a positive int")
        with ck.step("evaluating and timing a model on it (kdbench.evaluation.evaluate)"):
            result = evaluate(model, bench.frontend, bench.task, bench.corpus.tests, [_Timing()], target)
        latency = result.as_dict()["latency_ms"]
        ck.require(math.isfinite(latency) and latency > 0, f"timing a run gave {latency} ms")
    finally:
        torch.set_num_threads(threads)
    return target


CHECKS = {
    "datasets": check_dataset, "frontends": check_frontend, "augmentations": check_augmentation,
    "teachers": check_teacher, "students": check_student, "losses": check_loss, "metrics": check_metric,
    "targets": check_target,
}


def check_component(kind: str, name: str, options: Options | dict | None = None, **kwargs: Any) -> Any:
    """Run the check for ``kind`` (a registry kind: 'students', 'losses', ...) on ``name``;
    ``kwargs`` go to that check (``plugin=``, ``bench=``, ``registry=`` ...)."""
    if kind not in CHECKS:
        raise ValueError(f"no conformance check for {kind!r}; there are checks for {', '.join(CHECKS)}")
    return CHECKS[kind](name, options, **kwargs)


def check_plugin(plugin: str, options: dict[str, dict] | None = None, *,
                 registry: Registry | None = None) -> list[tuple[str, str]]:
    """``check_loaded(plugin)``, then the check of every component it registers (tasks,
    reporters and executors have none). ``options`` maps a component name to its options.
    Returns the (kind, name) pairs checked."""
    registry = registry or build_registry()
    check_loaded(plugin, registry)
    options = options or {}
    checked = []
    for kind, components in registry.components.items():
        for name, component in sorted(components.items()):
            if component.plugin == plugin and kind in CHECKS:
                kwargs = {"cache_dir": None} if kind == "datasets" else {}
                CHECKS[kind](component, options.get(name), registry=registry, plugin=plugin, **kwargs)
                checked.append((kind, name))
    return checked
