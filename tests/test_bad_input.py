"""What bad input gets: one line naming the file and the problem, the documented exit code
(README: 2 suite or baseline file, 4 data, 5 some rows failed, 6 tracking store), no traceback,
nothing already computed lost.

``CASES`` is the bad-input table of the reliability campaign (issue 14), one row per input,
numbered as there, for suite files, data and the commands that read a suite (``run``,
``validate``, ``leaderboard``, ``compare``). Rows that must succeed (lenient input kdbench
handles) train a model and are marked slow.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

from kdbench.cli import main

from conftest import tiny_suite, write_suite

RATE = 8000


def run_cli(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


# ---- fixtures the rows build in their own tmp_path ------------------------------------------------
def noise(samples: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    wave = 0.1 * np.random.default_rng(seed).standard_normal((samples, channels)).astype("float32")
    return wave[:, 0] if channels == 1 else wave


def recording(tmp: Path, name: str, wave: np.ndarray, rate: int = RATE, subtype: str | None = None,
              text: str = "one") -> dict:
    """Write ``wave`` to ``tmp/wav/name`` and return its manifest line."""
    (tmp / "wav").mkdir(exist_ok=True)
    sf.write(tmp / "wav" / name, wave, rate, subtype=subtype)
    return {"audio_filepath": f"wav/{name}", "text": text}


def listed(tmp: Path, name: str, content: bytes, text: str = "one") -> dict:
    """Write ``content`` to ``tmp/name`` and return its manifest line."""
    (tmp / name).write_bytes(content)
    return {"audio_filepath": name, "text": text}


def manifest_suite(tmp: Path, train=(), test=(), **overrides) -> Path:
    """A manifest suite over a few good recordings, each split followed by the lines ``train`` or
    ``test`` (objects, or raw bytes written as they are). No teacher: nothing but data is tried."""
    good = [recording(tmp, f"{i}.wav", noise(4000, seed=i), text=text)
            for i, text in enumerate(["one", "two three", "four", "five six", "seven"])]

    def write(name, lines):
        raw = b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n" for x in lines)
        (tmp / name).write_bytes(raw)
        return str(tmp / name)

    suite = tiny_suite(tmp, teachers=[], losses=["ctc"], metrics=["wer", "cer"],
                       training={"steps": 2, "batch_size": 4}, dataset={"name": "manifest", "options": {
                           "train": write("train.jsonl", [*good[:4], *train]),
                           "tests": {"test": write("test.jsonl", [good[4], *test])}, "sample_rate": RATE}})
    suite.update(overrides)
    return write_suite(tmp / "m.yaml", suite)


def suite_text(tmp: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def suite_with(tmp: Path, **overrides) -> Path:
    """A valid suite (FSDD data: not read by ``validate``) with ``overrides``."""
    return write_suite(tmp / "s.yaml", {**tiny_suite(tmp), **overrides})


#: `name: *h` where h stands for 9^8 = 43 million items (the campaign's bomb7.yaml)
ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{new}: &{new} [{', '.join([f'*{old}'] * 9)}]" for old, new in zip("abcdefg", "bcdefgh")]) + "\nname: *h\n"


def baseline_of(path: Path, suite: str) -> Path:
    """A valid baseline of ``suite`` with no rows, written as `kdbench baseline update` writes one."""
    from kdbench.board.aggregate import Board
    from kdbench.regression import make, save

    empty = Board(frame=pd.DataFrame(), columns={}, primary=None, provenance_columns=[], min_coverage=0.95, runs=0)
    save(path, make(empty, suite=suite))
    return path


def validate(make: Callable[[Path], Path]):
    return lambda tmp: ["validate", make(tmp)]


def run(make: Callable[[Path], Path]):
    return lambda tmp: ["run", make(tmp), "--no-tracking", "--results-dir", tmp / "r", "--cache-dir", tmp / "c"]


def on_store(command: str, make: Callable[[Path], Path]):
    """``leaderboard``/``compare`` on a suite file: the suite must be refused before the store is read."""
    def args(tmp):
        store = f"sqlite:///{tmp / 'never-created.db'}"
        if command == "compare":
            return ["compare", make(tmp), "--baseline", baseline_of(tmp / "baseline.yaml", "tiny"), "--tracking-uri", store]
        return ["leaderboard", make(tmp), "--tracking-uri", store]
    return args


class Case(NamedTuple):
    number: str
    input: str
    args: Callable[[Path], list]
    exit_code: int
    says: tuple[str, ...] = ()  # in the error line; "{tmp}" is the row's folder
    slow: bool = False


PYTHON_TAG = '!!python/object/apply:os.system ["echo PWNED > {marker}"]'

CASES = [
    # ---- suite files
    Case("1", "empty YAML", validate(lambda t: suite_text(t, "")), 2,
         ("{tmp}/s.yaml: a suite must be a mapping of keys, got NoneType",)),
    Case("2", "YAML list", validate(lambda t: suite_text(t, "- a\n- b\n")), 2, ("s.yaml: ", "got list")),
    Case("3", "alias bomb", validate(lambda t: suite_text(t, ALIAS_BOMB)), 2,
         ("{tmp}/s.yaml: refused: more than 100,000 values once its YAML aliases are expanded",)),
    Case("4", "python tag as a value", validate(lambda t: suite_text(t, "name: " + PYTHON_TAG.format(marker=t / "pwned"))), 2,
         ("s.yaml: line 1, column 7: malformed YAML: could not determine a constructor",)),
    Case("5", "python tag as a key", validate(lambda t: suite_text(
        t, yaml.safe_dump(tiny_suite(t)) + "x: " + PYTHON_TAG.format(marker=t / "pwned") + "\n")), 2,
         ("s.yaml: line ", "malformed YAML: could not determine a constructor")),
    Case("6", "unknown top-level key", validate(lambda t: suite_with(t, unknown_key=1)), 2,
         ("s.yaml: unknown_key: unknown key",)),
    Case("7", "negative steps", validate(lambda t: suite_with(t, training={"steps": -5})), 2,
         ("s.yaml: training.steps: Input should be greater than or equal to 1",)),
    Case("8", "words for seeds", validate(lambda t: suite_with(t, seeds=["zero", "one"])), 2,
         ("s.yaml: seeds[0]: Input should be a valid integer",)),
    Case("9", "quoted digits for seeds (read as numbers)", validate(lambda t: suite_with(t, seeds=["0", "1"])), 0),
    Case("10", "one loss twice", validate(lambda t: suite_with(t, losses=["ctc", "ctc"])), 2,
         ("s.yaml: losses: 'ctc' appears twice; give one a distinct 'label'",)),
    Case("11", "malformed YAML", validate(lambda t: suite_text(t, "students: [gru\n")), 2,
         ("{tmp}/s.yaml: line ", "malformed YAML")),
    Case("12", "not UTF-8", validate(lambda t: suite_text(t, b"name: tiny\ndescription: caf\xe9\n")), 2,
         ("{tmp}/s.yaml: line 2: not UTF-8 text (byte 0xe9)",)),
    Case("12b", "binary garbage", validate(lambda t: suite_text(t, bytes(range(128, 256)))), 2,
         ("s.yaml: line 1: not UTF-8 text",)),
    Case("13", "name with a slash", validate(lambda t: suite_with(t, name="a/b")), 2, ("s.yaml: name: 'a/b'",)),
    Case("14", "name '..'", run(lambda t: suite_with(t, name="..")), 2,
         ("s.yaml: name: '..' cannot name the results folder",)),
    Case("14b", "name '.'", validate(lambda t: suite_with(t, name=".")), 2, ("s.yaml: name: '.' cannot name",)),
    Case("15", "no such suite file", validate(lambda t: t / "does-not-exist.yaml"), 2,
         ("does-not-exist.yaml: cannot read suite: No such file or directory",)),
    Case("16", "suite path is a folder", validate(lambda t: (t / "adir.yaml").mkdir() or t / "adir.yaml"), 2,
         ("adir.yaml: cannot read suite: Is a directory",)),
    Case("17", "infinite learning rate", validate(lambda t: suite_with(t, training={"lr": "1e999"})), 2,
         ("s.yaml: training.lr: Input should be a finite number",)),
    Case("17b", "NaN option", validate(lambda t: suite_with(
        t, losses=["ctc", {"name": "ctc-kd", "options": {"alpha": float("nan")}}])), 2,
         ("s.yaml: losses[1].options.alpha: Input should be a finite number",)),
    Case("17c", "a self-containing alias", validate(lambda t: suite_text(t, "name: x\ntask: &a [*a]\n")), 2,
         ("s.yaml: refused: a YAML alias refers to a value that contains it",)),
    # ---- commands that read a suite only for its name, tracking and targets
    Case("19", "leaderboard of a YAML list", on_store("leaderboard", lambda t: suite_text(t, "- a\n")), 2,
         ("s.yaml: a suite must be a mapping of keys, got list",)),
    Case("19b", "compare on a YAML list", on_store("compare", lambda t: suite_text(t, "- a\n")), 2,
         ("s.yaml: a suite must be a mapping of keys, got list",)),
    Case("20", "leaderboard, tracking a list", on_store("leaderboard", lambda t: suite_with(t, tracking=[1, 2])), 2,
         ("s.yaml: tracking: Input should be a valid dictionary",)),
    Case("20b", "compare, tracking a list", on_store("compare", lambda t: suite_with(t, tracking=[1, 2])), 2,
         ("s.yaml: tracking: Input should be a valid dictionary",)),
    Case("21", "leaderboard of an alias bomb", on_store("leaderboard", lambda t: suite_text(t, ALIAS_BOMB)), 2,
         ("s.yaml: refused: more than 100,000 values once its YAML aliases are expanded",)),
    Case("21b", "compare on an alias bomb", on_store("compare", lambda t: suite_text(t, ALIAS_BOMB)), 2,
         ("s.yaml: refused: more than 100,000 values",)),
    Case("21c", "leaderboard of a non-UTF-8 suite", on_store("leaderboard", lambda t: suite_text(t, b"name: caf\xe9\n")), 2,
         ("s.yaml: line 1: not UTF-8 text",)),
    # ---- data (a manifest corpus)
    Case("23", "missing audio file", run(lambda t: manifest_suite(t, train=[{"audio_filepath": "gone.wav", "text": "one"}])), 4,
         ("{tmp}/train.jsonl:5: audio file not found: {tmp}/gone.wav",)),
    Case("24", "zero-length WAV", run(lambda t: manifest_suite(t, train=[recording(t, "zero.wav", noise(0))])), 4,
         ("train.jsonl:5: ", "zero.wav contains no samples")),
    Case("25", "NaN samples in train", run(lambda t: manifest_suite(t, train=[recording(
        t, "nan.wav", np.where(np.arange(4000) % 7 == 3, np.nan, noise(4000)).astype("float32"), subtype="FLOAT")])), 4,
         ("{tmp}/train.jsonl:5: audio file {tmp}/wav/nan.wav: 571 of 4000 samples are NaN or infinite",)),
    Case("26", "infinite samples in test", run(lambda t: manifest_suite(t, test=[recording(
        t, "inf.wav", np.concatenate([noise(100), [np.inf]]).astype("float32"), subtype="FLOAT")])), 4,
         ("{tmp}/test.jsonl:2: audio file {tmp}/wav/inf.wav: 1 of 101 samples are NaN or infinite",)),
    Case("26b", "all-NaN WAV in test", run(lambda t: manifest_suite(t, test=[recording(
        t, "allnan.wav", np.full(4000, np.nan, dtype="float32"), subtype="FLOAT")])), 4,
         ("test.jsonl:2: ", "allnan.wav: 4000 of 4000 samples are NaN or infinite",)),
    Case("30", "non-UTF-8 transcript", run(lambda t: manifest_suite(
        t, train=[b'{"audio_filepath": "wav/0.wav", "text": "caf\xe9"}\n'])), 4,
         ("{tmp}/train.jsonl:5: not UTF-8 text (byte 0xe9",)),
    Case("31", "empty transcript", run(lambda t: manifest_suite(t, test=[{"audio_filepath": "wav/0.wav", "text": ""}])), 4,
         ("{tmp}/test.jsonl:2: empty or non-text transcript",)),
    Case("32", "blank transcript", run(lambda t: manifest_suite(t, test=[{"audio_filepath": "wav/0.wav", "text": "  "}])), 4,
         ("{tmp}/test.jsonl:2: empty or non-text transcript",)),
    Case("33", "numeric transcript", run(lambda t: manifest_suite(t, train=[{"audio_filepath": "wav/0.wav", "text": 123}])), 4,
         ("{tmp}/train.jsonl:5: empty or non-text transcript",)),
    Case("35", "garbage bytes named .wav", run(lambda t: manifest_suite(
        t, train=[listed(t, "garbage.wav", b"RIFF\x00garbage" * 50)])), 4,
         ("{tmp}/train.jsonl:5: cannot read audio file {tmp}/garbage.wav",)),
    Case("36", "a text file as audio", run(lambda t: manifest_suite(
        t, train=[listed(t, "passwd", b"root:x:0:0:root:/root:/bin/sh\n")])), 4,
         ("{tmp}/train.jsonl:5: cannot read audio file {tmp}/passwd",)),
    Case("37", "a manifest line not an object", run(lambda t: manifest_suite(t, train=[["wav/0.wav", "one"]])), 4,
         ("{tmp}/train.jsonl:5: each line needs an object with 'audio_filepath'",)),
    Case("37b", "audio_filepath not a path", run(lambda t: manifest_suite(t, train=[{"audio_filepath": 7, "text": "one"}])), 4,
         ("{tmp}/train.jsonl:5: each line needs an object with 'audio_filepath' (a path)",)),
    Case("38", "malformed JSON line", run(lambda t: manifest_suite(t, test=[b'{"audio_filepath": \n'])), 4,
         ("{tmp}/test.jsonl:2: malformed JSON",)),
    Case("39", "10-sample WAV", run(lambda t: manifest_suite(t, train=[recording(t, "short.wav", noise(10))])), 4,
         ("train example train-000005 ({tmp}/wav/short.wav): 10 samples, shorter than the front end's 200-sample window",)),
    # ---- handled: lenient input that runs (trains, so slow)
    Case("27", "5-minute WAV in test", run(lambda t: manifest_suite(
        t, test=[recording(t, "long.wav", noise(300 * RATE))])), 0, slow=True),
    Case("28", "5-minute WAV in train", run(lambda t: manifest_suite(
        t, train=[recording(t, "long.wav", noise(300 * RATE))])), 0, slow=True),
    Case("29", "stereo 44.1 kHz WAV", run(lambda t: manifest_suite(
        t, train=[recording(t, "st.wav", noise(44100, 2), 44100)])), 0, slow=True),
    Case("34", "characters unseen in training, in test", run(lambda t: manifest_suite(
        t, test=[{"audio_filepath": "wav/0.wav", "text": "zebra quiz"}])), 0, slow=True),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.number}-{c.input}", marks=[pytest.mark.slow] * c.slow)
                                  for c in CASES])
def test_bad_input(tmp_path, case):
    result = CliRunner().invoke(main, list(map(str, case.args(tmp_path))))
    if not isinstance(result.exception, (SystemExit, type(None))):  # escaped the CLI: a user sees a traceback
        raise result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == case.exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    if case.exit_code == 0:
        assert not errors
        return
    assert len(errors) == 1 and errors[0] == error_line(result), result.output  # one line, the last
    for text in case.says:
        assert text.format(tmp=tmp_path) in errors[0]
    assert not (tmp_path / "pwned").exists()  # rows 4-5: the tag ran no code
    assert not list(tmp_path.rglob("leaderboard.csv")), "a refused suite or corpus wrote results"  # row 14: nowhere


def test_a_refused_suite_is_one_line_on_stderr_of_the_real_command(tmp_path):
    """The table above runs in-process; the installed command prints the same line and nothing else."""
    path = suite_text(tmp_path, b"name: caf\xe9\n")
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {path}: line 1: not UTF-8 text (byte 0xe9); save the suite as UTF-8"]


def test_a_teachers_failed_row_names_no_seed(tmp_path, fsdd_root, shared_cache):
    """Row 18: a teacher trains from no seed of the suite's; its failure line said 'seed None'."""
    suite = tiny_suite(fsdd_root, metrics=["wer"])
    suite["teachers"][0]["training"] = {"steps": 2, "batch_size": 8, "lr": 1e30}  # NaN loss at once
    result = CliRunner().invoke(main, ["run", str(write_suite(tmp_path / "s.yaml", suite)), "--no-tracking",
                                       "--results-dir", str(tmp_path / "r"), "--cache-dir", str(shared_cache)])
    assert result.exit_code == 5, result.output
    assert "failed conformer-ctc · ctc @ cpu: FloatingPointError: training loss became nan" in result.output
    assert "failed gru-ctc · ctc-kd · seed 0 @ cpu:" in result.output and "seed None" not in result.output


def test_a_baseline_of_another_suite_is_refused_before_training(tmp_path):
    """Row 72: it used to be found only after the whole run."""
    baseline = baseline_of(tmp_path / "baseline.yaml", "other")
    path = manifest_suite(tmp_path)
    result = run_cli("run", path, "--no-tracking", "--results-dir", tmp_path / "r", "--baseline", baseline)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {baseline}: baseline is for suite 'other', not 'tiny'"
    assert not (tmp_path / "r" / "tiny" / "runs").exists()


# ---- unknown names, option types and checkpoints ---------------------------------------------------
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
