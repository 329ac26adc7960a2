"""Compressions applied to a student around its distillation (``kdbench.interfaces.Compression``).

``qat``: quantization-aware training with torchao's fake quantizers. Every ``nn.Linear`` computes,
while the student distils, with its weights and inputs rounded to int8 exactly as the int8 targets
will round them, and learns weights that survive it; ``finish`` strips the fake quantizers, so the
saved student is the plain network with those weights and the ``cpu-int8`` and
``onnxruntime-int8`` targets quantize it as they quantize any other (speed is always measured on
the target). The defaults follow ``cpu-int8`` (torchao's ``Int8DynamicActivationInt8WeightConfig``:
int8 weights per output channel, activations per token; torchao's QAT rounds per-token activations
asymmetric, the target symmetric: a grid as fine, shifted); ``onnxruntime-int8`` (ORT's
``quantize_dynamic``) rounds weights per tensor and activations per tensor, asymmetric.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from kdbench.interfaces import Compression
from kdbench.options import Options


def _torchao_qat():
    with warnings.catch_warnings():
        # torchao's own docstrings hold invalid escapes: Python warns when it first compiles them
        warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
        from torchao.quantization import quantize_
        from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig
    return quantize_, IntxFakeQuantizeConfig, QATConfig


def quantizable(module: nn.Module) -> bool:
    """What torchao's QAT and its int8 quantization swap: linear layers, except attention's output
    projection, which nn.MultiheadAttention reads as a plain weight (NonDynamicallyQuantizableLinear)."""
    return isinstance(module, nn.Linear) and not isinstance(module, NonDynamicallyQuantizableLinear)


class QuantizationAwareTraining(Compression):
    """Fake-quantized int8 linear layers while distilling (torchao QAT), then the plain network."""

    class Options(Options):
        weights: Literal["per_channel", "per_tensor"] = Field(
            "per_channel", description="weight scales per output channel (cpu-int8) or one per tensor (onnxruntime-int8)")
        activations: Literal["per_token", "per_tensor"] = Field(
            "per_token", description="activation scales per token (cpu-int8) or one per tensor (onnxruntime-int8)")
        symmetric_activations: bool = Field(False, description="symmetric activation scales (no zero point); "
                                            "torchao fake-quantizes per-token activations asymmetric only")
        min_quantized: float = Field(
            0.5, ge=0, le=1, description="the least share of the student's parameters in layers QAT quantizes "
            "(Linear): below it, QAT would train a mostly float network and name the result int8")

        @model_validator(mode="after")
        def _supported(self):
            if self.symmetric_activations and self.activations == "per_token":
                raise ValueError("symmetric_activations: torchao's QAT rounds per-token activations asymmetric only; "
                                 "use activations: per_tensor or symmetric_activations: false")
            return self

    def __init__(self, options: "QuantizationAwareTraining.Options", **context):
        self.o = options

    def _configs(self):
        _, FakeQuantize, _ = _torchao_qat()
        granularity = {"per_channel": "per_channel", "per_tensor": "per_tensor", "per_token": "per_token"}
        activation = FakeQuantize(torch.int8, granularity[self.o.activations], is_symmetric=self.o.symmetric_activations)
        weight = FakeQuantize(torch.int8, granularity[self.o.weights])
        return activation, weight

    def prepare(self, model: nn.Module) -> nn.Module:
        total = sum(p.numel() for p in model.parameters())
        linear = sum(p.numel() for m in model.modules() if quantizable(m) for p in m.parameters(recurse=False))
        if total and linear / total < self.o.min_quantized:
            other = sorted({type(m).__name__ for m in model.modules()
                            if any(True for _ in m.parameters(recurse=False)) and not quantizable(m)})
            raise ValueError(f"qat: min_quantized: only {linear / total:.0%} of the student's parameters are in Linear "
                             f"layers, the ones torchao's QAT quantizes (the rest: {', '.join(other)}); below "
                             f"{self.o.min_quantized:.0%} the result would be mostly float")
        quantize_, _, QATConfig = _torchao_qat()
        activation, weight = self._configs()
        quantize_(model, QATConfig(activation_config=activation, weight_config=weight, step="prepare"))
        return model

    def finish(self, model: nn.Module) -> nn.Module:
        quantize_, _, QATConfig = _torchao_qat()
        quantize_(model, QATConfig(step="convert"))  # back to nn.Linear: the state_dict of the plain student
        return model
