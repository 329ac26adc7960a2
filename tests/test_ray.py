"""The Ray executor on a real cluster: a head and a worker node started on 127.0.0.1 by the test
(tests/servers.py), tracking to a real `mlflow server`. The tiny suite runs there as
`kdbench run --executor ray --address ...` in its own process, like a user's.

What must hold: the rows are those of the local executor; the jobs ran in Ray's worker processes
and logged to the server themselves, each MLflow run exactly once; a worker killed in the middle
of a training is retried and its run resumed, not logged twice or left RUNNING; and a tracking
store that is not a server is refused before anything trains.
"""

import collections
import csv
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Executor
from kdbench.plugins import build_registry

from conftest import tiny_suite, write_suite
from servers import DEADLINE, MlflowServer, RayCluster

QUALITY = ("test-seen/wer", "test-seen/cer", "test-unseen/wer", "test-unseen/cer", "params", "size_mb")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # the kdbench processes the tests start are its clients
    try:
        cluster.start()
        yield cluster
    finally:  # a worker node that failed to join must not leave the head running
        cluster.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


def kdbench(log: Path, *args) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "kdbench.cli", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT)


def rows(results: Path, suite: str) -> dict[tuple, dict[str, str]]:
    with open(results / suite / "rows.csv") as f:
        return {(r["role"], r["model"], r["loss"], r["seed"], r["target"]): r for r in csv.DictReader(f)}


def runs_of(uri: str, suite: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"kdbench-{suite}")
    return client.search_runs([experiment.experiment_id], max_results=10000)


def census(runs: list) -> dict:
    return dict(collections.Counter((r.data.tags.get("kdbench.role"), r.info.status) for r in runs))


def logged_twice(runs: list) -> list:
    """Runs logged more than once: the same name under the same parent (each invocation has a
    suite run of its own)."""
    names = collections.Counter((r.data.tags.get("mlflow.parentRunId"), r.info.run_name) for r in runs
                                if r.data.tags.get("mlflow.parentRunId"))
    return [name for name, n in names.items() if n > 1]


def test_a_store_that_is_not_a_server_is_refused_before_anything_trains(tmp_path, fsdd_root):
    suite = write_suite(tmp_path / "tiny.yaml", tiny_suite(fsdd_root))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(main, ["run", str(suite), "--executor", "ray", "--tracking-uri", store,
                                       "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 6, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "executor 'ray' runs jobs in several processes" in lines[0]
    assert f"mlflow server --backend-store-uri {store}" in lines[0] and "--no-tracking" in lines[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "results").exists()


def test_an_address_for_an_executor_without_one_is_the_usual_option_error(tmp_path, fsdd_root):
    suite = write_suite(tmp_path / "tiny.yaml", tiny_suite(fsdd_root))
    result = CliRunner().invoke(main, ["run", str(suite), "--executor", "local", "--address", "auto", "--no-tracking"])
    assert result.exit_code == 2, result.output
    assert "executor.options" in result.output and "address" in result.output and "Traceback" not in result.output


def test_without_ray_installed_the_executor_says_how_to_install_it(monkeypatch):
    from kdbench.errors import ExecutorError
    from kdbench_ray.executor import RayExecutor, RayOptions

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: import ray raises ImportError
    with pytest.raises(ExecutorError, match=r"pip install 'kdbench\[ray\]'"):
        RayExecutor(RayOptions()).map(lambda job: job, [1])


def test_a_suite_that_trains_with_more_threads_gets_as_many_cpus_per_training():
    from kdbench_ray.executor import RayExecutor, RayOptions

    assert RayExecutor(RayOptions()).train_cpus == 1  # small speech models: two 1-thread trainings per 2 cores
    assert RayExecutor(RayOptions(), training_threads=2).train_cpus == 2  # not 2 threads on 1 CPU
    assert RayExecutor(RayOptions(train_cpus=4), training_threads=2).train_cpus == 4


def test_a_suite_on_a_ray_cluster_gives_the_local_rows_and_logs_each_run_once(tmp_path, fsdd_root, shared_cache,
                                                                              cluster, server):
    suite = write_suite(tmp_path / "tiny.yaml", tiny_suite(fsdd_root))
    on_ray = write_suite(tmp_path / "tiny-ray.yaml", tiny_suite(fsdd_root, executor={
        "name": "ray", "options": {"quality_apart": True}}))  # --address joins these options
    common = ("--tracking-uri", server.uri, "--cache-dir", shared_cache)
    local = kdbench(tmp_path / "local.log", "run", suite, "--results-dir", tmp_path / "local", *common)
    assert local.wait(DEADLINE) == 0, (tmp_path / "local.log").read_text()
    ray = kdbench(tmp_path / "ray.log", "run", on_ray, "--results-dir", tmp_path / "ray", *common,
                  "--address", cluster.address)
    assert ray.wait(DEADLINE) == 0, (tmp_path / "ray.log").read_text()

    here, there = rows(tmp_path / "local", "tiny"), rows(tmp_path / "ray", "tiny")
    assert here.keys() == there.keys() and len(here) == 3
    assert all(r["status"] == "ok" for r in [*here.values(), *there.values()])
    for key in here:  # the same weights (same seeds, same inputs), so the same quality and size
        assert {m: here[key][m] for m in QUALITY} == {m: there[key][m] for m in QUALITY}, key
    # on Ray the students' quality was measured apart from their timing, side by side
    assert len(list((tmp_path / "ray" / "tiny" / "runs").glob("*/quality-*.json"))) == 2

    runs = runs_of(server.uri, "tiny")
    parents = [r for r in runs if r.data.tags.get("kdbench.role") == "suite"]
    assert len(parents) == 2 and logged_twice(runs) == []
    ray_parent = next(p for p in parents if p.data.params.get("suite.executor.name") == "ray")
    students = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ray_parent.info.run_id
                and r.data.tags.get("kdbench.role") == "student"]
    assert len(students) == 2 and all(r.info.status == "FINISHED" for r in students)
    # trained in Ray's workers, which logged to the server themselves: a task id, not the driver's pid
    assert all(r.data.tags.get("kdbench.owner.task") for r in students), [r.data.tags for r in students]
    assert census(runs) == {("suite", "FINISHED"): 2, ("teacher", "FINISHED"): 2, ("student", "FINISHED"): 4,
                            ("evaluation", "FINISHED"): 6}


@pytest.mark.slow  # 400 training steps, to be caught in the middle
def test_a_worker_killed_mid_training_is_retried_and_its_run_resumed_not_duplicated(tmp_path, fsdd_root,
                                                                                     shared_cache, cluster, server):
    # long enough to be caught in the middle (the guard is a deadline, not a timing assertion)
    suite = write_suite(tmp_path / "killed.yaml", tiny_suite(fsdd_root, name="killed", losses=["ctc"],
                                                             training={"steps": 400, "batch_size": 8}))
    proc = kdbench(tmp_path / "run.log", "run", suite, "--results-dir", tmp_path / "results",
                   "--tracking-uri", server.uri, "--cache-dir", shared_cache,
                   "--executor", "ray", "--address", cluster.address)
    deadline = time.monotonic() + DEADLINE
    victim, owner_task = None, None
    while victim is None:  # a worker whose training has started its MLflow run
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        assert time.monotonic() < deadline
        try:
            running = [r for r in runs_of(server.uri, "killed")
                       if r.data.tags.get("kdbench.role") == "student" and r.info.status == "RUNNING"]
        except AttributeError:  # the experiment does not exist yet
            running = []
        if running and cluster.worker_processes():
            owner_task = running[0].data.tags.get("kdbench.owner.task")
            victim = int(running[0].data.tags["kdbench.owner.pid"])
            assert victim in cluster.worker_processes()
        time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(DEADLINE) == 0, (tmp_path / "run.log").read_text()

    runs = runs_of(server.uri, "killed")
    assert census(runs) == {("suite", "FINISHED"): 1, ("teacher", "FINISHED"): 1, ("student", "FINISHED"): 1,
                            ("evaluation", "FINISHED"): 2}
    assert logged_twice(runs) == []
    student = next(r for r in runs if r.data.tags.get("kdbench.role") == "student")
    # the retry (same Ray task, another worker process) resumed the run the killed one had started
    assert student.data.tags["kdbench.owner.task"] == owner_task
    assert int(student.data.tags["kdbench.owner.pid"]) != victim
    assert (tmp_path / "results" / "killed" / "leaderboard.csv").exists()


# ---- the runner's path for a distributed executor, without a cluster ----------------------------
CALLS: list[tuple[str, bool, int]] = []


class PicklingExecutor(Executor):
    """Distributed as far as the runner can tell: every job crosses a pickle, as to a Ray worker,
    and lands back in this process (where the Work finds the driver's runner)."""

    distributed = True
    quality_apart = True

    def __init__(self, options, **context):
        pass

    def map(self, fn, jobs):
        CALLS.append((fn.method, bool(getattr(fn, "exclusive", False)), len(jobs)))
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(job))) for job in jobs]


class Pickling:
    @hookimpl
    def register_executors(self, register):
        register("pickling", PicklingExecutor)


def test_a_distributed_executor_measures_quality_side_by_side_then_times_alone_with_the_same_rows(tmp_path,
                                                                                                  fsdd_root,
                                                                                                  shared_cache):
    registry = build_registry(extra_plugins=[Pickling()])
    results = {}
    for executor in ("local", "pickling"):
        suite = write_suite(tmp_path / f"{executor}.yaml", tiny_suite(fsdd_root, executor=executor))
        result = CliRunner().invoke(main, ["run", str(suite), "--results-dir", str(tmp_path / executor),
                                           "--cache-dir", str(shared_cache), "--no-tracking"], obj=registry)
        assert result.exit_code == 0, result.output
        results[executor] = rows(tmp_path / executor, "tiny")
    # trainings, then every quality half side by side, then the timing halves with a machine each
    assert CALLS == [("train", False, 2), ("measure_quality", False, 2), ("evaluate", True, 2)]
    here, there = results["local"], results["pickling"]
    assert here.keys() == there.keys() and all(r["status"] == "ok" for r in there.values())
    for key in here:
        assert {m: here[key][m] for m in QUALITY} == {m: there[key][m] for m in QUALITY}, key
        assert there[key]["latency_p50_ms"]  # timed too, in the second half
    halves = list((tmp_path / "pickling" / "tiny" / "runs").glob("*/quality-*.json"))
    assert len(halves) == 2 and not list((tmp_path / "local" / "tiny" / "runs").glob("*/quality-*.json"))
