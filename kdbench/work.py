"""The work a runner hands its executor, in a form another process can do.

A suite's student runs go to the executor in phases: every training (``train``), then every
evaluation (``evaluate``, ``exclusive``: it times models, so it needs a machine's CPUs to itself).
An executor with ``quality_apart`` gets one more in between, ``measure_quality``: the quality
metrics, side by side, so the exclusive jobs only time.
Each job is a ``Work`` called on a small picklable argument (a run's index in the plan). A Work
names its runner by a ``RunnerSpec``: what the suite is and where its caches, results and
tracking store are. In the process that made the runner, the Work finds that very runner; in
any other process (a Ray worker, on this host or another) it builds an equal one from the spec
once, loading the corpus, the teachers and their cached outputs from the shared cache, and
tracking to the same store under the same parent run. So a local executor and a cluster run the
same code on the same inputs, and give the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: runners of this process, by spec id: the driver's own (``register``)
_RUNNERS: dict[str, Any] = {}
#: the one a worker built from a spec: a long-lived worker serves one suite at a time, and keeps
#: only the latest (each holds a corpus and teachers)
_BUILT: dict[str, Any] = {}


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a process needs to build the runner of one suite invocation."""

    suite: Any  # kdbench.suite.Suite, as read from the file (pydantic models pickle)
    path: str
    cache_root: str
    results_root: str
    #: (uri, experiment, parent run id) when tracked
    tracking: tuple[str, str, str | None] | None
    force: bool
    reevaluate: bool
    teacher_keys: dict[int, str]  # teachers the driver obtained (a missing one failed)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Work:
    """``runner.<method>(job)`` of the spec's runner, wherever it is called."""

    spec: RunnerSpec
    method: str
    #: the jobs time models: each needs a machine to itself (Executor contract)
    exclusive: bool = False

    def __call__(self, job: Any) -> Any:
        return getattr(runner_for(self.spec), self.method)(job)


def register(spec: RunnerSpec, runner: Any) -> None:
    _RUNNERS[spec.id] = runner


def forget(spec: RunnerSpec) -> None:
    _RUNNERS.pop(spec.id, None)


def runner_for(spec: RunnerSpec) -> Any:
    runner = _RUNNERS.get(spec.id) or _BUILT.get(spec.id)
    if runner is None:
        _BUILT.clear()
        runner = _BUILT[spec.id] = _build(spec)
    return runner


def _build(spec: RunnerSpec) -> Any:
    from kdbench.cache import Cache
    from kdbench.plugins import get_registry
    from kdbench.runner import Runner
    from kdbench.suite import resolve_suite
    from kdbench.tracking import Tracker

    registry = get_registry()
    rs = resolve_suite(spec.suite, registry, Path(spec.path))
    tracker = None
    if spec.tracking is not None:
        uri, experiment, _ = spec.tracking
        # no spool here: a worker's spooled run ids would mean nothing to the next phase's worker;
        # a server that stops answering fails the job's rows, and a rerun reuses what was done
        tracker = Tracker(uri, experiment)
    runner = Runner(rs, registry, cache=Cache(spec.cache_root), results_root=Path(spec.results_root),
                    tracker=tracker, force=spec.force, reevaluate=spec.reevaluate)
    runner.attach(spec)
    return runner
