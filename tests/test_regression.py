"""The nightly gate: `kdbench baseline update` then `kdbench compare` on an MLflow store, with
synthetic evaluation runs (real runs feed the same path: see test_mlflow_leaderboard)."""

import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main
from kdbench.regression import allowed_worsening, tolerance_for
from kdbench.records import MetricMeta
from kdbench.testing.runs import log_evaluation


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("regression") / "mlflow.db"
    uri = f"sqlite:///{path}"
    return uri, MlflowClient(uri)


def populate(store, suite, wer=20.0, latency=5.0):
    uri, client = store
    exp = client.get_experiment_by_name(f"kdbench-{suite}")
    exp_id = exp.experiment_id if exp else client.create_experiment(f"kdbench-{suite}")
    for seed in (0, 1):
        log_evaluation(client, exp_id, suite=suite, seed=seed,
                       metrics={"test-unseen/wer": wer + seed, "latency_ms": latency, "size_mb": 0.1})
        log_evaluation(client, exp_id, suite=suite, seed=seed, loss="ctc-kd", teacher="big",
                       metrics={"test-unseen/wer": wer - 2 + seed, "latency_ms": latency, "size_mb": 0.1})


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_unchanged_passes_and_worse_fails_naming_the_metric(store, tmp_path):
    uri, _ = store
    populate(store, "gate")
    baseline = tmp_path / "baseline.yaml"
    result = cli("baseline", "update", "gate", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(baseline.read_text())
    assert data["schema"] == 2 and len(data["machines"]) == 1 and len(data["machines"][0]["rows"]) == 2
    assert data["tolerances"]["latency_ms"] == {"ratio": 3.0}

    populate(store, "gate")  # an unchanged rerun
    ok = cli("compare", "gate", "--baseline", baseline, "--tracking-uri", uri)
    assert ok.exit_code == 0, ok.output
    assert "0 regression(s), 0 improvement(s), 0 inconclusive, 0 not comparable, 0 missing" in ok.output

    populate(store, "gate", latency=12.5)  # 2.5x slower: inside the ratio-3 latency tolerance
    assert cli("compare", "gate", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0

    populate(store, "gate", wer=25.0)  # 5 points worse WER: a regression
    report = tmp_path / "report.txt"
    bad = cli("compare", "gate", "--baseline", baseline, "--tracking-uri", uri, "--report", report)
    assert bad.exit_code == 7
    assert "REGRESSION      test-unseen/wer  gru-ctc · ctc @ cpu: 20.5 -> 25.5" in bad.output
    assert "2 regression(s)" in bad.output and "test-unseen/wer" in report.read_text()


def test_old_schema_baseline_is_explained(store, tmp_path):
    uri, _ = store
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"suite": "gate", "rows": [{"model": "gru-ctc", "wer": 20}]}))
    result = cli("compare", "gate", "--baseline", old, "--tracking-uri", uri)
    assert result.exit_code == 2
    assert "baseline from an older kdbench (no `schema` field)" in result.output
    assert "kdbench baseline update" in result.output
    old.write_text(yaml.safe_dump({"schema": 99, "rows": [], "metrics": {}}))
    assert "schema 99 is newer" in cli("compare", "gate", "--baseline", old, "--tracking-uri", uri).output
    old.write_text(yaml.safe_dump({"schema": 1, "rows": [], "metrics": {}}))  # before machine sections
    result = cli("compare", "gate", "--baseline", old, "--tracking-uri", uri)
    assert result.exit_code == 2 and "schema 1 is older" in result.output and "baseline update" in result.output


def test_baseline_naming_metrics_or_runs_that_no_longer_exist(store, tmp_path):
    uri, _ = store
    populate(store, "renamed")
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "renamed", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    data = yaml.safe_load(baseline.read_text())
    rows = data["machines"][0]["rows"]
    rows[0]["values"]["test-unseen/sentence_error"] = 3.0
    rows.append({**rows[0], "model": "retired-student"})
    baseline.write_text(yaml.safe_dump(data))
    result = cli("compare", "renamed", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 7
    assert "MISSING         test-unseen/sentence_error" in result.output and "metric not in the latest results" in result.output
    assert "retired-student" in result.output and "no such run in the latest results" in result.output
    assert cli("compare", "renamed", "--baseline", baseline, "--tracking-uri", uri, "--allow-missing").exit_code == 0


def test_missing_baseline_file_and_store(tmp_path):
    result = cli("compare", "gate", "--baseline", tmp_path / "none.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 2 and "no such baseline file" in result.output
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"schema": 2, "suite": "gate", "machines": []}))
    result = cli("compare", "--baseline", tmp_path / "b.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 6 and "no MLflow tracking store at sqlite:///" in result.output


def test_tolerance_kinds_follow_the_metric_direction():
    tol = {"*latency*": {"ratio": 2.0}, "*/wer": {"abs": 1.0}, "*": {"rel": 0.05}}
    assert tolerance_for("latency_ms", tol) == ("ratio", 2.0)
    assert tolerance_for("test/wer", tol) == ("abs", 1.0)
    assert tolerance_for("params", tol) == ("rel", 0.05)
    assert allowed_worsening("ratio", 2.0, 10.0, higher_is_better=False) == 10.0   # up to 20 ms
    assert allowed_worsening("ratio", 2.0, 10.0, higher_is_better=True) == 5.0     # down to 5
    assert allowed_worsening("rel", 0.05, 200.0, higher_is_better=True) == 10.0


def test_machine_load_is_flagged_but_never_gated(store, tmp_path):
    uri, client = store
    exp_id = client.create_experiment("kdbench-loaded")
    meta = {"contention_cores": MetricMeta("cores", False, kind="condition", gated=False, warn_above=0.25)}
    log_evaluation(client, exp_id, suite="loaded", metrics={"test-unseen/wer": 20.0, "latency_ms": 5.0,
                                                            "contention_cores": 0.05}, meta=meta)
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "loaded", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    row = yaml.safe_load(baseline.read_text())["machines"][0]["rows"][0]
    assert "contention_cores" not in row["values"] and "latency_ms" in row["values"]
    assert row["conditions"] == {"contention_cores": 0.05}
    # a later run on a busy machine: slower within tolerance, flagged, and no regression from the load itself
    log_evaluation(client, exp_id, suite="loaded", metrics={"test-unseen/wer": 20.0, "latency_ms": 6.0,
                                                            "contention_cores": 1.6}, meta=meta)
    assert cli("compare", "loaded", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    board = cli("leaderboard", "loaded", "--tracking-uri", uri, "--format", "md")
    assert "measured under load: contention_cores 1.60 cores > 0.25" in board.output


def test_default_tolerances_are_what_each_metric_declares():
    from kdbench.regression import default_tolerances

    tol = default_tolerances({"test/wer": MetricMeta("%", tolerance={"abs": 1.0}),
                              "latency_p50_ms": MetricMeta("ms", kind="cost", tolerance={"ratio": 3.0}),
                              "size_mb": MetricMeta("MB", kind="cost"),
                              "pct_of_peak": MetricMeta("%", True, kind="cost", tolerance={"abs": 5.0}, gated=False),
                              "load": MetricMeta("cores", kind="condition", tolerance={"abs": 1.0})})
    assert tol == {"test/wer": {"abs": 1.0}, "latency_p50_ms": {"ratio": 3.0}, "*": {"rel": 0.02}}


def test_updating_a_baseline_keeps_edited_tolerances_and_covers_new_metrics():
    from kdbench.regression import default_tolerances, merge_tolerances

    kept = {"test/wer": {"abs": 0.5}, "*": {"rel": 0.05}}
    merged = merge_tolerances(kept, default_tolerances({"test/wer": MetricMeta("%", tolerance={"abs": 1.0}),
                                                        "latency_p99_ms": MetricMeta("ms", tolerance={"ratio": 3.0})}))
    assert merged["test/wer"] == {"abs": 0.5}  # the user's edit survives
    assert merged["latency_p99_ms"] == {"ratio": 3.0}  # a new timing metric is not left to the catch-all
    assert list(merged)[-1] == "*" and merged["*"] == {"rel": 0.05}


def test_a_new_metric_in_a_new_unit_is_gated_and_plotted_as_it_declares(store, tmp_path):
    """Energy in joules: no core file names it, yet the gate uses its tolerance and the HTML
    page plots it as a Pareto axis, because the metric says it is a headline cost."""
    uri, client = store
    exp_id = client.create_experiment("kdbench-energy")
    meta = {"energy_j": MetricMeta("J", False, kind="cost", tolerance={"abs": 0.5}, headline=True)}
    log_evaluation(client, exp_id, suite="energy", metrics={"test-unseen/wer": 20.0, "energy_j": 2.0}, meta=meta)
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "energy", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    assert yaml.safe_load(baseline.read_text())["tolerances"]["energy_j"] == {"abs": 0.5}
    log_evaluation(client, exp_id, suite="energy", metrics={"test-unseen/wer": 20.0, "energy_j": 2.4}, meta=meta)
    assert cli("compare", "energy", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    log_evaluation(client, exp_id, suite="energy", metrics={"test-unseen/wer": 20.0, "energy_j": 2.6}, meta=meta)
    result = cli("compare", "energy", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 7 and "energy_j" in result.output and "abs 0.5" in result.output
    out = tmp_path / "board"
    assert cli("leaderboard", "energy", "--tracking-uri", uri, "--out", out).exit_code == 0
    assert (out / "pareto-cpu-energy_j.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "leaderboard.html").read_text()
    assert 'title="energy_j">energy (J) ↓</th>' in page  # a key column, its full name as the tooltip


def test_a_noise_floor_spares_small_one_shot_timings_but_not_real_slowdowns(store, tmp_path):
    uri, client = store
    exp_id = client.create_experiment("kdbench-coldstart")
    meta = {"cold_start_ms": MetricMeta("ms", False, kind="cost", tolerance={"ratio": 3.0, "floor": 25.0})}
    log_evaluation(client, exp_id, suite="coldstart", metrics={"cold_start_ms": 5.0}, meta=meta)
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "coldstart", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    assert yaml.safe_load(baseline.read_text())["tolerances"]["cold_start_ms"] == {"ratio": 3.0, "floor": 25.0}
    # 5 -> 25 ms: five times slower, but inside the one-shot noise floor
    log_evaluation(client, exp_id, suite="coldstart", metrics={"cold_start_ms": 25.0}, meta=meta)
    assert cli("compare", "coldstart", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    log_evaluation(client, exp_id, suite="coldstart", metrics={"cold_start_ms": 40.0}, meta=meta)
    result = cli("compare", "coldstart", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 7 and "cold_start_ms" in result.output and "floor 25" in result.output


def test_a_floor_needs_a_kind_beside_it(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"schema": 2, "machines": [], "tolerances": {"x": {"floor": 3.0}}}))
    result = cli("compare", "--baseline", path, "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 2 and "tolerances.x: expected exactly one of abs, rel, ratio" in result.output


def test_share_of_peak_is_shown_but_gated_only_through_achieved_gflops(store, tmp_path):
    uri, client = store
    exp_id = client.create_experiment("kdbench-peak")
    meta = {"achieved_gflops": MetricMeta("GFLOP/s", True, kind="cost", tolerance={"ratio": 3.0}),
            "pct_of_peak": MetricMeta("%", True, kind="cost", gated=False)}
    log_evaluation(client, exp_id, suite="peak", metrics={"achieved_gflops": 4.0, "pct_of_peak": 3.0}, meta=meta)
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "peak", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    values = yaml.safe_load(baseline.read_text())["machines"][0]["rows"][0]["values"]
    assert values == {"achieved_gflops": 4.0}


# ---- like with like ------------------------------------------------------------------------------
LOAD = {"contention_cores": MetricMeta("cores", False, kind="condition", gated=False, warn_above=0.25)}


def fresh_suite(store, name, **metrics):
    uri, client = store
    exp_id = client.create_experiment(f"kdbench-{name}")

    def log(tags=None, **changes):
        tags = {"kdbench.provider.student": "kdbench==0.1 asr GruCtc", **(tags or {})}
        log_evaluation(client, exp_id, suite=name, metrics={**metrics, **changes}, meta=LOAD, tags=tags)

    return uri, log


def test_other_data_is_not_comparable_and_fails_only_when_comparability_is_required(store, tmp_path):
    uri, log = fresh_suite(store, "newdata", **{"test-unseen/wer": 20.0, "latency_ms": 5.0})
    log()
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "newdata", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    # a corpus built differently: a much worse WER, but on other data
    log(tags={"kdbench.data_hash": "another-corpus"}, **{"test-unseen/wer": 35.0})
    result = cli("compare", "newdata", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert "REGRESSION" not in result.output
    assert "NOT COMPARABLE  *  gru-ctc · ctc @ cpu: data changed (kdbench.data_hash: synthetic-data -> another-corpus)" \
        in result.output
    assert "0 regression(s), 0 improvement(s), 0 inconclusive, 1 not comparable, 0 missing" in result.output
    strict = cli("compare", "newdata", "--baseline", baseline, "--tracking-uri", uri, "--require-comparable")
    assert strict.exit_code == 7 and "nothing to compare like with like" in strict.output
    # a plugin at another version: the same
    log(tags={"kdbench.provider.student": "kdbench-asr==9.9 asr GruCtc"})
    result = cli("compare", "newdata", "--baseline", baseline, "--tracking-uri", uri)
    assert "component version differs (kdbench.provider.student:" in result.output


def test_a_new_machine_gets_its_own_section_and_is_never_compared_with_another(store, tmp_path):
    uri, log = fresh_suite(store, "machines", **{"test-unseen/wer": 20.0, "latency_ms": 5.0})
    log()
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "machines", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    other = {"host.cpu": "Some Other CPU @ 3.0GHz", "host.cores": "64"}
    log(tags=other, latency_ms=50.0)  # ten times slower: another machine, not a regression
    result = cli("compare", "machines", "--baseline", baseline, "--tracking-uri", uri, "--require-comparable")
    assert result.exit_code == 7
    assert "the baseline has no section for this machine" in result.output and "REGRESSION" not in result.output
    update = cli("baseline", "update", "machines", "--baseline", baseline, "--tracking-uri", uri)
    assert update.exit_code == 0 and "Some Other CPU @ 3.0GHz, 64 cores" in update.output
    sections = yaml.safe_load(baseline.read_text())["machines"]
    assert [s["machine"]["host.cpu"] for s in sections][-1] == "Some Other CPU @ 3.0GHz" and len(sections) == 2
    assert cli("compare", "machines", "--baseline", baseline, "--tracking-uri", uri,
               "--require-comparable").exit_code == 0
    log(tags=other, latency_ms=200.0)  # on that machine, four times slower than its own section
    assert cli("compare", "machines", "--baseline", baseline, "--tracking-uri", uri).exit_code == 7


def test_timings_under_load_are_inconclusive_but_quality_is_still_gated(store, tmp_path):
    uri, log = fresh_suite(store, "busy", **{"test-unseen/wer": 20.0, "latency_ms": 5.0, "contention_cores": 0.02})
    log()
    baseline = tmp_path / "b.yaml"
    assert cli("baseline", "update", "busy", "--baseline", baseline, "--tracking-uri", uri).exit_code == 0
    log(latency_ms=20.0, contention_cores=1.4)  # 4x slower while another process was busy
    result = cli("compare", "busy", "--baseline", baseline, "--tracking-uri", uri, "--require-comparable")
    assert result.exit_code == 0, result.output
    assert "INCONCLUSIVE    latency_ms  gru-ctc · ctc @ cpu: 5 -> 20 ms" in result.output
    assert "measured under load: contention_cores 1.40 cores > 0.25" in result.output
    log(latency_ms=20.0, contention_cores=0.02)  # the same slowdown on a quiet machine
    assert cli("compare", "busy", "--baseline", baseline, "--tracking-uri", uri).exit_code == 7
    log(latency_ms=5.0, contention_cores=1.4, **{"test-unseen/wer": 26.0})  # load never excuses quality
    result = cli("compare", "busy", "--baseline", baseline, "--tracking-uri", uri)
    assert result.exit_code == 7 and "REGRESSION      test-unseen/wer" in result.output


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not text", "line 1: not UTF-8 text (byte 0xff)"),
    (b"schema: 2\nmachines: [1, 2]\n", "machines[0]: Input should be a valid dictionary"),
    (b"schema: '2'\nmachines: []\n", "schema: expected an integer such as 2, got '2'"),
    (b"schema: 2\ntolerances: [a]\nmachines: []\n", "tolerances: Input should be a valid dictionary"),
    (b"schema: 2\nmachines:\n- machine: {}\n  rows: [1]\n", "machines[0].rows[0]: Input should be a valid dictionary"),
    (b"schema: 2\nmachines:\n- machine: {}\n  rows:\n  - {role: student, model: [x], target: cpu, values: {}}\n",
     "machines[0].rows[0].model: Input should be a valid string"),
    (b"schema: 2\nmachines:\n- machine: {}\n  rows:\n  - {role: student, model: m, target: cpu, values: abc}\n",
     "machines[0].rows[0].values: Input should be a valid dictionary"),
    (b"schema: 2\nmachines:\n- machine: {}\n  rows:\n  - {role: student, model: m, target: cpu, values: {wer: abc}}\n",
     "machines[0].rows[0].values.wer: Input should be a valid number"),
])
def test_a_malformed_baseline_is_one_line_naming_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "b.yaml"
    path.write_bytes(content)
    result = cli("compare", "x", "--baseline", path, "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}: {message}") and result.output.count("\n") == 1


def test_a_baseline_path_that_is_a_folder(tmp_path):
    result = cli("compare", "x", "--baseline", tmp_path, "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path}: cannot read baseline: Is a directory"
