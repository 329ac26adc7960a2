"""How fast is the MLflow leaderboard on a big tracking store?

Creates N synthetic evaluation runs (default 1,000: 25 configurations x 5 seeds x 4 targets x
2 hosts, tagged like real ones, with 60 params each as real runs carry their resolved config)
in a temporary sqlite store, ending one a minute over the hours before now (as nightly runs
accumulate), then times:

  1. fetch      ``search_runs`` filtered server-side on ``tags.kdbench.role = 'evaluation'``,
                paged 1,000 at a time, tags and metrics only -> pandas
  2. aggregate  identity + provenance grouping, mean/std/n, ranks (no artifact reads)
  3. bootstrap  the same with KD-gain intervals: scores.json downloaded only for the KD
                students of one target and their baselines (--target)
  4. mlflow.search_runs(output_format="pandas") over the whole experiment, for comparison
  5. build with the incremental local cache (`kdbench leaderboard` does this): only runs that
     ended since the last read are fetched

    OMP_WAIT_POLICY=PASSIVE python benchmarks/search_runs.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="keep the store here (default: a temp dir)")
    args = ap.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from kdbench.board import aggregate, build, fetch_evaluations
    from kdbench.testing.runs import log_evaluation

    work = args.dir or Path(tempfile.mkdtemp(prefix="kdbench-search-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work}/mlflow.db"
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name("kdbench-bench")
    if existing is not None:  # --dir of an earlier invocation: time the same store again
        exp_id = existing.experiment_id
        args.runs = 0
    else:
        exp_id = client.create_experiment("kdbench-bench", artifact_location=(work / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    ids = [f"utt{i}" for i in range(200)]
    students = [f"student-{i}" for i in range(5)]
    losses = ["ctc", "ctc-kd", "logit-kd", "hint", "sequence-kd"]
    targets = ["cpu", "cpu-1thread", "edge-a", "edge-b"]
    t0 = time.perf_counter()
    n = 0
    while n < args.runs:
        for host in ("Host A", "Host B"):
            for target in targets:
                for model in students:
                    for loss in losses:
                        for seed in range(5):
                            if n >= args.runs:
                                break
                            wer = 20 + 3 * rng.standard_normal() - (2 if loss != "ctc" else 0)
                            samples = np.clip(wer + 10 * rng.standard_normal(len(ids)), 0, 100).tolist()
                            run_id = log_evaluation(
                                client, exp_id, suite="bench", model=model, loss=loss, seed=seed, target=target,
                                teacher="" if loss == "ctc" else "teacher",
                                metrics={"test-unseen/wer": wer, "test-unseen/cer": wer / 2,
                                         "latency_ms": 5 + rng.random(), "size_mb": 0.1},
                                tags={"host.cpu": host},
                                scores={"test-unseen/wer": {"ids": ids, "samples": samples, "weights": None}}
                                if target == "cpu" else None,
                                # a real store fills over many nights: one run a minute, ending before now
                                end_time=int(time.time() * 1000) - (args.runs - n) * 60_000)
                            client.log_batch(run_id, params=[Param(f"config.p{i}", str(i)) for i in range(60)])
                            n += 1
    create_s = time.perf_counter() - t0
    if n:
        print(f"created {n} evaluation runs in {create_s:.1f} s ({1000 * create_s / n:.1f} ms/run) in {uri}")

    def timed(label, fn, repeat=3):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        print(f"{label:<58} best {min(times):6.2f} s  median {sorted(times)[len(times) // 2]:6.2f} s")
        return out

    raw = timed("1. search_runs (paged, filtered) -> pandas", lambda: fetch_evaluations(client, [exp_id], "bench"))
    print(f"   {len(raw)} runs, {raw.shape[1]} columns")
    board = timed("2. aggregate (no artifacts)", lambda: aggregate(raw.copy()))
    print(f"   {len(board.frame)} leaderboard rows")
    timed("   build = 1 + 2", lambda: build(client, [exp_id], "bench", bootstrap=False))
    timed("3. build with KD-gain bootstrap, --target cpu", lambda: build(client, [exp_id], "bench", target="cpu"),
          repeat=1)
    cache = work / "leaderboard-cache"
    timed("5a. build, incremental cache: first read (full)",
          lambda: build(client, [exp_id], "bench", bootstrap=False, cache_dir=cache, refresh=True), repeat=1)
    timed("5b. build, incremental cache: nothing new since", lambda: build(client, [exp_id], "bench", bootstrap=False,
                                                                           cache_dir=cache))
    timed("5d. build with bootstrap --target cpu, scores cached on disk",
          lambda: build(client, [exp_id], "bench", target="cpu", cache_dir=cache), repeat=2)
    log_evaluation(client, exp_id, suite="bench", model="student-new", seed=0)
    board = timed("5c. build, incremental cache: one new run", lambda: build(client, [exp_id], "bench", bootstrap=False,
                                                                             cache_dir=cache), repeat=1)
    assert "student-new" in set(board.frame["model"]), "the new run must show up"
    import mlflow

    mlflow.set_tracking_uri(uri)
    timed("4. mlflow.search_runs(output_format='pandas'), all columns",
          lambda: mlflow.search_runs([exp_id], output_format="pandas"))


if __name__ == "__main__":
    main()
