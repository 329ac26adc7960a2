"""How OpenMP's wait policy moves latency and training speed, on a quiet machine and next to
one busy process.

GNU OpenMP (PyPI torch's) lets GOMP_SPINCOUNT override OMP_WAIT_POLICY: 0 spins is fully
passive (a futex wake-up per parallel operator), 300,000 is its default when no policy is set
(about 3 ms of spinning), and kdbench sets 2,000. Each setting runs in its own process (OpenMP
reads the variable once, when torch loads): the p50 latency of an FSDD utterance through the
front end and three ASR models (random weights: latency does not depend on them) at 2 threads,
and the time of a training step of the teacher-sized Conformer (batch 16, 2 threads).

    KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/omp_wait.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from fsdd_default import FSDD_FIXTURE

SETTINGS = {"passive (0 spins)": "0", "kdbench (2,000 spins)": "2000", "OpenMP default (300,000 spins)": "300000"}


def child(fsdd: str, seconds: float) -> dict:
    import torch

    from kdbench import measurement
    from kdbench.evaluation import Deployable
    from kdbench.interfaces import ModelSpec
    from kdbench_asr.models import ConformerCtc, GruCtc

    from asr_input import fsdd_asr_input

    torch.set_num_threads(2)
    example, task, frontend, inputs = fsdd_asr_input(fsdd)
    spec = ModelSpec(40, task.output_dim())
    models = {
        "conformer-2M": lambda: ConformerCtc(ConformerCtc.Options(d_model=144, layers=4, heads=4, ffn_dim=576), spec),
        "conformer-215k": lambda: ConformerCtc(ConformerCtc.Options(d_model=64, layers=2, heads=4, ffn_dim=256), spec),
        "bigru-147k": lambda: GruCtc(GruCtc.Options(hidden=64, layers=2, bidirectional=True), spec),
    }
    out = {}
    for name, build in models.items():
        torch.manual_seed(0)
        deployed = Deployable(frontend, build()).eval()

        def forward(x, deployed=deployed):
            with torch.inference_mode():
                return deployed(*x)

        timing = measurement.time_runs(forward, [(example.id, inputs, 1.0)], warmup=5, runs=64, min_seconds=seconds)
        out[f"{name} p50 ms"] = 1000 * measurement.percentile(timing.seconds, 0.5)

    torch.manual_seed(0)
    model = models["conformer-2M"]()
    model.train()
    optimizer = torch.optim.Adam(model.parameters())
    feats = torch.randn(16, 400, 40)
    lengths = torch.full((16,), 400)

    def step():
        loss = model(feats, lengths).output.pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(2):
        step()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < 2 * seconds:
        step()
        steps += 1
    out["train step ms"] = 1000 * (time.perf_counter() - start) / steps
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.fsdd, args.seconds)))
        return

    rows = []
    for condition in ("quiet", "one busy process"):
        busy = None
        if condition != "quiet":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1)
        try:
            for label, spins in SETTINGS.items():
                env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": spins}
                done = subprocess.run([sys.executable, __file__, "--child", "--fsdd", args.fsdd,
                                       "--seconds", str(args.seconds)], env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(done.stderr)
                rows.append((condition, label, json.loads(done.stdout.strip().splitlines()[-1])))
        finally:
            if busy:
                busy.kill()
    columns = list(rows[0][2])
    print(f"{os.cpu_count()} cores; 2 torch threads; OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT as shown")
    print("| machine | wait | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for condition, label, values in rows:
        print(f"| {condition} | {label} | " + " | ".join(f"{values[c]:.2f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
