"""ONNX Runtime on the CPU: the exported graph as is (``onnxruntime``) or dynamically quantized
to int8 by ORT (``onnxruntime-int8``, the same target with ``quantize`` switched on)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kdbench.interfaces import Target
from kdbench.options import Options
from kdbench_standard.targets.onnx import INPUT_NAME, OnnxDeployed, export_onnx, onnx_export_available


class OrtDeployed(OnnxDeployed):
    """Front end in PyTorch, model in an ONNX Runtime CPU session, one utterance per session call."""

    def __init__(self, frontend: nn.Module, onnx_bytes: bytes, threads: int):
        super().__init__(frontend, onnx_bytes)
        import onnxruntime as ort

        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def run_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: feats.contiguous().numpy()})[0])


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def _quantize_onnx(data: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ORT logs advice to run its graph pre-processing on the root logger, once per model; the
    # exported graph is measured as exported, so the advice is nothing a kdbench user acts on.
    advice = _DropMessage("Please consider to run pre-processing before quantization")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
            src.write_bytes(data)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            return dst.read_bytes()
    finally:
        root.removeFilter(advice)


class OnnxRuntimeTarget(Target):
    """Export to ONNX and run with ONNX Runtime on the CPU (optionally int8-quantized by ORT).
    The front end stays in PyTorch; the exported file is the artifact whose size is reported."""

    class Options(Options):
        threads: int | None = Field(None, ge=1, description="ORT intra-op threads (default: all cores; the front end uses one)")
        quantize: bool = Field(False, description="ORT dynamic int8 quantization of the exported model")

    def __init__(self, options, **context):
        self.threads = options.threads or os.cpu_count() or 1
        self.quantize = options.quantize

    def available(self):
        return onnx_export_available()

    def prepare(self, model):
        torch.set_num_threads(self.threads)
        data = export_onnx(model)
        if self.quantize:
            data = _quantize_onnx(data)
        # The front end runs on one PyTorch thread: PyTorch's OpenMP workers and ORT's own
        # spinning pool on the same 2 cores made a 0.2M-parameter model's p50 flip between
        # 0.8 and 2.1 ms from one process to the next (benchmarks/ort_frontend_threads.py).
        torch.set_num_threads(1)
        return OrtDeployed(model.frontend, data, self.threads)

    def startup(self, prepared, model):
        return lambda: OrtDeployed(prepared.frontend, prepared.onnx_bytes, self.threads)

    def artifact_bytes(self, model):
        return len(model.onnx_bytes)

    def describe(self):
        import onnxruntime

        return {"threads": self.threads, "precision": "int8 dynamic" if self.quantize else "fp32",
                "runtime": f"onnxruntime {onnxruntime.__version__}"}


class QuantizedOnnxRuntimeOptions(OnnxRuntimeTarget.Options):
    """The options of ``onnxruntime-int8``: ``OnnxRuntimeTarget`` with ``quantize`` switched on
    and held there, so the name always means int8 (fp32 is ``onnxruntime``)."""

    quantize: Literal[True] = Field(True, description="always on: ORT dynamic int8 quantization of the exported model")
