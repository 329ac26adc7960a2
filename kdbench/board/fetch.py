"""Reading evaluation runs from an MLflow tracking store: ``search_runs`` (tags and metrics only,
paged) into one pandas row per run, with an incremental local copy, so a leaderboard over
thousands of runs re-reads only what finished since it last looked."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench import records
from kdbench.hashing import stable_hash


def evaluation_filter(suite: str | None = None) -> str:
    f = f"tags.`{records.RUN_KIND}` = 'evaluation' and attributes.status = 'FINISHED'"
    if suite:
        f += f" and tags.`{records.SUITE}` = '{suite}'"
    return f


def fetch_evaluations(client, experiment_ids: list[str], suite: str | None = None,
                      page_size: int = 1000, extra: str = "") -> pd.DataFrame:
    """One row per evaluation run: run id, start/end time, ``tag:<name>`` and ``metric:<name>``."""
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
    return pd.DataFrame(rows)


# finished runs do not change, so a leaderboard re-reads only runs that ended since the last read;
# the slack covers clocks of other machines (MLflow clients stamp end_time) being a little behind
CACHE_SLACK_MS = 2 * 60 * 1000
CACHE_TTL_S = 3600  # and a full re-read every hour picks up deleted or re-tagged runs


def fetch_cached(client, experiment_ids: list[str], suite: str | None, cache_dir: Path,
                 refresh: bool = False) -> pd.DataFrame:
    """``fetch_evaluations`` with an incremental local copy under ``cache_dir``."""
    uri = str(getattr(client, "tracking_uri", ""))
    if uri.startswith("sqlite:///"):  # a relative path names another store from another directory
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    path = Path(cache_dir) / f"{stable_hash({'uri': uri, 'exp': sorted(experiment_ids), 'suite': suite})}.pkl"
    cached = None
    if not refresh and path.exists():
        try:
            cached = pickle.loads(path.read_bytes())
        except Exception:  # a corrupt or foreign cache file is just re-read
            cached = None
    if cached is not None and time.time() - cached["written"] < CACHE_TTL_S:
        since = cached["watermark"] - CACHE_SLACK_MS
        new = fetch_evaluations(client, experiment_ids, suite, extra=f"attributes.end_time >= {since}")
        raw = pd.concat([cached["raw"], new]).drop_duplicates("run_id", keep="last") if len(new) else cached["raw"]
        written = cached["written"]
    else:
        raw = fetch_evaluations(client, experiment_ids, suite)
        written = time.time()
    watermark = int(raw["end_time"].max()) if len(raw) and raw["end_time"].notna().any() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps({"raw": raw, "watermark": watermark, "written": written}))
    tmp.replace(path)
    return raw.reset_index(drop=True)


def experiment_ids(client, suite: str | None, experiment: str | None = None) -> list[str]:
    """The suite's experiment (``kdbench-<suite>`` unless the suite names one), else every experiment."""
    name = experiment or (f"kdbench-{suite}" if suite else None)
    if name:
        exp = client.get_experiment_by_name(name)
        return [exp.experiment_id] if exp else []
    return [e.experiment_id for e in client.search_experiments()]
