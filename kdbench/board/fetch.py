"""Reading evaluation runs from an MLflow tracking store: ``search_runs`` (tags and metrics only,
paged) into one pandas row per run, with an incremental local copy, so a leaderboard over
thousands of runs re-reads only what finished since it last looked."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench import records
from kdbench.cache import atomic_write_bytes
from kdbench.hashing import stable_hash

log = logging.getLogger(__name__)


#: ``<suite>.*``: every fold of a suite with folds (``kdbench.folds``: a fold runs as ``<suite>.<fold>``)
FOLDS = ".*"


def evaluation_filter(suite: str | None = None) -> str:
    f = f"tags.`{records.RUN_KIND}` = 'evaluation' and attributes.status = 'FINISHED'"
    if suite and suite.endswith(FOLDS):
        f += f" and tags.`{records.SUITE}` LIKE '{suite[:-len(FOLDS)]}.%'"
    elif suite:
        f += f" and tags.`{records.SUITE}` = '{suite}'"
    return f


def _fetch_rows(client, experiment_ids: list[str], suite: str | None = None, page_size: int = 1000,
                extra: str = "") -> list[dict[str, Any]]:
    rows, token = [], None
    query = evaluation_filter(suite) + (f" and {extra}" if extra else "")
    while True:
        page = client.search_runs(experiment_ids, query, max_results=page_size, page_token=token)
        for run in page:
            rec: dict[str, Any] = {"run_id": run.info.run_id, "start_time": run.info.start_time,
                                   "end_time": run.info.end_time, "experiment_id": run.info.experiment_id}
            rec.update({f"tag:{k}": v for k, v in run.data.tags.items()})
            rec.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
            rows.append(rec)
        token = page.token
        if not token:
            break
    return rows


def fetch_evaluations(client, experiment_ids: list[str], suite: str | None = None,
                      page_size: int = 1000, extra: str = "") -> pd.DataFrame:
    """One row per evaluation run: run id, start/end time, ``tag:<name>`` and ``metric:<name>``."""
    return pd.DataFrame(_fetch_rows(client, experiment_ids, suite, page_size, extra))


# finished runs do not change, so a leaderboard re-reads only runs that ended since the last read;
# the slack covers clocks of other machines (MLflow clients stamp end_time) being a little behind
CACHE_SLACK_MS = 2 * 60 * 1000
CACHE_TTL_S = 3600  # and a full re-read every hour picks up deleted or re-tagged runs
CACHE_FORMAT = 1


def _read_copy(path: Path) -> dict[str, Any] | None:
    """The local copy, or None if it is missing, stale in format, or anything but what
    ``_write_copy`` writes. It is JSON, so a planted file can be wrong but never run code."""
    try:
        copy = json.loads(path.read_bytes())
        if (copy["format"] == CACHE_FORMAT and isinstance(copy["written"], (int, float))
                and isinstance(copy["watermark"], int)
                and all(isinstance(r, dict) and isinstance(r.get("run_id"), str) for r in copy["rows"])):
            return copy
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_copy(path: Path, rows: list[dict[str, Any]], watermark: int, written: float) -> None:
    try:
        atomic_write_bytes(path, json.dumps({"format": CACHE_FORMAT, "written": written, "watermark": watermark,
                                             "rows": rows}).encode())
    except OSError as exc:  # only a speed-up: the leaderboard is right without it
        log.warning("warning: cannot keep a local copy of the runs read in %s: %s", path.parent, exc.strerror)


def fetch_cached(client, experiment_ids: list[str], suite: str | None, cache_dir: Path,
                 refresh: bool = False) -> pd.DataFrame:
    """``fetch_evaluations`` with an incremental local copy under ``cache_dir``."""
    uri = str(getattr(client, "tracking_uri", ""))
    if uri.startswith("sqlite:///"):  # a relative path names another store from another directory
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    path = Path(cache_dir) / f"{stable_hash({'uri': uri, 'exp': sorted(experiment_ids), 'suite': suite})}.json"
    cached = None if refresh else _read_copy(path)
    if cached is not None and time.time() - cached["written"] < CACHE_TTL_S:
        since = cached["watermark"] - CACHE_SLACK_MS
        new = _fetch_rows(client, experiment_ids, suite, extra=f"attributes.end_time >= {since}")
        by_id: dict[str, dict[str, Any]] = {}
        for row in cached["rows"] + new:  # a run read again replaces its old copy, in its new place
            by_id.pop(row["run_id"], None)
            by_id[row["run_id"]] = row
        rows, written = list(by_id.values()), cached["written"]
    else:
        rows, written = _fetch_rows(client, experiment_ids, suite), time.time()
    watermark = max((int(r["end_time"]) for r in rows if r.get("end_time") is not None), default=0)
    _write_copy(path, rows, watermark, written)
    return pd.DataFrame(rows)


def experiment_ids(client, suite: str | None, experiment: str | None = None) -> list[str]:
    """The suite's experiment (``kdbench-<suite>`` unless the suite names one), else every experiment."""
    name = experiment or (f"kdbench-{suite.removesuffix(FOLDS)}" if suite else None)
    if name:
        exp = client.get_experiment_by_name(name)
        return [exp.experiment_id] if exp else []
    return [e.experiment_id for e in client.search_experiments()]
