"""MLflow tracking: one parent run per suite invocation, a child per distillation (or teacher),
and a grandchild per target evaluation, so targets added later nest under the same model.

Runs are idempotent by key: the runner names what each run is (``start(..., key=...)``), and a
rerun finds the run it logged before under the same parent instead of logging it again. A
FINISHED one is reused as it is (nothing new is logged to it); one that a killed process left
behind is resumed. Every run records the process writing it (host, pid, start time), so a run
left RUNNING by a process that has ended is told apart from one that is still being written:
the first is marked KILLED when the store is opened (and resumed if a rerun asks for it), the
second is never touched, so two invocations of one suite at once both work.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from kdbench import records
from kdbench.errors import TrackingError, TrackingUnreachable
from kdbench.hashing import stable_hash
from kdbench.owner import Owner

T = TypeVar("T")

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
TRACKING_ENV = "MLFLOW_TRACKING_URI"

log = logging.getLogger(__name__)


def resolve_tracking_uri(cli: str | None, suite: str | None) -> str:
    """CLI option, then ``MLFLOW_TRACKING_URI``, then the suite, then the embedded default."""
    return cli or os.environ.get(TRACKING_ENV) or suite or DEFAULT_TRACKING_URI


def flatten(prefix: str, obj: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(f"{prefix}.{i}", v))
    else:
        out[prefix] = str(obj)[:6000]
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc)


def with_retry(fn: Callable[[], T], attempts: int = 8, base_delay: float = 0.05) -> T:
    """Call ``fn``, retrying with jittered exponential backoff while sqlite says the database is
    locked: two suites writing one sqlite store serialise on its write lock, and MLflow's sqlite
    store surfaces that as an error instead of waiting (field notes: mlflow PR #6490)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not _locked(exc) or attempt == attempts - 1:
                raise
            time.sleep(base_delay * (2 ** attempt) * (1 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def _unreachable(uri: str, exc: BaseException) -> bool:
    """A server that does not answer (as opposed to one that refuses what we ask)."""
    if not uri.startswith(("http://", "https://")):
        return False
    text = str(exc)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                   "Failed to establish", "timed out", "Name or service not known",
                                   "Connection aborted", "RemoteDisconnected", "Connection reset"))


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve()
    return None


def _sqlite_dir(uri: str) -> Path | None:
    path = _sqlite_path(uri)
    return path.parent if path else None


#: How long a silent tracking server is waited for: MLflow's defaults (7 retries, backoff factor
#: 2, 120 s timeout) block a suite for about 4 minutes per call before kdbench can fall back to
#: the spool. 2 retries with backoff 1 (sleeps of 0-1 s, then 2-3 s, with MLflow's jitter) notice a
#: server that is down within a few seconds; the 20 s timeout still lets a busy server answer
#: and a checkpoint upload finish. (And no "View run" line from MLflow per finished run: kdbench
#: prints one link to the experiment.) A variable the user set is kept.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def bound_http_retries(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)  # MLflow reads them at every request


def store_lock(uri: str):
    """A lock shared by every kdbench process on this host that writes ``uri``: held while
    MLflow creates a new sqlite store's schema (two processes creating it at once fail with
    "table ... already exists"), and while a run is looked up and claimed by key (two processes
    must not both resume one abandoned run)."""
    from filelock import FileLock  # torch's dependency, so always installed with kdbench

    db = _sqlite_path(uri)
    # a server's stores share one lock file per host (held for moments), not one file per address
    path = db.with_name(db.name + ".lock") if db else Path(tempfile.gettempdir()) / "kdbench-tracking.lock"
    return FileLock(str(path), timeout=600)


def _owner_tags(owner: Owner) -> dict[str, str]:
    return {records.OWNER + k: str(v) for k, v in owner.as_dict().items()}


def _owner_of(tags: dict[str, str]) -> Owner | None:
    return Owner.from_dict({k[len(records.OWNER):]: v for k, v in tags.items() if k.startswith(records.OWNER)})


def key_tag(key: str) -> str:
    """The tag value a run's key is stored as: a hash, so any label may be part of a key and the
    value is always safe inside a search filter."""
    return stable_hash(key)


# MLflow 3 opens an experiment on its GenAI "Traces" overview, where training runs are hidden.
# The experiment tag says what kind of experiment this is; MLflow 3.17's UI instead follows a
# per-browser GenAI / Model training switch, which the `workflowType` query parameter sets, so
# kdbench also prints a link that opens on the runs (see ui_link).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_DEFAULT_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def ui_link(uri: str, experiment_id: str) -> str:
    """How to see an experiment's runs in the MLflow UI: the page of a tracking server, or for a
    local store the `mlflow ui` command and the page it will serve."""
    page = f"/#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/") + page
    return f"mlflow ui --backend-store-uri {uri}, then {UI_DEFAULT_ADDRESS}{page}"


def _quiet_mlflow_logs() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def open_store(uri: str):
    """An MlflowClient on an existing tracking store, for reading (leaderboards, the gate)."""
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_logs()
    bound_http_retries(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise TrackingError(f"no MLflow tracking store at {uri} (run a suite first, or pass --tracking-uri)")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"cannot read MLflow tracking store {uri}: {_first_line(exc)}") from None
    return client


def experiment_for(client, suite: str | None, experiment: str | None, uri: str) -> list[str]:
    """The experiment ids to read: the suite's experiment (``kdbench-<suite>`` unless the suite
    names one), or every experiment when neither a suite nor an experiment is given."""
    from kdbench.board.fetch import experiment_ids

    ids = experiment_ids(client, suite, experiment)
    if not ids and (suite or experiment):
        raise TrackingError(f"no MLflow experiment for suite {suite!r} in {uri} "
                            f"(expected {experiment or 'kdbench-' + str(suite)})")
    return ids


class Tracker:
    """Writes runs to an MLflow store. ``ended``: writers known to have ended wherever they ran
    (a spooled session's, when ``kdbench sync`` uploads it), whose runs may be resumed."""

    def __init__(self, uri: str, experiment: str, ended: Iterable[Owner] = ()):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.ended = set(ended)
        self.done: set[str] = set()  # runs found FINISHED: complete already, every call on them is a no-op
        self.open: dict[str, dict[str, Any]] = {}  # runs started or resumed here and not finished yet
        _quiet_mlflow_logs()
        bound_http_retries(uri)
        try:
            sqlite_dir = _sqlite_dir(uri)
            if sqlite_dir:
                sqlite_dir.mkdir(parents=True, exist_ok=True)
            self._lock = store_lock(uri)
            with self._lock:
                self.client = MlflowClient(tracking_uri=uri)
                self.experiment_id = with_retry(lambda: self._experiment_id(experiment, sqlite_dir))
                self._mark_abandoned()
        except Exception as exc:  # mlflow raises many types; the user needs one line
            if _unreachable(uri, exc):
                raise TrackingUnreachable(f"MLflow tracking server {uri} is unreachable: {_first_line(exc)}") from None
            raise TrackingError(f"cannot use MLflow tracking store {uri}: {_first_line(exc)} "
                                "(use --tracking-uri, or --no-tracking to keep results on disk only)") from None

    def _experiment_id(self, experiment: str, sqlite_dir: Path | None) -> str:
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            location = (sqlite_dir / "mlartifacts" / experiment).as_uri() if sqlite_dir else None
            try:
                return self.client.create_experiment(experiment, artifact_location=location,
                                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                # another suite created it between our lookup and our create
                existing = self.client.get_experiment_by_name(experiment)
                if existing is None:
                    raise
        if EXPERIMENT_KIND_TAG not in existing.tags:  # made by an older kdbench; a user's own choice stays
            self.client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return existing.experiment_id

    def _call(self, fn: Callable[[], T]) -> T:
        """One store call: "database is locked" is retried; a server that stopped answering is
        TrackingUnreachable, so the caller can go on in the spool."""
        try:
            return with_retry(fn)
        except Exception as exc:
            if _unreachable(self.uri, exc):
                raise TrackingUnreachable(f"MLflow tracking server {self.uri} stopped answering: "
                                          f"{_first_line(exc)}") from None
            raise

    @property
    def owner(self) -> Owner:
        """This writer now: a worker process runs jobs of several executor tasks in turn."""
        return Owner.me()

    def _abandoned(self, tags: dict[str, str]) -> bool:
        owner, me = _owner_of(tags), self.owner
        return owner is not None and (owner in self.ended or owner.earlier_attempt_of(me)
                                      or (owner != me and owner.ended()))

    def _mark_abandoned(self) -> None:
        """Nothing stays RUNNING forever: a run whose writer has ended (killed) is marked KILLED.
        Runs of a live process, or of another host that cannot be checked from here, are left alone."""
        from mlflow.entities import ViewType

        running = self._call(lambda: self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                                             run_view_type=ViewType.ACTIVE_ONLY, max_results=5000))
        for run in running:
            if self._abandoned(run.data.tags):
                self._call(lambda: self.client.set_terminated(run.info.run_id, "KILLED"))

    def _find(self, key: str, parent_id: str | None):
        """The run logged before under this key and parent: the newest FINISHED one, else the
        newest one a rerun may resume (KILLED, FAILED, or RUNNING for a writer that has ended)."""
        runs = self._call(lambda: self.client.search_runs(
            [self.experiment_id], f"tags.`{records.TRACK_KEY}` = '{key_tag(key)}'",
            order_by=["attributes.start_time DESC"], max_results=1000))
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished:
            return finished[0]
        return next((r for r in runs if r.info.status in ("KILLED", "FAILED")
                     or (r.info.status == "RUNNING" and self._abandoned(r.data.tags))), None)

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None,
              key: str | None = None, start_time: int | None = None) -> str:
        """A run named ``name`` under ``parent_id``. With a ``key``, the run logged before under
        it is reused or resumed rather than logged twice; ``start_time`` (ms) backdates it (a
        spooled run keeps the time it ran)."""
        given = dict(tags or {})
        tags = {**given, "mlflow.runName": name, **_owner_tags(self.owner)}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        if key is not None:
            tags[records.TRACK_KEY] = key_tag(key)
        with self._lock:  # looked up and claimed atomically among this host's processes
            found = self._find(key, parent_id) if key is not None else None
            if found is None:
                run_id = self._call(lambda: self.client.create_run(self.experiment_id, start_time=start_time,
                                                                   tags=tags, run_name=name)).info.run_id
            elif found.info.status == "FINISHED":
                self.done.add(found.info.run_id)
                return found.info.run_id
            else:  # resumed: this process writes it now
                run_id = found.info.run_id
                self._call(lambda: self.client.update_run(run_id, status="RUNNING"))
                self.log(run_id, tags=_owner_tags(self.owner))
        self.open[run_id] = {"name": name, "parent_id": parent_id, "tags": given, "key": key}
        return run_id

    def log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            tags: dict[str, Any] | None = None, steps: Iterable[tuple[str, int, float]] = (),
            timestamp: int | None = None) -> None:
        """``timestamp`` (ms): when the values were measured. A spooled log replayed twice (a
        ``sync`` resumed after a kill) then writes identical metric rows, which MLflow keeps once."""
        from mlflow.entities import Metric, Param, RunTag

        if run_id in self.done:
            return
        now = timestamp or int(time.time() * 1000)
        metric_rows = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        metric_rows += [Metric(k, float(v), now, step) for k, step, v in steps]
        param_rows = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        # MLflow caps one batch at 1000 metrics, 100 params and 100 tags
        for i in range(0, len(metric_rows), 1000):
            batch = metric_rows[i:i + 1000]
            self._call(lambda: self.client.log_batch(run_id, metrics=batch))
        for i in range(0, max(len(param_rows), len(tag_rows)), 100):
            params_, tags_ = param_rows[i:i + 100], tag_rows[i:i + 100]
            self._call(lambda: self.client.log_batch(run_id, params=params_, tags=tags_))

    def artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        if run_id not in self.done:
            self._call(lambda: self.client.log_artifact(run_id, str(path), subdir))

    def artifact_as(self, run_id: str, path: Path, name: str, subdir: str | None = None) -> None:
        """Log ``path`` under another file name (e.g. ``scores-<key>.json`` as ``scores.json``)."""
        if run_id in self.done:
            return
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(path, Path(tmp) / name)
            self._call(lambda: self.client.log_artifact(run_id, str(Path(tmp) / name), subdir))

    def finish(self, run_id: str, ok: bool = True, status: str | None = None, end_time: int | None = None) -> None:
        """FINISHED (or FAILED when not ``ok``); ``status`` says otherwise (KILLED)."""
        if run_id in self.done:
            return
        self._call(lambda: self.client.set_terminated(run_id, status or ("FINISHED" if ok else "FAILED"), end_time))
        self.open.pop(run_id, None)

    def close(self) -> None:
        """Nothing to close: every call was written when made (a SpoolTracker's session is closed)."""
