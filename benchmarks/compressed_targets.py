"""Compressed students on every target, measured side by side: does int8 pay off, and what does
pruning buy in latency?

A leaderboard times each row when its evaluation runs, minutes apart on a VM whose speed drifts;
a speed-up is a ratio of two such numbers. Here each student of the suite, and each compression
crossed with it (pruned to its final shapes; latency does not depend on the weights' values), is
prepared for each of the suite's targets and timed in interleaved blocks over the same test
utterances with kdbench's timer. A model with the shapes of one already timed (``qat``: the
saved network is the plain one; two prunings to the same ``keep``) runs exactly as that one and
is not timed twice.

    KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/compressed_targets.py suites/asr-fsdd-compress.yaml
"""

from __future__ import annotations

import argparse
import statistics

import torch
from side_by_side import interleaved_p50, suite_bench, timing_arguments

from kdbench.evaluation import Deployable


def _shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    timing_arguments(parser, block=0.3, blocks=3)
    args = parser.parse_args()

    rs, spec, frontend, inputs = suite_bench(args.suite, args.utterances)
    models, params = {}, {}
    for student in rs.students:
        torch.manual_seed(0)
        dense = student.build(model_spec=spec)
        models[student.label], params[student.label] = dense, sum(p.numel() for p in dense.parameters())
        for compression in rs.compressions if student.ref.compress else []:
            torch.manual_seed(0)
            c = compression.build(model_spec=spec, frontend=frontend)
            model = c.finish(c.prepare(student.build(model_spec=spec)))
            label = f"{student.label}+{compression.label}"
            same = next((m for m, other in models.items() if _shapes(other) == _shapes(model)), None)
            if same is not None:
                print(f"{label}: the shapes of {same}, so its latency on each target is {same}'s")
                continue
            models[label], params[label] = model, sum(p.numel() for p in model.parameters())
    targets = [(t.label, t.build()) for t in rs.targets]
    deployed = {(m, t): target.prepare(Deployable(frontend, model).eval())
                for m, model in models.items() for t, target in targets}
    print(f"suite {rs.name}: {len(inputs)} test utterances, {args.rounds} rounds of {args.blocks} interleaved blocks "
          f"of {args.block} s per model and target")
    rounds = []
    for r in range(args.rounds):
        p50, busy = interleaved_p50({f"{m} @ {t}": d for (m, t), d in deployed.items()}, inputs, args.blocks, args.block)
        rounds.append(p50)
        print(f"round {r + 1}: other cores busy at most {busy:.2f}")
    median = {key: statistics.median(p[key] for p in rounds) for key in rounds[0]}
    first = next(iter(models))
    names = [t for t, _ in targets]
    print(f"\np50 latency (ms, median of {args.rounds} rounds); x: speed-up over the same model on {names[0]}")
    print("| model | params | " + " | ".join(names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for m in models:
        base = median[f"{m} @ {names[0]}"]
        cells = [f"{median[f'{m} @ {t}']:.2f}" + ("" if t == names[0] else f" ({base / median[f'{m} @ {t}']:.2f}x)")
                 for t in names]
        print(f"| {m} | {params[m]:,} | " + " | ".join(cells) + " |")
    print(f"\nspeed-up over {first} on the same target")
    for m in list(models)[1:]:
        print(f"  {m}: " + ", ".join(f"{t} {median[f'{first} @ {t}'] / median[f'{m} @ {t}']:.2f}x" for t in names))


if __name__ == "__main__":
    main()
