"""A tiny suite on real FSDD speech through the CLI: training, caching, MLflow, leaderboard,
failure isolation, and a throwaway plugin registered in a fixture."""

import importlib.metadata
import json

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Measurement, Metric
from kdbench.plugins import build_registry, get_registry
from kdbench_asr.losses import CtcLoss

from conftest import tiny_suite, write_suite


class ExplodingLoss(CtcLoss):
    """Fails on its third step, as a buggy contributed loss would."""

    def __init__(self, options, **context):
        super().__init__(options)
        self.calls = 0

    def forward(self, student, batch, teacher=None):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom at step 3")
        return super().forward(student, batch, teacher)


class HypothesisLength(Metric):
    """Mean words per hypothesis: a metric only this test's plugin provides."""

    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        words = [len((p or "").split()) for p in ev.predictions]
        return [Measurement("hyp_words", sum(words) / len(words), "words", True)]


class ThrowawayPlugin:
    @hookimpl
    def register_losses(self, register):
        register("exploding", ExplodingLoss)

    @hookimpl
    def register_metrics(self, register):
        register("hyp-words", HypothesisLength)


@pytest.fixture
def registry_with_throwaway():
    """Given to the CLI as click's ``obj``: the process-wide registry stays as conftest pinned it."""
    return build_registry(extra_plugins=[ThrowawayPlugin()])


def test_the_cli_uses_the_registry_it_is_given(registry_with_throwaway):
    given = CliRunner().invoke(main, ["plugins"], obj=registry_with_throwaway, catch_exceptions=False)
    assert given.exit_code == 0 and "exploding" in given.output and "hyp-words" in given.output
    default = CliRunner().invoke(main, ["plugins"], catch_exceptions=False)
    assert default.exit_code == 0 and "exploding" not in default.output and "ctc-kd" in default.output
    assert "exploding" not in get_registry().names("losses")  # nothing leaked into the global


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, fsdd_root):
    work = tmp_path_factory.mktemp("e2e")
    suite = tiny_suite(fsdd_root)
    path = write_suite(work / "tiny.yaml", suite)
    args = ["run", str(path), "--results-dir", str(work / "results"), "--cache-dir", str(work / "cache"),
            "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return work, args, result


def test_run_writes_leaderboard(first_run):
    work, _, result = first_run
    assert result.exit_code == 0, result.output
    board = pd.read_csv(work / "results" / "tiny" / "leaderboard.csv")
    assert list(board["role"]) == ["teacher", "student", "student"]
    assert set(board["loss"]) == {"ctc", "ctc-kd"}
    for column in ("test-seen/wer", "test-unseen/wer", "test-unseen/cer", "params", "size_mb", "latency_p50_ms", "rtf"):
        assert board[column].notna().all(), column
    kd = board[board["loss"] == "ctc-kd"].iloc[0]
    teacher = board[board["role"] == "teacher"].iloc[0]
    assert kd["gap to teacher"] == pytest.approx(kd["test-unseen/wer"] - teacher["test-unseen/wer"])
    assert teacher["params"] > kd["params"]
    assert "| teacher | conformer-ctc |" in (work / "results" / "tiny" / "leaderboard.md").read_text()
    assert "leaderboard: tiny" in result.output


def test_run_ends_with_a_summary_that_fits_a_terminal_and_says_where_the_rest_is(first_run):
    work, _, result = first_run
    lines = result.output.splitlines()
    start = lines.index("leaderboard: tiny")
    end = next(i for i, line in enumerate(lines) if line.startswith("full tables:"))
    summary = [line for line in lines[start + 1:end] if line.strip()]
    assert all(len(line) <= 100 for line in summary), summary
    target, header, units, *rows = summary
    assert target == "cpu" and header.split()[:3] == ["model", "loss", "wer"]
    assert "KD gain" in header and "speed-up" in header and "vs teacher" in units
    rows = rows[:3]  # teacher, baseline and KD student on the one target; the legend follows
    board = pd.read_csv(work / "results" / "tiny" / "leaderboard.csv")
    kd, base = (board[board["loss"] == loss].iloc[0] for loss in ("ctc-kd", "ctc"))
    teacher = board[board["role"] == "teacher"].iloc[0]
    kd_row = next(r for r in rows if " ctc-kd " in r).removesuffix(" *").split()
    # WER: lower is better, so the gain is the baseline's WER minus the KD student's
    assert float(kd_row[3]) == pytest.approx(base["test-unseen/wer"] - kd["test-unseen/wer"], abs=0.006)
    assert kd_row[-1] == f"{teacher['latency_p50_ms'] / kd['latency_p50_ms']:.1f}x"
    assert f"full tables: {work / 'results' / 'tiny'}/ (leaderboard.csv, leaderboard.json, leaderboard.md" in result.output
    assert "HTML page:" in result.output and "leaderboard.html" in result.output
    # a link that opens MLflow 3's UI on the runs, not on its GenAI traces page
    exp = MlflowClient(f"sqlite:///{work}/mlflow.db").get_experiment_by_name("kdbench-tiny")
    assert (f"MLflow runs: mlflow ui --backend-store-uri sqlite:///{work}/mlflow.db, then "
            f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}?workflowType=machine_learning") in result.output


def test_mlflow_has_parent_children_params_tags_and_artifacts(first_run):
    work, _, _ = first_run
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("kdbench-tiny")
    # MLflow 3's UI opens a tagged experiment on its runs, not on the GenAI traces page
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    by_role = {}
    for r in runs:
        by_role.setdefault(r.data.tags.get("kdbench.role"), []).append(r)
    (parent,) = by_role["suite"]
    assert len(by_role["teacher"]) == 1 and len(by_role["student"]) == 2 and len(by_role["evaluation"]) == 3
    student = by_role["student"][0]
    assert student.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert student.data.params["student.name"] == "gru-ctc"
    assert student.data.params["training.steps"] == "4"
    tags = student.data.tags
    assert tags["task.normalizer"] == "kdbench-en-1" and tags["version.torch"] == importlib.metadata.version("torch")
    assert tags["git_commit"] and tags["host.cpu"] and tags["kdbench.config_hash"]
    assert [a.path for a in client.list_artifacts(student.info.run_id)] == ["model.pt"]
    evaluation = next(r for r in by_role["evaluation"] if r.data.tags["mlflow.parentRunId"] == student.info.run_id)
    assert "test-unseen/wer" in evaluation.data.metrics
    predictions = client.list_artifacts(evaluation.info.run_id, "predictions")
    assert len(predictions) == 2
    local = client.download_artifacts(evaluation.info.run_id, predictions[0].path, str(work))
    first = json.loads(open(local).readline())
    assert set(first) == {"id", "prediction", "reference"} and first["reference"]


def test_rerun_reuses_everything_and_force_redoes(first_run):
    work, args, _ = first_run
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "teacher forward passes 0, teachers trained 0, students trained 0, runs reused 2" in again.output
    evaluations = sorted((work / "results" / "tiny" / "runs").glob("*/evaluation-*.json"))
    before = [p.stat().st_mtime_ns for p in evaluations]
    reevaluated = CliRunner().invoke(main, args + ["--reevaluate"], catch_exceptions=False)
    assert "teachers trained 0, students trained 0, runs reused 2" in reevaluated.output
    assert all(p.stat().st_mtime_ns > t for p, t in zip(evaluations, before))
    forced = CliRunner().invoke(main, args + ["--force"], catch_exceptions=False)
    assert forced.exit_code == 0
    assert "teachers trained 0, students trained 2" in forced.output


def test_throwaway_plugin_is_used_and_a_crashing_run_is_isolated(tmp_path, fsdd_root, registry_with_throwaway, shared_cache):
    suite = tiny_suite(fsdd_root, teachers=[], losses=["ctc", "exploding"],
                       metrics=["wer", "hyp-words"])
    path = write_suite(tmp_path / "t.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], obj=registry_with_throwaway,
                                catch_exceptions=False)
    assert result.exit_code == 5
    assert "boom at step 3" in result.output and "1 of 2 rows failed" in result.output
    board = pd.read_csv(tmp_path / "r" / "tiny" / "leaderboard.csv")
    assert list(board["loss"]) == ["ctc"] and board["test-unseen/hyp_words"].notna().all()
    assert "exploding · seed 0 @ cpu: failed: RuntimeError: boom at step 3" in \
        (tmp_path / "r" / "tiny" / "leaderboard.md").read_text()


def test_same_seed_same_student_whatever_ran_before(tmp_path, fsdd_root, shared_cache):
    """The seed alone decides a run's initial weights: a forced rerun after the process consumed
    random numbers (as training a fresh teacher does) gives bit-identical weights."""
    import torch

    suite = tiny_suite(fsdd_root, teachers=[], losses=["ctc"], metrics=["wer"])
    path = write_suite(tmp_path / "s.yaml", suite)
    args = ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(shared_cache), "--no-tracking"]

    def weights():
        (checkpoint,) = (tmp_path / "r" / "tiny" / "runs").glob("*/model.pt")
        return torch.load(checkpoint, weights_only=True)

    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    first = weights()
    torch.manual_seed(1234)
    torch.rand(10_000)
    assert CliRunner().invoke(main, args + ["--force"], catch_exceptions=False).exit_code == 0
    second = weights()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_tracking_server_link_opens_its_runs_page():
    from kdbench.tracking import ui_link

    assert ui_link("http://mlflow.lab:5000/", "7") == "http://mlflow.lab:5000/#/experiments/7?workflowType=machine_learning"
