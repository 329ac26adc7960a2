"""kdbench: a plugin-based benchmark harness for knowledge distillation of speech models."""

import os

# OpenMP's default spin-wait makes 2-thread torch 10-20x slower when any other process is busy
# (field notes, pitfall 8). It must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
