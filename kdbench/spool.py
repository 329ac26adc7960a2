"""A local stand-in for the tracking store while it is unreachable, and the upload afterwards.

When the MLflow server does not answer, at start or in the middle of a suite, the suite still
runs: every tracking call from then on (start, log, artifact, finish) is appended to
``<results>/spool/<session>/ops.jsonl`` and artifacts are copied beside it, so nothing depends
on files a later run may overwrite. Runs the server already holds are continued there by the
session (it records them first), so nothing is started twice.

``kdbench sync`` replays a session against the store with the runs' keys (see
``kdbench.tracking``): a run uploaded before, whether or not the upload got to record it, is
found and continued instead of created again, and every logged value carries the time it was
measured, so an operation replayed after a kill changes nothing. A session whose writer is
still running is left for later; a session whose writer was killed is uploaded as far as it got
(a torn last line is skipped) and its unfinished runs are marked KILLED.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from kdbench.errors import TrackingError, TrackingUnreachable
from kdbench.owner import Owner

SPOOLED_TAG = "kdbench.spooled"


def _now() -> int:
    return int(time.time() * 1000)


def _write_atomic(path: Path, text: str) -> None:
    """A kill leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SpoolTracker:
    """Has the Tracker interface; writes to disk instead of MLflow."""

    client = None  # nothing to query: leaderboards from MLflow are built after ``kdbench sync``

    def __init__(self, root: Path, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.dir = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)
        # the writer, so `sync` can tell a session still being written from one whose writer was killed
        _write_atomic(self.dir / "session.json", json.dumps({"uri": uri, "experiment": experiment,
                                                             "created": time.time(),
                                                             "writer": Owner.me().as_dict()}))
        self._n_artifacts = 0

    def _append(self, op: dict[str, Any]) -> None:
        with open(self.dir / "ops.jsonl", "a") as f:
            f.write(json.dumps(op, default=str) + "\n")

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None,
              key: str | None = None) -> str:
        run_id = f"spool-{uuid.uuid4().hex}"
        self._append({"op": "start", "id": run_id, "name": name, "parent": parent_id, "tags": tags or {},
                      "key": key, "time": _now()})
        return run_id

    def take_over(self, run_id: str, name: str, parent_id: str | None, tags: dict[str, str], key: str | None) -> None:
        """Continue a run the store already holds (started before the server went away): sync
        finds it there by its key, or creates it in another store."""
        self._append({"op": "start", "id": run_id, "name": name, "parent": parent_id, "tags": tags,
                      "key": key, "time": _now(), "remote": True})

    def log(self, run_id, params=None, metrics=None, tags=None, steps: Iterable = ()) -> None:
        self._append({"op": "log", "id": run_id, "params": {k: str(v) for k, v in (params or {}).items()},
                      "metrics": {k: v for k, v in (metrics or {}).items() if v is not None},
                      "tags": {k: str(v) for k, v in (tags or {}).items()}, "steps": [list(s) for s in steps],
                      "time": _now()})

    def artifact_as(self, run_id: str, path: Path, name: str, subdir: str | None = None) -> None:
        self._n_artifacts += 1
        dest = self.dir / "artifacts" / str(self._n_artifacts) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        self._append({"op": "artifact", "id": run_id, "path": str(dest.relative_to(self.dir)), "subdir": subdir})

    def artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.artifact_as(run_id, path, Path(path).name, subdir)

    def finish(self, run_id: str, ok: bool = True) -> None:
        self._append({"op": "finish", "id": run_id, "ok": ok, "time": _now()})

    def close(self) -> None:
        """The writer is done: the session may be uploaded whole."""
        (self.dir / "closed").touch()


class SpoolingTracker:
    """A Tracker that goes on in a spool session once its server stops answering: the suite is
    not stopped by a tracking server that went away, and what it logs afterwards is kept for
    ``kdbench sync``. ``on_spool(error, session_dir)`` says so once."""

    def __init__(self, tracker, root: Path, on_spool: Callable[[Exception, Path], None]):
        self.primary, self.root, self.on_spool = tracker, Path(root), on_spool
        self.uri, self.experiment, self.experiment_id = tracker.uri, tracker.experiment, tracker.experiment_id
        self.spool: SpoolTracker | None = None

    @property
    def client(self):
        return None if self.spool else self.primary.client  # a spooled suite is read after `sync`

    def _call(self, method: str, *args, **kwargs):
        if self.spool is None:
            try:
                return getattr(self.primary, method)(*args, **kwargs)
            except TrackingUnreachable as exc:
                self.spool = SpoolTracker(self.root, self.uri, self.experiment)
                for run_id, run in self.primary.open.items():  # parents first: the order they started
                    self.spool.take_over(run_id, run["name"], run["parent_id"], run["tags"], run["key"])
                self.on_spool(exc, self.spool.dir)
        return getattr(self.spool, method)(*args, **kwargs)

    def start(self, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None,
              key: str | None = None) -> str:
        return self._call("start", name, parent_id, tags, key)

    def log(self, run_id: str, *args, **kwargs) -> None:
        if run_id not in self.primary.done:  # complete in the store: nothing to add, online or later
            self._call("log", run_id, *args, **kwargs)

    def artifact(self, run_id: str, *args, **kwargs) -> None:
        if run_id not in self.primary.done:
            self._call("artifact", run_id, *args, **kwargs)

    def artifact_as(self, run_id: str, *args, **kwargs) -> None:
        if run_id not in self.primary.done:
            self._call("artifact_as", run_id, *args, **kwargs)

    def finish(self, run_id: str, ok: bool = True) -> None:
        if run_id not in self.primary.done:
            self._call("finish", run_id, ok)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def open_tracker(uri: str, experiment: str, spool_root: Path, on_spool: Callable[[Exception, Path], None]):
    """The tracker of a suite: the store, falling back to a spool session if its server does
    not answer now or stops answering later."""
    from kdbench.tracking import Tracker

    try:
        return SpoolingTracker(Tracker(uri, experiment), spool_root, on_spool)
    except TrackingUnreachable as exc:
        spool = SpoolTracker(spool_root, uri, experiment)
        on_spool(exc, spool.dir)
        return spool


def pending(root: Path) -> list[Path]:
    """Spooled sessions not yet uploaded, oldest first."""
    root = Path(root)
    return sorted(p for p in root.glob("*/") if (p / "session.json").exists() and not (p / "synced").exists())


@dataclass
class SyncReport:
    session: Path
    runs: int
    uri: str
    skipped: str = ""  # why the session was left pending
    warnings: list[str] = field(default_factory=list)


def read_ops(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The operations of ``ops.jsonl``. A torn last line is what a kill in the middle of an
    append leaves: it is skipped with a warning (that call never completed). A bad line
    anywhere else means the file was damaged otherwise, and is an error naming it."""
    if not path.exists():
        return [], []
    lines = path.read_text(errors="replace").splitlines()
    ops: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            op = json.loads(line)
            if not isinstance(op, dict) or "op" not in op or "id" not in op:
                raise ValueError("not an operation")
        except ValueError as exc:
            if number == len(lines):
                return ops, [f"{path}:{number}: skipped a torn last line (its writer was stopped while writing it)"]
            raise TrackingError(f"{path}:{number}: not a spooled operation ({exc}); "
                                "this session cannot be uploaded") from None
        ops.append(op)
    return ops, []


def _read_progress(path: Path) -> tuple[int, dict[str, str], list[str]]:
    """How far an earlier sync got: (operations done, spooled run id -> store run id). A missing
    or unreadable file (a kill while it was written) means starting over, which is safe: runs
    are found by key and replayed values are identical, so nothing is uploaded twice."""
    if not path.exists():
        return 0, {}, []
    try:
        data = json.loads(path.read_text())
        done, ids = int(data["done"]), dict(data["ids"])
        if all(isinstance(v, str) for v in ids.values()):
            return done, ids, []
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        pass
    return 0, {}, [f"{path}: unreadable, skipped (each operation is checked against the store again)"]


def sync_session(session: Path, uri: str | None = None) -> SyncReport:
    """Upload one spooled session; ``uri`` overrides the store it was meant for."""
    from filelock import FileLock, Timeout

    from kdbench.tracking import Tracker

    try:
        meta = json.loads((session / "session.json").read_text())
        experiment = meta["experiment"]
    except (OSError, ValueError, KeyError, TypeError):
        return SyncReport(session, 0, uri or "", skipped=f"{session / 'session.json'} is unreadable")
    uri = uri or meta.get("uri", "")
    writer = Owner.from_dict(meta.get("writer"))
    if not (session / "closed").exists() and writer is not None and not writer.ended():
        return SyncReport(session, 0, uri, skipped=f"still being written by process {writer.pid} on {writer.host}; "
                                                   "sync it after that run ends")
    lock = FileLock(str(session / "sync.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return SyncReport(session, 0, uri, skipped="another `kdbench sync` is uploading it")
    try:
        return _upload(session, uri, experiment, writer, Tracker)
    finally:
        lock.release()


def _upload(session: Path, uri: str, experiment: str, writer: Owner | None, tracker_type) -> SyncReport:
    ops, warnings = read_ops(session / "ops.jsonl")
    progress_path = session / "progress.json"
    done, ids, problems = _read_progress(progress_path)
    warnings += problems
    # the writer has ended (or closed the session): the runs it left RUNNING may be resumed here
    tracker = tracker_type(uri, experiment, ended=[writer] if writer else [])
    for i, op in enumerate(ops):
        if i < done:
            continue
        try:
            run = ids.get(op["id"], op["id"])  # a run the server held before spooling keeps its id
            if op["op"] == "start":
                parent = ids.get(op["parent"], op["parent"]) if op.get("parent") else None
                # a session written before runs had keys: the spooled id is the key
                ids[op["id"]] = tracker.start(op["name"], parent, {**op["tags"], SPOOLED_TAG: "true"},
                                              key=op.get("key") or f"spooled {op['id']}",
                                              start_time=op.get("time"))
            elif op["op"] == "log":
                tracker.log(run, op["params"], op["metrics"], op["tags"], [tuple(s) for s in op["steps"]],
                            timestamp=op.get("time"))
            elif op["op"] == "artifact":
                tracker.artifact(run, session / op["path"], op["subdir"])
            elif op["op"] == "finish":
                tracker.finish(run, op["ok"], end_time=op.get("time"))
        except Exception as exc:  # the server went away, or refused something: resumable from here
            text = str(exc).strip()
            raise TrackingError(f"{session}: upload stopped at operation {i + 1} of {len(ops)} "
                                f"({op.get('op')}): {text.splitlines()[0] if text else type(exc).__name__}; "
                                "rerun `kdbench sync` to resume") from None
        _write_atomic(progress_path, json.dumps({"done": i + 1, "ids": ids}))
    # runs its writer never finished (it was killed): KILLED, not RUNNING forever; a rerun of the
    # suite resumes them by key
    finished = {op["id"] for op in ops if op["op"] == "finish"}
    for spooled in dict.fromkeys(op["id"] for op in ops if op["op"] == "start"):
        if spooled not in finished and spooled in ids:
            tracker.finish(ids[spooled], status="KILLED")
    (session / "synced").write_text(uri)
    return SyncReport(session, sum(1 for op in ops if op["op"] == "start"), uri, warnings=warnings)
