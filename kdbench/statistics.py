"""Paired bootstrap confidence intervals over utterances, or over speakers and their utterances.

The quantity is a difference of two *weighted means* (corpus WER = per-utterance WER weighted
by reference words), computed on the same resampled utterances for both systems: pairing by
utterance removes the between-utterance variance that both systems share, which is most of it.
Several seeds of a system are folded per utterance (their weighted numerators and denominators
summed), so the interval is over utterances, the unit the test set samples, at the seed-mean.

Where the scores say who spoke each utterance (``Scores.groups``) and the test set has several
speakers, the interval is a *clustered* (two-stage) bootstrap: speakers are drawn with
replacement, then each drawn speaker's utterances with replacement. A KD gain that is large for
one voice and nil for another then shows in the interval's width; over utterances alone, a test
set of few speakers looks like many independent samples of them, and the interval claims a
certainty about other speakers it does not have. Utterances in one speaker's draw are counted
with a multinomial over that speaker's utterances (k draws of a speaker with n utterances are one
multinomial of k*n), so a resample is a count per utterance and the statistic a weighted sum.

A small numpy implementation rather than ``scipy.stats.bootstrap``: the statistic is a ratio of
sums over resampled pairs, which is a one-liner on a count (or index) matrix, and a fixed seed
makes the leaderboard reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-utterance scores of one evaluation: ids, samples, (optional) weights and (optional)
    groups, the speaker of each utterance. Scores written before groups existed have none."""

    ids: Sequence[str]
    samples: Sequence[float]
    weights: Sequence[float] | None = None
    groups: Sequence[str] | None = None

    @classmethod
    def from_json(cls, d: Mapping) -> "Scores":
        return cls(d["ids"], d["samples"], d.get("weights"), d.get("groups"))


@dataclass(frozen=True)
class Interval:
    estimate: float  # b - a on all utterances
    low: float
    high: float
    n: int  # utterances paired
    #: speakers the interval resampled (clustered bootstrap); 0: utterances alone (no speakers
    #: known), 1: one speaker's utterances (the same as over utterances)
    groups: int = 0

    @property
    def clustered(self) -> bool:
        return self.groups > 1

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


def _groups(runs: Sequence[Scores], ids: list[str]) -> list[str] | None:
    """The speaker of each id, from whichever runs carry speakers (they score the same
    utterances); None when some id has none (scores written before groups existed)."""
    known: dict[str, str] = {}
    for run in runs:
        if run.groups is not None:
            for u, g in zip(run.ids, run.groups):
                known.setdefault(u, str(g))
    found = [known.get(u) for u in ids]
    return None if any(g is None for g in found) else found


def _clustered_counts(rng: np.random.Generator, groups: list[str], resamples: int) -> np.ndarray:
    """(resamples, utterances) multiplicities of a two-stage bootstrap: speakers with
    replacement, then each drawn speaker's utterances with replacement."""
    names = sorted(set(groups))
    members = [np.flatnonzero(np.asarray(groups) == g) for g in names]
    picks = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=resamples)  # (R, G)
    counts = np.zeros((resamples, len(groups)))
    for g, idx in enumerate(members):
        counts[:, idx] = rng.multinomial(picks[:, g] * len(idx), np.full(len(idx), 1 / len(idx)))
    return counts


def paired_bootstrap(a: Sequence[Scores], b: Sequence[Scores], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0, by_speaker: bool = True) -> Interval | None:
    """CI of ``mean(b) - mean(a)`` over utterances both were scored on (None if none are): over
    speakers and their utterances when the scores name several speakers (``by_speaker``), else
    over utterances."""
    common = set.intersection(*(set(r.ids) for r in [*a, *b])) if a and b else set()
    ids = sorted(common)
    if not ids:
        return None
    a_num, a_den = _fold(a, ids)
    b_num, b_den = _fold(b, ids)
    groups = _groups([*a, *b], ids) if by_speaker else None
    n_groups = len(set(groups)) if groups else 0
    rng = np.random.default_rng(seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = float(b_num.sum() / b_den.sum() - a_num.sum() / a_den.sum())
        if n_groups > 1:
            w = _clustered_counts(rng, groups, resamples)
            draws = w @ b_num / (w @ b_den) - w @ a_num / (w @ a_den)
        else:
            idx = rng.integers(0, len(ids), size=(resamples, len(ids)))
            draws = b_num[idx].sum(-1) / b_den[idx].sum(-1) - a_num[idx].sum(-1) / a_den[idx].sum(-1)
    draws = draws[np.isfinite(draws)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (np.nan, np.nan)
    return Interval(estimate, float(low), float(high), len(ids), n_groups)
