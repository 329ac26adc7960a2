"""kdbench: a plugin-based benchmark harness for knowledge distillation of speech models.

The plugin API is importable from here, ``from kdbench import hookimpl, Options, Target``, and
is listed in ``__all__``; anything else is internal and may change. The names load on first use
(PEP 562), so ``import kdbench`` (and ``kdbench --help``) does not import torch.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

# OpenMP's default spin-wait makes 2-thread torch 10-20x slower when any other process is busy
# (field notes, pitfall 8). It must be set before torch is first imported: OpenMP reads it once.
if "torch" in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} <= set(os.environ):
    warnings.warn("torch was imported before kdbench, so OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT=2000 cannot "
                  "take effect; set them in the environment, or import kdbench first (timings suffer)",
                  RuntimeWarning, stacklevel=2)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Fully passive waiting costs a futex wake-up per parallel region instead: on a quiet machine it
# made a 0.2M-parameter model's 2-thread latency 2-3x slower. GNU OpenMP (PyPI torch's) lets a
# spin count override the policy; ~2,000 spins (tens of microseconds) bridges back-to-back ops
# and still yields the core almost at once to a busy neighbour (benchmarks/omp_wait.py).
os.environ.setdefault("GOMP_SPINCOUNT", "2000")

__version__ = "0.1.0"

#: the plugin API: name -> the module that defines it. A lazy import keeps ``import kdbench``
#: cheap: ``interfaces`` needs torch, which takes seconds to load and must come after the
#: OpenMP settings above.
_API = {
    "hookimpl": "kdbench.hookspecs",
    "Options": "kdbench.options",
    "NoOptions": "kdbench.options",
    **dict.fromkeys(("Example", "Corpus", "Batch", "ModelOutput", "ModelSpec", "Model", "Frontend", "Augmentation",
                     "Compression", "Task", "Loss", "Measurement", "Evaluation", "Metric", "Target", "Reporter", "Executor",
                     "JobFailed"),
                    "kdbench.interfaces"),
    # what a target's prepare() receives: front end and model as one module
    "Deployable": "kdbench.evaluation",
    # what check_suite(options, suite) receives and may raise, and the layer check hints share
    **dict.fromkeys(("ResolvedSuite", "OptionMismatch"), "kdbench.suite"),
    "check_hint_layers": "kdbench.layers",
    # a metric's declared semantics as a leaderboard reads them back
    "MetricMeta": "kdbench.records",
    **dict.fromkeys(("KdbenchError", "SuiteError", "UnknownComponentError", "AmbiguousComponentError", "PluginError",
                     "DataError", "CheckpointError", "TargetError", "TrackingError", "TrackingUnreachable",
                     "BaselineError", "RegressionFound", "RunFailed", "StorageError", "ExecutorError"),
                    "kdbench.errors"),
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # type checkers and IDEs see the real classes; at run time they load lazily
    from kdbench.errors import (AmbiguousComponentError, BaselineError, CheckpointError, DataError, KdbenchError,
                                ExecutorError, PluginError, RegressionFound, RunFailed, StorageError, SuiteError,
                                TargetError, TrackingError, TrackingUnreachable, UnknownComponentError)
    from kdbench.evaluation import Deployable
    from kdbench.hookspecs import hookimpl
    from kdbench.interfaces import (Augmentation, Batch, Compression, Corpus, Evaluation, Example, Executor, Frontend, JobFailed,
                                    Loss, Measurement, Metric, Model, ModelOutput, ModelSpec, Reporter, Target, Task)
    from kdbench.layers import check_hint_layers
    from kdbench.options import NoOptions, Options
    from kdbench.records import MetricMeta
    from kdbench.suite import OptionMismatch, ResolvedSuite


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        # AttributeError, not ImportError: ``from kdbench import cli`` relies on it to fall back
        # to importing the submodule
        raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
