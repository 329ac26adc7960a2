"""Size, speed, memory and compute of a model on a target, whatever its task. The timing
method itself is the harness's (kdbench.measurement); these metrics choose what to report."""

from __future__ import annotations

import math
import weakref

from pydantic import Field

from kdbench import measurement
from kdbench.interfaces import Evaluation, Example, Measurement, Metric
from kdbench.options import Options


def _seconds(ev: Evaluation, example: Example) -> float:
    """Audio seconds speed is normalised by: the task says which (a synthesizer's are the ones it
    produced); 0 when unknown."""
    if ev.seconds is not None:
        return ev.seconds(example)
    return float(example.meta.get("duration", 0.0) or 0.0)


def _outside_pytorch(ev: Evaluation) -> bool:
    """A model that runs in a runtime of its own (``Model.external``): PyTorch sees neither its
    parameters nor its FLOPs, and a count of 0 would be read as a measurement."""
    return bool(getattr(ev.model, "external", False))


def _timed_inputs(ev: Evaluation, utterances: int):
    return [(e.id, ev.prepare_input(e), _seconds(ev, e)) for e in ev.examples[:utterances]]


class ParameterCount(Metric):
    scope = "model"

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        if _outside_pytorch(ev):
            return []
        n = sum(p.numel() for p in ev.model.parameters())
        return [Measurement("params", float(n), "count", False, kind="cost", headline=True, scale="log")]


class ModelSize(Metric):
    scope = "model"

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        return [Measurement("size_mb", ev.artifact_bytes / 1e6, "MB", False, kind="cost", headline=True, scale="log")]


MEDIAN = "latency_p50_ms"  # the latency a reader compares first: headline and speed-up vs the teacher


class Latency(Metric):
    """Per-utterance latency on the target: warm-up, then ``runs`` timed calls cycling over
    test utterances. p50, p90 and p99 (each only with enough runs: 64 for p90, 640 for p99),
    mean, real-time factor, p50 per length tercile, and the CPU load of other processes while
    timing (``contention_cores``: above 0.25 the row is flagged)."""

    scope = "model"

    class Options(Options):
        utterances: int = Field(32, ge=1, description="distinct test utterances cycled through")
        warmup: int = Field(5, ge=0, description="untimed runs first")
        runs: int = Field(64, ge=1, description="timed runs at least (>= 64 for a p90, >= 640 for a p99)")
        min_seconds: float = Field(2.0, ge=0, description="keep timing until this long has passed too")

    def __init__(self, options: "Latency.Options", **context):
        self.options = options

    def compute(self, ev: Evaluation) -> list[Measurement]:
        timing = measurement.time_runs(ev.forward, _timed_inputs(ev, self.options.utterances),
                                       warmup=self.options.warmup, runs=self.options.runs,
                                       min_seconds=self.options.min_seconds)
        summary = measurement.summarize(timing, planned=self.options.runs)
        # on a quiet 2-core VM unchanged reruns moved timings by up to 2.3x: the VM's own speed
        # drifts, so a 2x gate failed nightly on noise
        results = [Measurement(name, value, "x" if name == "rtf" else "ms", False, kind="cost",
                               tolerance={"ratio": 3.0}, headline=name == MEDIAN, speedup=name == MEDIAN, timed=True)
                   for name, value in summary.values.items()]
        # other processes' load while timing: the conditions of the measurement, not the model
        results.append(Measurement("contention_cores", timing.other_cores, "cores", False, kind="condition",
                                   gated=False, warn_above=measurement.CONTENTION_CORES))
        return results


class ColdStart(Metric):
    """Time from loading the target's artifact to the first result, and the peak resident
    memory that loading and running the model adds to the process."""

    scope = "model"

    class Options(Options):
        repeats: int = Field(5, ge=1, description="cold starts; the median is reported")

    def __init__(self, options: "ColdStart.Options", **context):
        self.options = options

    def compute(self, ev: Evaluation) -> list[Measurement]:
        first = ev.prepare_input(ev.examples[0])
        times, peaks = [], []
        for _ in range(self.options.repeats):
            load = ev.startup()
            box = {}
            peak = measurement.peak_memory(lambda: box.setdefault("s", measurement.cold_start(load, first)))
            times.append(box["s"])
            if peak is not None:
                peaks.append(peak)
        # one-shot: ORT's 5 ms start read 15 ms on an unchanged rerun, hence the floor
        results = [Measurement("cold_start_ms", 1000 * sorted(times)[len(times) // 2], "ms", False, kind="cost",
                               tolerance={"ratio": 3.0, "floor": 25.0}, timed=True)]
        if peaks:  # the allocator's reuse moves it by megabytes, up or down
            results.append(Measurement("peak_mem_mb", max(peaks), "MB", False, kind="cost", tolerance={"abs": 32.0}))
        return results


class Flops(Metric):
    """Compute per second of audio (torch.utils.flop_counter on the eager fp32 model: the same
    arithmetic every target runs), the GFLOP/s the target achieves on it, and that as a share
    of the machine's measured fp32 matrix-multiply peak at the target's thread count."""

    scope = "model"

    class Options(Options):
        utterances: int = Field(8, ge=1, description="test utterances counted and timed")
        runs: int = Field(24, ge=1, description="timed runs for the achieved rate, at least")
        min_seconds: float = Field(1.0, ge=0, description="keep timing until this long has passed too")

    def __init__(self, options: "Flops.Options", **context):
        self.options = options
        # FLOPs of the eager model, counted on its first target and reused on the others:
        # FlopCounterMode is slow: under cProfile, 48 counts took 12 s of one small GRU's evaluation
        # on 6 targets
        self._counted: list[tuple[list[weakref.ref], dict[tuple, int]]] = []

    def _count(self, model, ident: str, inputs: tuple) -> int:
        # each target wraps the same front end and model afresh, so the wrapper's parts (held
        # weakly: a freed model's id may be reused by the next one) say which model this is
        parts = list(model.children()) or [model]
        self._counted = [(refs, counts) for refs, counts in self._counted if all(r() is not None for r in refs)]
        counts = next((c for refs, c in self._counted
                       if len(refs) == len(parts) and all(r() is p for r, p in zip(refs, parts))), None)
        if counts is None:
            counts = {}
            self._counted.append(([weakref.ref(p) for p in parts], counts))
        key = (ident, tuple(tuple(x.shape) for x in inputs if hasattr(x, "shape")))
        if key not in counts:
            counts[key] = measurement.count_flops(model, *inputs)
        return counts[key]

    def compute(self, ev: Evaluation) -> list[Measurement]:
        if _outside_pytorch(ev):
            return []
        inputs = _timed_inputs(ev, self.options.utterances)
        flops = {ident: self._count(ev.model, ident, x) for ident, x, _ in inputs}
        audio = sum(size for _, _, size in inputs)
        results = []
        if audio > 0:
            results.append(Measurement("gflop_per_audio_s", sum(flops.values()) / audio / 1e9, "GFLOP", False,
                                       kind="cost"))
        # a sub-millisecond model is done with 24 runs in 15 ms: too short a window to trust
        timing = measurement.time_runs(ev.forward, inputs, warmup=2, runs=self.options.runs,
                                       min_seconds=self.options.min_seconds)
        achieved = sum(flops[i] for i in timing.example_ids) / sum(timing.seconds) / 1e9
        peak = measurement.matmul_peak_gflops(ev.threads)
        results.append(Measurement("achieved_gflops", achieved, "GFLOP/s", True, kind="cost", tolerance={"ratio": 3.0},
                                   timed=True))
        if peak > 0 and math.isfinite(achieved):
            # achieved GFLOP/s over the machine's ceiling: achieved_gflops is the gated value, and
            # gating both would report one slowdown twice
            results.append(Measurement("pct_of_peak", 100 * achieved / peak, "%", True, kind="cost", gated=False,
                                       timed=True))
        return results
