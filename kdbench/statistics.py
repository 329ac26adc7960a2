"""Paired bootstrap confidence intervals over utterances.

The quantity is a difference of two *weighted means* (corpus WER = per-utterance WER weighted
by reference words), computed on the same resampled utterances for both systems: pairing by
utterance removes the between-utterance variance that both systems share, which is most of it.
Several seeds of a system are folded per utterance (their weighted numerators and denominators
summed), so the interval is over utterances, the unit the test set samples, at the seed-mean.

A small numpy implementation rather than ``scipy.stats.bootstrap``: the statistic is a ratio of
sums over resampled pairs, which is a one-liner on an index matrix, and a fixed seed makes the
leaderboard reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-utterance scores of one evaluation: ids, samples and (optional) weights."""

    ids: Sequence[str]
    samples: Sequence[float]
    weights: Sequence[float] | None = None

    @classmethod
    def from_json(cls, d: Mapping) -> "Scores":
        return cls(d["ids"], d["samples"], d.get("weights"))


@dataclass(frozen=True)
class Interval:
    estimate: float  # b - a on all utterances
    low: float
    high: float
    n: int  # utterances paired

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _fold(runs: Sequence[Scores], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Numerator (sum of weight*sample) and denominator (sum of weights) per id over runs."""
    index = {u: i for i, u in enumerate(ids)}
    num, den = np.zeros(len(ids)), np.zeros(len(ids))
    for run in runs:
        w = np.ones(len(run.samples)) if run.weights is None else np.asarray(run.weights, float)
        s = np.asarray(run.samples, float)
        for u, wi, si in zip(run.ids, w, s):
            j = index.get(u)
            if j is not None:
                num[j] += wi * si
                den[j] += wi
    return num, den


def paired_bootstrap(a: Sequence[Scores], b: Sequence[Scores], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval | None:
    """CI of ``mean(b) - mean(a)`` over utterances both were scored on (None if none are)."""
    common = set.intersection(*(set(r.ids) for r in [*a, *b])) if a and b else set()
    ids = sorted(common)
    if not ids:
        return None
    a_num, a_den = _fold(a, ids)
    b_num, b_den = _fold(b, ids)

    def stat(idx: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return b_num[idx].sum(-1) / b_den[idx].sum(-1) - a_num[idx].sum(-1) / a_den[idx].sum(-1)

    estimate = float(stat(np.arange(len(ids))))
    rng = np.random.default_rng(seed)
    draws = stat(rng.integers(0, len(ids), size=(resamples, len(ids))))
    draws = draws[np.isfinite(draws)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (np.nan, np.nan)
    return Interval(estimate, float(low), float(high), len(ids))
