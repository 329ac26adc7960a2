"""Speaker-clustered bootstrap intervals for the KD gain (issue 17): where a test set has several
speakers, the interval resamples speakers and then their utterances, so a gain that differs
from voice to voice widens it; scores without speakers (written before they were recorded) and
one-speaker test sets keep the interval over utterances; evaluation records who spoke each
utterance from the corpus, and the leaderboard says which interval it drew."""

import json

import numpy as np
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import tiny_suite, write_suite
from kdbench.board import build
from kdbench.board.compare import GAIN_OVER
from kdbench.board.render import html_page, summary_text
from kdbench.cli import main
from kdbench.evaluation import evaluate
from kdbench.interfaces import ModelSpec
from kdbench.plugins import get_registry
from kdbench.statistics import Scores, paired_bootstrap
from kdbench.testing.runs import log_evaluation

SPEAKERS, PER_SPEAKER = 5, 40


def _pair(effects, seed=7):
    """A baseline and a KD system on 5 speakers x 40 utterances: per-utterance error rates, the
    KD system better by ``effects[k]`` points on speaker k, plus utterance noise (sd 3)."""
    rng = np.random.default_rng(seed)
    speakers = [f"s{k}" for k in range(SPEAKERS) for _ in range(PER_SPEAKER)]
    ids = [f"u{i:03d}" for i in range(len(speakers))]
    a = rng.uniform(20, 40, len(ids))
    b = a + np.repeat(effects, PER_SPEAKER) + rng.normal(0, 3, len(ids))
    return Scores(ids, list(a), None, speakers), Scores(ids, list(b), None, speakers)


def _width(ci):
    return ci.high - ci.low


def test_a_gain_that_differs_between_speakers_widens_the_clustered_interval():
    a, b = _pair([-10, -1, -8, 1, -5])
    clustered, utterances = paired_bootstrap([a], [b]), paired_bootstrap([a], [b], by_speaker=False)
    assert (clustered.groups, utterances.groups) == (SPEAKERS, 0) and clustered.clustered
    assert clustered.estimate == utterances.estimate and clustered.contains(clustered.estimate)
    # measured: [-8.30, -1.12] (7.2 points) against [-5.48, -4.10] (1.4 points): the utterances
    # of five voices are not 200 independent samples of the voices a student will hear
    assert _width(clustered) > 3 * _width(utterances)
    assert clustered.contains(-2.0) and not utterances.contains(-2.0)


def test_a_gain_shared_by_every_speaker_keeps_the_interval_narrow():
    a, b = _pair([-4] * SPEAKERS)
    clustered, utterances = paired_bootstrap([a], [b]), paired_bootstrap([a], [b], by_speaker=False)
    # measured: 1.10 against 0.77 points; only the noise in each speaker's mean is added
    assert _width(clustered) < 2 * _width(utterances)
    assert not clustered.contains(0.0)


def test_scores_without_speakers_or_with_one_are_bootstrapped_over_utterances():
    a, b = _pair([-10, -1, -8, 1, -5])
    reference = paired_bootstrap([a], [b], by_speaker=False)
    old = [Scores.from_json({"ids": s.ids, "samples": s.samples, "weights": None}) for s in (a, b)]  # no "groups"
    one = [Scores(s.ids, s.samples, None, ["theo"] * len(s.ids)) for s in (a, b)]
    for (x, y), groups in ((old, 0), (one, 1)):
        ci = paired_bootstrap([x], [y])
        assert (ci.low, ci.high, ci.groups) == (reference.low, reference.high, groups)
    # a run logged before speakers were recorded, paired with one after: the speakers it has apply
    mixed = paired_bootstrap([old[0]], [b])
    assert (mixed.low, mixed.high, mixed.groups) == (paired_bootstrap([a], [b]).low, paired_bootstrap([a], [b]).high,
                                                     SPEAKERS)


def test_evaluation_records_who_spoke_each_utterance(fsdd_root, shared_cache):
    registry = get_registry()
    dataset = registry.get("datasets", "fsdd-digits").build(
        {"root": str(fsdd_root), "held_out_speakers": ["theo"], "train_utterances": 8, "test_utterances": 12,
         "max_digits": 2}, cache_dir=shared_cache)
    corpus = dataset.load()
    task = registry.get("tasks", "asr-ctc").build({})
    task.setup(corpus)
    frontend = registry.get("frontends", "log-mel").build({"n_mels": 24}, corpus_info=corpus.info)
    model = registry.get("students", "gru-ctc").build(
        {"hidden": 8, "layers": 1}, model_spec=ModelSpec(24, task.output_dim(), dict(corpus.info)))
    metrics = [registry.get("metrics", "wer").build({})]
    result = evaluate(model.eval(), frontend, task, corpus.tests, metrics, registry.get("targets", "cpu").build({}))
    for split, examples in corpus.tests.items():
        scores = result.scores[f"{split}/wer"]
        assert scores["groups"] == [e.meta["speaker"] for e in examples]
    assert set(result.scores["test-unseen/wer"]["groups"]) == {"theo"}
    seen = result.scores["test-seen/wer"]["groups"]
    assert len(set(seen)) > 1 and "theo" not in seen


def test_the_leaderboard_says_which_interval_it_drew(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("speakers")
    a, b = _pair([-10, -1, -8, 1, -5])
    plain = [{"ids": s.ids, "samples": s.samples, "weights": None} for s in (a, b)]
    for target, (base, kd) in {"cpu": ({**plain[0], "groups": a.groups}, {**plain[1], "groups": b.groups}),
                               "old-cpu": tuple(plain)}.items():
        for loss, scores in (("ctc", base), ("ctc-kd", kd)):
            value = float(np.mean(scores["samples"]))
            log_evaluation(client, exp, target=target, loss=loss, teacher="conformer" if loss == "ctc-kd" else "",
                           metrics={"test-unseen/wer": value}, scores={"test-unseen/wer": scores})
    board = build(client, [exp], "tiny")
    kd = board.frame[board.frame["loss"] == "ctc-kd"].set_index("target")
    assert kd.loc["cpu", GAIN_OVER] == f"{SPEAKERS} speakers" and kd.loc["old-cpu", GAIN_OVER] == "utterances"
    width = kd["KD gain high"] - kd["KD gain low"]
    assert width["cpu"] > 3 * width["old-cpu"]  # the same numbers, with and without their speakers
    assert "over speakers, then their utterances" in " ".join(summary_text(board).split())
    assert "over speakers, then their utterances" in html_page(board, "t", {})
    assert any(f"{SPEAKERS} speakers (1 row), utterances (1 row)" in n for n in board.notes), board.notes


def test_a_one_speaker_test_set_is_named_as_such(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("one")
    a, b = _pair([-4] * SPEAKERS)
    for loss, s in (("ctc", a), ("ctc-kd", b)):
        scores = {"ids": s.ids, "samples": s.samples, "weights": None, "groups": ["theo"] * len(s.ids)}
        log_evaluation(client, exp, loss=loss, teacher="conformer" if loss == "ctc-kd" else "",
                       metrics={"test-unseen/wer": float(np.mean(s.samples))}, scores={"test-unseen/wer": scores})
    board = build(client, [exp], "tiny")
    assert "one speaker" in board.gain_ci
    assert any("says nothing about other speakers" in n for n in board.notes)


def test_a_real_suite_on_five_speakers_draws_speakers(fsdd_root, shared_cache, tmp_path):
    """FSDD with no speaker held out: one test set of every speaker, so the KD gain's interval is
    over speakers, from the scores the runner wrote."""
    dataset = {"name": "fsdd-digits", "options": {"root": str(fsdd_root), "train_utterances": 48,
                                                   "test_utterances": 24, "max_digits": 3}}
    path = write_suite(tmp_path / "all.yaml", tiny_suite(fsdd_root, dataset=dataset))
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    board = json.loads((tmp_path / "r" / "tiny" / "leaderboard.json").read_text())
    (kd,) = [r for r in board["rows"] if r["loss"] == "ctc-kd"]
    assert kd[GAIN_OVER].endswith(" speakers") and int(kd[GAIN_OVER].split()[0]) > 1
    assert "over speakers" in board["kd_gain_ci"]
