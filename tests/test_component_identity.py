"""Which code computed a result is part of the result: the scenario of issue 12, replayed.

Two third-party plugins both register a loss named ``rkd``. A suite naming it bare is refused
with both plugins named; a suite naming one (``plugin:name``) trains under that implementation,
and the other's finished runs are never reused for it, because the provider (distribution,
version, entry point, class) is part of every run key and of the MLflow tags.
"""

import json
import types

import pytest
from mlflow.tracking import MlflowClient

from conftest import FSDD_FIXTURE, tiny_suite
from kdbench.cache import Cache
from kdbench.errors import UnknownComponentError
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Loss
from kdbench.plugins import build_registry
from kdbench.runner import Runner
from kdbench.suite import Suite, resolve_suite
from kdbench.tracking import Tracker

import torch.nn.functional as F  # after kdbench, which sets OpenMP's wait policy before torch loads


class PlainCtc(Loss):
    """CTC alone, whatever its name says."""

    requires_teacher = True  # claims to distill, as the clashing package's loss did

    def __init__(self, options, **context):
        super().__init__()

    def forward(self, student, batch, teacher):
        log_probs = student.output.log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(log_probs, batch.targets, student.lengths, batch.target_lengths, zero_infinity=True)


class SoftTargets(PlainCtc):
    """CTC plus the teacher's soft targets: another implementation under the same name."""

    def forward(self, student, batch, teacher):
        soft = F.kl_div(student.output.log_softmax(-1), teacher.output.softmax(-1), reduction="batchmean")
        return super().forward(student, batch, teacher) + soft


def plugin(name: str, loss: type) -> types.ModuleType:
    """A plugin module named ``name`` registering ``loss`` as ``rkd``."""
    module = types.ModuleType(name)

    @hookimpl
    def register_losses(register):
        register("rkd", loss)

    module.register_losses = register_losses
    return module


def suite(loss: str) -> Suite:
    return Suite.model_validate(tiny_suite(FSDD_FIXTURE, name="clash", losses=[loss], metrics=["wer"],
                                           targets=["cpu"], reporters=[], executor="local"))


def test_a_bare_clashing_name_is_refused_naming_both_plugins():
    registry = build_registry(extra_plugins=[plugin("rkd", SoftTargets), plugin("clash", PlainCtc)])
    with pytest.raises(UnknownComponentError) as err:  # AmbiguousComponentError is one
        resolve_suite(suite("rkd"), registry, "clash.yaml")
    assert str(err.value) == ("clash.yaml: losses[0].name: loss 'rkd' is registered by both 'rkd' and 'clash': "
                              "name the one you mean, as 'rkd:rkd' or 'clash:rkd'")
    rs = resolve_suite(suite("clash:rkd"), registry, "clash.yaml")
    assert rs.losses[0].component.factory is PlainCtc


def test_runs_of_one_implementation_are_never_reused_for_the_other(tmp_path, shared_cache):
    """The same suite, results folder and loss name ``rkd``, first with one plugin installed,
    then with the other instead: the second trains, and both stay apart in MLflow."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    results = {}
    for name, loss in (("rkd", SoftTargets), ("clash", PlainCtc)):
        registry = build_registry(extra_plugins=[plugin(name, loss)])
        rs = resolve_suite(suite("rkd"), registry, "clash.yaml")
        runner = Runner(rs, registry, cache=Cache(shared_cache), results_root=tmp_path / "results",
                        tracker=Tracker(uri, "kdbench-clash"))
        results[name] = runner.run()
    # same results folder, same student, same loss name: the second implementation still trains
    assert results["rkd"].stats["students_trained"] == 1
    assert results["clash"].stats["students_trained"] == 1 and results["clash"].stats["runs_reused"] == 0
    keys = {p: {r.run_key for r in res.rows if r.role == "student"} for p, res in results.items()}
    assert keys["rkd"].isdisjoint(keys["clash"])
    # and MLflow says which class computed each evaluation
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench-clash")
    evaluations = client.search_runs([exp.experiment_id], "tags.`kdbench.role` = 'evaluation' and "
                                     "tags.`kdbench.model_role` = 'student'")
    providers = sorted(r.data.tags["kdbench.provider.loss"] for r in evaluations)
    assert providers == ["not installed (clash, test_component_identity:PlainCtc)",
                         "not installed (rkd, test_component_identity:SoftTargets)"]
    # the leaderboard keeps them apart: two rows, not one row with two seeds
    from kdbench.board import build

    frame = build(client, [exp.experiment_id], "clash", bootstrap=False).frame
    students = frame[frame["role"] == "student"]
    assert list(students["loss"]) == ["rkd", "rkd"] and set(students["n"]) == {1}
    assert json.loads(evaluations[0].data.tags["kdbench.metric.test-unseen/wer.meta"])["unit"] == "%"
