"""PESQ + STOI/ESTOI over N real noisy utterances: kdbench's worker processes against one process.

The utterances are FSDD connected digits mixed with noise (the enhancement suite's data), scored
against their clean speech exactly as the metrics do (kdbench_enhance.metrics.score_all).
Interleaved rounds in one run so machine noise hits both alike; the first parallel round
includes starting the workers, as the first evaluation of a suite does.

    OMP_WAIT_POLICY=PASSIVE KDBENCH_FSDD_ROOT=../shared/data/fsdd python benchmarks/quality_metrics_parallel.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from kdbench.plugins import get_registry
from kdbench_enhance.metrics import score_all


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", "../shared/data/fsdd"))
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
        start = time.perf_counter()
        pesq = score_all("pesq", items, sr, {}, workers)
        stoi = score_all("stoi", items, sr, {}, workers)
        return time.perf_counter() - start, pesq, stoi

    serial, parallel = [], []
    for r in range(args.rounds):
        t1, p1, s1 = run(1)
        t2, p2, s2 = run(args.workers)
        assert [v for v, _ in p1] == [v for v, _ in p2], "parallel PESQ differs from serial"
        assert all((a is None) == (b is None) for (a, _), (b, _) in zip(s1, s2))
        serial.append(t1)
        parallel.append(t2)
        print(f"round {r + 1}: 1 process {t1:.2f} s, {args.workers} workers {t2:.2f} s, speedup {t1 / t2:.2f}x")
    s, p = statistics.median(serial), statistics.median(parallel)
    print(f"median: 1 process {s:.2f} s, {args.workers} workers {p:.2f} s, speedup {s / p:.2f}x")


if __name__ == "__main__":
    main()
