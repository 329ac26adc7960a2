"""Paired bootstrap over utterances, and per-utterance WER/CER samples that add up to corpus rates."""

import numpy as np
import pytest

from kdbench.interfaces import Evaluation
from kdbench.statistics import Scores, paired_bootstrap
from kdbench_asr.metrics import CharacterErrorRate, WordErrorRate


def _scores(values, weights=None, prefix="u"):
    return Scores([f"{prefix}{i}" for i in range(len(values))], list(values), weights)


def test_known_difference_is_inside_the_interval_and_zero_is_not():
    rng = np.random.default_rng(1)
    a = rng.uniform(10, 40, size=300)
    b = a - 5 + rng.normal(0, 2, size=300)  # b better by about 5 on every utterance
    ci = paired_bootstrap([_scores(a)], [_scores(b)])
    assert ci.n == 300
    assert ci.estimate == pytest.approx(np.mean(b) - np.mean(a))
    assert ci.contains(ci.estimate) and not ci.contains(0.0)
    assert ci.high < -4 and ci.low > -6


def test_identical_systems_interval_contains_zero():
    a = np.random.default_rng(2).uniform(0, 50, size=100)
    ci = paired_bootstrap([_scores(a)], [_scores(a.copy())])
    assert ci.estimate == 0 and ci.contains(0.0)


def test_noisy_equal_systems_interval_contains_zero():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 50, size=200)
    b = a + rng.normal(0, 5, size=200)  # no systematic difference
    assert paired_bootstrap([_scores(a)], [_scores(b)]).contains(0.0)


def test_weighted_ratio_pairs_by_id_and_folds_seeds():
    # corpus rate = sum(w*s)/sum(w); utterances are paired by id whatever their order
    a = Scores(["x", "y"], [50.0, 0.0], [2.0, 8.0])          # 1 edit in 10 words: 10 %
    b = Scores(["y", "x"], [25.0, 0.0], [8.0, 2.0])          # 2 edits in 10 words: 20 %
    assert paired_bootstrap([a], [b], resamples=200).estimate == pytest.approx(10.0)
    # a second seed of b with 0 % folds into the seed-mean: 2 edits in 20 words
    b2 = Scores(["x", "y"], [0.0, 0.0], [2.0, 8.0])
    assert paired_bootstrap([a], [b, b2], resamples=200).estimate == pytest.approx(0.0)
    # utterances only one side has are not paired
    c = Scores(["x", "z"], [0.0, 100.0], [2.0, 5.0])
    assert paired_bootstrap([a], [c], resamples=200).n == 1


def test_wer_and_cer_samples_average_to_the_corpus_rate():
    refs = ["one two three", "four five six seven", "eight"]
    hyps = ["one too three", "four five", "eight nine"]
    ev = Evaluation("test", [], hyps, refs, None, None, None)
    for metric in (WordErrorRate(None), CharacterErrorRate(None)):
        (m,) = metric.compute(ev)
        assert len(m.samples) == len(m.weights) == 3
        assert np.average(m.samples, weights=m.weights) == pytest.approx(m.value)
    (wer,) = WordErrorRate(None).compute(ev)
    assert wer.samples == pytest.approx([100 / 3, 50.0, 100.0]) and wer.weights == [3.0, 4.0, 1.0]
