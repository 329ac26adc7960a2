"""torch and torchaudio load only as the pair they were built as.

torchaudio's C++ extension links against one torch build: a patch release of one without the
other (torchaudio 2.11.1 beside torch 2.11.0) fails inside the dynamic loader with an
"undefined symbol" that names neither version. Plugins that use torchaudio import it through
:func:`import_torchaudio`, so their load error, and every "unknown component" message that
quotes it, names the installed pair and the way back to the locked one.
"""

from __future__ import annotations

import importlib.metadata
from types import ModuleType


def installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def import_torchaudio() -> ModuleType:
    """``import torchaudio``, with its C++ extension loaded now rather than at first use."""
    try:
        import torchaudio
        import torchaudio._extension  # noqa: F401  (loads libtorchaudio; a mismatched torch fails here)
    except (ImportError, OSError) as exc:
        # torchaudio re-raises the loader's error as "Could not load this library"; the
        # "undefined symbol" underneath is the clue, so it is quoted too
        root = exc
        while (root.__cause__ or root.__context__) is not None:
            root = root.__cause__ or root.__context__
        detail = " ".join(str(exc).split())
        if root is not exc:
            detail += f" ({type(root).__name__}: {' '.join(str(root).split())})"
        raise ImportError(
            f"torchaudio {installed_version('torchaudio')} does not load against torch {installed_version('torch')} "
            f"(its C++ extension was built for another torch; install the locked pair with `make setup`, "
            f"see requirements/lock.txt): {type(exc).__name__}: {detail}") from exc
    return torchaudio
