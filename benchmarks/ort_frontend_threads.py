"""ONNX Runtime with the PyTorch front end on 2 threads vs 1, in one process, alternating.

The onnxruntime targets keep the front end in PyTorch. With it on 2 OpenMP threads next to
ORT's own 2-thread pool (which spins while it waits), the two compete for 2 cores. This times a
conformer-215k-sized model (random weights) exported as the target exports it, on one FSDD
utterance, front end + ORT, for each setting in turn over --rounds rounds.

    KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/ort_frontend_threads.py
"""

from __future__ import annotations

import argparse
import os

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import onnxruntime as ort
import torch

from kdbench import measurement
from kdbench.evaluation import Deployable
from kdbench.interfaces import ModelSpec
from kdbench_asr.models import ConformerCtc
from kdbench_standard.targets.onnx import INPUT_NAME, export_onnx

from asr_input import fsdd_asr_input
from fsdd_default import FSDD_FIXTURE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    example, task, frontend, inputs = fsdd_asr_input(args.fsdd)
    torch.manual_seed(0)
    model = ConformerCtc(ConformerCtc.Options(d_model=64, layers=2, heads=4, ffn_dim=256),
                         ModelSpec(40, task.output_dim())).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(export_onnx(Deployable(frontend, model)), options,
                                   providers=["CPUExecutionProvider"])

    def forward(x):
        with torch.inference_mode():
            feats, _ = frontend(*x)
        return session.run(None, {INPUT_NAME: feats.numpy()})

    print(f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, ORT intra-op threads 2")
    print("| round | front end on 2 torch threads: p50 ms | on 1 torch thread: p50 ms | other cores busy |")
    print("| --- | --- | --- | --- |")
    for r in range(1, args.rounds + 1):
        p50, busy = {}, []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            timing = measurement.time_runs(forward, [(example.id, inputs, 1.0)], warmup=5, runs=64, min_seconds=1.0)
            p50[threads] = 1000 * measurement.percentile(timing.seconds, 0.5)
            busy.append(timing.other_cores)
        print(f"| {r} | {p50[2]:.3f} | {p50[1]:.3f} | {max(busy):.2f} |")


if __name__ == "__main__":
    main()
