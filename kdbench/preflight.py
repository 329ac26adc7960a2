"""Before anything trains: can kdbench write everywhere it will write? An hour of training
must not end in a traceback because the results folder is read-only, full, or under a file."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from kdbench.errors import StorageError

#: OSErrors that say where a write went, not a bug: named in one line (exit 8), never a traceback
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def sqlite_folder(uri: str | None) -> Path | None:
    """The folder an ``sqlite:///`` tracking store (and its artifacts) lives in."""
    if uri and uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    return None


def check_writable(folders: dict[str, Path | None]) -> None:
    """Raise StorageError naming the first folder (``{what: path}``) that cannot be written.
    Nothing is created: a folder that does not exist yet is judged by the nearest one that does."""
    for what, folder in folders.items():
        if folder is None:
            continue
        problem = _problem(Path(folder))
        if problem:
            raise StorageError(f"cannot write the {what} {folder}: {problem}")


def _problem(folder: Path) -> str | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "it is a file, not a folder" if existing == folder else f"{existing} is a file, not a folder"
    try:  # permissions, a read-only mount and a full disk all show up as a failed write
        with tempfile.TemporaryFile(dir=existing, prefix=".kdbench-write-check-") as f:
            f.write(b"\0" * 4096)
            f.flush()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def storage_error(exc: OSError) -> StorageError | None:
    """A write that failed late (the disk filled during the run) as one line, else None."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return StorageError(f"cannot write{where}: {exc.strerror}; finished runs are kept, rerun to resume")
