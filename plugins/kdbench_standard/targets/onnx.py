"""ONNX export of a kdbench model, and its deployment behind the front end: the part of an ONNX
Runtime target that any runtime consuming ONNX (OpenVINO, TensorRT, ...) needs too, public so
that such a target reuses it instead of copying it.

- ``export_onnx(deployable) -> bytes``: the model, without its front end, as an ONNX graph of
  one unpadded utterance, ``features (1, T, F) -> output (1, T', C)`` with a dynamic time axis.
  Exported once per model state; raises ``TargetError`` with a one-line reason when neither
  exporter gives a graph that matches eager PyTorch.
- ``OnnxDeployed``: what such a target's ``prepare`` returns: the front end in PyTorch, the
  graph in the runtime (a subclass implements ``run_features``), one utterance per call.
- ``onnx_export_available()``: the ``available()`` answer for the export's own requirements.

Every exported graph is checked with ONNX Runtime on the CPU, so ``onnxruntime`` is needed even
by a target that then runs the graph elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, TYPE_CHECKING

import torch
from torch import nn

from kdbench.errors import TargetError
from kdbench.interfaces import ModelOutput
from kdbench_standard.targets.requirements import installed

if TYPE_CHECKING:
    from kdbench.evaluation import Deployable

#: the graph's input and output names
INPUT_NAME = "features"
OUTPUT_NAME = "output"


def onnx_export_available() -> tuple[bool, str]:
    """``(True, "")`` if this machine can export and check a graph, else the package to install."""
    for module in ("onnxruntime", "onnx", "onnxscript"):
        ok, reason = installed(module)
        if not ok:
            return ok, reason
    return True, ""


class SingleUtterance(nn.Module):
    """The model on one unpadded utterance, ``features (1, T, F) -> output (1, T', C)``: no
    lengths to mask or pack, which is what lets recurrent and attention models export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long)
        return self.model(features, lengths).output


class OnnxDeployed(nn.Module, ABC):
    """The front end in PyTorch, the exported model in a runtime, one utterance per runtime call
    (the graph takes no lengths, see ``SingleUtterance``); outputs are padded back into a batch.
    ``onnx_bytes`` is the deployed artifact: a target's ``artifact_bytes`` is its length, and its
    ``startup`` builds the deployed model afresh from it."""

    def __init__(self, frontend: nn.Module, onnx_bytes: bytes):
        super().__init__()
        self.frontend = frontend
        self.onnx_bytes = onnx_bytes

    @abstractmethod
    def run_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Run the graph on one utterance's features ``(1, T, F)``; return its output ``(1, T', C)``."""

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


def _random_features(feature_dim: int):
    return lambda length: torch.randn(1, length, feature_dim)


def _export_module(module: nn.Module, example: Callable[[int], torch.Tensor] | int,
                   lengths: tuple[int, int] = (200, 137)) -> bytes:
    """ONNX bytes of ``module`` with a dynamic time axis. The TorchScript exporter first (fast;
    handles recurrent layers, which torch.export unrolls to a fixed length), then torch.export
    (handles the conformer's attention, whose reshapes the TorchScript exporter freezes);
    each result must match the eager module on a length it was not exported with.
    ``example(length)`` gives one utterance's features (the front end's ``example_features``:
    token ids for a synthesizer); an int is a feature size, for random float features."""
    example = _random_features(example) if isinstance(example, int) else example
    sample, probe = example(lengths[0]), example(lengths[1])
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
                    program = torch.onnx.export(module, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                                output_names=[OUTPUT_NAME], verbose=False,
                                                dynamic_shapes=({1: torch.export.Dim("frames", min=8, max=100_000)},))
                    with tempfile.TemporaryDirectory() as tmp:
                        program.save(str(Path(tmp) / "model.onnx"))
                        data = _without_debug_info((Path(tmp) / "model.onnx").read_bytes())
                else:
                    buf = io.BytesIO()
                    torch.onnx.export(module, (sample,), buf, dynamo=False, input_names=[INPUT_NAME],
                                      output_names=[OUTPUT_NAME], opset_version=17,
                                      dynamic_axes={INPUT_NAME: {1: "frames"}, OUTPUT_NAME: {1: "out_frames"}})
                    data = buf.getvalue()
            import onnxruntime as ort

            quiet = ort.SessionOptions()
            quiet.log_severity_level = 4  # a graph that fails the check is reported below, in one line
            session = ort.InferenceSession(data, quiet, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {INPUT_NAME: probe.numpy()})[0])
            if got.shape != expected.shape:
                raise ValueError(f"output shape {tuple(got.shape)} for {probe.shape[1]} frames, eager gives {tuple(expected.shape)}")
            diff = float((got - expected).abs().max())
            if diff > 1e-3 * max(1.0, float(expected.abs().max())):
                raise ValueError(f"outputs differ from eager PyTorch by up to {diff:.3g}")
            return data
        except Exception as exc:  # try the other exporter; report both if neither works
            errors.append(f"{exporter}: {_first_line(exc)}")
    raise TargetError("cannot export the model to ONNX (" + "; ".join(errors) + ")")


def _without_debug_info(data: bytes) -> bytes:
    """The model without the exporter's per-node debug metadata (FX node, module path, source
    stack trace). The stack traces hold the absolute paths of the installed packages, so the
    artifact's bytes and size depended on where kdbench was installed: a fresh clone in another
    folder failed the nightly gate on size_mb."""
    import onnx

    model = onnx.load_from_string(data)

    def strip(graph) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            for attribute in node.attribute:  # If/Loop bodies
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    strip(sub)

    strip(model.graph)
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
    return model.SerializeToString()


# The fp32 graph every ONNX target starts from (ORT int8 then quantizes it), exported once per
# model state: under cProfile, a small conformer's two exports took 53 s of its 72 s evaluation.
# Held weakly by the model, and keyed by its parameters' version counters, which every in-place
# update (an optimizer step) bumps, so a model trained further is exported afresh.
_EXPORTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, bytes]]" = weakref.WeakKeyDictionary()


def export_onnx(deployable: Deployable) -> bytes:
    """The fp32 ONNX graph of ``deployable.model`` (the front end stays in PyTorch): input
    ``features`` ``(1, T, F)``, output ``output`` ``(1, T', C)``, ``T`` dynamic. Exported at and
    checked on the two lengths the front end names (``export_lengths``); the same bytes come back
    until the model's parameters change. Raises ``TargetError`` if the model cannot be exported
    (only that model's row on the target fails)."""
    model, frontend = deployable.model, deployable.frontend
    feature_dim, lengths = frontend.output_dim, tuple(frontend.export_lengths)
    state = (feature_dim, lengths, tuple(p._version for p in model.parameters()))
    cached = _EXPORTS.get(model)
    if cached is None or cached[0] != state:
        # a front end that is not a kdbench Frontend has no example_features: random floats
        example = getattr(frontend, "example_features", None) or _random_features(feature_dim)
        cached = (state, _export_module(SingleUtterance(model).eval(), example, lengths))
        _EXPORTS[model] = cached
    return cached[1]
