"""Word and character error rates: corpus-level (total edits / total reference units, not a mean
of per-utterance rates; jiwer #59), with jiwer, after the pinned normalizer."""

from __future__ import annotations

import math

import jiwer

from kdbench.interfaces import Evaluation, Measurement, Metric

from kdbench_asr.text import normalize


def _pairs(ev: Evaluation) -> tuple[list[str], list[str]]:
    refs = [normalize(r) for r in ev.references]
    hyps = [normalize(h or "") for h in ev.predictions]
    return refs, hyps


class WordErrorRate(Metric):
    """Corpus WER in percent."""

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        refs, hyps = _pairs(ev)
        if not refs:  # nothing to score is not a perfect score
            return [Measurement("wer", math.nan, "%", False, coverage=(0, 0))]
        out = jiwer.process_words(refs, hyps)
        edits = out.substitutions + out.deletions + out.insertions
        words = out.substitutions + out.deletions + out.hits
        return [Measurement("wer", 100.0 * edits / max(words, 1), "%", False, coverage=(len(refs), len(refs)))]


class CharacterErrorRate(Metric):
    """Corpus CER in percent (spaces count as characters)."""

    def __init__(self, options, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        refs, hyps = _pairs(ev)
        if not refs:
            return [Measurement("cer", math.nan, "%", False, coverage=(0, 0))]
        out = jiwer.process_characters(refs, hyps)
        edits = out.substitutions + out.deletions + out.insertions
        chars = out.substitutions + out.deletions + out.hits
        return [Measurement("cer", 100.0 * edits / max(chars, 1), "%", False, coverage=(len(refs), len(refs)))]
