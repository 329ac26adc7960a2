"""One suite with the local executor and with Ray on this machine, side by side in one run.

    python benchmarks/ray_vs_local.py [SUITE] [--cache-dir DIR] [--out DIR] [--warm] [--ray-first]

Both invocations read the same cache (warmed first by a run whose results are thrown away, so
the corpus, the teachers and their outputs exist, as the issue's "once the teachers exist"),
write fresh results folders, and track to one `mlflow server` this script starts on 127.0.0.1
(the Ray executor refuses an sqlite file). Ray runs as the executor starts it: a local instance
with this machine's CPUs, trainings on 1 CPU (and 1 torch thread) each, evaluations with every
CPU, one at a time. It prints the wall times, each phase's (the suite's `stats.*_s`), and
whether every quality column of every row is identical.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import MlflowServer  # noqa: E402  the tests' own: one way to start a server

QUALITY_PREFIXES = ("test", "params", "size_mb")  # per-split quality, parameters, size: not timings


def run(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "kdbench.cli", "run", *args], stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"kdbench exited {code}: {log}")
    return time.perf_counter() - start


def rows(results: Path) -> dict[tuple, dict[str, str]]:
    with open(next(results.glob("*/rows.csv"))) as f:
        return {(r["role"], r["model"], r["teacher"], r["loss"], r["seed"], r["target"]): r for r in csv.DictReader(f)}


def stats(log: Path) -> str:
    return log.read_text().strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?", default="suites/asr.yaml")
    parser.add_argument("--cache-dir", default=os.environ.get("KDBENCH_CACHE_DIR"))
    parser.add_argument("--out", default="/tmp/kdbench-ray-vs-local")
    parser.add_argument("--warm", action="store_true", help="the cache is warm already: no warm-up run")
    parser.add_argument("--ray-first", action="store_true", help="time ray before local")
    a = parser.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cache = ["--cache-dir", a.cache_dir] if a.cache_dir else []
    if not a.warm:
        warm = run([a.suite, "--no-tracking", "--results-dir", str(out / "warm"), *cache], out / "warm.log")
        print(f"warm-up (results discarded): {warm:.1f} s   {stats(out / 'warm.log')}")
    server = MlflowServer(out / "mlflow")
    server.start()
    uri = server.uri
    try:
        walls = {}
        order = [("local", []), ("ray", ["--executor", "ray"])]
        for name, extra in (order[::-1] if a.ray_first else order):  # the VM drifts: run both orders
            walls[name] = run([a.suite, "--tracking-uri", uri, "--results-dir", str(out / name), *cache, *extra],
                              out / f"{name}.log")
            print(f"{name:5s}: {walls[name]:7.1f} s   {stats(out / f'{name}.log')}", flush=True)
    finally:
        server.kill()
    print(f"speed-up of ray over local: {walls['local'] / walls['ray']:.2f}x")
    here, there = rows(out / "local"), rows(out / "ray")
    columns = [c for c in next(iter(here.values())) if c.startswith(QUALITY_PREFIXES)]
    differ = [(key, c, here[key][c], there.get(key, {}).get(c)) for key in here for c in columns
              if here[key][c] != there.get(key, {}).get(c)]
    print(f"rows: {len(here)} local, {len(there)} ray; quality columns compared: {', '.join(columns)}")
    print("identical" if not differ and here.keys() == there.keys() else f"{len(differ)} values differ:")
    for key, column, x, y in differ[:20]:
        print(f"  {' · '.join(k for k in key if k)}  {column}: local {x}, ray {y}")


if __name__ == "__main__":
    main()
