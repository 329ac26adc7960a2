"""What a result depends on besides its config: code version, library versions, host."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Iterable

import torch

# the core's own: whatever the plugins are, these run every model and record every result
CORE_PACKAGES = ("kdbench", "torch", "torchaudio", "mlflow", "numpy")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _requirements(distribution: str) -> list[str]:
    """The packages a distribution needs at run time (not its optional extras)."""
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0] for req in requires if "extra ==" not in req]


def package_versions(distributions: Iterable[str] = ()) -> dict[str, str]:
    """Versions of the core's packages, and of every distribution that provides a component of
    the suite with its own requirements: a plugin's scorer (jiwer, pesq) moves its numbers, so
    the plugin's declared dependencies are recorded without the core naming them."""
    names = list(CORE_PACKAGES)
    for dist in distributions:
        names += [dist, *_requirements(dist)]
    return {name: _version(name) for name in dict.fromkeys(n.lower().replace("_", "-") for n in names)}


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


def provenance(distributions: Iterable[str] = ()) -> dict[str, str]:
    info = {f"version.{k}": v for k, v in package_versions(distributions).items()}
    info.update({
        "git_commit": git_commit(),
        "host.name": platform.node(),  # which machine of a cluster measured it (docs/scale-out.md)
        "host.cpu": host_cpu(),
        "host.cores": str(os.cpu_count()),
        "host.torch_threads": str(torch.get_num_threads()),
        "host.omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "host.gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
        "python": platform.python_version(),
    })
    return info
