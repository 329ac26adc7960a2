"""What bad input gets: a one-line error naming the problem and an exit code; finished work kept."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from kdbench.cli import main

from conftest import tiny_suite, write_suite


def run_cli(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


def manifest_suite(tmp_path, train_lines, test_lines):
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(4000)).astype("float32"), 8000)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in train_lines))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in test_lines))
    suite = tiny_suite(tmp_path, teachers=[], losses=["ctc"], dataset={"name": "manifest", "options": {
        "train": str(tmp_path / "train.jsonl"), "tests": {"test": str(tmp_path / "test.jsonl")}, "sample_rate": 8000}})
    return write_suite(tmp_path / "m.yaml", suite)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("students: [gru\n")
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert error_line(result).startswith(f"error: {path}: line ") and "malformed YAML" in error_line(result)


def test_unknown_plugin_name(tmp_path, fsdd_root):
    path = write_suite(tmp_path / "s.yaml", tiny_suite(fsdd_root, losses=["ctc", "logit_kd"]))
    result = run_cli("run", path, "--no-tracking", "--results-dir", tmp_path)
    assert result.exit_code == 2
    assert "losses[1].name: unknown loss 'logit_kd'; did you mean 'logit-kd'?" in result.output


def test_wrong_option_type(tmp_path, fsdd_root):
    suite = tiny_suite(fsdd_root, training={"steps": "many"})
    result = run_cli("validate", write_suite(tmp_path / "s.yaml", suite))
    assert result.exit_code == 2
    assert f"{tmp_path / 's.yaml'}: training.steps: Input should be a valid integer" in result.output


def test_missing_audio_file(tmp_path):
    path = manifest_suite(tmp_path, [{"audio_filepath": "a.wav", "text": "one"},
                                     {"audio_filepath": "gone.wav", "text": "two"}],
                          [{"audio_filepath": "b.wav", "text": "three"}])
    result = run_cli("run", path, "--no-tracking", "--results-dir", tmp_path / "r", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 4
    line = error_line(result)
    assert "train.jsonl:2" in line and "gone.wav" in line


def test_empty_transcript(tmp_path):
    path = manifest_suite(tmp_path, [{"audio_filepath": "a.wav", "text": "one"}],
                          [{"audio_filepath": "b.wav", "text": "  "}])
    result = run_cli("run", path, "--no-tracking", "--results-dir", tmp_path / "r", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 4
    assert "test.jsonl:1: empty or non-text transcript" in error_line(result)


def test_teacher_checkpoint_is_loaded_not_trained_and_a_bad_one_fails_only_its_rows(tmp_path, fsdd_root, shared_cache):
    from kdbench.interfaces import ModelSpec
    from kdbench_asr.models import ConformerCtc

    base = tiny_suite(fsdd_root)
    teacher = base["teachers"][0]
    options = ConformerCtc.Options(**teacher["options"])
    # the task's vocabulary on this data: the ten digit words' letters and space, plus blank
    model = ConformerCtc(options, ModelSpec(input_dim=24, output_dim=len(set("zero one two three four five six seven eight nine")) + 1))
    good = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), good)
    wrong = tmp_path / "wrong.pt"
    torch.save({"not": torch.zeros(1)}, wrong)
    suite = tiny_suite(fsdd_root, teachers=[
        {**teacher, "checkpoint": str(good), "label": "from-file", "training": None},
        {**teacher, "checkpoint": str(wrong), "label": "broken-file", "training": None}])
    result = run_cli("run", write_suite(tmp_path / "s.yaml", suite), "--no-tracking", "--results-dir", tmp_path / "r",
                     "--cache-dir", shared_cache)
    assert result.exit_code == 5
    assert "teachers trained 0" in result.output
    assert "teachers[1].checkpoint: cannot load" in result.output
    board = pd.read_csv(tmp_path / "r" / "tiny" / "leaderboard.csv")
    assert "from-file" in set(board["model"]) and "broken-file" not in set(board["model"]) | set(board["teacher"])
    # the ctc baseline and the KD student of the good teacher were trained and kept
    assert (board["role"] == "student").sum() == 2


@pytest.mark.parametrize("value", [False, True])
def test_a_boolean_for_a_number_is_refused_not_read_as_0_or_1(tmp_path, fsdd_root, value):
    """`alpha: false` used to train plain CTC under the name of a KD loss."""
    suite = tiny_suite(fsdd_root, losses=["ctc", {"name": "ctc-kd", "options": {"alpha": value}}])
    result = run_cli("validate", write_suite(tmp_path / "s.yaml", suite))
    assert result.exit_code == 2
    assert error_line(result).endswith(
        f"s.yaml: losses[1].options.alpha: expected a number, got the boolean {str(value).lower()}")
