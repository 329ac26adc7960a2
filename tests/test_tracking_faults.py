"""Tracking under faults, with real processes and real stores: `kdbench run` killed (-9) at
several stages and rerun, two runs creating one new sqlite store at once, a tracking server that
is down or goes down (a real `mlflow server`), `kdbench sync` killed half-way or started while
its session is still being written, and the torn files a kill leaves.

Whatever happens, the store ends up holding exactly the runs a clean run makes, none RUNNING and
none twice. For the tiny suite that is 7: the suite, its teacher, 2 students (ctc, ctc-kd) and 3
evaluations (each model on the cpu target).
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main

from conftest import tiny_suite, write_suite
from servers import DEADLINE, MlflowServer, free_port

CLEAN = {("suite", "FINISHED"): 1, ("teacher", "FINISHED"): 1, ("student", "FINISHED"): 2,
         ("evaluation", "FINISHED"): 3}


# ---- helpers ------------------------------------------------------------------------------------
def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def spawn(log: Path, *args, env: dict | None = None) -> subprocess.Popen:
    """A real `kdbench` process, its output (stdout and stderr) in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "kdbench.cli", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def wait_for(proc: subprocess.Popen, log: Path, text: str) -> None:
    """Until ``text`` is in the process's output; it must not exit before."""
    deadline = time.monotonic() + DEADLINE
    while text not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def rerun(tmp_path: Path, args: tuple) -> None:
    """The rerun after kills: a process like the killed ones (the same code, even while it is edited)."""
    log = tmp_path / "rerun.log"
    assert spawn(log, *args).wait(DEADLINE) == 0, log.read_text()


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10000)


def census(found: list, suite: str | None = None) -> dict:
    """Runs by (role, status), of one suite (its experiment) or all."""
    if suite:
        client_exp = {r.info.experiment_id for r in found if r.data.tags.get("kdbench.suite") == suite}
        found = [r for r in found if r.info.experiment_id in client_exp]
    return dict(collections.Counter((r.data.tags.get("kdbench.role"), r.info.status) for r in found))


def twice(found: list) -> list:
    """Runs logged more than once: the same name under the same parent."""
    names = collections.Counter((r.info.experiment_id, r.data.tags.get("mlflow.parentRunId"), r.info.run_name)
                                for r in found)
    return [name for name, n in names.items() if n > 1]


def assert_clean(uri: str, suite: str | None = None) -> None:
    found = runs(uri)
    assert census(found, suite) == CLEAN, census(found, suite)
    assert twice(found) == []


def session_of(results: Path) -> Path:
    (session,) = [p for p in (results / "spool").iterdir() if p.is_dir()]
    return session


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, fsdd_root) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "tiny.yaml", tiny_suite(fsdd_root))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A new sqlite store with MLflow's schema, copied where a test needs one: creating the
    schema takes seconds, and only the concurrency test is about creating it."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def store(tmp_path: Path, empty_store: Path) -> str:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, suite_file, shared_cache, empty_store) -> Path:
    """Results of the tiny suite, trained, evaluated and tracked once (``mlflow.db`` beside
    them): runs that reuse them log the whole suite in seconds."""
    work = tmp_path_factory.mktemp("finished")
    result = cli("run", suite_file, "--results-dir", work / "results", "--cache-dir", shared_cache,
                 "--tracking-uri", store(work, empty_store))
    assert result.exit_code == 0, result.output
    return work / "results"


@pytest.fixture(scope="module")
def spooled(tmp_path_factory, suite_file, shared_cache, finished) -> Path:
    """Results whose tracking was spooled: the server was down at start (nothing listens on the
    port; MLflow's retries are kdbench's bounded ones)."""
    results = tmp_path_factory.mktemp("spooled") / "results"
    shutil.copytree(finished, results)
    result = cli("run", suite_file, "--results-dir", results, "--cache-dir", shared_cache,
                 "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.output
    assert "is unreachable" in result.output and "kdbench sync" in result.output
    assert (session_of(results) / "closed").exists()
    return results


def copy_of(spooled: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(spooled, results)
    return results


# ---- kill -9 and rerun ----------------------------------------------------------------------------
def test_kill_9_at_several_stages_then_rerun_leaves_exactly_the_clean_runs(tmp_path, suite_file, shared_cache,
                                                                            empty_store):
    uri = store(tmp_path, empty_store)
    args = ("run", suite_file, "--results-dir", tmp_path / "results", "--cache-dir", shared_cache, "--tracking-uri", uri)
    # each stage is printed once the runs around it are open: the kill lands inside them
    for n, stage in enumerate(["start gru-ctc · ctc · seed 0",  # training a student
                               "start evaluate gru-ctc · ctc-kd"]):  # evaluating the KD student
        log = tmp_path / f"kill{n}.log"
        proc = spawn(log, *args)
        wait_for(proc, log, stage)
        kill9(proc)
        found = runs(uri)
        assert ("suite", "RUNNING") in census(found)  # left behind by the dead process...
        assert twice(found) == []  # ...but nothing logged twice: the rerun resumed what it found
    rerun(tmp_path, args)
    assert_clean(uri)


def test_a_rerun_logs_nothing_new_and_reevaluate_logs_fresh_evaluations(tmp_path, suite_file, shared_cache,
                                                                         finished):
    shutil.copytree(finished, tmp_path / "results")
    shutil.copyfile(finished.parent / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ("run", suite_file, "--results-dir", tmp_path / "results", "--cache-dir", shared_cache, "--tracking-uri", uri)
    assert_clean(uri)
    before = {r.info.run_id: (r.info.end_time, len(r.data.metrics)) for r in runs(uri)}
    assert cli(*args).exit_code == 0
    assert {r.info.run_id: (r.info.end_time, len(r.data.metrics)) for r in runs(uri)} == before
    first = {r.info.run_id for r in runs(uri) if r.data.tags.get("kdbench.role") == "evaluation"}
    assert cli(*args, "--reevaluate").exit_code == 0
    evaluations = [r for r in runs(uri) if r.data.tags.get("kdbench.role") == "evaluation"]
    assert len(evaluations) == 6 and first < {r.info.run_id for r in evaluations}
    assert all(r.info.status == "FINISHED" for r in runs(uri))


# ---- a new store, two processes -------------------------------------------------------------------
RACE = """
import pathlib, sys, time
from kdbench.tracking import Tracker
import mlflow.tracking
go = pathlib.Path(sys.argv[1])
while not go.exists():  # both processes open the store at the same moment
    time.sleep(0.002)
Tracker(sys.argv[2], sys.argv[3])
"""


def test_two_processes_creating_one_new_sqlite_store_both_succeed(tmp_path):
    # what `kdbench run` does first; without the lock the loser fails with e.g. "table ... already exists"
    uri, go = f"sqlite:///{tmp_path}/new/mlflow.db", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(go), uri, f"kdbench-{name}"], stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    time.sleep(1)
    go.touch()
    for proc in procs:
        assert proc.wait(DEADLINE) == 0, proc.stderr.read()
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"kdbench-a", "kdbench-b"} <= names


@pytest.mark.slow
def test_two_runs_at_once_on_a_new_sqlite_store_both_finish(tmp_path, fsdd_root, shared_cache, finished):
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"  # not there yet: both processes create its schema
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    shutil.copytree(results / "tiny", results / "tiny2")  # the same runs: run keys do not name the suite
    procs = []
    for name in ("tiny", "tiny2"):
        path = write_suite(tmp_path / f"{name}.yaml", tiny_suite(fsdd_root, name=name))
        log = tmp_path / f"{name}.log"
        procs.append((spawn(log, "run", path, "--results-dir", results, "--cache-dir", shared_cache,
                            "--tracking-uri", uri), log))
    for proc, log in procs:
        assert proc.wait(DEADLINE) == 0, log.read_text()
    for name in ("tiny", "tiny2"):
        assert_clean(uri, name)


# ---- the server is down ---------------------------------------------------------------------------
def test_server_down_at_start_spools_and_sync_uploads_the_clean_runs(tmp_path, spooled, empty_store):
    results = copy_of(spooled, tmp_path)
    uri = store(tmp_path, empty_store)
    synced = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert synced.exit_code == 0 and "synced" in synced.output, synced.output
    assert_clean(uri)
    assert cli("sync", "--results-dir", results, "--tracking-uri", uri).output.strip() == "nothing to sync"


# ---- sync interrupted, or too early ---------------------------------------------------------------
def kill_sync_after(fraction, tmp_path, spooled, empty_store):
    """A real `kdbench sync` of a copy of the spooled session, killed (-9) once ``fraction`` of
    its operations are uploaded: (results, store uri, session, operations)."""
    results = copy_of(spooled, tmp_path)
    uri = store(tmp_path, empty_store)
    session = session_of(results)
    total = len((session / "ops.jsonl").read_text().splitlines())
    log = tmp_path / "sync.log"
    proc = spawn(log, "sync", "--results-dir", results, "--tracking-uri", uri)
    progress = session / "progress.json"
    deadline = time.monotonic() + DEADLINE
    while not (progress.exists() and json.loads(progress.read_text())["done"] >= int(total * fraction)):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    kill9(proc)
    return results, uri, session, total


def test_sync_killed_half_way_then_rerun_uploads_everything_once(tmp_path, spooled, empty_store):
    results, uri, session, total = kill_sync_after(0.5, tmp_path, spooled, empty_store)
    assert json.loads((session / "progress.json").read_text())["done"] < total and not (session / "synced").exists()
    rerun = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert rerun.exit_code == 0 and "synced" in rerun.output, rerun.output
    assert_clean(uri)


def test_sync_while_the_run_is_still_spooling_leaves_it_pending(tmp_path, fsdd_root, shared_cache, empty_store):
    # students that train long enough for `sync` to come while the run is still writing
    path = write_suite(tmp_path / "tiny.yaml", tiny_suite(fsdd_root, training={"steps": 16, "batch_size": 8}))
    results = tmp_path / "results"
    log = tmp_path / "run.log"
    proc = spawn(log, "run", path, "--results-dir", results, "--cache-dir", shared_cache,
                 "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    wait_for(proc, log, "start gru-ctc · ctc · seed 0")
    uri = store(tmp_path, empty_store)
    early = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert early.exit_code == 0 and f"still being written by process {proc.pid}" in early.output, early.output
    assert not (session_of(results) / "synced").exists() and runs(uri) == []
    assert proc.wait(DEADLINE) == 0, log.read_text()
    later = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert later.exit_code == 0 and "synced" in later.output, later.output
    assert_clean(uri)


# ---- what a kill mid-write leaves -----------------------------------------------------------------
def test_a_torn_last_line_of_ops_jsonl_is_skipped_with_a_warning(tmp_path, spooled, empty_store):
    results = copy_of(spooled, tmp_path)
    uri = store(tmp_path, empty_store)
    ops = session_of(results) / "ops.jsonl"
    with open(ops, "a") as f:
        f.write('{"op": "log", "id": "spool-abc", "par')  # an append cut short
    synced = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert synced.exit_code == 0, synced.output
    assert f"{ops}:" in synced.output and "torn last line" in synced.output and "Traceback" not in synced.output
    assert_clean(uri)


def test_a_torn_line_inside_ops_jsonl_is_an_error_naming_it(tmp_path, spooled, empty_store):
    results = copy_of(spooled, tmp_path)
    ops = session_of(results) / "ops.jsonl"
    lines = ops.read_text().splitlines()
    ops.write_text("\n".join([*lines[:3], lines[3][:20], *lines[4:]]) + "\n")
    synced = cli("sync", "--results-dir", results, "--tracking-uri", store(tmp_path, empty_store))
    assert synced.exit_code == 6 and f"{ops}:4: not a spooled operation" in synced.output, synced.output
    assert not (session_of(results) / "synced").exists()


def test_a_truncated_progress_json_is_re_derived_without_duplicates(tmp_path, spooled, empty_store):
    results = copy_of(spooled, tmp_path)
    uri = store(tmp_path, empty_store)
    session = session_of(results)
    assert cli("sync", "--results-dir", results, "--tracking-uri", uri).exit_code == 0
    # as if the upload had been killed while writing its progress, before marking the session synced
    (session / "synced").unlink()
    progress = session / "progress.json"
    progress.write_text(progress.read_text()[:25])
    again = cli("sync", "--results-dir", results, "--tracking-uri", uri)
    assert again.exit_code == 0 and "synced" in again.output, again.output
    assert f"{progress}: unreadable" in again.output and "Traceback" not in again.output
    assert_clean(uri)


# ---- slow: a real tracking server, more kills -----------------------------------------------------
@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path)
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


@pytest.mark.slow
def test_server_killed_mid_run_spools_the_rest_and_sync_completes_it(tmp_path, suite_file, shared_cache, server):
    server.start()
    results = tmp_path / "results"
    log = tmp_path / "run.log"
    proc = spawn(log, "run", suite_file, "--results-dir", results, "--cache-dir", shared_cache,
                 "--tracking-uri", server.uri)
    wait_for(proc, log, "start gru-ctc · ctc · seed 0")
    server.kill()
    assert proc.wait(DEADLINE) == 0, log.read_text()
    output = log.read_text()
    assert "stopped answering" in output and "Traceback" not in output
    assert (tmp_path / "results" / "tiny" / "leaderboard.csv").exists()  # the whole suite ran
    session = session_of(results)
    assert '"remote": true' in (session / "ops.jsonl").read_text()  # runs the server holds go on there
    server.start()
    synced = cli("sync", "--results-dir", results)
    assert synced.exit_code == 0 and "synced" in synced.output, synced.output
    assert_clean(server.uri)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_sync_killed_at_many_moments_uploads_everything_once(tmp_path, spooled, empty_store, fraction):
    results, uri, _, _ = kill_sync_after(fraction, tmp_path, spooled, empty_store)
    assert cli("sync", "--results-dir", results, "--tracking-uri", uri).exit_code == 0
    assert_clean(uri)


@pytest.mark.slow
def test_kills_at_every_stage_then_rerun(tmp_path, suite_file, empty_store):
    uri = store(tmp_path, empty_store)
    # a cache of its own: the teacher is trained here, and its training is a stage to kill
    args = ("run", suite_file, "--results-dir", tmp_path / "results", "--cache-dir", tmp_path / "cache",
            "--tracking-uri", uri)
    # in the order a run reaches them: the teacher, its outputs, every training, every evaluation
    for n, stage in enumerate(["start teacher", "start evaluate conformer-ctc", "start teacher outputs",
                               "start gru-ctc · ctc · seed 0", "start gru-ctc · ctc-kd",
                               "start evaluate gru-ctc · ctc · seed 0", "start evaluate gru-ctc · ctc-kd",
                               "start suite", "done  suite"]):
        log = tmp_path / f"kill{n}.log"
        proc = spawn(log, *args)
        wait_for(proc, log, stage)
        kill9(proc)
        assert twice(runs(uri)) == []
    rerun(tmp_path, args)
    assert_clean(uri)


@pytest.mark.slow
def test_many_kills_at_random_moments_then_rerun(tmp_path, suite_file, shared_cache, empty_store):
    import random

    uri = store(tmp_path, empty_store)
    args = ("run", suite_file, "--results-dir", tmp_path / "results", "--cache-dir", shared_cache, "--tracking-uri", uri)
    rng = random.Random(0)
    for n in range(5):
        log = tmp_path / f"kill{n}.log"
        proc = spawn(log, *args)
        wait_for(proc, log, "loading dataset")
        time.sleep(rng.uniform(0, 6))
        if proc.poll() is None:
            kill9(proc)
        assert twice(runs(uri)) == []
    rerun(tmp_path, args)
    assert_clean(uri)
