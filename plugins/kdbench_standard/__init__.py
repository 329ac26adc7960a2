"""Task-neutral built-ins: model-size and latency metrics, CPU targets, quantization-aware
training, the local executor and the leaderboard reporter. Registered through the ``kdbench`` entry-point group."""

from kdbench.hookspecs import hookimpl

from kdbench_standard.compressions import QuantizationAwareTraining, StructuredPruning
from kdbench_standard.efficiency import ColdStart, Flops, Latency, ModelSize, ParameterCount
from kdbench_standard.executors import LocalExecutor
from kdbench_standard.reporters import LeaderboardFiles
from kdbench_standard.targets import (CpuTarget, CudaTarget, Int8CpuTarget, OnnxRuntimeTarget,
                                      QuantizedOnnxRuntimeOptions, SingleThreadCpuTarget)


@hookimpl
def register_metrics(register):
    register("params", ParameterCount, summary="number of parameters")
    register("size", ModelSize, summary="size of the deployed model on disk (MB)")
    register("latency", Latency, summary="latency per utterance: p50/p90/p99, mean, by length, real-time factor, load")
    register("cold-start", ColdStart, summary="load-to-first-result time and peak memory added (MB)")
    register("flops", Flops, summary="GFLOP per audio second, achieved GFLOP/s and % of the measured matmul peak")


@hookimpl
def register_targets(register):
    # default: the target of a suite that lists none (every machine has a CPU)
    register("cpu", CpuTarget, summary="fp32 eager PyTorch on the CPU", default=True)
    register("cpu-1thread", SingleThreadCpuTarget, summary="fp32 eager PyTorch on one CPU thread (edge stand-in)")
    register("cpu-int8", Int8CpuTarget, summary="dynamic int8 quantization (torchao; or torch.ao for recurrent layers)")
    register("onnxruntime", OnnxRuntimeTarget, summary="exported to ONNX, run by ONNX Runtime on the CPU")
    # one class: the int8 name is the same target with quantize switched on (and held there)
    register("onnxruntime-int8", OnnxRuntimeTarget, options=QuantizedOnnxRuntimeOptions,
             summary="ONNX Runtime with ORT dynamic int8 quantization")
    register("cuda", CudaTarget, summary="eager PyTorch on a CUDA GPU (fp32, or fp16)")


@hookimpl
def register_compressions(register):
    register("qat", QuantizationAwareTraining,
             summary="quantization-aware training: int8 fake quantizers (torchao) while distilling")
    register("prune", StructuredPruning,
             summary="structured pruning after distillation (torch-pruning) to a share of the parameters, then KD fine-tuning")


@hookimpl
def register_executors(register):
    register("local", LocalExecutor, summary="runs one after another in this process", default=True)


@hookimpl
def register_reporters(register):
    register("leaderboard", LeaderboardFiles, summary="writes results/<suite>/leaderboard.csv and .md", default=True)
