"""Real servers a test starts on 127.0.0.1 and stops: an MLflow tracking server, and a Ray
cluster of a head and a worker node (two raylets on this host: Ray schedules them as two
machines). Each runs in its own session, so a stop (kill -9, as a crash) takes all its processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEADLINE = 900  # s: a guard against a hung process, never an assertion about speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with an sqlite store and proxied artifacts under ``root``."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = Path(root), free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root}/server.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=open(self.root / "server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                assert self.proc.poll() is None, (self.root / "server.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.3)

    def kill(self) -> None:
        _stop(self.proc)


class RayCluster:
    """``ray start --head`` and one ``ray start --address`` worker node, ``cpus`` CPUs each."""

    #: what the cluster's processes and every client need: Ray 2.60's token authentication off
    #: (it reads and writes ~/.ray/auth_token, shared with whatever else ran Ray as this user, and
    #: a worker node that read another token than the head's was refused), no usage reports
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def __init__(self, root: Path, cpus: int = 1):
        self.root, self.cpus, self.port = Path(root), cpus, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> None:
        log = self.root / f"{name}.log"
        ray = Path(sys.executable).with_name("ray")
        proc = subprocess.Popen([str(ray), "start", "--block", f"--num-cpus={self.cpus}", "--disable-usage-stats",
                                 *args], stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **self.env})
        self.procs.append(proc)
        deadline = time.monotonic() + DEADLINE
        while "Ray runtime started" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._start("head", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                    "--include-dashboard=false")
        self._start("worker", f"--address={self.address}")

    def worker_processes(self) -> list[int]:
        """Pids of the Ray workers running a kdbench job now (Ray names them after the task)."""
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in out.splitlines() if "ray::_run_job" in line]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        self.procs.clear()
