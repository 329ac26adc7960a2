"""The vocoder task (log-mel in, waveform out), its spectral losses with and without a teacher
vocoder, MCD on waveforms, and a tiny vocoder suite through the runner and MLflow."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import write_suite
from kdbench.cli import main
from kdbench.interfaces import Batch, ModelOutput, ModelSpec
from kdbench.plugins import build_registry
from kdbench.testing import check_metric, tiny_bench
from kdbench_tts import audio
from kdbench_tts.metrics import mcd_dtw
from kdbench_tts.testing import TinyVocoder, tiny_corpus
from kdbench_tts.vocoder_losses import WaveKd, WaveLoss
from kdbench_tts.vocoding import Vocoding

HOP = audio.HOP_LENGTH


def task(segment_frames=8, seed=0):
    t = Vocoding(Vocoding.Options(segment_frames=segment_frames, segment_seed=seed))
    corpus = tiny_corpus()
    t.setup(corpus)
    return t, corpus


def test_test_utterances_are_collated_whole_and_predicted_one_wave_each():
    t, corpus = task()
    tests = corpus.tests["test"]
    batch = t.collate(tests)
    frames = [audio.frame_count(len(e.target)) for e in tests]
    assert batch.inputs.shape == (len(tests), max(frames), audio.N_MELS)
    assert batch.input_lengths.tolist() == frames
    assert batch.target_lengths.tolist() == [len(e.target) for e in tests]
    assert batch.targets.shape == (len(tests), max(len(e.target) for e in tests))
    for i, e in enumerate(tests):
        assert torch.equal(batch.targets[i, :len(e.target)], torch.as_tensor(e.target))
        assert torch.allclose(batch.inputs[i, :frames[i]], audio.log_mel(e.target).T)
    out = TinyVocoder(ModelSpec(audio.N_MELS, 1)).eval()(batch.inputs, batch.input_lengths)
    predictions = t.predict(out)
    assert [p.shape for p in predictions] == [(n * HOP,) for n in frames]  # a vocoder renders whole hops
    assert t.seconds(tests[0], TinyVocoder(ModelSpec(audio.N_MELS, 1))(batch.inputs[:1, :frames[0]],
                                                                       batch.input_lengths[:1])) \
        == frames[0] * HOP / audio.SAMPLE_RATE
    assert np.array_equal(t.reference(tests[0]), tests[0].target)


def test_training_utterances_are_cut_to_a_fixed_segment_per_id_and_seed():
    t, corpus = task(segment_frames=8)
    long = [e for e in corpus.train if audio.frame_count(len(e.target)) > 8]
    assert long, "the kit corpus has utterances longer than the segment"
    batch = t.collate(long)
    assert batch.input_lengths.tolist() == [8] * len(long)
    assert torch.equal(t.collate(long).inputs, batch.inputs)  # the same segment every epoch
    starts = set()
    for i, e in enumerate(long):
        mel = audio.log_mel(e.target).T
        start = next(s for s in range(len(mel) - 7) if torch.allclose(mel[s:s + 8], batch.inputs[i]))
        starts.add(start)
        wave = torch.as_tensor(e.target)[start * HOP:(start + 8) * HOP]  # the samples those frames render
        assert int(batch.target_lengths[i]) == len(wave)
        assert torch.equal(batch.targets[i, :len(wave)], wave)
    assert len(starts) > 1  # not always the first frames
    other, _ = task(segment_frames=8, seed=1)
    assert not torch.equal(other.collate(long).inputs, batch.inputs)
    whole, _ = task(segment_frames=None)
    assert whole.collate(long).input_lengths.tolist() == [audio.frame_count(len(e.target)) for e in long]


def waves(seed=0, lengths=(5000, 3600)):
    g = torch.Generator().manual_seed(seed)
    rows = [0.3 * torch.sin(torch.arange(n) * (0.05 + 0.02 * i)) + 0.01 * torch.randn(n, generator=g)
            for i, n in enumerate(lengths)]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), torch.tensor(lengths)


def output(wave, lengths):
    return ModelOutput(wave.unsqueeze(-1), lengths)


def batch_of(target, lengths):
    return Batch(["a", "b"][:len(target)], torch.zeros(len(target), 1, audio.N_MELS), lengths, target, lengths)


def test_wave_losses_are_zero_for_identical_waves_and_positive_otherwise():
    target, lengths = waves()
    other, _ = waves(seed=1)
    wave, kd = WaveLoss(WaveLoss.Options()), WaveKd(WaveKd.Options(alpha=0.5))
    assert float(wave(output(target, lengths), batch_of(target, lengths))) == pytest.approx(0, abs=1e-6)
    assert float(kd(output(target, lengths), batch_of(target, lengths), output(target, lengths))) \
        == pytest.approx(0, abs=1e-6)
    assert float(wave(output(other, lengths), batch_of(target, lengths))) > 0.05
    # the student renders the recording exactly: only the teacher term is left, alpha of it
    to_teacher = float(WaveKd(WaveKd.Options(alpha=1.0))(output(target, lengths), batch_of(target, lengths),
                                                         output(other, lengths)))
    assert to_teacher > 0.05
    half = float(kd(output(target, lengths), batch_of(target, lengths), output(other, lengths)))
    assert half == pytest.approx(0.5 * to_teacher, rel=1e-5)


def test_padding_never_changes_the_wave_losses():
    target, lengths = waves()
    pred, _ = waves(seed=1)
    wave, kd = WaveLoss(WaveLoss.Options()), WaveKd(WaveKd.Options(alpha=0.3))
    batched = float(wave(output(pred, lengths), batch_of(target, lengths)))
    # garbage past each valid length and a longer padded batch: the same loss
    def garbage(x, extra, value):
        return torch.nn.functional.pad(x, (0, extra)) + value * (torch.arange(x.shape[1] + extra) >= lengths[:, None])

    noisy_pred, noisy_target = garbage(pred, 700, 5.0), garbage(target, 300, -3.0)
    assert float(wave(output(noisy_pred, lengths), batch_of(noisy_target, lengths))) == pytest.approx(batched, rel=1e-5)
    assert float(kd(output(noisy_pred, lengths), batch_of(noisy_target, lengths), output(noisy_target, lengths))) \
        == pytest.approx(float(kd(output(pred, lengths), batch_of(target, lengths), output(target, lengths))), rel=1e-5)
    # the shorter utterance scores the same alone as padded next to the longer one
    n = int(lengths[1])
    alone = float(wave(output(pred[1:, :n], lengths[1:]), batch_of(target[1:, :n], lengths[1:])))
    padded = float(wave(output(pred[1:], lengths[1:]), batch_of(noisy_target[1:], lengths[1:])))
    assert alone == pytest.approx(padded, rel=1e-5)


def test_mcd_scores_waveforms_through_the_shared_log_mel():
    target, lengths = waves()
    a, b = target[0].numpy(), waves(seed=1)[0][0].numpy()
    assert mcd_dtw(a, a) == pytest.approx(0, abs=1e-6)
    assert mcd_dtw(b, a) == pytest.approx(mcd_dtw(audio.log_mel(b).T.numpy(), audio.log_mel(a).T.numpy()))
    assert np.isnan(mcd_dtw(np.zeros(0, np.float32), a))
    # the kit's metric check on the vocoder task: waveform predictions, a clip of zero samples
    check_metric("mcd", bench=tiny_bench(build_registry(), task="vocoder"))


def vocoder_suite() -> dict:
    return {
        "name": "tiny-vocoder", "task": "vocoder",
        "dataset": {"name": "synth-sentences", "options": {"train_utterances": 16, "test_utterances": 4,
                                                            "speakers": ["m1"]}},
        "frontend": "log-mel-input",
        "teachers": [{"name": "hifigan-v3", "label": "hifigan-tiny",
                      "options": {"channels": 16, "resblock_kernel_sizes": [3], "resblock_dilations": [[1, 2]]},
                      "training": {"steps": 2, "batch_size": 4}}],
        "references": [{"name": "griffin-lim", "label": "griffin-lim", "options": {"n_iter": 4}}],
        "students": [{"name": "hifigan-student", "label": "hifigan-student-tiny", "options": {"channels": 8}}],
        "losses": ["wave", "wave-kd"],
        "training": {"steps": 2, "batch_size": 4},
        "metrics": ["mcd", "params", {"name": "latency", "options": {"utterances": 2, "warmup": 1, "runs": 2,
                                                                     "min_seconds": 0}}],
        "targets": ["cpu"],
    }


def test_tiny_vocoder_suite_end_to_end(tmp_path, shared_cache):
    path = write_suite(tmp_path / "vocoder.yaml", vocoder_suite())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--tracking-uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # one teacher pass caches its renderings of the training segments for the wave-kd student
    assert "teacher forward passes 1" in result.output
    board = pd.read_csv(tmp_path / "r" / "tiny-vocoder" / "leaderboard.csv")
    assert sorted(board["role"]) == ["reference", "student", "student", "teacher"]
    assert sorted(board[board["role"] == "student"]["loss"]) == ["wave", "wave-kd"]
    assert board["test/mcd"].notna().all() and (board["test/mcd"] > 0).all()
    assert board[board["role"] == "reference"]["params"].iloc[0] == 0
    assert board["rtf"].notna().all() and (board["rtf"] > 0).all()  # over the seconds each model rendered
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench-tiny-vocoder")
    kd = client.search_runs([exp.experiment_id], "tags.`kdbench.role` = 'evaluation' and "
                            "tags.`kdbench.loss` = 'wave-kd'")[0]
    artifact = [a.path for a in client.list_artifacts(kd.info.run_id, "audio/test")][0]
    assert artifact.endswith(".wav")
    info = sf.info(client.download_artifacts(kd.info.run_id, artifact, str(tmp_path)))
    # 16-bit at 16 kHz, whole hops: the student's own rendering, not the recording
    assert (info.samplerate, info.subtype, info.frames % HOP) == (audio.SAMPLE_RATE, "PCM_16", 0)
