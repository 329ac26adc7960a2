"""Folds (issue 17): a suite's ``folds`` rotate a dataset option (FSDD's held-out speaker), each
fold runs as a suite of its own, and ``kdbench run`` then writes the mean and spread over the folds
with a KD gain clustered over the folds' speakers; ``kdbench contrast`` sets two suites (two
training recipes) side by side, fold by fold. Real FSDD speech from the committed subset, with the
pretrained peer, whose WER differs between speakers, as the row the arithmetic is checked on."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import tiny_suite, write_suite
from kdbench.cli import main

pytest.importorskip("pocketsphinx")

FOLDS = {"theo": {"held_out_speakers": ["theo"]}, "george": {"held_out_speakers": ["george"]}}


def _suite(fsdd_root, **overrides):
    suite = tiny_suite(fsdd_root, references=[{"name": "pocketsphinx"}], targets=["cpu"],
                       metrics=["wer", "cer", "params"], folds={"each": FOLDS, "run": "all"})
    suite["dataset"]["options"].pop("held_out_speakers")
    suite.update(overrides)
    return suite


def _run(path, tmp_path, shared_cache, *extra):
    return CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "results"),
                                     "--cache-dir", str(shared_cache), *extra])


def _primary(folder, role, model, loss=""):
    board = json.loads((folder / "leaderboard.json").read_text())
    row = next(r for r in board["rows"] if r["role"] == role and r["model"] == model and (not loss or r["loss"] == loss))
    return row[board["primary"]]


@pytest.fixture(scope="module")
def two_folds(fsdd_root, shared_cache, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("folds")
    path = write_suite(tmp_path / "loso.yaml", _suite(fsdd_root, name="loso"))
    result = _run(path, tmp_path, shared_cache)
    assert result.exit_code == 0, result.output
    return tmp_path, result.output


def test_each_fold_runs_as_its_own_suite_holding_out_its_speaker(two_folds):
    tmp_path, output = two_folds
    results = tmp_path / "results"
    for fold in FOLDS:
        rows = pd.read_csv(results / f"loso.{fold}" / "rows.csv")
        assert set(rows["status"]) == {"ok"}
        scores = json.loads((results / f"loso.{fold}" / rows["scores"].iloc[0]).read_text())
        assert set(scores["test-unseen/wer"]["groups"]) == {fold}  # the fold's speaker is its unseen one
    assert "fold theo (loso.theo)" in output and "fold george (loso.george)" in output


def test_the_summary_is_the_mean_and_spread_of_the_folds_boards(two_folds):
    tmp_path, output = two_folds
    results = tmp_path / "results"
    summary = json.loads((results / "loso" / "folds.json").read_text())
    assert summary["folds"] == ["theo", "george"] and summary["primary"] == "test-unseen/wer"
    peer = next(r for r in summary["rows"] if r["model"] == "pocketsphinx")
    per_fold = [_primary(results / f"loso.{f}", "reference", "pocketsphinx") for f in FOLDS]
    assert [peer["theo"], peer["george"]] == pytest.approx(per_fold)
    assert peer["mean"] == pytest.approx(np.mean(per_fold))
    assert peer["sd"] == pytest.approx(np.std(per_fold, ddof=1))
    assert (peer["min"], peer["max"]) == pytest.approx((min(per_fold), max(per_fold)))
    assert per_fold[0] != per_fold[1]  # otherwise the spread checks nothing
    # the students' rows are relative to the peer, fold by fold
    student = next(r for r in summary["rows"] if r["role"] == "student" and r["loss"] == "ctc")
    assert student["vs pocketsphinx"] == pytest.approx(np.mean([student[f] - peer[f] for f in FOLDS]))
    assert "across folds: loso" in output and (results / "loso" / "folds.md").is_file()


def test_the_kd_gain_over_folds_is_clustered_over_their_speakers(two_folds):
    tmp_path, _ = two_folds
    summary = json.loads((tmp_path / "results" / "loso" / "folds.json").read_text())
    kd = next(r for r in summary["rows"] if r["loss"] == "ctc-kd")
    assert kd["gain over"] == "2 speakers"
    assert kd["gain low"] <= kd["KD gain"] <= kd["gain high"]


def test_the_suites_fold_list_decides_what_runs_and_fold_picks_one(fsdd_root, shared_cache, tmp_path):
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root, name="pick", folds={"each": FOLDS, "run": ["george"]}))
    result = _run(path, tmp_path, shared_cache)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if p.name.startswith("pick")) == ["pick.george"]
    assert not (tmp_path / "results" / "pick").exists()  # one fold: no summary over folds
    result = _run(path, tmp_path, shared_cache, "--fold", "theo")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "pick.theo" / "rows.csv").is_file()


@pytest.mark.parametrize("case", ["missing speaker", "unknown --fold", "--fold without folds", "unknown run"])
def test_bad_folds_are_one_line_before_anything_trains(case, fsdd_root, tmp_path):
    suite, extra = _suite(fsdd_root), []
    if case == "missing speaker":  # the second fold is wrong: the first must not train first
        suite["folds"]["each"] = {**FOLDS, "thoe": {"held_out_speakers": ["thoe"]}}
        expected = "folds.each.thoe: dataset.options.held_out_speakers: FSDD has no speaker(s) thoe"
    elif case == "unknown --fold":
        extra, expected = ["--fold", "geroge"], "--fold: unknown fold 'geroge'; did you mean 'george'?"
    elif case == "--fold without folds":
        suite.pop("folds")
        extra, expected = ["--fold", "theo"], "--fold theo: the suite declares no folds"
    else:
        suite["folds"]["run"] = ["jackson"]
        expected = "folds.run: Value error, unknown fold 'jackson'"
    path = write_suite(tmp_path / "s.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "results"),
                                       "--cache-dir", str(tmp_path / "cache"), *extra])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected.replace("Value error, ", "") in errors[0], result.output
    assert not (tmp_path / "results").exists()


def test_validate_checks_every_fold(fsdd_root, tmp_path):
    suite = _suite(fsdd_root, folds={"each": {**FOLDS, "nobody": {"held_out_speakers": ["nobody"]}}, "run": ["theo"]})
    result = CliRunner().invoke(main, ["validate", str(write_suite(tmp_path / "s.yaml", suite))])
    assert result.exit_code == 2 and "folds.each.nobody" in result.output, result.output


def test_contrast_sets_two_recipes_side_by_side_fold_by_fold(two_folds, fsdd_root, shared_cache):
    tmp_path, _ = two_folds
    other = _suite(fsdd_root, name="loso-vtlp", augmentations=["vtlp", {"name": "pitch-shift",
                                                                        "options": {"probability": 1.0}}])
    result = _run(write_suite(tmp_path / "vtlp.yaml", other), tmp_path, shared_cache)
    assert result.exit_code == 0, result.output
    out = tmp_path / "contrast.md"
    result = CliRunner().invoke(main, ["contrast", "loso", str(tmp_path / "vtlp.yaml"), "--results-dir",
                                       str(tmp_path / "results"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| teacher")]
    assert len(table) == 1
    header = next(line for line in out.read_text().splitlines() if line.startswith("| role"))
    columns = [c.strip(" |") for c in header.split(" | ")]
    results = tmp_path / "results"
    for fold in FOLDS:  # the gain is the fold's WER without the recipe minus with it
        gain = float(table[0][columns.index(fold)].split()[0])
        expected = (_primary(results / f"loso.{fold}", "teacher", "conformer-ctc")
                    - _primary(results / f"loso-vtlp.{fold}", "teacher", "conformer-ctc"))
        assert gain == pytest.approx(expected, abs=0.006)
    assert "clustered over 2 speakers" in out.read_text()
    result = CliRunner().invoke(main, ["contrast", "loso", "nothing-ran", "--results-dir", str(results)])
    assert result.exit_code == 2 and "no finished results of suite 'nothing-ran'" in result.output
    assert not math.isnan(gain)


def test_contrast_vary_sets_two_kinds_of_row_of_one_suite_against_each_other(two_folds):
    tmp_path, _ = two_folds
    results, out = tmp_path / "results", tmp_path / "vary.md"
    result = CliRunner().invoke(main, ["contrast", "loso", "--vary", "loss=ctc,ctc-kd", "--results-dir", str(results),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("loso (loss ctc-kd) vs loso (loss ctc)")
    header = [c.strip(" |") for c in next(line for line in lines if line.startswith("| role")).split(" | ")]
    table = [line.split(" | ") for line in lines if line.startswith("| student")]
    assert len(table) == 1 and "ctc -> ctc-kd" in table[0][header.index("loss")]
    board = json.loads((results / "loso" / "folds.json").read_text())
    kd = next(r for r in board["rows"] if r["loss"] == "ctc-kd")
    for fold in FOLDS:  # the same gain the fold summary gives KD over the student without it
        assert float(table[0][header.index(fold)].split()[0]) == pytest.approx(
            _primary(results / f"loso.{fold}", "student", "gru-ctc", "ctc")
            - _primary(results / f"loso.{fold}", "student", "gru-ctc", "ctc-kd"), abs=0.006)
    assert float(table[0][header.index("all")].split()[0]) == pytest.approx(kd["KD gain"], abs=0.006)
    for args, expected in [(["--vary", "loss=ctc,ctc-kdd"], "suite 'loso': unknown loss 'ctc-kdd'; did you mean 'ctc-kd' or 'ctc'? available: ctc, ctc-kd"),
                           (["--vary", "speaker=a,b"], "--vary speaker: not a row column"),
                           (["--vary", "loss=ctc"], "want KEY=A,B"),
                           (["--vary", "loss=ctc,ctc-kd", "--vary", "model=gru-ctc,conformer-ctc"],
                            "no rows of the two agree on role, teacher, target"),
                           ([], "name OTHER, or --vary")]:
        result = CliRunner().invoke(main, ["contrast", "loso", *args, "--results-dir", str(results)])
        assert result.exit_code == 2 and expected in result.output, result.output


def test_the_mlflow_leaderboard_of_a_suite_with_folds_holds_every_folds_rows(fsdd_root, shared_cache, tmp_path):
    suite = _suite(fsdd_root, name="board", references=[], losses=["ctc"], metrics=["wer"])
    path = write_suite(tmp_path / "board.yaml", suite)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(main, ["run", str(path), "--tracking-uri", uri, "--results-dir",
                                       str(tmp_path / "results"), "--cache-dir", str(shared_cache)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["leaderboard", str(path), "--tracking-uri", uri, "--format", "csv",
                                       "--no-bootstrap", "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert sorted(set(rows["suite"])) == ["board.george", "board.theo"]
    assert len(rows) == 2 * 2  # per fold: the teacher and the student
