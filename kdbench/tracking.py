"""MLflow tracking: one parent run per suite invocation, a child per distillation (or teacher),
and a grandchild per target evaluation, so targets added later nest under the same model."""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from kdbench.errors import TrackingError, TrackingUnreachable

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
                                   "Failed to establish", "timed out", "Name or service not known"))


def _sqlite_dir(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return None


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
    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        sqlite_dir = _sqlite_dir(uri)
        if sqlite_dir:
            sqlite_dir.mkdir(parents=True, exist_ok=True)
        _quiet_mlflow_logs()
        self.experiment = experiment
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = with_retry(lambda: self._experiment_id(experiment, sqlite_dir))
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

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None) -> str:
        tags = dict(tags or {})
        tags["mlflow.runName"] = name
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        return with_retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=name)).info.run_id

    def log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            tags: dict[str, Any] | None = None, steps: Iterable[tuple[str, int, float]] = ()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_rows = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        metric_rows += [Metric(k, float(v), now, step) for k, step, v in steps]
        param_rows = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        # MLflow caps one batch at 1000 metrics, 100 params and 100 tags
        for i in range(0, len(metric_rows), 1000):
            batch = metric_rows[i:i + 1000]
            with_retry(lambda: self.client.log_batch(run_id, metrics=batch))
        for i in range(0, max(len(param_rows), len(tag_rows)), 100):
            params_, tags_ = param_rows[i:i + 100], tag_rows[i:i + 100]
            with_retry(lambda: self.client.log_batch(run_id, params=params_, tags=tags_))

    def artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def artifact_as(self, run_id: str, path: Path, name: str, subdir: str | None = None) -> None:
        """Log ``path`` under another file name (e.g. ``scores-<key>.json`` as ``scores.json``)."""
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(path, Path(tmp) / name)
            self.client.log_artifact(run_id, str(Path(tmp) / name), subdir)

    def finish(self, run_id: str, ok: bool = True) -> None:
        with_retry(lambda: self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED"))
