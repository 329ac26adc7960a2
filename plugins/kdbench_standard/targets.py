"""CPU targets. Issue 'hardware targets' deepens these; the run key already has room for them."""

from __future__ import annotations

import os

import torch
from pydantic import Field

from kdbench.interfaces import Target
from kdbench.options import Options


class CpuTarget(Target):
    class Options(Options):
        threads: int | None = Field(None, ge=1, description="intra-op threads (default: all cores)")

    def __init__(self, options, **context):
        self.threads = options.threads or os.cpu_count() or 1

    def prepare(self, model):
        torch.set_num_threads(self.threads)
        return model.eval()

    def describe(self):
        return {"threads": self.threads, "precision": "fp32", "runtime": f"torch {torch.__version__}"}


class SingleThreadCpuTarget(CpuTarget):
    class Options(Options):
        pass

    def __init__(self, options, **context):
        self.threads = 1
