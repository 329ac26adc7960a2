"""Speech-quality metrics: SI-SDR(i), PESQ, STOI/ESTOI, DNSMOS. Utterances are scored in
worker processes; one a metric cannot score is NaN, and the metric reports its coverage."""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from pydantic import Field

from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench.options import Options

from kdbench_enhance.scoring import score_chunk

log = logging.getLogger("kdbench")

_POOLS: dict[int, ProcessPoolExecutor] = {}


def pool(workers: int) -> ProcessPoolExecutor:
    """One pool per worker count, kept for the process: spawning (safe next to torch's threads)
    costs about a second, paid once."""
    if workers not in _POOLS:
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[workers]


@atexit.register
def _shutdown() -> None:
    for p in _POOLS.values():
        p.shutdown(cancel_futures=True)


def score_all(kind: str, items: list[tuple], sr: int, options: dict, workers: int) -> list[tuple[dict | None, str]]:
    """Score every item, in ``workers`` processes (in this one when workers is 1)."""
    if workers <= 1 or len(items) < 2:
        return score_chunk(kind, items, sr, options)
    size = max(1, math.ceil(len(items) / (workers * 4)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    futures = [pool(workers).submit(score_chunk, kind, chunk, sr, options) for chunk in chunks]
    return [r for f in futures for r in f.result()]


class SpeechQuality(Metric):
    """Base: collects (estimate, reference, noisy input) per utterance and reports each score
    as the mean over scored utterances with its coverage and per-utterance samples."""

    kind = ""
    units: dict[str, str] = {}

    class Options(Options):
        workers: int = Field(0, ge=0, description="scoring processes (0: one per core)")

    def __init__(self, options, **context):
        self.options = options
        self._told: set[tuple] = set()

    def extra(self) -> dict:
        return {}

    def compute(self, ev: Evaluation) -> list[Measurement]:
        n = len(ev.predictions)
        if n == 0:
            return [Measurement(name, math.nan, unit, True, coverage=(0, 0)) for name, unit in self.units.items()]
        sr = int(ev.examples[0].meta.get("sample_rate", 0))
        estimates = list(ev.predictions)
        heard = [ev.audio(i) for i in range(n)] if ev.audio is not None else []
        if heard and all(h is not None for h in heard):
            # what the task says a prediction sounds like: for a synthesizer, its log-mel
            # rendered to a waveform (DNSMOS needs no reference, so it scores TTS too)
            estimates, sr = [h[0] for h in heard], int(heard[0][1])
        items = [(np.asarray(p, np.float32), np.asarray(r, np.float32), np.asarray(e.input, np.float32))
                 for p, r, e in zip(estimates, ev.references, ev.examples)]
        workers = self.options.workers or os.cpu_count() or 1
        results = score_all(self.kind, items, sr, self.extra(), workers)
        # NaN for the utterance, coverage for the metric, and a line per new reason for the user
        for reason, count in Counter(reason for values, reason in results if values is None).items():
            if (ev.split, reason) not in self._told:
                self._told.add((ev.split, reason))
                log.warning("%s on %s: %d of %d utterances not scored: %s", self.kind, ev.split, count, n, reason)
        out = []
        for name, unit in self.units.items():
            values = [v.get(name, math.nan) if v else math.nan for v, _ in results]
            scored = [x for x in values if not math.isnan(x)]
            out.append(Measurement(name, float(np.mean(scored)) if scored else math.nan, unit, True,
                                   coverage=(len(scored), n), samples=[0.0 if math.isnan(x) else x for x in values],
                                   weights=[0.0 if math.isnan(x) else 1.0 for x in values]))
        return out


class SiSdr(SpeechQuality):
    """SI-SDR of the estimate and its improvement over the noisy input (dB)."""

    kind = "si-sdr"
    units = {"si_sdr": "dB", "si_sdri": "dB"}


class Pesq(SpeechQuality):
    """PESQ (ITU-T P.862 with the `pesq` package): narrow-band at 8 kHz, wide-band at 16 kHz."""

    kind = "pesq"

    class Options(SpeechQuality.Options):
        mode: str | None = Field(None, pattern="^(nb|wb)$", description="nb or wb (default: from the sample rate)")

    def __init__(self, options, sample_rate: int | None = None, **context):
        super().__init__(options)
        self.units = {f"pesq_{options.mode}": "MOS"} if options.mode else {"pesq_nb": "MOS", "pesq_wb": "MOS"}

    def extra(self):
        return {"mode": self.options.mode}

    def compute(self, ev):
        out = super().compute(ev)
        # without a fixed mode, report the one that applies at this rate (both are NaN elsewhere)
        return [m for m in out if not math.isnan(m.value)] or out[:1]


class Stoi(SpeechQuality):
    """STOI and extended STOI (pystoi; it resamples to 10 kHz internally)."""

    kind = "stoi"
    # a correlation-based index from 0 to 1 (not a percentage, not a MOS); an empty unit
    # would leave the leaderboard's header without a scale
    units = {"stoi": "index 0-1", "estoi": "index 0-1"}


class Dnsmos(SpeechQuality):
    """DNSMOS P.835 (speechmos' ONNX models): signal, background and overall MOS, no reference
    needed. Valid for 16 kHz speech only; other rates are reported as n/a (coverage 0)."""

    kind = "dnsmos"
    units = {"dnsmos_sig": "MOS", "dnsmos_bak": "MOS", "dnsmos_ovrl": "MOS"}

