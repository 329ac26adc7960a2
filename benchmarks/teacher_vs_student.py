"""Teacher vs student latency on one target, measured side by side.

A suite's leaderboard times each model when its evaluation runs, minutes apart; on this VM
unchanged reruns moved timings by up to 2.3x, so a ratio of two such numbers mixes the models'
speed with the machine's. Here every model of the suite (teachers and students, built from the
suite's own options; latency does not depend on the weights' values) is prepared for the target
and timed in short interleaved blocks over the same test utterances, with kdbench's timer (front
end + model, collation outside). Reports per round the p50 of each model and each student's
speed-up over the first teacher.

    KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/teacher_vs_student.py suites/asr-fsdd.yaml
"""

from __future__ import annotations

import argparse
import statistics

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch

from kdbench import measurement
from kdbench.cache import default_cache_dir
from kdbench.evaluation import Deployable
from kdbench.interfaces import ModelSpec
from kdbench.plugins import get_registry
from kdbench.suite import load_suite


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--utterances", type=int, default=8, help="test utterances (from the last test split)")
    parser.add_argument("--block", type=float, default=0.5, help="seconds per model per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rs = load_suite(args.suite, get_registry())
    corpus = rs.dataset.build(cache_dir=default_cache_dir()).load()
    task = rs.task.build()
    task.setup(corpus)
    frontend = rs.frontend.build(corpus_info=corpus.info)
    spec = ModelSpec(input_dim=frontend.output_dim, output_dim=task.output_dim(), extras=dict(corpus.info))
    target_ref = next((t for t in rs.targets if t.label == args.target), None)
    target = (target_ref or get_registry().get("targets", args.target)).build()
    examples = list(corpus.tests.values())[-1][: args.utterances]
    inputs = []
    for e in examples:
        batch = task.collate([e])
        inputs.append((e.id, (batch.inputs, batch.input_lengths), float(e.meta.get("duration", 1.0))))

    deployed = {}
    for ref in [*rs.teachers, *rs.students]:
        torch.manual_seed(0)
        model = ref.build(model_spec=spec)
        deployed[ref.label] = (target.prepare(Deployable(frontend, model).eval()), sum(p.numel() for p in model.parameters()))
    teacher = rs.teachers[0].label

    print(f"suite {rs.name}, target {args.target}, {len(inputs)} test utterances, torch threads "
          f"{torch.get_num_threads()}, {args.blocks} blocks of {args.block} s per model per round")
    print("| round | " + " | ".join(f"{name} ({n:,} params) p50 ms" for name, (_, n) in deployed.items())
          + " | " + " | ".join(f"{teacher} / {s}" for s in deployed if s != teacher) + " | other cores busy |")
    print("|" + " --- |" * (2 * len(deployed) + 1))
    ratios: dict[str, list[float]] = {s: [] for s in deployed if s != teacher}
    for r in range(1, args.rounds + 1):
        seconds: dict[str, list[float]] = {name: [] for name in deployed}
        busy = []
        for _ in range(args.blocks):
            for name, (module, _) in deployed.items():
                def forward(x, module=module):
                    with torch.inference_mode():
                        return module(*x)
                timing = measurement.time_runs(forward, inputs, warmup=2, runs=len(inputs), min_seconds=args.block)
                seconds[name] += timing.seconds
                busy.append(timing.other_cores)
        p50 = {name: 1000 * measurement.percentile(s, 0.5) for name, s in seconds.items()}
        for s in ratios:
            ratios[s].append(p50[teacher] / p50[s])
        print(f"| {r} | " + " | ".join(f"{p50[n]:.3f}" for n in deployed) + " | "
              + " | ".join(f"{ratios[s][-1]:.2f}x" for s in ratios) + f" | {max(busy):.2f} |")
    print("median speed-up over the teacher: " + ", ".join(f"{s} {statistics.median(v):.2f}x" for s, v in ratios.items()))


if __name__ == "__main__":
    main()
