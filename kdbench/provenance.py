"""What a result depends on besides its config: code version, library versions, host."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

TRACKED_PACKAGES = ("kdbench", "torch", "torchaudio", "jiwer", "pesq", "pystoi", "mlflow", "numpy", "soundfile")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the kdbench checkout (``+dirty`` when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict[str, str]:
    info = {f"version.{k}": v for k, v in package_versions().items()}
    info.update({
        "git_commit": git_commit(),
        "host.cpu": host_cpu(),
        "host.cores": str(os.cpu_count()),
        "host.torch_threads": str(torch.get_num_threads()),
        "host.omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "host.gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
        "python": platform.python_version(),
    })
    return info
