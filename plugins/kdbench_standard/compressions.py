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


def _cubic(ratio: float, steps: int) -> list[float]:
    """The channel share pruned after each of ``steps`` steps: ``ratio * (1 - (1 - k/steps)^3)``."""
    return [ratio * (1 - (1 - k / steps) ** 3) for k in range(steps + 1)]


class StructuredPruning(Compression):
    """Structured pruning (torch-pruning): whole channels, hidden units and attention head
    dimensions removed along the network's dependency graph (so every layer that reads a removed
    channel loses it too), the smallest by L1 magnitude, until ``keep`` of the parameters remain;
    then ``fine_tune_steps`` more steps of the run's own loss (KD included) at
    ``fine_tune_lr_scale`` times its learning rate. Kept: the model's output layer and the layers
    feeding a GLU, whose halves must stay equal.

    ``schedule: one-shot`` prunes once, after distillation. ``gradual`` prunes during it, in
    ``events`` steps spread evenly until ``until`` of the training, each to a share of the channels
    on a cubic schedule (Zhu & Gupta 2017: most early, while the network can still recover; the
    rest of the training recovers from the last); the channels counted from the dense student.

    Every prunable layer loses the same share of its channels, so the final shapes follow from
    ``keep`` and the architecture alone, one-shot or gradual (torch-pruning counts each step's
    channels from the layer's initial width): ``restore`` prunes a fresh student once and loads the
    saved weights into it."""

    class Options(Options):
        keep: float = Field(0.5, gt=0, lt=1, description="share of the student's parameters left after pruning")
        schedule: Literal["one-shot", "gradual"] = Field(
            "one-shot", description="prune once after distillation, or in steps during it")
        events: int = Field(5, ge=1, description="gradual: how many pruning steps")
        until: float = Field(0.7, gt=0, le=1, description="gradual: the share of training by which the last "
                             "pruning step has happened")
        fine_tune_steps: int = Field(100, ge=0, description="steps of the run's loss after pruning")
        fine_tune_lr_scale: float = Field(0.1, gt=0, le=1, description="their peak learning rate, as a share of "
                                          "training.lr (no warm-up, cosine decay)")

    #: a channel count is never pruned below this share: pruning more removes whole layers' worth
    MAX_RATIO = 0.9

    def __init__(self, options: "StructuredPruning.Options", model_spec, frontend=None, **context):
        self.o = options
        # one utterance of features to trace the dependency graph on: the front end's own example
        # (an STFT enhancer needs thousands of samples, a log-mel model a few frames)
        if frontend is not None and hasattr(frontend, "example_features"):
            self.example = frontend.example_features(max(frontend.export_lengths))
        else:
            self.example = torch.randn(1, 64, int(model_spec.input_dim))
        self.fine_tune_steps = options.fine_tune_steps
        self.fine_tune_lr_scale = options.fine_tune_lr_scale
        self.gradual = None  # the pruner that steps during training (schedule: gradual)

    def _pruner(self, model: nn.Module, ratio: float, steps: int = 1):
        import torch_pruning as tp

        example = (self.example, torch.tensor([self.example.shape[1]]))
        ignored = [self._output_layer(model, example)]
        for parent in model.modules():  # a GLU halves its input: the layer before it keeps its width
            children = list(parent.children())
            ignored += [children[i - 1] for i, child in enumerate(children) if isinstance(child, nn.GLU) and i]
        heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        return tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                    pruning_ratio=ratio, ignored_layers=ignored, num_heads=heads,
                                    prune_head_dims=True, prune_num_heads=False,
                                    iterative_steps=steps, iterative_pruning_ratio_scheduler=_cubic,
                                    forward_fn=lambda m, inputs: m(*inputs).output)

    def _output_layer(self, model: nn.Module, example) -> nn.Module:
        """The last linear or convolutional layer the forward pass runs: its outputs are the
        model's (class scores, mel bins, an enhancer's mask over the STFT bins), whose number is
        the task's, not the student's to choose."""
        called: list[nn.Module] = []
        hooks = [m.register_forward_hook(lambda m, i, o: called.append(m)) for m in model.modules()
                 if hasattr(m, "out_features") or hasattr(m, "out_channels")]
        try:
            with torch.no_grad():
                model(*example)
        finally:
            for hook in hooks:
                hook.remove()
        if not called:
            raise ValueError(f"prune: {type(model).__name__} runs no linear or convolutional layer, so it has "
                             "nothing to prune and no output layer to keep")
        return called[-1]

    def _pruned(self, model: nn.Module, ratio: float) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = self._pruner(model, ratio)
        self._step(model, pruner)
        return model

    #: bisection results by architecture and keep: the same student is checked, prepared and
    #: restored for every target, and each bisection prunes a dozen copies (2 s for the 124k Conformer)
    _ratios: dict[tuple, float] = {}

    def _ratio(self, model: nn.Module) -> float:
        """The channel share whose pruning leaves ``keep`` of the parameters (bisection on copies).
        It depends on the shapes alone (L1 magnitudes choose which channels go, not how many)."""
        key = (type(model).__qualname__, self.o.keep,
               tuple((name, tuple(p.shape)) for name, p in model.state_dict().items()))
        if key not in self._ratios:
            self._ratios[key] = self._bisect(model)
        return self._ratios[key]

    def _bisect(self, model: nn.Module) -> float:
        import copy

        total = sum(p.numel() for p in model.parameters())

        def kept(ratio: float) -> float:
            return sum(p.numel() for p in self._pruned(copy.deepcopy(model), ratio).parameters()) / total

        try:
            least = kept(self.MAX_RATIO)
        except Exception as exc:  # a layer type torch-pruning cannot follow
            raise ValueError(f"prune: {type(model).__name__} cannot be pruned along its dependency graph "
                             f"(torch-pruning: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        if least > self.o.keep:
            raise ValueError(f"keep: {self.o.keep:.0%} of the parameters would take more than "
                             f"{self.MAX_RATIO:.0%} of some layer's channels (whole layers' worth); at most "
                             f"{1 - least:.0%} of this student can go, so keep >= {least:.2f}")
        low, high = 0.0, self.MAX_RATIO
        for _ in range(12):
            mid = (low + high) / 2
            low, high = (mid, high) if kept(mid) > self.o.keep else (low, mid)
        return high

    def prepare(self, model: nn.Module) -> nn.Module:
        ratio = self._ratio(model)  # here, before anything trains: a student it cannot prune fails now
        if self.o.schedule == "gradual":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.gradual = self._pruner(model, ratio, steps=self.o.events)
        return model

    def step(self, model: nn.Module, progress: float) -> bool:
        if self.gradual is None:
            return False
        due = min(self.o.events, int(progress / self.o.until * self.o.events + 1e-9))
        if self.gradual.current_step >= due:
            return False
        while self.gradual.current_step < due:
            self._step(model, self.gradual)
        return True

    def _step(self, model: nn.Module, pruner) -> None:
        was_training = model.training
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning's notes on layers it leaves alone
            pruner.step()
        model.train(was_training)

    def finish(self, model: nn.Module) -> nn.Module:
        if self.gradual is not None:  # steps a short run skipped still happen: the shapes are keep's
            while self.gradual.current_step < self.o.events:
                self._step(model, self.gradual)
            return model
        return self._pruned(model, self._ratio(model))  # remembered per architecture: no second bisection

    def restore(self, model: nn.Module, state: dict) -> nn.Module:
        model = self._pruned(model, self._ratio(model))
        model.load_state_dict(state)
        return model
