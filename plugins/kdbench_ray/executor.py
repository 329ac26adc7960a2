"""The Ray executor: the suite's student runs as Ray tasks.

- Trainings run in parallel, ``train_cpus`` each (1 by default: small speech models gain little
  from a second thread, so two 1-thread trainings on 2 cores finish sooner than two in turn
  with 2 threads), or the suite's ``training.threads`` when it sets more.
- With ``quality_apart``, quality is measured side by side like trainings (the runner's
  ``measure_quality`` phase), before the timings. Off by default: on the default ASR suite it
  made the evaluations slower on a 2-core machine (docs/scale-out.md), since each target then
  exports and quantizes every model twice.
- Evaluations then time models, so each asks for ``evaluation_cpus``: by default all the CPUs of
  the smallest machine, hence one evaluation per machine at a time, run with that many torch
  threads (Ray sets ``OMP_NUM_THREADS`` to a task's CPUs; kdbench sets torch's threads too).
  ``timing_resource`` sends them only to machines that offer that custom resource, a dedicated
  node type (``ray start --resources='{"timing": 1}'``). Rows record the host they were timed on
  (``host.*`` provenance): rows timed on other hardware are never folded together.
- Ray retries a task whose worker died (``max_retries``); the job then finds what the dead one
  finished (run store, tracking keys: kdbench.tracking, kdbench.owner) and does the rest. An
  error of the job itself is recorded by the job and not retried.
- Every job reads the cache and writes the results folder the suite started with: the cluster
  needs a filesystem every machine mounts at the same path, checked before the first job
  (``ExecutorError`` names the machine and folder that cannot see it).

The teachers, their rows and their cached outputs are computed by the driver before any job.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import Field

from kdbench.errors import ExecutorError
from kdbench.interfaces import Executor, JobFailed
from kdbench.options import Options

#: the driver's settings a job needs wherever it runs: plugin selection, data and cache roots,
#: OpenMP's wait policy (kdbench/__init__.py), MLflow's HTTP retry bounds (kdbench.tracking)
FORWARDED_ENV = ("KDBENCH_", "MLFLOW_", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


class RayOptions(Options):
    address: str | None = Field(None, description="a running cluster ('auto', or host:port of its head); "
                                                  "none: start Ray on this machine for the suite")
    cpus: int | None = Field(None, ge=1, description="CPUs of the Ray started here (default: this machine's)")
    train_cpus: float = Field(1.0, gt=0, description="CPUs (and torch threads) per training job")
    evaluation_cpus: int | None = Field(None, ge=1, description="CPUs per evaluation job (default: all of the "
                                                                "smallest machine's, so one evaluation per machine)")
    timing_resource: str | None = Field(None, description="a custom Ray resource only timing machines offer")
    max_retries: int = Field(3, ge=0, description="retries of a job whose worker died (Ray's default)")
    quality_apart: bool = Field(False, description="measure quality side by side before the timings (worth a "
                                                   "second export per target when quality metrics are slow)")


def _ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install 'kdbench[ray]'") from None
    return ray


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the job's own exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def _run_job(fn: Callable[[Any], Any], job: Any, threads: int) -> Any:
    """One job in a Ray worker, as one attempt of its task (kdbench.owner)."""
    import ray
    import torch

    from kdbench.owner import in_task

    torch.set_num_threads(threads)  # a reused worker keeps the threads of its previous task otherwise
    with in_task(ray.get_runtime_context().get_task_id()):
        return fn(job)


def _sees(paths: dict[str, str]) -> dict[str, str]:
    """Which of the driver's marker files this machine cannot read: folder label -> problem."""
    import socket

    missing = {}
    for label, (path, token) in paths.items():
        try:
            if Path(path).read_text() != token:
                missing[label] = f"{path} holds another token"
        except OSError as exc:
            missing[label] = f"{Path(path).parent}: {exc.strerror or exc}"
    return {"host": socket.gethostname(), **missing}


class RayExecutor(Executor):
    distributed = True

    def __init__(self, options: RayOptions, shared: dict[str, Path] | None = None,
                 training_threads: int | None = None, **context):
        self.options = options
        # a suite that trains with N threads (training.threads) gets N CPUs per training, not fewer
        self.train_cpus = max(options.train_cpus, training_threads or 0)
        self.shared = {k: Path(v) for k, v in (shared or {}).items()}
        self.started_here = False
        self.checked = False
        self.quality_apart = options.quality_apart

    # ---- the cluster -------------------------------------------------------------------------
    def _connect(self):
        ray = _ray()
        if ray.is_initialized():
            return ray
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        o = self.options
        try:
            if o.address:
                ray.init(address=o.address, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
                         log_to_driver=False)
            else:
                # "local": a new instance even if a cluster a crash left behind is still named in /tmp/ray
                ray.init(address="local", num_cpus=o.cpus or os.cpu_count(), include_dashboard=False,
                         runtime_env={"env_vars": env}, logging_level=logging.WARNING, log_to_driver=False)
                self.started_here = True
        except Exception as exc:  # ConnectionError, a version mismatch, ...
            where = f"the Ray cluster at {o.address}" if o.address else "a local Ray instance"
            raise ExecutorError(f"cannot start or join {where}: {_first_line(exc)}") from None
        return ray

    def _nodes(self, ray) -> list[dict]:
        return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]

    def _check_shared(self, ray) -> None:
        """Every machine must see the cache and results folders the suite started with."""
        if self.checked or not self.shared:
            return
        token = uuid.uuid4().hex
        markers = {}
        for label, folder in self.shared.items():
            marker = folder / f".kdbench-node-check-{token}"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(token)
            markers[label] = (str(marker.resolve()), token)
        try:
            probe = ray.remote(_sees)
            refs = [probe.options(num_cpus=0, resources={f"node:{n['NodeManagerAddress']}": 0.001}).remote(markers)
                    for n in self._nodes(ray)]
            for seen in ray.get(refs):
                host = seen.pop("host")
                for label, problem in seen.items():
                    raise ExecutorError(f"machine {host} cannot see the {label} folder ({problem}): every machine "
                                        "must mount it at the same path (docs/scale-out.md)")
        finally:
            for path, _ in markers.values():
                Path(path).unlink(missing_ok=True)
        self.checked = True

    def _evaluation_cpus(self, ray) -> int:
        if self.options.evaluation_cpus:
            return self.options.evaluation_cpus
        nodes = self._nodes(ray)
        if self.options.timing_resource:
            nodes = [n for n in nodes if n["Resources"].get(self.options.timing_resource, 0) > 0] or nodes
        return max(1, int(min(n["Resources"]["CPU"] for n in nodes)))

    # ---- the Executor contract -------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        if not jobs:
            return []
        ray = self._connect()
        self._check_shared(ray)
        o = self.options
        if getattr(fn, "exclusive", False):
            cpus = self._evaluation_cpus(ray)
            resources = {o.timing_resource: 1} if o.timing_resource else None
        else:
            cpus, resources = self.train_cpus, None
        task = ray.remote(_run_job).options(num_cpus=cpus, resources=resources, max_retries=o.max_retries,
                                            retry_exceptions=False)
        refs = [task.remote(fn, job, max(1, int(cpus))) for job in jobs]
        results: list[Any] = []
        for ref in refs:
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:  # the worker (or its machine) died, retries spent
                results.append(JobFailed(_first_line(exc)))
        return results

    def close(self) -> None:
        if self.started_here:
            _ray().shutdown()
            self.started_here = False
