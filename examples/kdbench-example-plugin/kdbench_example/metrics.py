"""Sentence error rate: the share of utterances whose transcript is not exactly right. For
short commands and digit strings it is what a user feels; WER hides it."""

from __future__ import annotations

import math

from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench_asr.text import normalize  # the same pinned normalizer as kdbench's WER and CER


class SentenceErrorRate(Metric):
    """% of utterances whose normalized hypothesis differs from the normalized reference."""

    scope = "split"

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        n = len(ev.references)
        if n == 0:  # nothing to score: NaN with coverage, never a number that looks like a result
            return [Measurement("ser", math.nan, "%", False, coverage=(0, 0))]
        wrong = sum(normalize(h or "") != normalize(r) for h, r in zip(ev.predictions, ev.references))
        return [Measurement("ser", 100.0 * wrong / n, "%", False, coverage=(n, n))]
