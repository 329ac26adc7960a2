"""Conformance kit for kdbench plugins: does a registered component honour its interface?

    from kdbench.testing import check_loaded, check_student

    def test_my_plugin():
        check_loaded("my_plugin")                       # entry point found, no load problems
        check_student("my-student", {"hidden": 32}, plugin="my_plugin")  # builds, runs, trains, reloads

Every check drives the component through the code the runner uses, on tiny real inputs that
the plugin registering a task provides for it (``inputs``: ``KitInputs``, ``Bench``,
``tiny_bench``); the checks themselves are in ``checks``. A failure raises
``ConformanceError`` (an ``AssertionError``) naming the component, the plugin that provides it
(its distribution and version when installed) and what is wrong, e.g.::

    student 'my-student' (plugin 'my_plugin', kdbench-my-plugin 0.1.0): output has shape
    (4, 12, 7); expected (batch=4, time, output_dim=13): the last dimension must be
    ModelSpec.output_dim

``plugin="my_plugin"`` makes a check verify whose component a name resolves to: another
installed plugin may register the same name, and a check must not pass on its class.

As a pytest plugin (``pytest_plugins = ["kdbench.testing"]`` in ``conftest.py``, or
``pytest -p kdbench.testing``) it adds the fixtures ``kdbench_registry`` and ``kdbench_bench``.
"""

from kdbench.testing.checks import (CHECKS, check_augmentation, check_compression, check_component, check_dataset, check_frontend,
                                    check_loaded, check_loss, check_metric, check_plugin, check_student, check_target,
                                    check_teacher)
from kdbench.testing.errors import ConformanceError
from kdbench.testing.inputs import Bench, KitInputs, default_task, kit_inputs, tiny_bench

try:  # the fixtures need pytest; the checks themselves do not
    from kdbench.testing.pytest_plugin import kdbench_bench, kdbench_registry
except ImportError:  # pragma: no cover
    pass

__all__ = ["ConformanceError", "Bench", "KitInputs", "tiny_bench", "default_task", "kit_inputs", "check_loaded",
           "check_dataset", "check_frontend", "check_augmentation", "check_compression", "check_teacher", "check_student", "check_loss",
           "check_metric", "check_target", "check_component", "check_plugin", "CHECKS"]
