"""WER/CER: corpus level, after the pinned normalizer."""

import pytest

from kdbench.interfaces import Evaluation
from kdbench_asr.metrics import CharacterErrorRate, WordErrorRate
from kdbench_asr.text import NORMALIZER_VERSION, normalize


def evaluation(refs, hyps):
    return Evaluation("test", [], hyps, refs, None, None, None)


def test_corpus_wer_is_total_edits_over_total_words_not_a_mean():
    refs = ["one two three four five six seven eight nine ten", "zero"]
    hyps = ["one two three four five six seven eight nine ten", "one"]
    (m,) = WordErrorRate(None).compute(evaluation(refs, hyps))
    assert m.value == pytest.approx(100 * 1 / 11)  # a per-utterance mean would say 50%
    assert (m.unit, m.higher_is_better, m.coverage) == ("%", False, (2, 2))


def test_normalizer_is_applied_to_both_sides():
    (m,) = WordErrorRate(None).compute(evaluation(["Seven, THREE!"], ["seven three"]))
    assert m.value == 0
    assert normalize("  Don't   STOP-now ") == "don't stop now"
    assert NORMALIZER_VERSION == "kdbench-en-1"


def test_empty_hypothesis_counts_deletions():
    (m,) = WordErrorRate(None).compute(evaluation(["one two"], [""]))
    assert m.value == 100


def test_cer():
    (m,) = CharacterErrorRate(None).compute(evaluation(["abcd"], ["abxd"]))
    assert m.value == pytest.approx(25.0)
