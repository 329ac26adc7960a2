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

import torch
from side_by_side import interleaved_p50, suite_bench, timing_arguments

from kdbench.evaluation import Deployable
from kdbench.plugins import get_registry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--target", default="cpu")
    timing_arguments(parser, block=0.5, blocks=4)
    args = parser.parse_args()

    rs, spec, frontend, inputs = suite_bench(args.suite, args.utterances)
    target_ref = next((t for t in rs.targets if t.label == args.target), None)
    target = (target_ref or get_registry().get("targets", args.target)).build()
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
        p50, busy = interleaved_p50({name: module for name, (module, _) in deployed.items()}, inputs,
                                    args.blocks, args.block)
        for s in ratios:
            ratios[s].append(p50[teacher] / p50[s])
        print(f"| {r} | " + " | ".join(f"{p50[n]:.3f}" for n in deployed) + " | "
              + " | ".join(f"{ratios[s][-1]:.2f}x" for s in ratios) + f" | {busy:.2f} |")
    print("median speed-up over the teacher: " + ", ".join(f"{s} {statistics.median(v):.2f}x" for s, v in ratios.items()))


if __name__ == "__main__":
    main()
