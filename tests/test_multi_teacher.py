"""Several teachers per student (issue 15): ``ctc-ensemble`` combines teachers the suite already
trains (each cached once), with SpeechBrain's three strategies: the average of their posteriors, a
weighted average, and per utterance the teacher closest to the transcript."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import tiny_suite, write_suite
from kdbench.cli import main
from kdbench.interfaces import Batch, Model, ModelOutput, ModelSpec
from kdbench_asr.ensemble import CtcTeacherEnsemble

SPEC = ModelSpec(input_dim=4, output_dim=3)


class Fixed(Model):
    """A teacher whose frame posteriors are given: the same for every frame and utterance."""

    def __init__(self, probs, stride=1):
        super().__init__()
        self.logits = torch.log(torch.tensor(probs))
        self.stride = stride

    def forward(self, features, lengths):
        frames = -(-features.shape[1] // self.stride)
        out = self.logits.expand(features.shape[0], frames, -1).clone()
        return ModelOutput(out, torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor"))


def _ensemble(strategy="average", weights=None, b_stride=1):
    teachers = {"a": Fixed([0.8, 0.1, 0.1]), "b": Fixed([0.2, 0.2, 0.6], stride=b_stride)}
    options = CtcTeacherEnsemble.Options(teachers=["a", "b"], strategy=strategy, weights=weights)
    return CtcTeacherEnsemble(options, model_spec=SPEC, teachers=teachers)


def test_the_average_and_the_weighted_average_of_the_posteriors():
    x, lengths = torch.zeros(2, 8, 4), torch.tensor([8, 6])
    average = _ensemble()(x, lengths)
    assert torch.allclose(average.output.exp()[0, 0], torch.tensor([0.5, 0.15, 0.35]))
    weighted = _ensemble("weighted", [3.0, 1.0])(x, lengths)
    assert torch.allclose(weighted.output.exp()[0, 0], torch.tensor([0.65, 0.125, 0.225]))
    # a member at half the frame rate is put on the first member's frames
    slow = _ensemble(b_stride=2)(x, lengths)
    assert slow.output.shape == average.output.shape and torch.equal(slow.lengths, lengths)
    assert torch.allclose(slow.output.exp()[1, :6], average.output.exp()[1, :6], atol=1e-6)


def test_best_follows_per_utterance_the_teacher_closest_to_the_transcript():
    a, b = [0.4, 0.55, 0.05], [0.4, 0.05, 0.55]  # a hears class 1, b class 2
    options = CtcTeacherEnsemble.Options(teachers=["a", "b"], strategy="best")
    ensemble = CtcTeacherEnsemble(options, model_spec=SPEC, teachers={"a": Fixed(a), "b": Fixed(b)})
    x, lengths = torch.zeros(2, 8, 4), torch.tensor([8, 8])
    for targets, followed in (([[1], [2]], [a, b]), ([[2], [1]], [b, a])):
        batch = Batch(ids=["u0", "u1"], inputs=x, input_lengths=lengths, targets=torch.tensor(targets),
                      target_lengths=torch.tensor([1, 1]))
        chosen = ensemble.teacher_forward(x, lengths, batch).output.exp()[:, 0]
        assert torch.allclose(chosen, torch.tensor(followed))
        # the same choice as the members' own CTC losses on the transcripts make
        losses = torch.stack([F.ctc_loss(Fixed(p)(x, lengths).output.log_softmax(-1).transpose(0, 1),
                                         batch.targets, lengths, batch.target_lengths, reduction="none")
                              for p in (a, b)])
        assert [[a, b][i] for i in losses.argmin(0).tolist()] == followed
    # what it is evaluated as never sees a transcript: the average
    average = CtcTeacherEnsemble(CtcTeacherEnsemble.Options(teachers=["a", "b"]), model_spec=SPEC,
                                 teachers={"a": Fixed(a), "b": Fixed(b)})
    assert torch.allclose(ensemble(x, lengths).output, average(x, lengths).output)


def _suite(fsdd_root, ensemble_options, **overrides):
    teachers = [{"name": "conformer-ctc", "label": "conf", "options": {"d_model": 32, "layers": 1, "ffn_dim": 64,
                                                                        "heads": 2}, "training": {"steps": 6, "batch_size": 8}},
                {"name": "gru-ctc", "label": "gru-t", "options": {"hidden": 24, "layers": 1},
                 "training": {"steps": 6, "batch_size": 8}},
                {"name": "ctc-ensemble", "label": "both", "options": ensemble_options}]
    return tiny_suite(fsdd_root, teachers=teachers, targets=["cpu"], metrics=["wer", "params"], **overrides)


def test_a_student_distils_from_two_teachers_each_trained_once(fsdd_root, shared_cache, tmp_path):
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root, {"teachers": ["conf", "gru-t"], "strategy": "best"}))
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(tmp_path / "r" / "tiny" / "rows.csv", keep_default_na=False)
    teachers = rows[rows["role"] == "teacher"].set_index("model")
    assert teachers.loc["both", "params"] == teachers.loc["conf", "params"] + teachers.loc["gru-t", "params"]
    assert teachers.loc["both", "loss"] == ""  # never trained
    assert "teachers trained 2" in result.output  # the two members, once each; the ensemble is not trained
    kd = rows[(rows["role"] == "student") & (rows["loss"] == "ctc-kd")]
    assert sorted(kd["teacher"]) == ["both", "conf", "gru-t"] and set(kd["status"]) == {"ok"}


@pytest.mark.parametrize("options, expected", [
    ({"teachers": ["conf", "grut"]}, "teachers[2].options.teachers: unknown teacher 'grut'; did you mean 'gru-t'?"),
    ({"teachers": ["conf", "gru-t"], "strategy": "weighted"}, "strategy weighted needs one weight per teacher (2)"),
    ({"teachers": ["conf"]}, "teachers[2].options.teachers: List should have at least 2 items"),
])
def test_bad_teacher_lists_are_one_line_before_anything_trains(options, expected, fsdd_root, tmp_path):
    path = write_suite(tmp_path / "s.yaml", _suite(fsdd_root, options))
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert not (tmp_path / "r").exists()


def test_teachers_of_different_vocabularies_are_refused():
    teachers = {"a": Fixed([0.8, 0.1, 0.1]), "b": Fixed([0.5, 0.5])}
    with pytest.raises(ValueError, match=r"different output vocabularies \(a: 3 classes, b: 2 classes\)"):
        CtcTeacherEnsemble(CtcTeacherEnsemble.Options(teachers=["a", "b"]), model_spec=SPEC, teachers=teachers)
