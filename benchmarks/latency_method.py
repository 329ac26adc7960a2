"""kdbench's latency method against torch.utils.benchmark on the same model, input and threads.

One real FSDD utterance (front end + model, as a target runs it), timed in one process by
kdbench.measurement.time_runs (warm-up, then one perf_counter per call, p50 of the calls) and by
torch.utils.benchmark.Timer (blocked_autorange: median over blocks of the per-call mean). The two
alternate in short blocks (--block seconds each, --blocks times per round) so both see the same
stretch of machine time: this VM's speed drifts over seconds even when nothing else runs.
Reports, per round, both medians and their ratio, and the spread (max/min) of kdbench's p50
over --repeats rounds.

    OMP_WAIT_POLICY=PASSIVE KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/latency_method.py
"""

from __future__ import annotations

import argparse
import os
import statistics

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch
import torch.utils.benchmark as tb

from kdbench import measurement
from kdbench.evaluation import Deployable
from kdbench.interfaces import ModelSpec
from kdbench_asr.models import ConformerCtc, GruCtc

from asr_input import fsdd_asr_input
from fsdd_default import FSDD_FIXTURE

MODELS = {
    "bigru-147k": lambda spec: GruCtc(GruCtc.Options(hidden=64, layers=2, bidirectional=True), spec),
    "conformer-2M": lambda spec: ConformerCtc(ConformerCtc.Options(d_model=144, layers=4, heads=4, ffn_dim=576), spec),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block", type=float, default=0.5, help="seconds per block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks of each method per round")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    example, task, frontend, inputs = fsdd_asr_input(args.fsdd)
    print(f"input: {example.id}, {example.meta.get('duration', 0):.2f} s of audio; torch {torch.__version__}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    print("| model | threads | round | kdbench p50 (ms) | torch.utils.benchmark median (ms) | ratio | other cores busy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    spreads = []
    for name, build in MODELS.items():
        torch.manual_seed(0)
        deployed = Deployable(frontend, build(ModelSpec(40, task.output_dim()))).eval()

        def forward(x):
            with torch.inference_mode():
                return deployed(*x)

        for threads in args.threads:
            torch.set_num_threads(threads)
            medians = []
            for r in range(args.repeats):
                ours, block_means = [], []
                timer = tb.Timer("forward(x)", globals={"forward": forward, "x": inputs}, num_threads=threads)
                timer.blocked_autorange(min_run_time=0.2)  # its own warm-up
                for _ in range(args.blocks):
                    timing = measurement.time_runs(forward, [(example.id, inputs, 1.0)], warmup=2, runs=1,
                                                   min_seconds=args.block)
                    ours += timing.seconds
                    block_means += timer.blocked_autorange(min_run_time=args.block).times
                p50 = measurement.percentile(ours, 0.5)
                theirs = statistics.median(block_means)
                medians.append(p50)
                print(f"| {name} | {threads} | {r + 1} | {1000 * p50:.3f} ({len(ours)} calls) | {1000 * theirs:.3f} "
                      f"({len(block_means)} blocks) | {p50 / theirs:.3f} | {timing.other_cores:.2f} |")
            spreads.append((name, threads, max(medians) / min(medians)))
    print()
    for name, threads, spread in spreads:
        print(f"spread of kdbench p50 over {args.repeats} rounds, {name}, {threads} thread(s): max/min = {spread:.3f}")


if __name__ == "__main__":
    main()
