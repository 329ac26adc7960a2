"""WaveRNN vocoders (teacher-forced training logits, seeded free-running decode), the sample-class
losses (wave-ce, wave-class-kd with its temperature schedule), and the teacher forcing that hands
the KD loss the teacher's logits on exactly the student's segment, online and cached.

Models here are tiny (GRUs of 16) and segments short: WaveRNN decodes one sample per Python step."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from kdbench.cache import Cache
from kdbench.errors import SuiteError
from kdbench.hashing import stable_hash
from kdbench.interfaces import Batch, ModelOutput, ModelSpec
from kdbench.pipeline import InputPipeline
from kdbench.plan import teacher_forcing
from kdbench.plugins import build_registry
from kdbench.runner import Progress, Runner, TeacherState
from kdbench.suite import Suite, resolve_suite
from kdbench_tts import audio
from kdbench_tts.testing import tiny_corpus
from kdbench_tts.vocoder_losses import WaveClassKd, WaveCrossEntropy, WaveLoss, class_cross_entropy, _wave
from kdbench_tts.vocoding import LogMelInput, Vocoding
from kdbench_tts.wavernn import WaveRnn, WaveRnnStudent, class_amplitudes, mu_law_classes

HOP = audio.HOP_LENGTH
SPEC = ModelSpec(audio.N_MELS, 1)
TINY = {"n_rnn": 16, "n_fc": 16, "n_res_block": 1, "n_hidden": 8, "n_output": 8}


def tiny(cls=WaveRnnStudent, seed=0, **options):
    torch.manual_seed(seed)
    return cls(cls.Options(**{**TINY, **options}), SPEC)


def segments(frames=4, n=2):
    """A training batch of the kit corpus cut to ``frames``-frame segments, as the vocoder task
    collates it (log-mels and the samples they render)."""
    task = Vocoding(Vocoding.Options(segment_frames=8))
    corpus = tiny_corpus()
    task.setup(corpus)
    batch = task.collate(corpus.train[1:1 + n])
    steps = frames * HOP
    return Batch(batch.ids, batch.inputs[:, :frames], torch.full((n,), frames), batch.targets[:, :steps],
                 batch.target_lengths.clamp(max=steps))


def test_training_gives_class_logits_per_sample_and_decoding_a_waveform():
    batch = segments(frames=4)
    model = tiny(n_bits=6).eval()
    out = model.forward_train(batch.inputs, batch.input_lengths, batch)
    assert out.output.shape == (2, 4 * HOP, 64)  # logits over 2 ** n_bits mu-law classes per sample
    assert out.lengths.tolist() == [4 * HOP] * 2
    decoded = model(batch.inputs[:1, :2], torch.tensor([2]))
    assert decoded.output.shape == (1, 2 * HOP, 1) and decoded.lengths.tolist() == [2 * HOP]
    # every decoded sample is the amplitude of one of the 64 classes
    amplitudes = class_amplitudes(64)
    assert torch.isclose(decoded.output[0, :, :1], amplitudes[None, :]).any(-1).all()


def test_teacher_forcing_reads_the_previous_recorded_sample_only():
    batch = segments(frames=3)
    model = tiny().eval()
    with torch.no_grad():
        before = model.forward_train(batch.inputs, batch.input_lengths, batch).output
        k = 300
        changed = batch.targets.clone()
        changed[:, k] = -changed[:, k] + 0.5  # another mu-law class at sample k
        after = model.forward_train(batch.inputs, batch.input_lengths,
                                    Batch(batch.ids, batch.inputs, batch.input_lengths, changed,
                                          batch.target_lengths)).output
    # sample k is predicted without seeing it; sample k + 1 reads it
    assert torch.equal(before[:, :k + 1], after[:, :k + 1])
    assert not torch.allclose(before[:, k + 1], after[:, k + 1])


def test_an_utterance_gets_the_same_logits_alone_as_in_a_padded_batch():
    full = segments(frames=5)
    short = 3
    lengths = torch.tensor([5, short])
    targets = full.targets.clone()
    targets[1, short * HOP:] = 0.7  # garbage past the short recording's end: padding must not leak
    batch = Batch(full.ids, full.inputs.clone(), lengths, targets, torch.tensor([5 * HOP, short * HOP]))
    batch.inputs[1, short:] = 3.0  # and loud garbage in its padded frames
    model = tiny().eval()
    with torch.no_grad():
        together = model.forward_train(batch.inputs, lengths, batch)
        alone_batch = Batch(full.ids[1:], full.inputs[1:, :short], lengths[1:], full.targets[1:, :short * HOP],
                            torch.tensor([short * HOP]))
        alone = model.forward_train(alone_batch.inputs, alone_batch.input_lengths, alone_batch)
    assert together.lengths.tolist() == [5 * HOP, short * HOP]
    torch.testing.assert_close(together.output[1, :short * HOP], alone.output[0], atol=1e-5, rtol=1e-5)


def test_free_running_decode_is_seeded_per_utterance_and_leaves_the_global_rng_alone(one_thread):
    batch = segments(frames=4)
    model = tiny().eval()
    lengths = torch.tensor([4, 2])
    torch.manual_seed(1)
    state_before = torch.get_rng_state()
    first = model(batch.inputs, lengths)
    assert torch.equal(torch.get_rng_state(), state_before)  # the caller's random state is untouched
    torch.manual_seed(1)
    torch.rand(5)  # the global generator elsewhere: the decode must not depend on it
    second = model(batch.inputs, lengths)
    assert torch.equal(first.output, second.output)
    assert first.lengths.tolist() == [4 * HOP, 2 * HOP]
    assert not first.output[1, 2 * HOP:].any()  # nothing rendered past an utterance's frames
    alone = model(batch.inputs[1:, :2], lengths[1:])  # batch-mates do not change an utterance
    assert torch.equal(alone.output[0], first.output[1, :2 * HOP])
    reseeded = tiny(sample_seed=1)
    reseeded.load_state_dict(model.state_dict())
    assert not torch.equal(reseeded.eval()(batch.inputs[1:, :2], lengths[1:]).output, alone.output)


@pytest.fixture
def one_thread():
    """Sample-by-sample GRUs are op-overhead bound: one thread does not wait on a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cross_entropy_training_lowers_the_loss_on_one_batch(one_thread):
    batch = segments(frames=1)  # 2 x 256 samples: the GRUs' backward runs sample by sample too
    model = tiny(n_bits=8).train()
    loss_fn = WaveCrossEntropy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = loss_fn(model.forward_train(batch.inputs, batch.input_lengths, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), rel=0.1)  # untrained: about uniform over 256 classes
    # 20 steps learn at least the segment's class distribution: ~1.3 nats below uniform here
    assert losses[-1] < losses[0] - 0.8 and losses[-1] <= min(losses[:10]), losses


def logits(seed, n=2, steps=700, classes=32):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, steps, classes, generator=g)


def class_batch(steps=700, n=2, lengths=(700, 500)):
    g = torch.Generator().manual_seed(9)
    wave = 0.5 * torch.sin(torch.arange(steps) * 0.07)[None].repeat(n, 1) + 0.05 * torch.randn(n, steps, generator=g)
    lengths = torch.tensor(lengths)
    wave = wave * (torch.arange(steps)[None] < lengths[:, None])
    return Batch(["a", "b"][:n], torch.zeros(n, 3, audio.N_MELS), torch.tensor([3] * n), wave, lengths)


def test_cross_entropy_scores_the_recordings_mu_law_classes_over_valid_samples():
    batch = class_batch()
    target = mu_law_classes(batch.targets, 32)
    # a student certain of the recording's classes has ~0 loss; garbage past the lengths is ignored
    perfect = 50 * torch.nn.functional.one_hot(target, 32).float()
    perfect[1, 500:] = torch.randn(200, 32)
    assert float(class_cross_entropy(ModelOutput(perfect, torch.tensor([700, 500])), batch)) < 1e-6
    s = logits(1)
    value = float(class_cross_entropy(ModelOutput(s, torch.tensor([700, 700])), batch))
    by_hand = torch.cat([torch.nn.functional.cross_entropy(s[0], target[0], reduction="none"),
                         torch.nn.functional.cross_entropy(s[1, :500], target[1, :500], reduction="none")]).mean()
    assert value == pytest.approx(float(by_hand), rel=1e-5)


def test_class_kd_is_hinton_kd_with_t_squared_and_alpha():
    batch = class_batch()
    lengths = torch.tensor([700, 500])
    student = ModelOutput(logits(1).requires_grad_(), lengths)
    teacher = ModelOutput(logits(2).half().float(), lengths)  # as the cache hands it back: fp16-rounded
    t = 2.0
    kd = WaveClassKd(WaveClassKd.Options(alpha=1.0, temperature=t))
    value = kd(student, batch, teacher)
    assert torch.isfinite(value) and value.dim() == 0 and value.requires_grad
    value.backward()
    grad = student.output.grad
    assert grad is not None and torch.isfinite(grad).all() and grad[:, :500].abs().sum() > 0
    assert not grad[1, 500:].any()  # padded samples of the shorter utterance get no gradient
    # independently: T^2 x mean over valid samples of KL(teacher_T || student_T)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student.output.detach() / t, -1),
                                    torch.log_softmax(teacher.output / t, -1), log_target=True, reduction="none").sum(-1)
    expected = t * t * torch.cat([kl[0], kl[1, :500]]).mean()
    assert value.item() == pytest.approx(float(expected), rel=1e-5)
    # the teacher's own distribution costs nothing; mixing with alpha weights the two terms
    same = ModelOutput(teacher.output.clone(), lengths)
    assert float(kd(same, batch, teacher)) == pytest.approx(0, abs=1e-6)
    ce = class_cross_entropy(student, batch).item()
    half = WaveClassKd(WaveClassKd.Options(alpha=0.5, temperature=t))
    assert half(student, batch, teacher).item() == pytest.approx(0.5 * float(expected) + 0.5 * ce, rel=1e-5)


def test_alpha_zero_is_exactly_cross_entropy_and_never_reads_the_teacher():
    batch = class_batch()
    student = ModelOutput(logits(1), torch.tensor([700, 500]))
    broken_teacher = ModelOutput(torch.full((2, 700, 32), float("nan")), torch.tensor([700, 500]))
    no_kd = WaveClassKd(WaveClassKd.Options(alpha=0.0, temperature=4.0))
    assert torch.equal(no_kd(student, batch, broken_teacher), WaveCrossEntropy()(student, batch))


def test_temperature_anneals_with_training_progress():
    batch = class_batch()
    student, teacher = ModelOutput(logits(1), torch.tensor([700, 500])), ModelOutput(logits(2), torch.tensor([700, 500]))
    kd = WaveClassKd(WaveClassKd.Options(alpha=1.0, temperature=4.0, temperature_end=1.0))
    values = {}
    for progress, expected_t in ((0.0, 4.0), (0.5, 2.5), (0.9, 1.3)):
        kd.progress = progress  # what the training loop sets before every step
        assert kd.temperature == pytest.approx(expected_t)
        values[progress] = float(kd(student, batch, teacher))
        fixed = WaveClassKd(WaveClassKd.Options(alpha=1.0, temperature=expected_t))
        assert values[progress] == pytest.approx(float(fixed(student, batch, teacher)), rel=1e-6)
    assert len(set(values.values())) == 3
    constant = WaveClassKd(WaveClassKd.Options(alpha=1.0, temperature=4.0))
    constant.progress = 0.9
    assert constant.temperature == 4.0  # no temperature_end: no schedule


def test_kd_gradient_reaches_the_student_through_teacher_forcing():
    batch = segments(frames=2)
    student, teacher = tiny(seed=0), tiny(WaveRnn, seed=1, n_rnn=24, n_fc=24).eval()
    with torch.no_grad():
        t_out = teacher.forward_train(batch.inputs, batch.input_lengths, batch)
    loss = WaveClassKd(WaveClassKd.Options(alpha=0.5, temperature=2.0))(
        student.train().forward_train(batch.inputs, batch.input_lengths, batch), batch, t_out)
    assert torch.isfinite(loss)
    loss.backward()
    unused = [n for n, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, unused


def test_class_losses_refuse_waveforms_and_spectral_losses_hear_the_expected_sample():
    batch = class_batch()
    with pytest.raises(ValueError, match="needs logits"):
        WaveCrossEntropy()(ModelOutput(torch.zeros(2, 700, 1), torch.tensor([700, 500])), batch)
    # logits certain of class k: the spectral losses see that class's amplitude
    classes = mu_law_classes(batch.targets, 256)
    certain = ModelOutput(40 * torch.nn.functional.one_hot(classes, 256).float(), torch.tensor([700, 500]))
    torch.testing.assert_close(_wave(certain), class_amplitudes(256)[classes], atol=1e-4, rtol=0)
    assert float(WaveLoss(WaveLoss.Options())(certain, batch)) < 0.2  # mu-law rounding only


def fake_runner(task, pipeline, corpus, mode, tmp_path, losses=()):
    """The parts of a Runner its teacher sources read: the real methods, without a whole suite
    (whose evaluation would decode the test set with a WaveRNN, minutes)."""
    runner = Runner.__new__(Runner)
    runner.rs = SimpleNamespace(suite=SimpleNamespace(teacher_outputs=SimpleNamespace(mode=mode, copies=1)),
                                losses=list(losses))
    runner.task, runner.pipeline, runner.corpus = task, pipeline, corpus
    runner.cache, runner.base, runner.force_teachers = Cache(tmp_path), {"data": "kit"}, False
    runner.stats = {"teacher_forward_passes": 0}
    runner.progress = Progress()
    return runner


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_a_teacher_forcing_loss_gets_the_teachers_logits_on_the_students_segment(mode, tmp_path):
    task = Vocoding(Vocoding.Options(segment_frames=8))
    corpus = tiny_corpus()
    task.setup(corpus)
    pipeline = InputPipeline(task, LogMelInput())
    kd = SimpleNamespace(component=SimpleNamespace(factory=WaveClassKd), options=WaveClassKd.Options())
    runner = fake_runner(task, pipeline, corpus, mode, tmp_path, losses=[kd])
    teacher = tiny(WaveRnn, seed=3).eval()
    source, _ = runner._teacher_source(TeacherState(teacher, "tiny-teacher", "tiny"), forcing=True)
    feats = pipeline(corpus.train[2:6])  # a training batch: 8-frame segments
    got = source(feats, None)
    with torch.no_grad():
        forced = teacher.forward_train(feats.features, feats.lengths, feats.batch)
    assert got.output.shape == forced.output.shape == (4, 8 * HOP, 256)
    # fp16 in the cache, exact online
    tolerance = 2e-2 if mode == "cached" else 0
    torch.testing.assert_close(got.output, forced.output, atol=tolerance, rtol=tolerance)
    assert got.lengths.tolist() == forced.lengths.tolist()
    if mode == "cached":  # one teacher-forced pass over the training set, under keys of its own
        state = TeacherState(teacher, "tiny-teacher", "tiny")
        store = runner._teacher_outputs(state, True)
        assert runner.stats["teacher_forward_passes"] == 1  # a fresh TeacherState reads the cache: no second pass
        piece = {"teacher": "tiny-teacher", "base": runner.base, "copy": 0, "piece": "output"}
        assert store.keys["0:output"] == stable_hash({**piece, "teacher_forcing": True})
        assert store.keys["0:output"] != stable_hash(piece)  # free-running outputs keep their old keys


def test_the_wavernn_suite_plans_teacher_forced_online_kd_and_class_losses_refuse_waveform_models():
    path = Path(__file__).resolve().parent.parent / "suites" / "tts-wavernn.yaml"
    registry = build_registry()
    rs = resolve_suite(Suite(**yaml.safe_load(path.read_text())), registry, path)
    assert rs.suite.teacher_outputs.mode == "online"  # 256 classes x 2048 samples x fp16 a segment: not cached
    kd = next(loss for loss in rs.losses if loss.name == "wave-class-kd")
    assert teacher_forcing(kd) and kd.options.temperature == 2.0 and kd.options.alpha == 0.5
    assert rs.teacher_losses[0].name == "wave-ce"  # not the task's default `wave`
    mixed = yaml.safe_load(path.read_text())
    mixed["students"] = [{"name": "hifigan-student"}]
    with pytest.raises(SuiteError, match="renders a waveform"):
        resolve_suite(Suite(**mixed), registry, path)
