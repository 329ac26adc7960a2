"""Size and speed of a model, whatever its task."""

from __future__ import annotations

import statistics
import time

from pydantic import Field

from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench.options import Options


class ParameterCount(Metric):
    scope = "model"

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        n = sum(p.numel() for p in ev.model.parameters())
        return [Measurement("params", float(n), "count", False)]


class ModelSize(Metric):
    scope = "model"

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        return [Measurement("size_mb", ev.artifact_bytes / 1e6, "MB", False)]


class Latency(Metric):
    """Per-utterance latency: warm-up runs, then the median of timed runs (feature extraction
    inside the timed region, file decoding outside), and the real-time factor."""

    scope = "model"

    class Options(Options):
        utterances: int = Field(20, ge=1, description="test utterances timed")
        warmup: int = Field(3, ge=0)
        repeats: int = Field(3, ge=1, description="timed runs per utterance")

    def __init__(self, options: "Latency.Options", **context):
        self.options = options

    def compute(self, ev: Evaluation) -> list[Measurement]:
        examples = ev.examples[: self.options.utterances]
        for example in examples[: self.options.warmup]:
            ev.run(example)
        per_utterance, compute_s, audio_s = [], 0.0, 0.0
        for example in examples:
            times = []
            for _ in range(self.options.repeats):
                start = time.perf_counter()
                ev.run(example)
                times.append(time.perf_counter() - start)
            best = statistics.median(times)
            per_utterance.append(best)
            compute_s += best
            audio_s += float(example.meta.get("duration", 0.0))
        results = [Measurement("latency_ms", 1000 * statistics.median(per_utterance), "ms", False)]
        if audio_s > 0:
            results.append(Measurement("rtf", compute_s / audio_s, "x", False))
        return results
