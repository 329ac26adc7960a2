"""Real training on real speech: the loop learns (fast), and a small recognizer gets good (slow)."""

import pytest
import torch

from kdbench.interfaces import ModelSpec
from kdbench.pipeline import InputPipeline
from kdbench.suite import TrainingConfig
from kdbench.training import lr_factor, train
from kdbench_asr.data.fsdd import FsddConnectedDigits
from kdbench_asr.frontend import LogMel
from kdbench_asr.losses import CtcLoss
from kdbench_asr.models import GruCtc
from kdbench_asr.task import CtcAsr


def corpus(fsdd_root, cache, train_utterances):
    return FsddConnectedDigits(FsddConnectedDigits.Options(root=fsdd_root, train_utterances=train_utterances,
                                                           test_utterances=20, max_digits=3), cache_dir=cache).load()


def tiny_setup(fsdd_root, cache, utterances, hidden):
    """A small real corpus, its task and 24-band log-mel pipeline, and a one-layer GRU-CTC."""
    c = corpus(fsdd_root, cache, utterances)
    task = CtcAsr(CtcAsr.Options())
    task.setup(c)
    frontend = LogMel(LogMel.Options(n_mels=24), corpus_info=c.info)
    model = GruCtc(GruCtc.Options(hidden=hidden, layers=1, subsampling=2), ModelSpec(24, task.output_dim()))
    return c, task, frontend, InputPipeline(task, frontend), model


def test_training_loop_learns(fsdd_root, shared_cache):
    c, task, _, pipeline, model = tiny_setup(fsdd_root, shared_cache, 32, hidden=48)
    losses = []
    train(model, CtcLoss(None), pipeline, c.train, TrainingConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5),
          seed=0, on_step=lambda step, loss: losses.append(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert len(losses) == 60 and last < 0.4 * first, losses
    assert not model.training  # left in eval mode


def test_lr_schedule_warms_up_then_decays():
    config = TrainingConfig(steps=100, warmup_steps=10)
    values = [lr_factor(s, config) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[50] < 1.0 and values[-1] == pytest.approx(0.05, abs=0.01)


@pytest.mark.slow
def test_small_recognizer_reaches_low_wer_on_seen_speakers(fsdd_root, shared_cache):
    """About 3 minutes on 2 cores: a 150k-parameter GRU-CTC on 600 real utterances."""
    from kdbench.evaluation import evaluate
    from kdbench_asr.metrics import WordErrorRate
    from kdbench_standard.targets import CpuTarget

    torch.set_num_threads(2)
    c = corpus(fsdd_root, shared_cache, 600)
    task = CtcAsr(CtcAsr.Options())
    task.setup(c)
    frontend = LogMel(LogMel.Options(n_mels=40), corpus_info=c.info)
    model = GruCtc(GruCtc.Options(hidden=96, bidirectional=False), ModelSpec(40, task.output_dim()))
    train(model, CtcLoss(None), InputPipeline(task, frontend), c.train,
          TrainingConfig(steps=500, batch_size=32, lr=2e-3, warmup_steps=50), seed=0)
    result = evaluate(model, frontend, task, c.tests, [WordErrorRate(None)], CpuTarget(CpuTarget.Options()))
    assert result.as_dict()["test/wer"] < 15.0, result.as_dict()


def test_the_loop_tells_the_loss_how_far_training_has_gone(fsdd_root, shared_cache):
    # Loss.progress drives schedules (an annealed temperature, a decaying guided-attention weight)
    c, task, _, pipeline, model = tiny_setup(fsdd_root, shared_cache, 16, hidden=16)
    seen = []

    class Recording(CtcLoss):
        def forward(self, student, batch, teacher=None):
            seen.append(self.progress)
            return super().forward(student, batch, teacher)

    train(model, Recording(None), pipeline, c.train, TrainingConfig(steps=4, batch_size=4, warmup_steps=0), seed=0)
    assert seen == [0.0, 0.25, 0.5, 0.75]


def test_a_loss_can_make_the_teachers_outputs_the_students_inputs(fsdd_root, shared_cache):
    # Loss.student_batch replacing inputs: the student trains on the front end's features of
    # what the loss handed it (here a teacher that time-reverses the audio), not of the data
    from dataclasses import replace

    c, task, frontend, pipeline, model = tiny_setup(fsdd_root, shared_cache, 8, hidden=16)
    heard = []

    class FromTeacher(CtcLoss):
        def student_batch(self, batch, teacher):
            return replace(batch, inputs=batch.inputs.flip(1))

    original = task.train_forward

    def spy(model, features, lengths, batch):
        heard.append((features.clone(), batch.inputs.clone(), batch.input_lengths.clone()))
        return original(model, features, lengths, batch)

    task.train_forward = spy
    train(model, FromTeacher(None), pipeline, c.train, TrainingConfig(steps=1, batch_size=4, warmup_steps=0), seed=0)
    features, inputs, lengths = heard[0]
    with torch.no_grad():
        expected, _ = frontend(inputs, lengths)
    assert torch.equal(features, expected)
    with torch.no_grad():
        unflipped, _ = frontend(inputs.flip(1), lengths)
    assert not torch.equal(features, unflipped)
