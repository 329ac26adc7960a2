"""A content-addressed file cache: every entry is named by a hash of all that changes it."""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_DIR_ENV = "KDBENCH_CACHE_DIR"
log = logging.getLogger(__name__)


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
    except OSError as exc:  # name the entry, not the temporary file (a full disk names neither)
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def read_weights(path: Path) -> Any:
    """``torch.load`` that only rebuilds tensors and plain containers (``weights_only``): a file
    holding anything else is refused, never executed."""
    with warnings.catch_warnings():  # e.g. "pickle protocol 4" on a foreign file: the error says it
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def unreadable(exc: BaseException) -> str:
    """Why ``read_weights`` failed, in words that fit one line (torch's own text suggests
    ``weights_only=False``, which would run whatever the file holds)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "not a file of plain tensors (refused: unpickling it could run code)"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    return f"truncated or not a torch file ({type(exc).__name__})"


def move_aside(path: Path, problem: str) -> None:
    """Keep an unusable stored file for inspection, as ``<name>.corrupt-<time>``, so the caller
    recomputes it instead of failing on it at every rerun."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
        done = f"moved to {aside.name}"
    except OSError as exc:  # e.g. another process moved it first; the recomputed entry replaces it anyway
        done = f"not moved aside ({exc.strerror})"
    log.warning("warning: %s: %s; %s, recomputing it", path, problem, done)


def load_or_move_aside(path: Path) -> Any | None:
    """The stored object, or None if there is none or it is unreadable (then moved aside)."""
    if not path.is_file():
        return None
    try:
        return read_weights(path)
    except Exception as exc:  # torn, truncated, garbage or foreign: never trusted, never fatal
        move_aside(path, unreadable(exc))
        return None


class Cache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, namespace: str, key: str, suffix: str = ".pt") -> Path:
        return self.root / namespace / f"{key}{suffix}"

    def load(self, namespace: str, key: str) -> Any | None:
        """The entry, or None when it must be computed: missing, or unreadable (moved aside)."""
        return load_or_move_aside(self.path(namespace, key))

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
