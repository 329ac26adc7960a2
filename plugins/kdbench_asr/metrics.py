"""Word and character error rates: corpus-level (total edits / total reference units, not a mean
of per-utterance rates; jiwer #59), with jiwer, after the pinned normalizer.

Each metric also reports per-utterance rates weighted by reference length (their weighted mean
is exactly the corpus rate), so the leaderboard can bootstrap over utterances."""

from __future__ import annotations

import math

import jiwer

from kdbench.interfaces import Evaluation, Measurement, Metric

from kdbench_asr.text import normalize


def _pairs(ev: Evaluation) -> tuple[list[str], list[str]]:
    refs = [normalize(r) for r in ev.references]
    hyps = [normalize(h or "") for h in ev.predictions]
    return refs, hyps


def _per_utterance(out) -> tuple[list[int], list[int]]:
    """Edits and reference units of each utterance, from jiwer's alignment chunks."""
    edits, units = [], []
    for chunks in out.alignments:
        e = n = 0
        for c in chunks:
            ref_len, hyp_len = c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx
            if c.type in ("substitute", "delete"):
                e += ref_len
            elif c.type == "insert":
                e += hyp_len
            if c.type != "insert":
                n += ref_len
        edits.append(e)
        units.append(n)
    return edits, units


# error rates move in percentage points: a 2% relative band on a 40% WER would be 0.8 points,
# on a 4% WER 0.08, so the gate allows one point whatever the level
ERROR_RATE_TOLERANCE = {"abs": 1.0}


def _measurement(name: str, out, n: int) -> Measurement:
    edits, units = _per_utterance(out)
    total = out.substitutions + out.deletions + out.hits
    value = 100.0 * (out.substitutions + out.deletions + out.insertions) / max(total, 1)
    samples = [100.0 * e / u if u else 0.0 for e, u in zip(edits, units)]
    return Measurement(name, value, "%", False, coverage=(n, n), samples=samples, weights=[float(u) for u in units],
                       tolerance=ERROR_RATE_TOLERANCE, headline=True)


class WordErrorRate(Metric):
    """Corpus WER in percent."""

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        refs, hyps = _pairs(ev)
        if not refs:  # nothing to score is not a perfect score
            return [Measurement("wer", math.nan, "%", False, coverage=(0, 0), tolerance=ERROR_RATE_TOLERANCE, headline=True)]
        return [_measurement("wer", jiwer.process_words(refs, hyps), len(refs))]


class CharacterErrorRate(Metric):
    """Corpus CER in percent (spaces count as characters)."""

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        refs, hyps = _pairs(ev)
        if not refs:
            return [Measurement("cer", math.nan, "%", False, coverage=(0, 0), tolerance=ERROR_RATE_TOLERANCE, headline=True)]
        return [_measurement("cer", jiwer.process_characters(refs, hyps), len(refs))]
