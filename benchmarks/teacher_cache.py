"""Teacher forward passes and suite wall time, with the teacher-output cache and without it.

Runs the same small real-speech suite (FSDD) three times on a fresh cache:
  1. cached mode, first invocation  (teacher outputs computed once per augmented copy)
  2. cached mode, second invocation with --force (students retrained, outputs read from cache)
  3. online mode with --force       (the teacher runs on every training batch: no cache)
The teacher itself is trained once and shared by all three (its key ignores the mode).

    OMP_WAIT_POLICY=PASSIVE KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/teacher_cache.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch
import yaml

from kdbench.cache import Cache
from kdbench.plugins import get_registry
from kdbench.runner import Runner
from kdbench.suite import load_suite
from fsdd_default import FSDD_FIXTURE


def suite(mode: str, fsdd: str) -> dict:
    return {
        "name": f"cache-{mode}",
        "task": "asr-ctc",
        "dataset": {"name": "fsdd-digits", "options": {"root": fsdd, "held_out_speakers": ["theo"],
                                                        "train_utterances": 400, "test_utterances": 40}},
        "frontend": {"name": "log-mel", "options": {"n_mels": 40}},
        "augmentations": ["spec-augment"],
        "teacher_outputs": {"mode": mode, "copies": 2},
        "teachers": [{"name": "conformer-ctc", "options": {"d_model": 96, "layers": 3, "ffn_dim": 384},
                      "training": {"steps": 60, "batch_size": 16}}],
        "students": [{"name": "gru-ctc", "options": {"hidden": 64, "bidirectional": False}},
                     {"name": "conformer-ctc", "label": "small-conformer", "options": {"d_model": 48, "layers": 2, "ffn_dim": 96}}],
        "losses": ["logit-kd", "ctc-kd", "hint", "sequence-kd"],
        "seeds": [0],
        "training": {"steps": 50, "batch_size": 16, "threads": 1},
        "metrics": ["wer"],
    }


def run(path: Path, cache: Path, results: Path, force: bool):
    registry = get_registry()
    rs = load_suite(path, registry)
    start = time.perf_counter()
    result = Runner(rs, registry, cache=Cache(cache), results_root=results, tracker=None, force=force).run()
    wall = time.perf_counter() - start
    assert not result.failures, [r.error for r in result.failures]
    return wall, result.stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="kdbench-bench-"))
    cache, results = work / "cache", work / "results"
    paths = {}
    for mode in ("cached", "online"):
        paths[mode] = work / f"{mode}.yaml"
        paths[mode].write_text(yaml.safe_dump(suite(mode, args.fsdd)))
    train_size = suite("cached", args.fsdd)["dataset"]["options"]["train_utterances"]
    rows = []
    for label, mode, force in (("cached, first invocation", "cached", False),
                               ("cached, second invocation (--force)", "cached", True),
                               ("online (no cache, --force)", "online", True)):
        wall, stats = run(paths[mode], cache, results, force)
        online_passes = stats.get("teacher_online_batches", 0) * 16 / train_size
        rows.append((label, stats["teacher_forward_passes"], online_passes, stats["students_trained"],
                     stats["teachers_trained"], wall))
    print(f"{'invocation':38} {'cache passes':>12} {'online passes':>13} {'students':>8} {'teachers':>8} {'wall s':>7}")
    for label, passes, online, students, teachers, wall in rows:
        print(f"{label:38} {passes:12d} {online:13.1f} {students:8d} {teachers:8d} {wall:7.1f}")
    print("(passes = full teacher passes over the training set; 2 per invocation is 1 per augmented copy)")


if __name__ == "__main__":
    main()
