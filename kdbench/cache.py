"""A content-addressed file cache: every entry is named by a hash of all that changes it."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_DIR_ENV = "KDBENCH_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "kdbench")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a torn entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Cache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, namespace: str, key: str, suffix: str = ".pt") -> Path:
        return self.root / namespace / f"{key}{suffix}"

    def load(self, namespace: str, key: str) -> Any | None:
        path = self.path(namespace, key)
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, namespace: str, key: str, obj: Any) -> Path:
        path = self.path(namespace, key)
        atomic_write_bytes(path, torch_bytes(obj))
        return path

    def get_or_compute(self, namespace: str, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Return ``(value, hit)``."""
        value = self.load(namespace, key)
        if value is not None:
            return value, True
        value = compute()
        self.save(namespace, key, value)
        return value, False
