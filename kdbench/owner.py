"""Who is writing something: a process named by host, pid and start time, and whether it is
known to have ended.

A run left RUNNING in MLflow, or a spool session without its closing mark, is either still
being written or was abandoned by a killed process. The pid alone cannot tell them apart: the
kernel reuses pids, so the process's start time (and the boot it belongs to) is recorded with
it, and a pid now held by a younger process counts as ended. A process on another host cannot
be checked from here, so it is never taken for ended: its runs are left alone.

A job an executor runs in a worker process (kdbench.work) also names the executor's task: an
executor such as Ray retries a task whose worker died, possibly on another host, and runs one
attempt of a task at a time. So a run a writer of the same task left behind was written by an
earlier attempt, which has ended, wherever it ran (``Owner.earlier_attempt_of``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a Linux process, None if there is none
    (or no /proc to ask)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


def _started(pid: int) -> str:
    stat = _stat(pid)
    return f"{_boot_id()}:{stat[1]}" if stat else ""


_task = ""  # the executor task this process is running a job of (``in_task``), if any


@contextlib.contextmanager
def in_task(task: str):
    """While a job of executor task ``task`` (stable across its retries) runs in this process."""
    global _task
    before, _task = _task, task
    try:
        yield
    finally:
        _task = before


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str  # "<boot id>:<start ticks>" on Linux, "" where the system cannot say
    task: str = ""  # the executor task whose job this process is running (see the module doc)

    @classmethod
    def me(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), _started(os.getpid()), _task)

    @classmethod
    def from_dict(cls, data: Any) -> "Owner | None":
        """From ``as_dict`` (or run tags read back); None if it does not name a process."""
        try:
            return cls(str(data["host"]), int(data["pid"]), str(data.get("started", "")), str(data.get("task", "")))
        except (KeyError, TypeError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "task" or v}

    def earlier_attempt_of(self, other: "Owner") -> bool:
        """Whether this writer was an earlier attempt of ``other``'s executor task: then it has
        ended, on whichever host it ran."""
        return bool(self.task) and self.task == other.task and self != other

    def ended(self) -> bool:
        """True only when this process is known to be gone: on this host, and its pid is free,
        a zombie (killed, not yet reaped), or held by a process that started at another time."""
        if self.host != socket.gethostname():
            return False
        stat = _stat(self.pid)
        if stat is not None:
            return stat[0] in ("Z", "X") or (bool(self.started) and _started(self.pid) != self.started)
        if Path("/proc/self/stat").exists():  # Linux: no /proc entry, no process
            return True
        try:  # elsewhere: only whether the pid exists
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
