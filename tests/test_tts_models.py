"""TTS acoustic models and vocoders (plugins/kdbench_tts): the shapes and lengths the task relies
on, outputs independent of batch-mates, a teacher decode that always ends, learning on a tiny
batch, and Griffin-Lim recovering a sine's frequency."""

import math

import numpy as np
import pytest
import torch

from kdbench.interfaces import Batch, ModelSpec
from kdbench_tts import audio
from kdbench_tts.models import FastSpeech, Tacotron2Teacher, length_regulate, monotonic_durations
from kdbench_tts.vocoders import GriffinLim, HifiGan, HifiGanStudent

SYMBOLS = 40
ACOUSTIC = ModelSpec(input_dim=SYMBOLS, output_dim=audio.N_MELS)
VOCODER = ModelSpec(input_dim=audio.N_MELS, output_dim=1)
# small enough that a few teacher steps take well under a second on 2 busy cores
SMALL_TEACHER = dict(encoder_dim=32, attention_rnn_dim=48, decoder_rnn_dim=48, prenet_dim=32, attention_hidden_dim=16,
                     attention_location_filters=4, postnet_dim=32, postnet_convolutions=3)
SMALL_STUDENT = dict(dim=32, conv_dim=64, duration_filters=32, dropout=0.0)


def teacher(**options) -> Tacotron2Teacher:
    torch.manual_seed(0)
    return Tacotron2Teacher(Tacotron2Teacher.Options(**{**SMALL_TEACHER, **options}), model_spec=ACOUSTIC)


def student(**options) -> FastSpeech:
    torch.manual_seed(0)
    return FastSpeech(FastSpeech.Options(**{**SMALL_STUDENT, **options}), model_spec=ACOUSTIC)


@pytest.fixture
def batch() -> Batch:
    """Three utterances of 12, 8 and 5 phonemes, zero-padded, with durations and target mels
    whose frame counts are the durations' sums (as the TTS task collates them)."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 8, 5])
    keep = torch.arange(12)[None, :] < lengths[:, None]
    tokens = torch.randint(1, SYMBOLS, (3, 12), generator=g) * keep
    durations = torch.randint(1, 5, (3, 12), generator=g) * keep
    frames = durations.sum(1)
    # a smooth target (a learnable function of time), zero past each utterance's end
    t = torch.arange(int(frames.max()))[None, :, None].float()
    targets = torch.sin(t / 4 + torch.arange(audio.N_MELS)[None, None, :] / 10) - 4
    targets = targets.expand(3, -1, -1) * (t[..., 0] < frames[:, None]).unsqueeze(2)
    return Batch(ids=["a", "b", "c"], inputs=tokens, input_lengths=lengths, targets=targets.contiguous(),
                 target_lengths=frames, extras={"durations": durations})


def test_student_shapes_in_training_and_inference(batch):
    model = student()
    out = model.forward_train(batch.inputs, batch.input_lengths, batch)
    assert out.output.shape == batch.targets.shape
    assert torch.equal(out.lengths, batch.target_lengths)
    assert out.hidden["encoder"].shape == (3, 12, 32)
    assert out.hidden["decoder"].shape[:2] == batch.targets.shape[:2]
    assert out.hidden["log_durations"].shape == (3, 12, 1)
    assert not out.hidden["log_durations"][2, 5:].any(), "padded phonemes predict no duration"
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs, batch.input_lengths)
    assert out.output.shape[0] == 3 and out.output.shape[2] == audio.N_MELS
    assert int(out.lengths.max()) == out.output.shape[1] and bool((out.lengths >= 1).all())
    for name, dim in model.hidden_dims.items():
        assert out.hidden[name].shape[0] == 3 and out.hidden[name].shape[2] == dim


def test_student_inference_frames_follow_predicted_durations(batch):
    model = student().eval()
    with torch.no_grad():  # the predictor says log(1 + 3) everywhere: exactly 3 frames per phoneme
        model.duration_predictor.out.weight.zero_()
        model.duration_predictor.out.bias.fill_(math.log(4.0))
        out = model(batch.inputs, batch.input_lengths)
    assert out.lengths.tolist() == [36, 24, 15]
    assert not out.output[2, 15:].any(), "frames past an utterance's end are zero"
    with torch.no_grad():
        capped = FastSpeech(FastSpeech.Options(**SMALL_STUDENT, max_frames=20), model_spec=ACOUSTIC)
        capped.load_state_dict(model.state_dict())
        assert capped.eval()(batch.inputs, batch.input_lengths).lengths.tolist() == [20, 20, 15]


def test_length_regulator_repeats_each_phoneme_its_duration():
    x = torch.arange(8.0).view(2, 4, 1)
    durations = torch.tensor([[2, 0, 1, 3], [1, 2, 0, 0]])
    out, frames = length_regulate(x, durations)
    assert frames.tolist() == [6, 3]
    assert out[0, :, 0].tolist() == [0, 0, 2, 3, 3, 3]
    assert out[1, :, 0].tolist() == [4, 5, 5, 0, 0, 0]


def test_teacher_shapes_in_training_and_inference(batch):
    model = teacher()
    out = model.forward_train(batch.inputs, batch.input_lengths, batch)
    frames = batch.targets.shape[1]
    assert out.output.shape == batch.targets.shape and torch.equal(out.lengths, batch.target_lengths)
    assert out.hidden["mel_before_postnet"].shape == batch.targets.shape
    assert out.hidden["gate"].shape == (3, frames, 1)
    assert out.hidden["alignments"].shape == (3, frames, 12)
    assert out.hidden["durations"][:, :, 0].sum(1).tolist() == batch.target_lengths.tolist()
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs, batch.input_lengths)
    assert out.output.shape[0] == 3 and out.output.shape[2] == audio.N_MELS
    assert int(out.lengths.max()) == out.output.shape[1]
    assert out.hidden["encoder"].shape == (3, 12, 32) and out.hidden["stopped"].shape == (3, 1, 1)
    # durations cover every generated frame once (or, with fewer frames than phonemes, argmax counts)
    n = out.hidden["durations"][:, :, 0].sum(1)
    assert n.tolist() == out.lengths.tolist()


def test_teacher_free_running_decode_stops_within_its_bound(batch):
    model = teacher(max_frames_per_phoneme=3.0).eval()
    with torch.no_grad():
        model.net.decoder.gate_layer.bias.fill_(-50.0)  # a stop token that never fires
        out = model(batch.inputs, batch.input_lengths)
        assert out.lengths.tolist() == [36, 24, 15], "each utterance is cut at 3 frames per phoneme"
        assert out.hidden["stopped"].flatten().tolist() == [0, 0, 0], "cut-off decodes are flagged"
        capped = teacher(max_frames_per_phoneme=3.0, max_decoder_steps=10).eval()
        capped.load_state_dict(model.state_dict())
        assert capped(batch.inputs, batch.input_lengths).lengths.tolist() == [10, 10, 10]
        model.net.decoder.gate_layer.bias.fill_(50.0)  # fires on the first frame
        out = model(batch.inputs, batch.input_lengths)
        assert out.lengths.tolist() == [1, 1, 1] and out.hidden["stopped"].flatten().tolist() == [1, 1, 1]


def test_teacher_inference_is_reproducible_and_independent_of_batch_mates(batch):
    model = teacher(max_frames_per_phoneme=3.0).eval()
    with torch.no_grad():
        model.net.decoder.gate_layer.bias.fill_(-50.0)
        first = model(batch.inputs, batch.input_lengths)
        torch.manual_seed(123)  # the global RNG must not matter: the prenet dropout is seeded
        again = model(batch.inputs, batch.input_lengths)
        alone = model(batch.inputs[2:, :5], batch.input_lengths[2:])
    assert torch.equal(first.output, again.output)
    assert torch.allclose(alone.output[0], first.output[2, :15], atol=1e-5)


def test_student_output_is_independent_of_batch_mates(batch):
    model = student().eval()
    with torch.no_grad():
        together = model(batch.inputs, batch.input_lengths)
        alone = model(batch.inputs[2:, :5], batch.input_lengths[2:])
        trained = model.forward_train(batch.inputs, batch.input_lengths, batch)
        one = Batch(ids=["c"], inputs=batch.inputs[2:, :5], input_lengths=batch.input_lengths[2:],
                    targets=batch.targets[2:, :int(batch.target_lengths[2])], target_lengths=batch.target_lengths[2:],
                    extras={"durations": batch.extras["durations"][2:, :5]})
        trained_alone = model.forward_train(one.inputs, one.input_lengths, one)
    n = int(together.lengths[2])
    assert int(alone.lengths[0]) == n
    assert torch.allclose(alone.output[0], together.output[2, :n], atol=1e-5)
    m = int(batch.target_lengths[2])
    assert torch.allclose(trained_alone.output[0], trained.output[2, :m], atol=1e-5)


@pytest.mark.parametrize("cls", [HifiGan, HifiGanStudent, GriffinLim])
def test_vocoder_shapes_and_independence_of_batch_mates(cls):
    torch.manual_seed(0)
    options = cls.Options(n_iter=4) if cls is GriffinLim else cls.Options()
    model = cls(options, model_spec=VOCODER).eval()
    mels = torch.randn(2, 24, audio.N_MELS) - 4
    lengths = torch.tensor([24, 13])
    mels[1, 13:] = math.log(audio.LOG_CLAMP)  # padding, as silence: not zeros, so unmasked biases would show
    with torch.no_grad():
        out = model(mels, lengths)
        alone = model(mels[1:, :13], lengths[1:])
    assert out.output.shape == (2, 24 * audio.HOP_LENGTH, 1)
    assert out.lengths.tolist() == [24 * audio.HOP_LENGTH, 13 * audio.HOP_LENGTH]
    assert not out.output[1, 13 * audio.HOP_LENGTH:].any()
    assert torch.allclose(alone.output[0], out.output[1, :13 * audio.HOP_LENGTH], atol=1e-5)


def test_student_vocoder_is_much_smaller():
    size = {cls: sum(p.numel() for p in cls(cls.Options(), model_spec=VOCODER).parameters())
            for cls in (HifiGan, HifiGanStudent)}
    assert size[HifiGan] > 10 * size[HifiGanStudent]


def _l1(out, batch):
    keep = (torch.arange(out.output.shape[1])[None, :] < batch.target_lengths[:, None]).unsqueeze(2)
    return ((out.output - batch.targets).abs() * keep).sum() / (keep.sum() * audio.N_MELS)


@pytest.mark.parametrize("make", [student, teacher], ids=["student", "teacher"])
def test_a_few_steps_reduce_the_mel_loss(batch, make):
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model.forward_train(batch.inputs, batch.input_lengths, batch)
        mel_loss = _l1(out, batch)
        loss = mel_loss
        if "log_durations" in out.hidden:  # the student's duration predictor learns alongside
            target = batch.extras["durations"].float().log1p()
            loss = loss + (out.hidden["log_durations"][..., 0] - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(mel_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_student_vocoder_learns_a_mel_loss():
    torch.manual_seed(0)
    model = HifiGanStudent(HifiGanStudent.Options(), model_spec=VOCODER)
    t = torch.arange(12 * audio.HOP_LENGTH) / audio.SAMPLE_RATE
    wave = 0.5 * torch.sin(2 * math.pi * 440 * t)
    target = audio.log_mel(wave).T[None]  # (1, frames, n_mels)
    lengths = torch.tensor([target.shape[1]])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(target, lengths)
        loss = (audio.log_mel(out.output[0, :, 0]).T[None, :target.shape[1]] - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_griffin_lim_recovers_a_sines_frequency():
    t = torch.arange(audio.SAMPLE_RATE) / audio.SAMPLE_RATE
    wave = 0.5 * torch.sin(2 * math.pi * 1000 * t)
    mel = audio.log_mel(wave).T[None]
    model = GriffinLim(GriffinLim.Options(), model_spec=VOCODER)
    with torch.no_grad():
        out = model(mel, torch.tensor([mel.shape[1]]))
    synthesized = out.output[0, :, 0].numpy()
    spectrum = np.abs(np.fft.rfft(synthesized * np.hanning(len(synthesized))))
    peak = np.fft.rfftfreq(len(synthesized), 1 / audio.SAMPLE_RATE)[spectrum.argmax()]
    # 80 mel bands over 0-8 kHz are about 60 Hz wide at 1 kHz: the peak lands inside the band
    assert abs(peak - 1000) < 60, peak
    assert np.abs(synthesized).max() > 0.05, "not silence"


def test_monotonic_durations_recover_a_clean_alignment():
    durations = np.array([3, 1, 4, 2])
    frames = np.repeat(np.arange(4), durations)
    attention = np.full((len(frames), 4), 0.02)
    attention[np.arange(len(frames)), frames] = 0.94
    assert monotonic_durations(attention).tolist() == durations.tolist()
    # a frame whose argmax jumps backwards stays on the monotonic path
    attention[5] = [0.9, 0.04, 0.03, 0.03]
    found = monotonic_durations(attention)
    assert found.sum() == len(frames) and (found >= 1).all()
    assert monotonic_durations(np.full((2, 4), 0.25)).sum() == 2  # fewer frames than phonemes


def test_a_fastspeech_teacher_hands_sequence_kd_durations_that_regulate_the_student_to_its_frames(batch):
    from kdbench_tts.losses import SequenceKd

    fast_teacher = student(dim=48).eval()
    with torch.no_grad():
        out = fast_teacher(batch.inputs, batch.input_lengths)
    durations = out.hidden["durations"].squeeze(-1)
    # the durations it regulated with: one per phoneme, zero in the padding, summing to its frames
    assert torch.equal(durations.sum(1).long(), out.lengths)
    assert torch.equal(out.hidden_lengths["durations"], batch.input_lengths)
    kd_batch = SequenceKd(SequenceKd.Options()).student_batch(batch, out)
    assert torch.equal(kd_batch.extras["durations"], durations.round().long())
    trained = student().forward_train(kd_batch.inputs, kd_batch.input_lengths, kd_batch)
    assert torch.equal(trained.lengths, out.lengths)  # the student's frames line up with the teacher's mels
