"""Eager PyTorch on the CPU: fp32 on all cores or on one, and dynamic int8 quantization."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings

import torch
from pydantic import Field
from torch import nn

from kdbench.interfaces import Target
from kdbench.options import Options
from kdbench_standard.targets.requirements import installed


class CpuTarget(Target):
    """fp32 eager PyTorch on the CPU."""

    runs_as_is = True

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
    """One thread: a stand-in for a small edge core."""

    class Options(Options):
        pass

    def __init__(self, options, **context):
        self.threads = 1


@contextlib.contextmanager
def _quantized_storage_quietly():
    """torch.ao's quantized tensors still copy and serialise through TypedStorage, which warns
    once per process that it is deprecated: about torch's internals, nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        yield


class Int8CpuTarget(CpuTarget):
    """Dynamic int8 quantization (weights int8, activations quantized per call). ``torchao``
    (maintained) quantizes linear layers; ``torch.ao`` (deprecated in torch 2.11) also
    quantizes GRU/LSTM layers, which torchao leaves in fp32."""

    runs_as_is = False  # it quantizes the network

    class Options(CpuTarget.Options):
        backend: str = Field("torchao", pattern="^(torchao|torch\\.ao)$", description="torchao or torch.ao")

    def __init__(self, options, **context):
        super().__init__(options)
        self.backend = options.backend

    def available(self):
        return installed("torchao") if self.backend == "torchao" else (True, "")

    def prepare(self, model):
        torch.set_num_threads(self.threads)
        model = copy.deepcopy(model).eval()  # both backends may convert in place
        if self.backend == "torchao":
            with warnings.catch_warnings():
                # torchao's own docstrings hold invalid escapes: Python warns when it first compiles them
                warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            quantize_(model, Int8DynamicActivationInt8WeightConfig())
            return model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8)

    def startup(self, prepared, model):
        # a device loads the quantized weights, it does not quantize: deserialise into the
        # quantized structure (our own bytes, which hold packed int8 parameters)
        with _quantized_storage_quietly():
            buf = io.BytesIO()
            torch.save(prepared.state_dict(), buf)
            skeleton = copy.deepcopy(prepared)

        def load():
            with _quantized_storage_quietly():
                skeleton.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
            return skeleton

        return load

    def describe(self):
        return {**super().describe(), "precision": "int8 dynamic", "backend": self.backend}
