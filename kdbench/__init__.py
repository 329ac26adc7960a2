"""kdbench: a plugin-based benchmark harness for knowledge distillation of speech models."""

import os
import sys
import warnings

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
