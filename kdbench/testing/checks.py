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
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from kdbench.alignment import layer_lengths
from kdbench.errors import AmbiguousComponentError, UnknownComponentError
from kdbench.evaluation import Deployable, evaluate
from kdbench.interfaces import (Augmentation, Compression, Batch, Corpus, Evaluation, Example, Frontend, Loss, Measurement, Metric,
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


def _seeded_build(ck: _Checker, options: Options, seed: int, **context: Any) -> Any:
    """Built with torch's global generator seeded (and left as it was): the same draws on every
    run of the check, and other draws for another seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _build(ck, options, **context)


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
    ck.require(isinstance(out.hidden_lengths, dict), "hidden_lengths must be a dict of layer name -> lengths")
    for name, n in out.hidden_lengths.items():
        h = out.hidden.get(name)
        ck.require(h is not None, f"hidden_lengths gives lengths for {name!r}, which ModelOutput.hidden lacks")
        ck.require(isinstance(n, torch.Tensor) and n.shape == (batch,) and not n.is_floating_point()
                   and bool(((n >= 0) & (n <= h.shape[1])).all()),
                   f"hidden_lengths[{name!r}] must be an integer tensor of shape ({batch},) within 0..{h.shape[1]} "
                   f"(hidden[{name!r}]'s time dimension), got {_shape(n)} {getattr(n, 'tolist', lambda: n)()}")


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


def check_compression(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                      registry: Registry | None = None, plugin: str | None = None,
                      student: Model | None = None) -> Compression:
    """prepare() returns a student that still runs and trains (its optimiser is built after
    prepare), step() follows the schedule, finish() returns a Model, and restore() rebuilds the
    finished model from its state_dict on a fresh student: the same outputs, as a run's
    evaluation reads it back. ``student``: a stand-in the compression can handle (default: the
    task's stand-in student)."""
    ck, bench = _setup("compressions", component, bench, registry, plugin)
    compression = _build(ck, _options(ck, options), model_spec=bench.model_spec, frontend=bench.frontend)
    ck.require(isinstance(compression, Compression), f"its factory returned {type(compression).__name__}; it must "
                                                     "return a kdbench.interfaces.Compression")
    fresh = (lambda: bench.student()) if student is None else (lambda: _copy_module(student))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = fresh()
    with ck.step("prepare(model)", " (a student it cannot handle: raise ValueError naming the option)"):
        model = compression.prepare(model)
    ck.require(isinstance(model, Model), f"prepare returned {type(model).__name__}; it must return a kdbench Model")
    feats = bench.features()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    model.train()
    with ck.step("a training step on the prepared model"):
        out = bench.task.train_forward(model, feats.features, feats.lengths, feats.batch)
        out.output.float().pow(2).mean().backward()
        optimizer.step()
    ck.require(any(not torch.equal(a, p.detach()) for a, p in zip(before, params)),
               "a training step did not change the prepared model's weights")
    with ck.step("step(model, progress)"):
        for progress in (0.5, 1.0):
            compression.step(model, progress)
    with ck.step("finish(model)"):
        finished = compression.finish(model)
    ck.require(isinstance(finished, Model), f"finish returned {type(finished).__name__}; it must return a kdbench Model")
    finished.eval()
    buffer = io.BytesIO()
    torch.save(finished.state_dict(), buffer)
    with ck.step("restore(fresh student, torch.load(state_dict, weights_only=True))"):
        state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
        restored = compression.restore(fresh(), state)
    ck.require(isinstance(restored, Model), f"restore returned {type(restored).__name__}; it must return a kdbench Model")
    restored.eval()
    with torch.no_grad():
        a, b = finished(feats.features, feats.lengths), restored(feats.features, feats.lengths)
    ck.require(a.output.shape == b.output.shape and torch.allclose(a.output, b.output, atol=1e-5),
               "the restored model's outputs differ from the finished model's: restore must rebuild exactly what "
               "finish saved")
    return compression


def _copy_module(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def check_student(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                  registry: Registry | None = None, plugin: str | None = None) -> Model:
    """Builds from ModelSpec; forward gives ModelOutput with output (B, T, output_dim), lengths
    in 1..T, the hidden layers hidden_dims declares and valid hidden_lengths; eval mode is
    deterministic; an utterance's outputs and hidden layers (within each layer's valid frames)
    do not depend on its batch-mates, nor, in training mode, on how much padding the batch
    carries (normalisation layers); one training step with the task's default loss changes its
    weights, and a batch of one utterance trains without NaN; its state_dict reloads."""
    return _check_model("students", component, options, bench, registry, plugin, teacher=False)


def check_teacher(component: Any, options: Options | dict | None = None, *, bench: Bench | None = None,
                  registry: Registry | None = None, plugin: str | None = None) -> Model:
    """As ``check_student``, and its outputs survive the teacher-output cache (they are cached
    per utterance and replayed in other batches)."""
    return _check_model("teachers", component, options, bench, registry, plugin, teacher=True)


def _pad_time(x: torch.Tensor, extra: int) -> torch.Tensor:
    """``x`` (batch, time, ...) with ``extra`` more frames of zeros: the padding a longer batch-mate brings."""
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)


def _batch_independent(ck: _Checker, model: Model, feats: Features, out: ModelOutput, teacher: bool) -> None:
    """The shortest utterance alone gives what it gives inside the padded batch: output, lengths,
    and every hidden layer within that layer's valid frames (``kdbench.alignment.layer_lengths``)."""
    why = ("cached teacher outputs will not match this teacher inside a batch" if teacher else
           "kdbench evaluates in batches, so its predictions and every score would depend on which utterances "
           "share a batch")
    i = int(feats.lengths.argmin())
    with ck.step("forward on one utterance alone"), torch.no_grad():
        alone = model(feats.features[i:i + 1, :int(feats.lengths[i])], feats.lengths[i:i + 1])
    _check_output(ck, model, alone, 1, ModelSpec(0, out.output.shape[2]))
    n = int(out.lengths[i])
    ck.require(int(alone.lengths[0]) == n, f"utterance {i} has {int(alone.lengths[0])} output frames alone "
                                           f"but {n} when batched with longer ones: lengths must not depend on padding")
    ck.require(torch.allclose(alone.output[0, :n], out.output[i, :n], atol=1e-4, rtol=1e-3),
               f"utterance {i}'s outputs change when it is batched with longer ones (max difference "
               f"{_max_diff(alone.output[0, :n], out.output[i, :n]):.3g}): mask padded frames (convolutions, "
               f"recurrences, attention and normalisation must see valid frames only): {why}")
    for name in model.hidden_dims:
        k_alone, k = int(layer_lengths(alone, name)[0]), int(layer_lengths(out, name)[i])
        ck.require(k_alone == k, f"hidden[{name!r}] of utterance {i} has {k_alone} valid frames alone but {k} when "
                                 f"batched with longer ones: a layer whose frames are not a fixed multiple of the "
                                 f"output's gives its own lengths in ModelOutput.hidden_lengths[{name!r}] (else "
                                 "kdbench infers them from the output's, and hint losses read padding)")
        a, b = alone.hidden[name][0, :k], out.hidden[name][i, :k]
        if a.shape == b.shape:  # a layer may pad another axis too (attention over phonemes): not compared
            ck.require(torch.allclose(a, b, atol=1e-4, rtol=1e-3),
                       f"utterance {i}'s hidden[{name!r}] changes when it is batched with longer ones (max "
                       f"difference {_max_diff(a, b):.3g}) within its valid frames: mask padded frames, or a hint "
                       "loss reading this layer learns from its batch-mates")


@contextlib.contextmanager
def _left_as_it_was(model: nn.Module) -> Iterator[nn.Module]:
    """Run a trial on ``model`` itself (a deep copy can break a model whose hooks hold ``self``),
    then restore its state (running statistics), modes and gradients."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {m: m.training for m in model.modules()}
    try:
        yield model
    finally:
        model.load_state_dict(state)
        for m, training in modes.items():
            m.train(training)
        model.zero_grad(set_to_none=True)


def _norm_layers_ignore_padding(ck: _Checker, model: Model, feats: Features) -> None:
    """In training mode, normalisation layers with batch statistics (BatchNorm, InstanceNorm)
    must not count padded frames: the statistics, and the running averages evaluation uses,
    would follow how much padding each batch happened to carry."""
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if not norms:
        return
    with _left_as_it_was(model) as trial:
        trial.eval()
        for m in trial.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.train()  # everything else stays in eval mode: no dropout to tell apart from padding
        with ck.step("forward in training mode (normalisation layers training)"), torch.no_grad():
            a = trial(feats.features, feats.lengths)
            b = trial(_pad_time(feats.features, feats.features.shape[1]), feats.lengths)
    same = torch.equal(a.lengths, b.lengths) and all(torch.allclose(a.output[j, :k], b.output[j, :k], atol=1e-4,
                                                                    rtol=1e-3) for j, k in enumerate(a.lengths.tolist()))
    ck.require(same, f"in training mode its outputs change when the batch carries more padding: normalisation layers "
                     f"({', '.join(norms[:3])}) take statistics over padded frames, so training, and the running "
                     "statistics evaluation uses, depend on how much padding batches carry: normalise over valid "
                     "frames only (BatchNorm1d on x[mask], the valid frames, scattered back) or per frame (LayerNorm)")


def _trains_on_one(ck: _Checker, model: Model, bench: Bench, loss_name: str) -> None:
    """A training step on a batch of one utterance: the last batch of an epoch can hold one."""
    feats = bench.features(1)
    with _left_as_it_was(model) as trial:
        loss = bench.registry.get("losses", loss_name).build(student=trial, teacher=None, task=bench.task)
        with ck.step(f"a training step on a batch of one utterance with the {loss_name!r} loss"):
            torch.manual_seed(0)
            out = bench.task.train_forward(trial.train(), feats.features, feats.lengths, feats.batch)
            value = loss(out, feats.batch, None)
            value.backward()
        finite = bool(torch.isfinite(out.output).all()) and bool(torch.isfinite(value)) and all(
            bool(torch.isfinite(p.grad).all()) for p in trial.parameters() if p.grad is not None)
    ck.require(finite, f"on a batch of one utterance in training mode it gives NaN or inf (loss {value.item():.4g}, "
                       "or in its outputs or gradients): the last batch of an epoch can hold a single utterance; "
                       "guard statistics over the batch (BatchNorm over one frame, a std of one value)")


def _check_model(kind: str, component: Any, options: Any, bench: Bench | None, registry: Registry | None,
                 plugin: str | None, teacher: bool) -> Model:
    ck, bench = _setup(kind, component, bench, registry, plugin)
    opts, spec = _options(ck, options), bench.model_spec
    # a teacher that combines others (Model.combines) gets stand-in teachers for the ones it names
    members = (lambda: {name: bench.teacher() for name in getattr(opts, "teachers", [])}) \
        if getattr(ck.component.factory, "combines", False) else (lambda: {})
    extra = {"teachers": members()} if members() else {}
    model = _seeded_build(ck, opts, 1, model_spec=spec, **extra)
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
    _batch_independent(ck, model, feats, out, teacher)
    _norm_layers_ignore_padding(ck, model, feats)
    if teacher:
        layers = tuple(model.hidden_dims)
        with ck.step("storing its outputs in the teacher-output cache"):
            cached = _cached_form(model, feats, layers)
        ck.require(all(torch.allclose(cached.output[j, :k], out.output[j, :k], atol=1e-2, rtol=1e-2)
                       for j, k in enumerate(out.lengths.tolist())),
                   "its outputs do not survive the teacher-output cache (stored per utterance in fp16)")
    ck.require(any(p.requires_grad for p in model.parameters()),
               "it has no trainable parameters: a teacher or student must learn in a training step")
    loss_name = bench.task.default_loss
    _trains_on_one(ck, model, bench, loss_name)
    loss = bench.registry.get("losses", loss_name).build(student=model, teacher=None, task=bench.task)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with ck.step(f"one training step with the {loss_name!r} loss (kdbench.training.train)"):
        train(model, loss, bench.pipeline, bench.corpus.train, _one_step(), seed=0)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    ck.require(not unused, f"parameters {unused[:3]} got no gradient in a training step: unused layers never "
                           "train and inflate the params metric")
    ck.require(any(not torch.equal(before[n], p) for n, p in model.named_parameters()),
               "no parameter changed in a training step (are they all frozen?)")
    fresh = _seeded_build(ck, opts, 2, model_spec=spec, **({"teachers": members()} if extra else {}))  # other random draws: state outside the state_dict shows
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
    """``requires_teacher`` and ``teacher_layers_for`` declared on the factory (the planner reads
    them before building). On teacher outputs as the cache returns them (teacher-forced through
    the task's ``train_forward`` when the loss declares ``teacher_forcing``), at another frame
    rate than the student's: a finite scalar whose gradient reaches the student's output (not
    only hidden layers) and every student parameter the task's default loss trains; its value
    ignores padded frames of every piece it reads (each hidden layer within its own valid
    lengths); for a KD loss, other teacher outputs give the student another gradient; finite on
    a batch of one utterance; its own parameters train in a real training step."""
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
    hint = f" (a KD loss sees only the teacher layers its teacher_layers_for declares: {list(layers)})" if declared else ""

    def teacher_out(feats: Features) -> ModelOutput | None:
        return _cached_form(teacher.eval(), feats, layers, forced_by) if declared else None

    feats = bench.features()
    t_out = teacher_out(feats)
    student.train()
    with ck.step("the student's forward on the batch the loss gives it (student_batch, train_forward)", hint):
        out, batch = _student_step(loss, student, bench, feats, t_out)
    # leaves, so we can see which of the student's outputs the gradient reaches
    leaf = ModelOutput(out.output.detach().requires_grad_(), out.lengths,
                       {k: v.detach().requires_grad_() if v.is_floating_point() else v for k, v in out.hidden.items()},
                       dict(out.hidden_lengths))
    with ck.step("forward(student, batch, teacher)", hint):
        value = loss(leaf, batch, t_out)
    ck.require(isinstance(value, torch.Tensor), f"it returned {type(value).__name__}; it must return a torch.Tensor")
    ck.require(value.dim() == 0, f"it returned a tensor of shape {tuple(value.shape)}; it must return a scalar "
                                 "(0-dim) tensor: reduce over the batch and frames")
    ck.require(bool(torch.isfinite(value)), f"it returned {value.item()}; the loss must be finite")
    ck.require(value.requires_grad, "it returned a tensor without gradient (detached, .item(), or computed under "
                                    "no_grad): the student cannot learn from it")
    value.backward()
    grads = [t.grad for t in (leaf.output, *leaf.hidden.values()) if t.grad is not None]
    ck.require(any(bool(g.abs().sum() > 0) for g in grads),
               "no gradient reaches the student's outputs (neither ModelOutput.output nor any hidden layer)")
    ck.require(all(bool(torch.isfinite(g).all()) for g in grads), "its gradient contains NaN or inf")
    ck.require(leaf.output.grad is not None and bool(leaf.output.grad.abs().sum() > 0),
               "no gradient reaches the student's output (ModelOutput.output), only hidden layers: the output head "
               "would never train. Mix a loss on the output into it, e.g. (1 - alpha) * the task's loss (CTC)")
    _ignores_padding(ck, loss, leaf, feats, t_out, float(value.detach()), hint)
    with ck.step("a training step's gradient on the student's parameters", hint):
        own_value, own = _parameter_gradients(loss, student, bench, feats, t_out)
    _trains_what_the_task_loss_trains(ck, own, student, bench, feats)
    if declared:
        with ck.step("a training step's gradient with other teacher outputs", hint):
            other_value, other = _parameter_gradients(loss, student, bench, feats, _other_teacher(t_out))
        moved = any((a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-5, atol=1e-9))
                    for a, b in zip(own.values(), other.values()))
        # the teacher changed the value but not the student's gradient: the teacher's term is a
        # constant to the student (a term on detached student features, computed under no_grad)
        ck.require(moved or math.isclose(own_value, other_value, rel_tol=1e-6, abs_tol=1e-9),
                   f"other teacher outputs change its value ({own_value:.6g} -> {other_value:.6g}) but not the "
                   "gradient the student gets: its distillation term never reaches the student (computed on "
                   "detached student outputs, or under torch.no_grad), so distillation would silently do nothing")
    one = bench.features(1)
    with ck.step("a training step on a batch of one utterance", hint):
        one_value, one_grads = _parameter_gradients(loss, student, bench, one, teacher_out(one))
    ck.require(math.isfinite(one_value) and all(bool(torch.isfinite(g).all()) for g in one_grads.values()
                                                 if g is not None),
               f"on a batch of one utterance it gives {one_value} (or NaN/inf gradients): the last batch of an epoch "
               "can hold a single utterance; guard terms that need several (pairwise distances, batch statistics)")
    source = (lambda f, _copy: _cached_form(teacher, f, layers, forced_by)) if declared else None
    with ck.step("one training step (kdbench.training.train)", hint):
        train(student, loss, bench.pipeline, bench.corpus.train, _one_step(), seed=0, teacher=source)
    unused = [n for n, p in loss.named_parameters() if p.requires_grad and p.grad is None]
    ck.require(not unused, f"its own parameters {unused[:3]} got no gradient in a training step")
    return loss


def _student_step(loss: Loss, student: Model, bench: Bench, feats: Features,
                  teacher: ModelOutput | None) -> tuple[ModelOutput, Batch]:
    """The student's output on the batch ``loss`` trains it on, as ``kdbench.training.train``
    makes it: ``student_batch``, the front end again on replaced inputs, ``train_forward``."""
    batch = loss.student_batch(feats.batch, teacher)
    features, lengths = feats.features, feats.lengths
    if batch.inputs is not feats.batch.inputs:
        with torch.no_grad():
            features, lengths = bench.pipeline.frontend(batch.inputs, batch.input_lengths)
    return bench.task.train_forward(student, features, lengths, batch), batch


def _parameter_gradients(loss: Loss, student: Model, bench: Bench, feats: Features,
                         teacher: ModelOutput | None) -> tuple[float, dict[str, torch.Tensor | None]]:
    """The loss and its gradient on each trainable student parameter, in one training step's
    forward (dropout seeded, so two calls differ only by what they are given)."""
    torch.manual_seed(0)
    out, batch = _student_step(loss, student, bench, feats, teacher)
    value = loss(out, batch, teacher)
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, [p for _, p in named], allow_unused=True)
    return float(value.detach()), {n: g for (n, _), g in zip(named, grads)}


def _trains_what_the_task_loss_trains(ck: _Checker, grads: dict[str, torch.Tensor | None], student: Model,
                                      bench: Bench, feats: Features) -> None:
    """Every student parameter the task's default loss trains gets a gradient from this loss too,
    else that part of the student (its output head, a layer past the one a hint reads) never learns."""
    name = bench.task.default_loss
    try:
        default = bench.registry.get("losses", name).build(student=student, teacher=None, task=bench.task)
        trained = _parameter_gradients(default, student, bench, feats, None)[1]
    except Exception:  # the task's loss does not fit these stand-ins (another output type): nothing to compare
        return

    def shares(gradients: dict[str, torch.Tensor | None]) -> dict[str, float]:
        """Each parameter's gradient norm over the largest: a gradient that is zero but for
        rounding (a bias under a mean-removing loss) is no gradient."""
        norms = {n: float(g.norm()) if g is not None else 0.0 for n, g in gradients.items()}
        top = max(norms.values(), default=0.0) or 1.0
        return {n: v / top for n, v in norms.items()}

    by_default, by_this = shares(trained), shares(grads)
    starved = [n for n, share in by_default.items() if share > 1e-4 and by_this.get(n, 0.0) <= 1e-7]
    ck.require(not starved, f"student parameters {starved[:3]} get no gradient from it, though the task's loss "
                            f"{name!r} trains them: they would never learn (a loss on a hidden layer alone leaves the "
                            "layers after it, and the output head, untrained; mix in a loss on the output)")


def _other_teacher(t: ModelOutput) -> ModelOutput:
    """Another teacher, as far as a loss can tell: the channels of every piece reversed and each
    value scaled by its own factor in [1, 2) (signs and lengths kept, so durations stay
    durations; not an affine change, which a loss standardising the teacher's features undoes)."""
    g = torch.Generator().manual_seed(1)

    def other(x: torch.Tensor) -> torch.Tensor:
        # channels reversed: another best class per frame (sequence-level KD reads only the argmax)
        return x.flip(-1) * (1 + torch.rand(x.shape, generator=g)).to(x.dtype) if x.is_floating_point() else x

    return ModelOutput(other(t.output), t.lengths, {k: other(v) for k, v in t.hidden.items()}, dict(t.hidden_lengths))


def _fill_padding(x: torch.Tensor, lengths: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with every item's padded frames (from ``lengths[i]`` on) filled with its own valid
    frames repeated, each value scaled by a factor in [1, 2): values of the kind the piece
    holds (a duration stays a non-negative duration), which a loss reading padding would see."""
    g = torch.Generator().manual_seed(seed)
    x = x.detach().clone()
    for i, n in enumerate(int(n) for n in lengths.tolist()):
        pad = x.shape[1] - n
        if pad > 0 and n > 0:
            tiled = x[i, :n].repeat(-(-pad // n), *[1] * (x.dim() - 2))[:pad]
            x[i, n:] = tiled * (1 + torch.rand(tiled.shape, generator=g)).to(x.dtype)
    return x


def _with_piece(out: ModelOutput, layer: str | None, x: torch.Tensor) -> ModelOutput:
    """``out`` with its output (``layer`` None) or one hidden layer replaced by ``x``."""
    if layer is None:
        return ModelOutput(x, out.lengths, out.hidden, out.hidden_lengths)
    return ModelOutput(out.output, out.lengths, {**out.hidden, layer: x}, out.hidden_lengths)


def _ignores_padding(ck: _Checker, loss: Loss, leaf: ModelOutput, feats: Features, t_out: ModelOutput | None,
                     value: float, hint: str) -> None:
    """Noise in the padded frames of any piece the loss receives (the student's output and each
    hidden layer beyond its own valid lengths; the teacher's alike) must not change its value."""
    for seed, (who, out) in enumerate((("student", leaf), ("teacher", t_out))):
        if out is None:
            continue
        pieces = [(None, out.output, out.lengths, f"the {who}'s output (beyond its lengths)")]
        pieces += [(k, v, layer_lengths(out, k), f"the {who}'s hidden[{k!r}] (beyond layer_lengths({who}, {k!r}))")
                   for k, v in out.hidden.items() if v.is_floating_point()]
        for layer, x, lengths, what in pieces:
            changed = _with_piece(out, layer, _fill_padding(x, lengths, seed))
            s, t = (changed, t_out) if who == "student" else (leaf, changed)
            with ck.step(f"forward with noise in the padded frames of {what}", hint), torch.no_grad():
                again = float(loss(s, loss.student_batch(feats.batch, t), t))
            ck.require(abs(again - value) <= 1e-4 * max(1.0, abs(value)),
                       f"its value changes ({value:.6g} -> {again:.6g}) with noise in the padded frames of {what}: "
                       "read each piece within its own valid frames only. A hidden layer may run at another frame "
                       "rate than its model's output: its valid frames are kdbench.alignment.layer_lengths(output, "
                       "layer), not the output's lengths nor the other model's")


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
    default the bench's ``KitInputs.empty_prediction``: an empty transcript, a silent clip); a
    'model' metric times with kdbench.measurement, never a clock of its own."""
    ck, bench = _setup("metrics", component, bench, registry, plugin)
    metric = _build(ck, _options(ck, options))
    ck.require(isinstance(metric, Metric), f"its factory returned {type(metric).__name__}; it must return a "
                                           "kdbench.interfaces.Metric")
    ck.require(metric.scope in ("split", "model"), f"scope is {metric.scope!r}; it must be 'split' or 'model'")
    model = bench.teacher()
    with ck.step("compute() on a model evaluated by kdbench.evaluation.evaluate"), _own_clock_reads(metric) as reads:
        result = evaluate(model, bench.frontend, bench.task, bench.corpus.tests, [metric], _EagerTarget())
    if metric.scope == "model":
        ck.require(not reads, f"compute() reads the clock itself ({'; '.join(dict.fromkeys(reads))}): time the model "
                              "with kdbench.measurement (time_runs(evaluation.forward, inputs, warmup=, runs=), "
                              "cold_start, summarize), so it is timed as every model and target is: warm-up, one "
                              "perf_counter per call, percentiles only with enough runs, and the load of other "
                              "processes recorded (Timing.other_cores)")
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


#: the clocks a metric could time with instead of kdbench.measurement (functions of ``time``)
_CLOCKS = frozenset({"time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
                     "process_time", "process_time_ns", "thread_time", "thread_time_ns"})


@contextlib.contextmanager
def _own_clock_reads(metric: Metric) -> Iterator[list[str]]:
    """Where a model-scope metric's ``compute`` reads a clock other than through kdbench, as
    ``"time.time at metric.py:42"``: a profile hook sees every call of a clock function, however
    it was imported (``from time import perf_counter``, ``timeit``), and the stack says whose
    code asked for it: the metric's package (flagged), or kdbench's (the harness's timer)."""
    reads: list[str] = []
    package = type(metric).__module__.split(".")[0]
    compute = metric.compute

    def profile(frame, event, arg):
        if event != "c_call" or getattr(arg, "__self__", None) is not time or arg.__name__ not in _CLOCKS:
            return
        while frame is not None:
            module = frame.f_globals.get("__name__", "").split(".")[0]
            if module == "kdbench":
                return
            if module == package:
                reads.append(f"time.{arg.__name__} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
                return
            frame = frame.f_back

    def watched(evaluation: Evaluation) -> list[Measurement]:
        if metric.scope != "model":
            return compute(evaluation)
        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            return compute(evaluation)
        finally:
            sys.setprofile(previous)

    own = vars(metric).get("compute")
    metric.compute = watched  # on the instance, for this evaluation only
    try:
        yield reads
    finally:
        if own is None:
            del metric.compute
        else:
            metric.compute = own


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
    "compressions": check_compression,
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
