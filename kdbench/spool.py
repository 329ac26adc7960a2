"""A local stand-in for the tracking store while it is unreachable, and the upload afterwards.

When the MLflow server does not answer, a suite still runs: every tracking call (start, log,
artifact, finish) is appended to ``<results>/spool/<session>/ops.jsonl`` and artifacts are
copied beside it, so nothing depends on files a later run may overwrite. ``kdbench sync``
replays a session against the store, mapping local run ids to the store's; progress is written
after every call, so a sync interrupted half-way resumes without creating runs twice.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from kdbench.errors import TrackingError


class SpoolTracker:
    """Has the Tracker interface; writes to disk instead of MLflow."""

    client = None  # nothing to query: leaderboards from MLflow are built after ``kdbench sync``

    def __init__(self, root: Path, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.dir = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)
        (self.dir / "session.json").write_text(json.dumps({"uri": uri, "experiment": experiment,
                                                           "created": time.time()}))
        self._n_artifacts = 0

    def _append(self, op: dict[str, Any]) -> None:
        with open(self.dir / "ops.jsonl", "a") as f:
            f.write(json.dumps(op, default=str) + "\n")

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None) -> str:
        run_id = f"spool-{uuid.uuid4().hex}"
        self._append({"op": "start", "id": run_id, "name": name, "parent": parent_id, "tags": tags or {},
                      "time": int(time.time() * 1000)})
        return run_id

    def log(self, run_id: str, params=None, metrics=None, tags=None, steps: Iterable = ()) -> None:
        self._append({"op": "log", "id": run_id, "params": {k: str(v) for k, v in (params or {}).items()},
                      "metrics": {k: v for k, v in (metrics or {}).items() if v is not None},
                      "tags": {k: str(v) for k, v in (tags or {}).items()}, "steps": [list(s) for s in steps]})

    def artifact_as(self, run_id: str, path: Path, name: str, subdir: str | None = None) -> None:
        self._n_artifacts += 1
        dest = self.dir / "artifacts" / str(self._n_artifacts) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        self._append({"op": "artifact", "id": run_id, "path": str(dest.relative_to(self.dir)), "subdir": subdir})

    def artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.artifact_as(run_id, path, Path(path).name, subdir)

    def finish(self, run_id: str, ok: bool = True) -> None:
        self._append({"op": "finish", "id": run_id, "ok": ok})


def pending(root: Path) -> list[Path]:
    """Spooled sessions not yet uploaded, oldest first."""
    root = Path(root)
    return sorted(p for p in root.glob("*/") if (p / "session.json").exists() and not (p / "synced").exists())


@dataclass
class SyncReport:
    session: Path
    runs: int
    uri: str


def sync_session(session: Path, uri: str | None = None) -> SyncReport:
    """Upload one spooled session; ``uri`` overrides the store it was meant for."""
    from kdbench.tracking import Tracker

    meta = json.loads((session / "session.json").read_text())
    uri = uri or meta["uri"]
    tracker = Tracker(uri, meta["experiment"])
    progress_path = session / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"done": 0, "ids": {}}
    ops = [json.loads(line) for line in (session / "ops.jsonl").read_text().splitlines() if line.strip()]
    ids: dict[str, str] = progress["ids"]
    for i, op in enumerate(ops):
        if i < progress["done"]:
            continue
        try:
            if op["op"] == "start":
                ids[op["id"]] = tracker.start(op["name"], ids.get(op["parent"]) if op["parent"] else None,
                                              {**op["tags"], "kdbench.spooled": "true"})
            elif op["op"] == "log":
                tracker.log(ids[op["id"]], op["params"], op["metrics"], op["tags"],
                            [tuple(s) for s in op["steps"]])
            elif op["op"] == "artifact":
                tracker.artifact(ids[op["id"]], session / op["path"], op["subdir"])
            elif op["op"] == "finish":
                tracker.finish(ids[op["id"]], op["ok"])
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(f"{session}: upload stopped at operation {i + 1} of {len(ops)} "
                                f"({op['op']}): {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                                "rerun `kdbench sync` to resume") from None
        progress = {"done": i + 1, "ids": ids}
        progress_path.write_text(json.dumps(progress))
    (session / "synced").write_text(uri)
    return SyncReport(session, sum(1 for op in ops if op["op"] == "start"), uri)
