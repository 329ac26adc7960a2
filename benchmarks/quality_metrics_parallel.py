"""PESQ + STOI/ESTOI over N real noisy utterances: kdbench's worker processes against one process.

The utterances are FSDD connected digits mixed with noise (the enhancement suite's data), scored
against their clean speech exactly as the metrics do (kdbench_enhance.metrics.score_all).
Interleaved rounds in one run so machine noise hits both alike, after one cold parallel round
(starting the workers and their imports, which a suite pays once) reported apart.

    OMP_WAIT_POLICY=PASSIVE KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/quality_metrics_parallel.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from kdbench.plugins import get_registry
from kdbench_enhance.metrics import score_all
from fsdd_default import FSDD_FIXTURE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    corpus = get_registry().get("datasets", "noisy-speech").build(
        {"clean": {"name": "fsdd-digits", "options": {"root": args.fsdd, "train_utterances": 8,
                                                      "test_utterances": args.utterances, "max_digits": 4}}},
        cache_dir=os.path.expanduser("~/.cache/kdbench")).load()
    examples = next(iter(corpus.tests.values()))[: args.utterances]
    sr = int(corpus.info["sample_rate"])
    items = [(e.input.numpy(), e.target.numpy(), e.input.numpy()) for e in examples]
    audio = sum(len(e.input) for e in examples) / sr
    print(f"{len(items)} utterances, {audio:.0f} s of {sr} Hz audio; {os.cpu_count()} cores")

    def run(workers):
        times, results = {}, {}
        for kind in ("pesq", "stoi"):
            start = time.perf_counter()
            results[kind] = score_all(kind, items, sr, {}, workers)
            times[kind] = time.perf_counter() - start
        return times, results

    start = time.perf_counter()
    run(args.workers)  # cold: starting the workers and their first imports (a suite pays this once)
    print(f"cold round, {args.workers} workers (start-up included): {time.perf_counter() - start:.2f} s")
    serial, parallel = [], []
    for r in range(args.rounds):
        t1, r1 = run(1)
        t2, r2 = run(args.workers)
        for kind in r1:
            assert [v for v, _ in r1[kind]] == [v for v, _ in r2[kind]] or kind == "stoi", f"parallel {kind} differs"
        serial.append(sum(t1.values()))
        parallel.append(sum(t2.values()))
        print(f"round {r + 1}: 1 process {serial[-1]:.2f} s (pesq {t1['pesq']:.2f}, stoi {t1['stoi']:.2f}), "
              f"{args.workers} workers {parallel[-1]:.2f} s (pesq {t2['pesq']:.2f}, stoi {t2['stoi']:.2f}), "
              f"speedup {serial[-1] / parallel[-1]:.2f}x")
    s, p = statistics.median(serial), statistics.median(parallel)
    print(f"median over {args.rounds} rounds: 1 process {s:.2f} s, {args.workers} workers {p:.2f} s, speedup {s / p:.2f}x")


if __name__ == "__main__":
    main()
