"""Hardware targets: where a model is re-measured, quality included. Each prepares the model as
it would run there; kdbench times it (kdbench.measurement), so every target is timed alike."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
import weakref
from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from kdbench.errors import TargetError
from kdbench.interfaces import ModelOutput, Target
from kdbench.options import Options


def _missing(module: str, package: str) -> tuple[bool, str]:
    if importlib.util.find_spec(module) is None:
        return False, f"{package} is not installed (pip install {package})"
    return True, ""


class CpuTarget(Target):
    """fp32 eager PyTorch on the CPU."""

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

    class Options(Options):
        threads: int | None = Field(None, ge=1, description="intra-op threads (default: all cores)")
        backend: str = Field("torchao", pattern="^(torchao|torch\\.ao)$", description="torchao or torch.ao")

    def __init__(self, options, **context):
        super().__init__(options)
        self.backend = options.backend

    def available(self):
        return _missing("torchao", "torchao") if self.backend == "torchao" else (True, "")

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


class _SingleUtterance(nn.Module):
    """The model on one unpadded utterance, ``features (1, T, F) -> output (1, T', C)``: no
    lengths to mask or pack, which is what lets recurrent and attention models export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long)
        return self.model(features, lengths).output


class OrtDeployed(nn.Module):
    """Front end in PyTorch, model in ONNX Runtime, one utterance per session call."""

    def __init__(self, frontend: nn.Module, onnx_bytes: bytes, threads: int):
        super().__init__()
        import onnxruntime as ort

        self.frontend = frontend
        self.onnx_bytes = onnx_bytes
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def run_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"features": feats.contiguous().numpy()})[0])

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        feats, frames = self.frontend(inputs, lengths)
        outs = [self.run_features(feats[i:i + 1, : int(n)])[0] for i, n in enumerate(frames)]
        out_lengths = torch.tensor([o.shape[0] for o in outs])
        return ModelOutput(nn.utils.rnn.pad_sequence(outs, batch_first=True), out_lengths, {})


@contextlib.contextmanager
def _exporter_quiet():
    """No logging and nothing on file descriptors 1 and 2 for the duration: a failing exporter
    prints its whole graph from C++, where Python's redirects do not reach."""
    logging.disable(logging.CRITICAL)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in saved:
        os.dup2(devnull, fd)
    try:
        yield
    finally:
        for fd, copy_ in saved.items():
            os.dup2(copy_, fd)
            os.close(copy_)
        os.close(devnull)
        logging.disable(logging.NOTSET)


def _first_line(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.split(r"\s+\[Caused by|\s+This is step", line)[0]


def _export(module: nn.Module, feature_dim: int, lengths: tuple[int, int] = (200, 137)) -> bytes:
    """ONNX bytes of ``module`` with a dynamic time axis. The TorchScript exporter first (fast;
    handles recurrent layers, which torch.export unrolls to a fixed length), then torch.export
    (handles the conformer's attention, whose reshapes the TorchScript exporter freezes);
    each result must match the eager module on a length it was not exported with."""
    sample = torch.randn(1, lengths[0], feature_dim)
    probe = torch.randn(1, lengths[1], feature_dim)
    with torch.inference_mode():
        expected = module(probe)
    errors = []
    for exporter in ("torchscript", "dynamo"):
        try:
            # a failing exporter dumps its whole graph: the row's one-line reason below is what
            # the user needs
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _exporter_quiet():
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    program = torch.onnx.export(module, (sample,), dynamo=True, input_names=["features"],
                                                output_names=["output"], verbose=False,
                                                dynamic_shapes=({1: torch.export.Dim("frames", min=8, max=100_000)},))
                    with tempfile.TemporaryDirectory() as tmp:
                        program.save(str(Path(tmp) / "model.onnx"))
                        data = (Path(tmp) / "model.onnx").read_bytes()
                else:
                    buf = io.BytesIO()
                    torch.onnx.export(module, (sample,), buf, dynamo=False, input_names=["features"],
                                      output_names=["output"], opset_version=17,
                                      dynamic_axes={"features": {1: "frames"}, "output": {1: "out_frames"}})
                    data = buf.getvalue()
            import onnxruntime as ort

            quiet = ort.SessionOptions()
            quiet.log_severity_level = 4  # a graph that fails the check is reported below, in one line
            session = ort.InferenceSession(data, quiet, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"features": probe.numpy()})[0])
            if got.shape != expected.shape:
                raise ValueError(f"output shape {tuple(got.shape)} for {probe.shape[1]} frames, eager gives {tuple(expected.shape)}")
            diff = float((got - expected).abs().max())
            if diff > 1e-3 * max(1.0, float(expected.abs().max())):
                raise ValueError(f"outputs differ from eager PyTorch by up to {diff:.3g}")
            return data
        except Exception as exc:  # try the other exporter; report both if neither works
            errors.append(f"{exporter}: {_first_line(exc)}")
    raise TargetError("cannot export the model to ONNX (" + "; ".join(errors) + ")")


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


# The fp32 graph both ONNX Runtime targets start from (one then quantizes it), exported once per
# model state: under cProfile, a small conformer's two exports took 53 s of its 72 s evaluation.
# Held weakly by the model, and keyed by its parameters' version counters, which every in-place
# update (an optimizer step) bumps, so a model trained further is exported afresh.
_EXPORTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, bytes]]" = weakref.WeakKeyDictionary()


def _export_once(model: nn.Module, feature_dim: int, lengths: tuple[int, int]) -> bytes:
    state = (feature_dim, tuple(lengths), tuple(p._version for p in model.parameters()))
    cached = _EXPORTS.get(model)
    if cached is None or cached[0] != state:
        cached = (state, _export(_SingleUtterance(model).eval(), feature_dim, lengths))
        _EXPORTS[model] = cached
    return cached[1]


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
        for module, package in (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("onnxscript", "onnxscript")):
            ok, reason = _missing(module, package)
            if not ok:
                return ok, reason
        return True, ""

    def prepare(self, model):
        torch.set_num_threads(self.threads)
        data = _export_once(model.model, model.frontend.output_dim, model.frontend.export_lengths)
        if self.quantize:
            data = _quantize_onnx(data)
        # The front end runs on one PyTorch thread: PyTorch's OpenMP workers and ORT's own
        # spinning pool on the same 2 cores made a 0.2M-parameter model's p50 flip between
        # 0.8 and 2.1 ms from one process to the next.
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


class OnnxRuntimeInt8Target(OnnxRuntimeTarget):
    class Options(Options):
        threads: int | None = Field(None, ge=1, description="ORT intra-op threads (default: all cores; the front end uses one)")

    def __init__(self, options, **context):
        self.threads = options.threads or os.cpu_count() or 1
        self.quantize = True


class CudaDeployed(nn.Module):
    """The model on the GPU; inputs go there and outputs come back inside the timed call,
    which ends with a synchronisation so the timer sees the work, not the launch."""

    def __init__(self, model: nn.Module, device: str, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.device = device
        self.dtype = dtype

    def forward(self, inputs, lengths):
        out = self.model(inputs.to(self.device, self.dtype), lengths.to(self.device))
        torch.cuda.synchronize(self.device)
        return ModelOutput(out.output.float().cpu(), out.lengths.cpu(), {})


class CudaTarget(Target):
    """fp32 (or fp16) eager PyTorch on a CUDA GPU."""

    class Options(Options):
        device: int = Field(0, ge=0, description="CUDA device index")
        half: bool = Field(False, description="run in fp16")

    def __init__(self, options, **context):
        self.device = f"cuda:{options.device}"
        self.index = options.device
        self.half = options.half

    def available(self):
        if not torch.cuda.is_available():
            built = torch.version.cuda or "no CUDA"
            return False, f"no CUDA GPU on this machine (torch {torch.__version__}, built with {built})"
        if self.index >= torch.cuda.device_count():
            return False, f"no CUDA device {self.index} ({torch.cuda.device_count()} present)"
        return True, ""

    def prepare(self, model):
        model = copy.deepcopy(model).to(self.device).eval()
        dtype = torch.float16 if self.half else torch.float32
        return CudaDeployed(model.to(dtype), self.device, dtype)

    def describe(self):
        name = torch.cuda.get_device_name(self.index) if torch.cuda.is_available() else "unavailable"
        return {"device": name, "precision": "fp16" if self.half else "fp32", "runtime": f"torch {torch.__version__}"}
