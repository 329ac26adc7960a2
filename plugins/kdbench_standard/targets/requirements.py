"""Whether a runtime's Python package is installed, as ``available()`` reports it: a target whose
runtime is missing is a skipped row that says what to install, not a failed one."""

from __future__ import annotations

import importlib.util


def installed(module: str, package: str | None = None) -> tuple[bool, str]:
    """``(True, "")`` if ``module`` can be imported, else ``(False, reason)`` naming the pip
    ``package`` that provides it. Looks the module up without importing it: ``available()`` runs
    for every listed target, and importing a runtime can take seconds."""
    package = package or module
    if importlib.util.find_spec(module) is None:
        return False, f"{package} is not installed (pip install {package})"
    return True, ""
