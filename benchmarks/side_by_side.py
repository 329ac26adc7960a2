"""What the side-by-side latency benchmarks share: a suite's test utterances prepared as the
runner times them, and interleaved timing blocks (this VM's speed drifts between minutes, so
models compared are timed in turns within the same seconds)."""

from __future__ import annotations

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch

from kdbench import measurement
from kdbench.cache import default_cache_dir
from kdbench.interfaces import ModelSpec
from kdbench.plugins import get_registry
from kdbench.suite import load_suite


def timing_arguments(parser, block: float, blocks: int) -> None:
    """The options every side-by-side benchmark takes: utterances, and how long each turn is."""
    parser.add_argument("--utterances", type=int, default=8, help="test utterances (from the last test split)")
    parser.add_argument("--block", type=float, default=block, help="seconds per model per block")
    parser.add_argument("--blocks", type=int, default=blocks, help="blocks per round")
    parser.add_argument("--rounds", type=int, default=3)


def suite_bench(path: str, utterances: int):
    """``(resolved suite, model spec, front end, inputs)``: ``inputs`` are the first test
    utterances of the suite's last test split, each ``(id, (inputs, lengths), seconds)``."""
    rs = load_suite(path, get_registry())
    corpus = rs.dataset.build(cache_dir=default_cache_dir()).load()
    task = rs.task.build()
    task.setup(corpus)
    frontend = rs.frontend.build(corpus_info=corpus.info)
    spec = ModelSpec(input_dim=frontend.output_dim, output_dim=task.output_dim(), extras=dict(corpus.info))
    inputs = []
    for e in list(corpus.tests.values())[-1][:utterances]:
        batch = task.collate([e])
        inputs.append((e.id, (batch.inputs, batch.input_lengths), float(e.meta.get("duration", 1.0))))
    return rs, spec, frontend, inputs


def interleaved_p50(modules: dict[str, torch.nn.Module], inputs, blocks: int, block: float) -> tuple[dict, float]:
    """p50 milliseconds per module over ``blocks`` turns of ``block`` seconds each, and the most
    other cores found busy meanwhile."""
    seconds: dict[str, list[float]] = {name: [] for name in modules}
    busy = []
    for _ in range(blocks):
        for name, module in modules.items():
            def forward(x, module=module):
                with torch.inference_mode():
                    return module(*x)
            timing = measurement.time_runs(forward, inputs, warmup=2, runs=len(inputs), min_seconds=block)
            seconds[name] += timing.seconds
            busy.append(timing.other_cores)
    return {name: 1000 * measurement.percentile(s, 0.5) for name, s in seconds.items()}, max(busy)
