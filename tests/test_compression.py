"""Compressions as a suite axis (issue 15) and the built-in ``qat``: quantization-aware training with
torchao's int8 fake quantizers while distilling, stripped before the model is saved, so the int8
targets quantize weights trained for int8. Real FSDD speech, a tiny Conformer student."""

import copy
import io

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_suite, write_suite
from kdbench.cli import main
from kdbench.plan import plan_student_runs
from kdbench.plugins import get_registry
from kdbench.suite import load_suite
from kdbench.testing import ConformanceError, check_compression
from kdbench_standard.compressions import QuantizationAwareTraining as Qat, quantizable

CONFORMER = {"name": "conformer-ctc", "options": {"d_model": 32, "layers": 1, "ffn_dim": 128, "heads": 2}}


def _suite(fsdd_root, **overrides):
    defaults = {"students": [CONFORMER], "compressions": ["qat"], "targets": ["cpu", "cpu-int8"],
                "metrics": ["wer", "params"]}
    return tiny_suite(fsdd_root, **{**defaults, **overrides})


def _student():
    from kdbench.interfaces import ModelSpec
    from kdbench_asr.models import ConformerCtc

    torch.manual_seed(0)
    return ConformerCtc(ConformerCtc.Options(**CONFORMER["options"]), model_spec=ModelSpec(input_dim=24, output_dim=12))


def _fake_quantized(model):
    return [m for m in model.modules() if type(m).__name__ == "FakeQuantizedLinear"]


def test_qat_trains_through_int8_rounding_and_saves_the_plain_network():
    float_model = _student().eval()
    qat = Qat(Qat.Options())
    model = qat.prepare(copy.deepcopy(float_model)).eval()
    linear = [m for m in float_model.modules() if quantizable(m)]
    assert len(_fake_quantized(model)) == len(linear) > 0
    x, lengths = torch.randn(2, 40, 24), torch.tensor([40, 31])
    with torch.no_grad():
        a, b = float_model(x, lengths).output, model(x, lengths).output
    # the same weights, read through int8 rounding: close, not equal
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.5)
    finished = qat.finish(model)
    assert not _fake_quantized(finished)
    state = finished.state_dict()
    assert state.keys() == float_model.state_dict().keys()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    plain = _student()
    plain.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    with torch.no_grad():
        assert torch.equal(plain.eval()(x, lengths).output, finished(x, lengths).output)


def test_the_kit_checks_qat_and_catches_a_restore_that_loses_the_weights():
    check_compression("qat")

    class Forgetful(Qat):
        def restore(self, model, state):  # the freshly built weights, not the trained ones
            return model

    with pytest.raises(ConformanceError, match="restored model's outputs differ"):
        check_compression(Forgetful)


def test_compressions_are_crossed_with_every_student_and_the_dense_one_stays(fsdd_root, tmp_path):
    suite = _suite(fsdd_root, students=[CONFORMER, {**CONFORMER, "label": "wide", "options": {
        **CONFORMER["options"], "d_model": 48}}])
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite), get_registry())
    runs = plan_student_runs(rs)
    assert sorted({r.label for r in runs}) == ["conformer-ctc", "conformer-ctc+qat", "wide", "wide+qat"]
    assert len(runs) == 2 * 2 * 2  # students x (none, qat) x (ctc, ctc-kd)
    keys = {r.key({}, {0: "t"}, {}) for r in runs}
    assert len(keys) == len(runs)


def test_a_student_marked_compress_false_runs_dense_only_and_is_not_checked(fsdd_root, shared_cache, tmp_path):
    gru = {**GRU, "compress": False}  # qat refuses a recurrent student: here it is never asked to take one
    suite = _suite(fsdd_root, students=[CONFORMER, gru], targets=["cpu"])
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite), get_registry())
    assert sorted({r.label for r in plan_student_runs(rs)}) == ["conformer-ctc", "conformer-ctc+qat", "gru-ctc"]
    result = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "--no-tracking", "--results-dir",
                                       str(tmp_path / "r"), "--cache-dir", str(shared_cache)])
    assert result.exit_code == 0, result.output  # without the flag: "compressions[0] (qat) on students[1] ..."
    dense_gru = plan_student_runs(load_suite(write_suite(tmp_path / "d.yaml", _suite(
        fsdd_root, students=[CONFORMER, GRU])), get_registry()))
    # the flag is not part of what the student is: its dense runs keep their cache keys
    assert {r.key({}, {0: "t"}, {}) for r in plan_student_runs(rs)} <= {r.key({}, {0: "t"}, {}) for r in dense_gru}


def test_a_qat_student_is_a_row_of_its_own_on_the_int8_target(fsdd_root, shared_cache, tmp_path):
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root))
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(shared_cache)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(tmp_path / "r" / "tiny" / "rows.csv", keep_default_na=False)
    qat = rows[rows["model"] == "conformer-ctc+qat"]
    assert sorted(zip(qat["loss"], qat["target"])) == [("ctc", "cpu"), ("ctc", "cpu-int8"),
                                                       ("ctc-kd", "cpu"), ("ctc-kd", "cpu-int8")]
    assert set(qat["status"]) == {"ok"}
    dense = rows[(rows["model"] == "conformer-ctc") & (rows["role"] == "student")]
    assert set(qat["run_key"]).isdisjoint(dense["run_key"]) and set(qat["params"]) == set(dense["params"])
    checkpoint = tmp_path / "r" / "tiny" / "runs" / qat["run_key"].iloc[0] / "model.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert not any("fake_quantizer" in k for k in state)


# ---- prune: structured pruning after distillation, then KD fine-tuning ------------------------------
def test_pruning_keeps_the_share_asked_for_and_restores_from_the_saved_weights():
    from kdbench.interfaces import ModelSpec
    from kdbench_standard.compressions import StructuredPruning

    student = _student()
    total = sum(p.numel() for p in student.parameters())
    prune = StructuredPruning(StructuredPruning.Options(keep=0.6), model_spec=ModelSpec(input_dim=24, output_dim=12))
    pruned = prune.finish(prune.prepare(copy.deepcopy(student))).eval()
    assert sum(p.numel() for p in pruned.parameters()) / total == pytest.approx(0.6, abs=0.03)
    assert pruned.head.out_features == 12  # the task's outputs are not the student's to prune
    restored = prune.restore(_student(), pruned.state_dict()).eval()
    x, lengths = torch.randn(2, 40, 24), torch.tensor([40, 31])
    with torch.no_grad():
        assert torch.equal(restored(x, lengths).output, pruned(x, lengths).output)


def _prune(output_dim=12, **options):
    from kdbench.interfaces import ModelSpec
    from kdbench_standard.compressions import StructuredPruning

    return StructuredPruning(StructuredPruning.Options(**options), model_spec=ModelSpec(24, output_dim))


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_gradual_pruning_shrinks_in_cubic_steps_and_ends_at_the_one_shot_shapes():
    student = _student()
    gradual = _prune(keep=0.6, schedule="gradual", events=4, until=0.5)
    model = gradual.prepare(copy.deepcopy(student))
    sizes, replaced = [sum(p.numel() for p in model.parameters())], []
    for step in range(1, 11):  # 10 steps; 4 events by half of them, one at each quarter of 0.5 reached
        replaced.append(gradual.step(model, step / 10))
        sizes.append(sum(p.numel() for p in model.parameters()))
    assert [i + 1 for i, r in enumerate(replaced) if r] == [2, 3, 4, 5]  # at progress 0.125, 0.25, 0.375, 0.5
    drops = [a - b for a, b in zip(sizes, sizes[1:]) if a != b]
    assert len(drops) == 4 and drops == sorted(drops, reverse=True)  # cubic: most early
    finished = gradual.finish(model).eval()
    one_shot = _prune(keep=0.6)
    assert _shapes(finished) == _shapes(one_shot.finish(one_shot.prepare(copy.deepcopy(student))))
    restored = one_shot.restore(_student(), finished.state_dict()).eval()
    x, lengths = torch.randn(2, 40, 24), torch.tensor([40, 31])
    with torch.no_grad():
        assert torch.equal(restored(x, lengths).output, finished(x, lengths).output)


def test_training_goes_on_with_the_parameters_a_pruning_step_made(fsdd_root, shared_cache):
    """After a step that replaces parameters the optimizer must hold the new ones, or the pruned
    student silently stops learning."""
    from kdbench.interfaces import ModelSpec
    from kdbench.pipeline import InputPipeline
    from kdbench.suite import TrainingConfig
    from kdbench.training import train
    from kdbench_asr.data.fsdd import FsddConnectedDigits
    from kdbench_asr.frontend import LogMel
    from kdbench_asr.losses import CtcLoss
    from kdbench_asr.models import ConformerCtc
    from kdbench_asr.task import CtcAsr

    corpus = FsddConnectedDigits(FsddConnectedDigits.Options(root=fsdd_root, train_utterances=16, test_utterances=4,
                                                             max_digits=2), cache_dir=shared_cache).load()
    task = CtcAsr(CtcAsr.Options())
    task.setup(corpus)
    torch.manual_seed(0)
    model = ConformerCtc(ConformerCtc.Options(**CONFORMER["options"]), model_spec=ModelSpec(24, task.output_dim()))
    prune = _prune(task.output_dim(), keep=0.6, schedule="gradual", events=2, until=0.5)
    model = prune.prepare(model)
    after_last_event = {}

    def on_step(step, loss):
        replaced = prune.step(model, step / 8)
        if replaced and prune.gradual.current_step == 2:
            after_last_event.update({k: v.clone() for k, v in model.state_dict().items()})
        return replaced

    train(model, CtcLoss(None), InputPipeline(task, LogMel(LogMel.Options(n_mels=24), corpus_info=corpus.info)),
          corpus.train, TrainingConfig(steps=8, batch_size=4, lr=1e-2, warmup_steps=1), seed=0, on_step=on_step)
    assert after_last_event  # pruned at step 4 of 8, then 4 more steps
    changed = [k for k, v in model.state_dict().items() if k.endswith("weight") and not torch.equal(v, after_last_event[k])]
    weights = [k for k in after_last_event if k.endswith("weight")]
    assert len(changed) == len(weights)  # every pruned layer kept learning


def test_a_pruned_student_is_fine_tuned_and_evaluated_at_its_new_size(fsdd_root, shared_cache, tmp_path):
    prune = {"name": "prune", "options": {"keep": 0.6, "fine_tune_steps": 2}}
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root, compressions=[prune], targets=["cpu"]))
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(shared_cache)])
    assert result.exit_code == 0, result.output
    assert "· fine-tune" in result.output  # the steps after pruning ran
    import json

    import pandas as pd

    rows = pd.read_csv(tmp_path / "r" / "tiny" / "rows.csv", keep_default_na=False)
    students = rows[rows["role"] == "student"].set_index(["model", "loss"])["params"]
    for loss in ("ctc", "ctc-kd"):
        assert students["conformer-ctc+prune", loss] / students["conformer-ctc", loss] == pytest.approx(0.6, abs=0.03)
    key = rows[(rows["model"] == "conformer-ctc+prune") & (rows["loss"] == "ctc-kd")]["run_key"].iloc[0]
    record = json.loads((tmp_path / "r" / "tiny" / "runs" / key / "training.json").read_text())
    assert record["config"]["student"]["compression"]["name"] == "prune"
    assert record["history"][-1][0] == 4 + 2  # 4 steps of distillation, then 2 of fine-tuning


GRU = {"name": "gru-ctc", "options": {"hidden": 16, "layers": 1}}
BAD = {  # suite overrides -> what the one error line says
    "qat on a recurrent student": ({"students": [GRU]}, (
        "compressions[0] (qat) on students[0] (gru-ctc): qat: min_quantized: only ", "(the rest: Conv1d, GRU)")),
    "qat rounding torchao lacks": ({"compressions": [{"name": "qat", "options": {"symmetric_activations": True}}]}, (
        "compressions[0].options: symmetric_activations: torchao's QAT rounds per-token activations asymmetric only",)),
    "pruning whole layers away": ({"compressions": [{"name": "prune", "options": {"keep": 0.05}}]}, (
        "compressions[0] (prune) on students[0] (conformer-ctc): keep: 5% of the parameters would take more than "
        "90% of some layer's channels",)),
    "pruning a recurrent student": ({"students": [GRU], "compressions": ["prune"]}, (
        "compressions[0] (prune) on students[0] (gru-ctc): prune: GruCtc cannot be pruned",)),
    "pruning under a hint loss": ({"compressions": ["prune"], "losses": ["ctc", "hint"]}, (
        "compressions[0] (prune) on students[0] (conformer-ctc) with losses[1] (hint): the loss reads the student's "
        "hidden layers through a projection sized by their width, which prune changes",)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_compression_input_is_one_line_before_anything_trains(case, fsdd_root, tmp_path):
    overrides, expected = BAD[case]
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root, **overrides))
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(e in errors[0] for e in expected), result.output
    assert not (tmp_path / "cache" / "teachers").exists()  # nothing trained
