"""Where kdbench writes and what it reads back: an unwritable folder is named before anything
trains; a corrupt cache or run-store entry is named, moved aside and recomputed; nothing read
from a cache executes code. Real files, real folders (a tmpfs where a full or read-only disk is
needed) and real `kdbench run` / `kdbench leaderboard` on the tiny suite."""

import contextlib
import json
import logging
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import main

from conftest import tiny_suite, write_suite

QUALITY = ["role", "model", "loss", "test-unseen/wer", "test-unseen/cer", "params"]


def run_cli(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def last_line(result) -> str:
    return [line for line in result.output.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory, fsdd_root):
    """One clean run of the tiny suite: its cache and results, copied by each test that needs them."""
    root = tmp_path_factory.mktemp("clean")
    suite = write_suite(root / "tiny.yaml", tiny_suite(fsdd_root))
    result = run_cli("run", suite, "--no-tracking", "--results-dir", root / "r", "--cache-dir", root / "c")
    assert result.exit_code == 0, result.output
    return root


def copy_of(clean: Path, to: Path) -> Path:
    shutil.copytree(clean, to)
    return to


# ---- unwritable folders: named before anything trains ------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs at ``path`` (needs root: skips otherwise), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a read-only or full disk needs a tmpfs mount, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def read_only(path: Path):
    if os.geteuid() != 0:  # as root chmod does not stop a write: a read-only mount does
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tmpfs(path, "ro,size=64k"):
            yield path


@contextlib.contextmanager
def full_disk(path: Path):
    with tmpfs(path, "size=64k"):
        with contextlib.suppress(OSError), open(path / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        yield path


def a_file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


# (what, arguments given a scratch folder, the words the one line must hold)
UNWRITABLE = {
    "results dir under a file": (lambda t: ["--results-dir", a_file(t / "afile") / "results"],
                                 "cannot write the results folder", "afile is a file, not a folder"),
    "cache dir is a file": (lambda t: ["--cache-dir", a_file(t / "afile")],
                            "cannot write the cache", "afile: it is a file, not a folder"),
    "sqlite store under a file": (lambda t: ["--tracking-uri", f"sqlite:///{a_file(t / 'afile')}/m.db"],
                                  "cannot write the tracking store's folder", "afile: it is a file, not a folder"),
    "read-only results dir": (lambda t: ["--results-dir", t / "ro"], "cannot write the results folder",
                              "Read-only file system" if os.geteuid() == 0 else "Permission denied"),
    "results dir on a full disk": (lambda t: ["--results-dir", t / "full"], "cannot write the results folder",
                                   "No space left on device"),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_folder_is_one_line_before_anything_trains(tmp_path, fsdd_root, case):
    arguments, *words = UNWRITABLE[case]
    suite = write_suite(tmp_path / "tiny.yaml", tiny_suite(fsdd_root))
    defaults = {"--results-dir": tmp_path / "r", "--cache-dir": tmp_path / "c", "--no-tracking": None}
    with contextlib.ExitStack() as stack:
        if case == "read-only results dir":
            stack.enter_context(read_only(tmp_path / "ro"))
        if case == "results dir on a full disk":
            stack.enter_context(full_disk(tmp_path / "full"))
        given = arguments(tmp_path)
        if "--tracking-uri" in given:
            defaults.pop("--no-tracking")
        options = {**defaults, **dict(zip(given[::2], given[1::2]))}
        result = run_cli("run", suite, *[x for k, v in options.items() for x in ((k,) if v is None else (k, v))])
    assert result.exit_code == 8, result.output
    assert "Traceback" not in result.output
    line = last_line(result)
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (tmp_path / "c" / "teachers").exists()  # nothing trained, nothing cached
    assert not list(tmp_path.glob("**/runs"))


def test_validate_and_run_name_a_missing_or_folder_teacher_checkpoint(tmp_path, fsdd_root):
    (tmp_path / "adir.pt").mkdir()
    teacher = {**tiny_suite(fsdd_root)["teachers"][0], "training": None}
    for checkpoint, problem in ((tmp_path / "nope.pt", "no such file"), (tmp_path / "adir.pt", "is a folder, not a file")):
        suite = write_suite(tmp_path / "s.yaml", tiny_suite(fsdd_root, teachers=[{**teacher, "checkpoint": str(checkpoint)}]))
        for command in (["validate", suite],
                        ["run", suite, "--no-tracking", "--results-dir", tmp_path / "r", "--cache-dir", tmp_path / "c"]):
            result = run_cli(*command)
            assert result.exit_code == 4, result.output
            assert last_line(result) == f"error: {suite}: teachers[0].checkpoint: {problem}: {checkpoint}"
    assert not (tmp_path / "c").exists()


def test_a_garbage_checkpoint_file_is_refused_without_torchs_advice(tmp_path):
    from kdbench.errors import CheckpointError
    from kdbench.runner import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    for name in ("evil.pt", "gone.pt"):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(torch.nn.Linear(2, 2), tmp_path / name, "teachers[0].checkpoint")
        assert str(caught.value).startswith(f"teachers[0].checkpoint: ") and str(tmp_path / name) in str(caught.value)
        assert "weights_only" not in str(caught.value)
    assert not (tmp_path / "ran").exists()


def test_a_write_that_fails_late_keeps_the_finished_runs_and_is_one_line(tmp_path, clean):
    """What a disk that fills during the run does to the last write: here the provenance file's
    place is taken by a folder, so only that write fails (EISDIR), after every run finished."""
    work = copy_of(clean, tmp_path / "w")
    (work / "r" / "tiny" / "provenance.json").unlink()
    (work / "r" / "tiny" / "provenance.json").mkdir()
    args = ["run", work / "tiny.yaml", "--no-tracking", "--results-dir", work / "r", "--cache-dir", work / "c"]
    result = run_cli(*args)
    assert result.exit_code == 8, result.output
    assert "Traceback" not in result.output
    assert "leaderboard: tiny" in result.output  # the board is still printed
    assert last_line(result) == (f"error: cannot write {work / 'r' / 'tiny' / 'provenance.json'}: Is a directory; "
                                 "finished runs are kept, rerun to resume")
    (work / "r" / "tiny" / "provenance.json").rmdir()
    again = run_cli(*args)
    assert again.exit_code == 0 and "students trained 0, runs reused 2" in again.output


# ---- corrupt entries: named, moved aside, recomputed ---------------------------------------------
def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(512))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def entries(work: Path) -> dict[str, Path]:
    """The dataset, the teacher, its outputs and the KD student's checkpoint of the tiny suite."""
    (dataset,) = (work / "c" / "datasets").glob("*.pt")
    (teacher,) = (work / "c" / "teachers").glob("*.pt")
    (outputs,) = (work / "c" / "teacher-outputs").glob("*.pt")
    (kd,) = [p.parent / "model.pt" for p in (work / "r" / "tiny" / "runs").glob("*/training.json")
             if json.loads(p.read_text())["config"]["teacher"]]
    return {"dataset": dataset, "teacher": teacher, "teacher outputs": outputs, "KD student": kd}


@pytest.mark.parametrize("corrupt", [truncated, garbage])
def test_corrupt_entries_are_named_moved_aside_and_recomputed(tmp_path, clean, corrupt, caplog):
    work = copy_of(clean, tmp_path / "w")
    paths = entries(work)
    original = {what: path.read_bytes() for what, path in paths.items()}
    for path in paths.values():
        corrupt(path)
    bad = {what: path.read_bytes() for what, path in paths.items()}
    with caplog.at_level(logging.WARNING):
        result = run_cli("run", work / "tiny.yaml", "--no-tracking", "--results-dir", work / "r", "--cache-dir", work / "c")
    assert result.exit_code == 0, result.output
    assert "teachers trained 1, students trained 1, runs reused 1" in result.output  # the ctc baseline was intact
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for what, path in paths.items():
        (line,) = [w for w in warnings if w.startswith(f"warning: {path}: ")]
        (aside,) = path.parent.glob(f"{path.name}.corrupt-*")
        assert f"moved to {aside.name}, recomputing it" in line and "\n" not in line
        assert aside.read_bytes() == bad[what]  # kept for inspection
        assert path.read_bytes() == original[what], f"{what} recomputed differently"
    assert not any("weights_only" in w for w in warnings) and "weights_only" not in result.output
    board = pd.read_csv(work / "r" / "tiny" / "leaderboard.csv")[QUALITY]
    pd.testing.assert_frame_equal(board, pd.read_csv(clean / "r" / "tiny" / "leaderboard.csv")[QUALITY])


def test_a_foreign_run_record_is_moved_aside_and_redone(tmp_path, clean, caplog):
    work = copy_of(clean, tmp_path / "w")
    records = sorted((work / "r" / "tiny" / "runs").glob("*/evaluation-*.json"))
    records[0].write_text("[1, 2]")
    with caplog.at_level(logging.WARNING):
        result = run_cli("run", work / "tiny.yaml", "--no-tracking", "--results-dir", work / "r", "--cache-dir", work / "c")
    assert result.exit_code == 0, result.output
    assert any(r.getMessage().startswith(f"warning: {records[0]}: a JSON list, not a record") for r in caplog.records)
    assert json.loads(records[0].read_text())["measurements"]


# ---- nothing read from a cache executes code -----------------------------------------------------
class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


SCORES = {"test-unseen/wer": {"ids": ["a", "b"], "samples": [1.0, 0.0], "weights": [3.0, 2.0]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow store holding one evaluation run of suite tiny, with per-utterance scores."""
    from mlflow import MlflowClient

    from kdbench.testing.runs import log_evaluation

    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/m.db"
    client = MlflowClient(uri)
    run_id = log_evaluation(client, client.create_experiment("kdbench-tiny"), model="gru-ctc", scores=SCORES)
    return uri, client, run_id


def test_a_planted_pickle_in_the_leaderboard_cache_never_runs(tmp_path, monkeypatch, store):
    uri, _, _ = store
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    board = ["leaderboard", "tiny", "--tracking-uri", uri, "--no-bootstrap", "--format", "json"]
    first = run_cli(*board)
    assert first.exit_code == 0, first.output
    (copy,) = (tmp_path / "cache" / "mlflow-runs").glob("*.json")
    marker = tmp_path / "ran"
    for planted in (pickle.dumps(Planted(marker)), b'{"format": 1, "written": "soon", "watermark": 0, "rows": 7}'):
        for path in (copy, copy.with_suffix(".pkl")):  # where it is read, and where older kdbench read it
            path.write_bytes(planted)
        again = run_cli(*board)
        assert again.exit_code == 0, again.output
        assert not marker.exists()
        assert [r["model"] for r in json.loads(again.output)["rows"]] == ["gru-ctc"]
        assert json.loads(copy.read_text())["rows"][0]["tag:kdbench.model"] == "gru-ctc"  # rewritten


def test_the_leaderboard_works_with_a_cache_dir_that_is_a_file(tmp_path, monkeypatch, store):
    uri, _, _ = store
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(a_file(tmp_path / "afile")))
    result = run_cli("leaderboard", "tiny", "--tracking-uri", uri, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "warning: cannot write the cache" in result.output and "gru-ctc" in result.output


def test_a_corrupt_copy_of_downloaded_scores_is_moved_aside_and_downloaded_again(tmp_path, caplog, store):
    from kdbench.board import mlflow_scores

    _, client, run_id = store
    load = mlflow_scores(client, tmp_path / "scores")
    assert load(run_id) == SCORES
    copy = tmp_path / "scores" / f"{run_id}.json"
    copy.write_bytes(b"\x80 torn")
    with caplog.at_level(logging.WARNING):
        assert load(run_id) == SCORES
    assert any(r.getMessage().startswith(f"warning: {copy}: not JSON; moved to") for r in caplog.records)
    assert json.loads(copy.read_text()) == SCORES and len(list(copy.parent.glob("*.corrupt-*"))) == 1
