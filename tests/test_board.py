"""The leaderboard read back from MLflow: a real tiny suite, a second machine logging into the
same store, provenance that keeps rows apart, coverage marking, pictures, and spooling while
the tracking server is unreachable."""

import json

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main
from kdbench.board import build
from kdbench.testing.runs import log_evaluation

from conftest import tiny_suite, write_suite


def cli(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, fsdd_root, shared_cache):
    work = tmp_path_factory.mktemp("mlflow-board")
    path = write_suite(work / "tiny.yaml", tiny_suite(fsdd_root))
    uri = f"sqlite:///{work}/mlflow.db"
    result = cli("run", path, "--results-dir", work / "results", "--cache-dir", shared_cache, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    return work, path, uri


def board_json(uri, *args):
    result = cli("leaderboard", "tiny", "--tracking-uri", uri, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_leaderboard_from_a_real_run(tiny_store):
    work, _, uri = tiny_store
    board = board_json(uri)
    rows = board["rows"]
    assert [(r["role"], r["loss"]) for r in rows] == [("teacher", "ctc"), ("student", "ctc"), ("student", "ctc-kd")]
    assert board["primary"] == "test-unseen/wer"
    wer, p50 = board["metrics"]["test-unseen/wer"], board["metrics"]["latency_p50_ms"]
    # what each metric declared travels with its runs: the board needs no plugin to read them
    assert (wer["unit"], wer["higher_is_better"], wer["kind"], wer["tolerance"]) == ("%", False, "quality", {"abs": 1.0})
    assert (p50["unit"], p50["kind"], p50["headline"], p50["speedup"]) == ("ms", "cost", True, True)
    kd = rows[2]
    # KD gain against the same student without KD, with a bootstrap interval around it
    assert kd["KD gain"] == pytest.approx(rows[1]["test-unseen/wer"] - kd["test-unseen/wer"])
    assert kd["KD gain low"] <= kd["KD gain"] <= kd["KD gain high"]
    for field in ("git_commit", "version.torch", "task.normalizer", "kdbench.config_hash", "kdbench.data_hash",
                  "host.cpu", "host.torch_threads"):
        assert all(r[field] for r in rows), field
    assert kd["kdbench.teacher_hash"] == rows[0]["kdbench.teacher_hash"]


def test_suite_run_publishes_html_pareto_and_mlflow_artifacts(tiny_store):
    work, _, uri = tiny_store
    out = work / "results" / "tiny" / "mlflow-leaderboard"
    html = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in html and "gru-ctc" in html and "Provenance" in html
    assert (out / "pareto-cpu-latency_p50_ms.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench-tiny")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`kdbench.role` = 'suite'")
    assert parent.info.run_name == "suite tiny"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard")}
    assert {"leaderboard/leaderboard.html", "leaderboard/pareto-cpu-latency_p50_ms.png"} <= logged
    evaluation = client.search_runs([exp.experiment_id], "tags.`kdbench.loss` = 'ctc-kd' and "
                                    "tags.`kdbench.role` = 'evaluation'")[0]
    assert evaluation.info.run_name == "gru-ctc · ctc-kd ← conformer-ctc · seed 0 @ cpu"
    scores = json.loads(open(client.download_artifacts(evaluation.info.run_id, "scores.json", str(work))).read())
    assert len(scores["test-unseen/wer"]["ids"]) == len(scores["test-unseen/wer"]["samples"]) == 8


def test_second_machine_and_different_provenance_never_merge(tiny_store):
    work, _, uri = tiny_store
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("kdbench-tiny").experiment_id
    mine = board_json(uri)["rows"][1]
    same = {"kdbench.config_hash": mine["kdbench.config_hash"], "kdbench.data_hash": mine["kdbench.data_hash"],
            "task.chars": mine["task.chars"]}
    # another machine: same config, different CPU, two seeds
    for seed, wer in ((0, 40.0), (1, 44.0)):
        log_evaluation(client, exp_id, seed=seed, metrics={"test-unseen/wer": wer, "latency_ms": 9.0},
                       tags={**same, "host.cpu": "Other CPU @ 3GHz"})
    # this machine, same everything but a newer torch
    log_evaluation(client, exp_id, seed=0, metrics={"test-unseen/wer": 50.0, "latency_ms": 3.0},
                   tags={**same, "version.torch": "9.9.9"})
    rows = [r for r in board_json(uri, "--no-bootstrap")["rows"] if r["role"] == "student" and r["loss"] == "ctc"]
    assert len(rows) == 3
    other = next(r for r in rows if r["host.cpu"] == "Other CPU @ 3GHz")
    assert other["n"] == 2 and other["test-unseen/wer"] == 42.0 and other["test-unseen/wer std"] == pytest.approx(2.83, abs=0.01)
    assert {r["version.torch"] for r in rows} >= {"9.9.9"}
    assert len({r["provenance"] for r in rows}) == 3


def test_low_coverage_rows_are_marked_and_not_ranked(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("kdbench-cov")
    log_evaluation(client, exp_id, suite="cov", model="full", metrics={"test-unseen/wer": 30.0})
    log_evaluation(client, exp_id, suite="cov", model="partial", metrics={"test-unseen/wer": 5.0},
                   coverage={"test-unseen/wer": (6, 10)})
    board = build(client, [exp_id], "cov")
    frame = board.frame
    assert list(frame["model"]) == ["full", "partial"]  # the better-looking partial row is not ranked first
    assert frame.loc[1, "flag"] == "coverage 60% < 95%" and frame["rank"].isna().tolist() == [False, True]
    assert build(client, [exp_id], "cov", min_coverage=0.5).frame["model"].tolist() == ["partial", "full"]


def test_a_gap_in_another_metric_shows_without_unranking_the_row(tmp_path):
    # F0 error has nothing to score where no frame is voiced in both clips: that is shown in the
    # coverage column, but the row is ranked by a metric it was fully scored on
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("kdbench-cov2")
    log_evaluation(client, exp_id, suite="cov2", model="a", metrics={"test-unseen/wer": 30.0, "test-unseen/cer": 9.0})
    log_evaluation(client, exp_id, suite="cov2", model="b", metrics={"test-unseen/wer": 20.0, "test-unseen/cer": 8.0},
                   coverage={"test-unseen/cer": (6, 10)})
    frame = build(client, [exp_id], "cov2", metric="test-unseen/wer").frame
    assert list(frame["model"]) == ["b", "a"] and frame["rank"].tolist() == [1, 2]
    assert frame.loc[0, "coverage"] == 0.6 and frame.loc[0, "flag"] == ""
    by_cer = build(client, [exp_id], "cov2", metric="test-unseen/cer").frame
    assert by_cer["model"].tolist() == ["a", "b"] and by_cer["rank"].isna().tolist() == [False, True]


def test_unreachable_store_spools_and_sync_uploads(tiny_store, shared_cache, monkeypatch, tmp_path):
    work, path, uri = tiny_store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = cli("run", path, "--results-dir", work / "results", "--cache-dir", shared_cache,
                 "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:9 is unreachable" in result.output and "kdbench sync" in result.output
    spool = work / "results" / "spool"
    (session,) = [p for p in spool.iterdir() if p.is_dir()]
    assert (session / "ops.jsonl").read_text().count('"op": "start"') == 7  # suite, teacher, 2 students, 3 evaluations
    target = f"sqlite:///{tmp_path}/later.db"
    synced = cli("sync", "--results-dir", work / "results", "--tracking-uri", target)
    assert synced.exit_code == 0 and "7 run(s)" in synced.output
    rows = json.loads(cli("leaderboard", "tiny", "--tracking-uri", target, "--format", "json").output)["rows"]
    assert len(rows) == 3
    assert "nothing to sync" in cli("sync", "--results-dir", work / "results").output


def test_incremental_cache_sees_new_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("kdbench-inc")
    log_evaluation(client, exp_id, suite="inc", model="first")
    cache = tmp_path / "cache"
    assert build(client, [exp_id], "inc", cache_dir=cache).frame["model"].tolist() == ["first"]
    log_evaluation(client, exp_id, suite="inc", model="second", metrics={"test-unseen/wer": 10.0})
    assert build(client, [exp_id], "inc", cache_dir=cache).frame["model"].tolist() == ["second", "first"]


def test_locked_sqlite_is_retried_with_backoff():
    from kdbench.tracking import with_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert with_retry(flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):  # anything else is not retried
        with_retry(lambda: (_ for _ in ()).throw(ValueError("no")), base_delay=0.001)


def test_kd_gain_compares_with_the_baseline_of_the_same_training_budget(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp_id = client.create_experiment("kdbench-pair")
    budget = lambda b: {"kdbench.student_hash": b}  # noqa: E731
    log_evaluation(client, exp_id, suite="pair", metrics={"test-unseen/wer": 30.0}, tags=budget("long"),
                   config_hash="base-long")
    log_evaluation(client, exp_id, suite="pair", loss="ctc-kd", teacher="big", metrics={"test-unseen/wer": 25.0},
                   tags=budget("long"), config_hash="kd-long")
    log_evaluation(client, exp_id, suite="pair", metrics={"test-unseen/wer": 50.0}, tags=budget("short"),
                   config_hash="base-short")  # newer, but trained with another budget
    frame = build(client, [exp_id], "pair", bootstrap=False).frame
    kd = frame[frame["loss"] == "ctc-kd"].iloc[0]
    assert kd["KD gain"] == pytest.approx(5.0)


def test_a_suite_file_without_a_name_shows_only_its_own_runs(tmp_path):
    """`kdbench run` names such a suite after its file; `kdbench leaderboard FILE` must too, not
    fall back to every suite in the store."""
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    for suite, model in (("nameless", "mine"), ("other", "theirs")):
        log_evaluation(client, client.create_experiment(f"kdbench-{suite}"), suite=suite, model=model)
    suite = tiny_suite(tmp_path)
    del suite["name"]
    path = write_suite(tmp_path / "nameless.yaml", suite)
    result = cli("leaderboard", path, "--tracking-uri", uri, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [row["model"] for row in json.loads(result.output)["rows"]] == ["mine"]


def test_metric_meta_carries_every_semantic_field_a_measurement_declares():
    """MetricMeta mirrors the Measurement fields that describe a metric (not one value of it): a
    field added to one and not the other would silently never reach the leaderboard."""
    from dataclasses import fields

    from kdbench.interfaces import Measurement
    from kdbench.records import MetricMeta

    per_value = {"name", "value", "coverage", "samples", "weights"}
    assert {f.name for f in fields(Measurement)} - per_value == {f.name for f in fields(MetricMeta)}
    declared = Measurement("energy_j", 2.0, "J", kind="cost", tolerance={"abs": 0.5}, headline=True, scale="log")
    assert MetricMeta.from_tag(MetricMeta.of(declared).to_tag()) == MetricMeta(
        "J", False, kind="cost", tolerance={"abs": 0.5}, headline=True, scale="log")


def test_audio_downloads_without_a_cache_go_to_a_folder_removed_with_the_loader(tmp_path):
    import gc
    import os
    import tempfile

    from kdbench.board import mlflow_audio

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp_id = client.create_experiment("kdbench-audio")
    silent = log_evaluation(client, exp_id, suite="a", model="silent")
    spoken = log_evaluation(client, exp_id, suite="a", model="spoken")
    clip = tmp_path / "0.wav"
    clip.write_bytes(b"RIFF....WAVE")
    client.log_artifact(spoken, str(clip), "audio/test")
    before = set(os.listdir(tempfile.gettempdir()))

    load = mlflow_audio(client)
    assert load(silent) == []
    # a run without audio makes no folder (leaderboards of ASR suites download nothing)
    assert set(os.listdir(tempfile.gettempdir())) == before
    files = load(spoken)
    assert [f.read_bytes() for f in files] == [clip.read_bytes()]
    assert load(spoken) == files  # downloaded once
    assert files[0].parent.name == "test"  # the split, which the page's player chooses by
    folder = files[0].parents[3]
    assert folder.name.startswith("kdbench-audio-")
    del load
    gc.collect()
    assert not folder.exists()
