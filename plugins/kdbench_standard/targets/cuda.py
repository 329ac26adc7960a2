"""Eager PyTorch on a CUDA GPU, fp32 or fp16."""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from kdbench.interfaces import ModelOutput, Target
from kdbench.options import Options


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
