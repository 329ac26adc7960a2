"""Hardware targets: where a model is re-measured, quality included. Each prepares the model as
it would run there; kdbench times it (kdbench.measurement), so every target is timed alike.

One module per runtime: ``cpu`` (eager PyTorch, fp32 and int8), ``ort`` (ONNX Runtime), ``cuda``.
``onnx`` holds what every ONNX-based runtime needs (the export, cached per model state, and the
deployed front end + graph); a target for another runtime (OpenVINO, TensorRT) reuses it:
``from kdbench_standard.targets.onnx import OnnxDeployed, export_onnx, onnx_export_available``.
"""

from kdbench_standard.targets.cpu import CpuTarget, Int8CpuTarget, SingleThreadCpuTarget
from kdbench_standard.targets.cuda import CudaDeployed, CudaTarget
from kdbench_standard.targets.onnx import OnnxDeployed, SingleUtterance, export_onnx, onnx_export_available
from kdbench_standard.targets.ort import OnnxRuntimeTarget, OrtDeployed, QuantizedOnnxRuntimeOptions

__all__ = ["CpuTarget", "CudaDeployed", "CudaTarget", "Int8CpuTarget", "OnnxDeployed", "OnnxRuntimeTarget",
           "OrtDeployed", "QuantizedOnnxRuntimeOptions", "SingleThreadCpuTarget", "SingleUtterance", "export_onnx",
           "onnx_export_available"]
