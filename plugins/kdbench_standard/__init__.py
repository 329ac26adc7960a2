"""Task-neutral built-ins: model-size and latency metrics, CPU targets, the local executor
and the leaderboard reporter. Registered through the ``kdbench`` entry-point group."""

from kdbench.hookspecs import hookimpl

from kdbench_standard.efficiency import Latency, ModelSize, ParameterCount
from kdbench_standard.executors import LocalExecutor
from kdbench_standard.reporters import LeaderboardFiles
from kdbench_standard.targets import CpuTarget, SingleThreadCpuTarget


@hookimpl
def register_metrics(register):
    register("params", ParameterCount, summary="number of parameters")
    register("size", ModelSize, summary="size of the deployed model on disk (MB)")
    register("latency", Latency, summary="median CPU latency per utterance (ms) and real-time factor")


@hookimpl
def register_targets(register):
    register("cpu", CpuTarget, summary="fp32 eager PyTorch on the CPU")
    register("cpu-1thread", SingleThreadCpuTarget, summary="fp32 eager PyTorch on one CPU thread (edge stand-in)")


@hookimpl
def register_executors(register):
    register("local", LocalExecutor, summary="runs one after another in this process")


@hookimpl
def register_reporters(register):
    register("leaderboard", LeaderboardFiles, summary="writes results/<suite>/leaderboard.csv and .md")
