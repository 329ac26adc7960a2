"""MLflow tracking: one parent run per suite invocation, a child per distillation (or teacher),
and a grandchild per target evaluation, so targets added later nest under the same model."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

from kdbench.errors import TrackingError

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


def _sqlite_dir(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return None


class Tracker:
    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        sqlite_dir = _sqlite_dir(uri)
        if sqlite_dir:
            sqlite_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            existing = self.client.get_experiment_by_name(experiment)
            if existing is not None:
                self.experiment_id = existing.experiment_id
            else:
                location = (sqlite_dir / "mlartifacts" / experiment).as_uri() if sqlite_dir else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        except Exception as exc:  # mlflow raises many types; the user needs one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(f"cannot use MLflow tracking store {uri}: {first} "
                                "(use --tracking-uri, or --no-tracking to keep results on disk only)") from None

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None) -> str:
        tags = dict(tags or {})
        tags["mlflow.runName"] = name
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

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
            self.client.log_batch(run_id, metrics=metric_rows[i:i + 1000])
        for i in range(0, max(len(param_rows), len(tag_rows)), 100):
            self.client.log_batch(run_id, params=param_rows[i:i + 100], tags=tag_rows[i:i + 100])

    def artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def finish(self, run_id: str, ok: bool = True) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
