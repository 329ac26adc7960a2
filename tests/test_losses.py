"""KD losses on real tensors: what each one is zero at, what it is not, and its gradients."""

import pytest
import torch

from kdbench.interfaces import Batch, ModelOutput, ModelSpec
from kdbench_asr import losses, models
from kdbench.alignment import align_frames


def output(logits, lengths=None, hidden=None):
    lengths = lengths if lengths is not None else torch.full((logits.shape[0],), logits.shape[1])
    return ModelOutput(logits, lengths, hidden or {})


def batch(targets, target_lengths):
    return Batch(ids=[], inputs=torch.zeros(1), input_lengths=torch.zeros(1), targets=targets,
                 target_lengths=target_lengths)


def test_frame_kd_is_zero_for_identical_logits_and_positive_otherwise():
    torch.manual_seed(0)
    t = torch.randn(2, 7, 5)
    assert losses.frame_kd(output(t.clone()), output(t), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(2, 7, 5, requires_grad=True)
    kd = losses.frame_kd(output(s), output(t), 2.0)
    kd.backward()
    assert kd.item() > 0 and s.grad.abs().sum() > 0


def test_frame_kd_t_squared_scaling_keeps_small_logit_loss_constant():
    """For small logit gaps KL(p_T || q_T) ~ 1/T^2, so the T^2 factor (Hinton et al.) makes the
    loss, and its gradients, nearly independent of T; without it T=4 would be 16x smaller."""
    torch.manual_seed(1)
    s, t = torch.randn(1, 4, 3) * 0.05, torch.randn(1, 4, 3) * 0.05
    k1, k4 = losses.frame_kd(output(s), output(t), 1.0), losses.frame_kd(output(s), output(t), 4.0)
    assert k4.item() == pytest.approx(k1.item(), rel=0.05)


def test_frame_kd_ignores_padding():
    torch.manual_seed(2)
    t = torch.randn(1, 6, 4)
    s = t.clone()
    s[0, 4:] = torch.randn(2, 4) * 10  # garbage beyond the valid length
    lengths = torch.tensor([4])
    assert losses.frame_kd(output(s, lengths), output(t, lengths), 2.0).item() == pytest.approx(0, abs=1e-6)


def test_alignment_handles_frame_rate_and_off_by_one():
    teacher = torch.arange(8, dtype=torch.float).view(1, 8, 1)
    half = align_frames(teacher, torch.tensor([8]), torch.tensor([4]), 4)
    assert half.shape == (1, 4, 1) and half[0, 0, 0] == 0 and half[0, -1, 0] == 7
    one_less = align_frames(teacher, torch.tensor([8]), torch.tensor([7]), 9)
    assert one_less.shape == (1, 9, 1) and torch.all(one_less[0, 7:] == 0)
    same = align_frames(teacher, torch.tensor([8]), torch.tensor([8]), 8)
    assert torch.equal(same, teacher)


def test_kd_between_models_with_different_subsampling():
    spec = ModelSpec(input_dim=12, output_dim=6)
    teacher = models.ConformerCtc(models.ConformerCtc.Options(d_model=16, layers=1, ffn_dim=32, heads=2, subsampling=4), spec)
    student = models.GruCtc(models.GruCtc.Options(hidden=8, layers=1, subsampling=2), spec)
    feats, lengths = torch.randn(2, 41, 12), torch.tensor([41, 30])
    t_out, s_out = teacher(feats, lengths), student(feats, lengths)
    assert t_out.output.shape[1] != s_out.output.shape[1]
    targets, target_lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    for loss in (losses.CtcKd(losses.CtcKd.Options()),
                 losses.HintLoss(losses.HintLoss.Options(), student=student, teacher=teacher)):
        value = loss(s_out, batch(targets, target_lengths), t_out)
        assert torch.isfinite(value)
        value.backward(retain_graph=True)


def test_alpha_zero_is_the_ctc_baseline():
    torch.manual_seed(3)
    s, t = torch.randn(2, 9, 6), torch.randn(2, 9, 6)
    b = batch(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    mixed = losses.CtcKd(losses.CtcKd.Options(alpha=0.0))(output(s), b, output(t))
    assert mixed.item() == pytest.approx(losses.CtcLoss(None)(output(s), b).item())


@pytest.mark.parametrize("loss", [losses.LogitKd, losses.CtcKd])
def test_an_annealed_temperature_is_the_fixed_one_at_each_point_of_training(loss):
    torch.manual_seed(4)
    s, t = torch.randn(2, 9, 6), torch.randn(2, 9, 6)
    b = batch(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    annealed = loss(loss.Options(temperature=8.0, temperature_end=1.0))
    values = set()
    for progress, expected in ((0.0, 8.0), (0.5, 4.5), (0.9, 1.7)):
        annealed.progress = progress  # what the training loop sets before every step
        fixed = loss(loss.Options(temperature=expected))
        value = annealed(output(s), b, output(t)).item()
        assert value == pytest.approx(fixed(output(s), b, output(t)).item(), rel=1e-6)
        values.add(round(value, 6))
    assert len(values) == 3


def test_sequence_kd_targets_are_the_teacher_transcripts():
    class Task:
        def greedy_ids(self, logits, lengths):
            from kdbench_asr.task import CtcAsr
            return CtcAsr.greedy_ids(self, logits, lengths)

    teacher_logits = torch.full((1, 6, 4), -10.0)
    for frame, token in enumerate([1, 1, 0, 2, 2, 3]):
        teacher_logits[0, frame, token] = 10.0  # greedy path: 1 2 3
    s = torch.randn(1, 6, 4)
    wrong_truth = batch(torch.tensor([[3, 3]]), torch.tensor([2]))
    seq_only = losses.SequenceKd(losses.SequenceKd.Options(alpha=1.0), task=Task())
    expected = losses.CtcLoss(None)(output(s), batch(torch.tensor([[1, 2, 3]]), torch.tensor([3])))
    assert seq_only(output(s), wrong_truth, output(teacher_logits)).item() == pytest.approx(expected.item())


def test_hint_refuses_unknown_layers():
    from kdbench.errors import SuiteError

    spec = ModelSpec(input_dim=12, output_dim=6)
    student = models.GruCtc(models.GruCtc.Options(hidden=8, layers=1), spec)
    teacher = models.ConformerCtc(models.ConformerCtc.Options(d_model=16, layers=1, ffn_dim=32, heads=2), spec)
    with pytest.raises(SuiteError, match="the teacher has no layer 'layer9'.*available: encoder, layer1"):
        losses.HintLoss(losses.HintLoss.Options(teacher_layer="layer9"), student=student, teacher=teacher)
