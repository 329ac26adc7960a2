"""The kit's pytest fixtures. ``pytest_plugins = ["kdbench.testing"]`` in a ``conftest.py``
(or ``pytest -p kdbench.testing``) loads them through ``kdbench.testing``, which re-exports them."""

from __future__ import annotations

import pytest

from kdbench.plugins import Registry, build_registry
from kdbench.testing.inputs import Bench, tiny_bench


@pytest.fixture(scope="session")
def kdbench_registry() -> Registry:
    """The plugins KDBENCH_LOAD_PLUGINS selects (unset: every installed one), loaded afresh for
    this test session."""
    return build_registry()


@pytest.fixture(scope="session")
def kdbench_bench(kdbench_registry: Registry) -> Bench:
    """The default tiny inputs the checks run on (pass as ``bench=`` to reuse them)."""
    return tiny_bench(kdbench_registry)
