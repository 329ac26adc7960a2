"""Speech enhancement through the same core as ASR: metrics against known values, the NaN and
coverage policy, noise held out for tests, models independent of batch-mates, and a tiny suite
on real FSDD speech end to end through MLflow."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from kdbench.cli import main
from kdbench.interfaces import Evaluation, Example, ModelSpec
from kdbench.plugins import get_registry
from kdbench_enhance.losses import si_sdr as si_sdr_torch
from kdbench_enhance.metrics import score_all
from kdbench_enhance.models import ConvTasNetEnhancer, StftMaskGru, StftMaskMlp
from kdbench_enhance.noise import mix
from kdbench_enhance.scoring import si_sdr

from conftest import write_suite

SR = 8000


@pytest.fixture(scope="module")
def speech(fsdd_root):
    """Three real utterances at 8 kHz."""
    files = ["3_jackson_7.wav", "5_nicolas_6.wav", "8_yweweler_5.wav"]
    return [sf.read(fsdd_root / "recordings" / f, dtype="float32")[0] for f in files]


def metric(name, **options):
    return get_registry().get("metrics", name).build(options)


def evaluation(estimates, references, noisy=None):
    noisy = noisy or references
    examples = [Example(f"u{i}", torch.from_numpy(n), torch.from_numpy(r), {"sample_rate": SR, "duration": len(r) / SR})
                for i, (n, r) in enumerate(zip(noisy, references))]
    return Evaluation("test", examples, list(estimates), list(references), None, None, None)


def values(measurements):
    return {m.name: m for m in measurements}


def test_identical_signals_score_the_maximum(speech):
    ev = evaluation(speech, speech)
    assert values(metric("pesq").compute(ev))["pesq_nb"].value > 4.4
    stoi = values(metric("stoi").compute(ev))
    assert stoi["stoi"].value == pytest.approx(1.0) and stoi["estoi"].value == pytest.approx(1.0)
    assert values(metric("si-sdr").compute(ev))["si_sdr"].value > 80


def test_known_snr_mixture(speech):
    rng = np.random.default_rng(0)
    noisy = [mix(s, rng.standard_normal(len(s)), 10.0)[0] for s in speech]
    clean = [mix(s, rng.standard_normal(len(s)), 10.0)[1] for s in speech]  # same scaling rule
    scored = values(metric("si-sdr").compute(evaluation(noisy, clean, noisy)))
    # white noise at 10 dB: SI-SDR close to 10 dB; improvement over the noisy input itself is 0
    assert scored["si_sdr"].value == pytest.approx(10.0, abs=0.5)
    assert scored["si_sdri"].value == pytest.approx(0.0, abs=1e-6)
    assert scored["si_sdr"].coverage == (3, 3)
    # the torch loss uses the same definition
    est = torch.from_numpy(np.stack([n[:2000] for n in noisy]))
    ref = torch.from_numpy(np.stack([c[:2000] for c in clean]))
    expected = [si_sdr(n[:2000], c[:2000]) for n, c in zip(noisy, clean)]
    assert si_sdr_torch(est, ref, torch.tensor([2000] * 3)).tolist() == pytest.approx(expected, abs=1e-4)


def test_silent_short_and_mismatched_clips_are_nan_with_coverage(speech, caplog):
    silent = np.zeros(SR, np.float32)
    short = speech[0][: int(0.1 * SR)]
    refs = [speech[0], silent, short, speech[1]]
    ests = [speech[0], silent, short, speech[1][:-10]]  # the last one lost samples
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        pesq = values(metric("pesq").compute(evaluation(ests, refs)))["pesq_nb"]
        stoi = values(metric("stoi").compute(evaluation(ests, refs)))["stoi"]
    assert pesq.coverage == (1, 4) and stoi.coverage == (1, 4)
    assert pesq.value == pytest.approx(values(metric("pesq").compute(evaluation(ests[:1], refs[:1])))["pesq_nb"].value)
    # unscored utterances carry no weight, so the weighted mean is the reported value
    assert pesq.weights == [1.0, 0.0, 0.0, 0.0]
    text = caplog.text
    assert "PESQ found no speech (silent reference)" in text and "shorter than PESQ's 0.25 s" in text
    assert "estimate has 3900 samples, reference 3910" in text or "different lengths or rates" in text


def test_dnsmos_is_not_applicable_at_8_khz(speech):
    (sig, bak, ovrl) = metric("dnsmos").compute(evaluation(speech, speech))
    assert np.isnan(ovrl.value) and ovrl.coverage == (0, 3)


def test_scoring_in_two_processes_gives_the_same_numbers(speech):
    rng = np.random.default_rng(1)
    items = [(s + 0.05 * rng.standard_normal(len(s)).astype(np.float32), s, s) for s in speech * 2]
    one = score_all("stoi", items, SR, {}, workers=1)
    two = score_all("stoi", items, SR, {}, workers=2)
    assert [r for _, r in one] == [r for _, r in two]
    for (a, _), (b, _) in zip(one, two):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("model", ["convtasnet", "stft-mask-gru", "stft-mask-bigru", "stft-mask-mlp"])
def test_outputs_do_not_depend_on_batch_mates(model, speech):
    spec = ModelSpec(1, 1, {"sample_rate": SR})
    torch.manual_seed(0)
    net = (ConvTasNetEnhancer(ConvTasNetEnhancer.Options(enc_num_feats=16, msk_num_feats=8, msk_num_hidden_feats=16,
                                                         msk_num_layers=2, msk_num_stacks=1), spec)
           if model == "convtasnet"
           else StftMaskMlp(StftMaskMlp.Options(hidden=8), spec) if model == "stft-mask-mlp"
           else StftMaskGru(StftMaskGru.Options(hidden=8, bidirectional=model.endswith("bigru")), spec)).eval()
    waves = [torch.from_numpy(s) for s in speech]
    lengths = torch.tensor([len(w) for w in waves])
    assert len(set(lengths.tolist())) > 1  # some utterances are padded in the batch
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).unsqueeze(-1)
    with torch.no_grad():
        together = net(batch, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = net(waves[i].reshape(1, -1, 1), lengths[i:i + 1])
            torch.testing.assert_close(together.output[i, :n], alone.output[0, :n], atol=1e-5, rtol=1e-5)
    assert together.output.shape == batch.shape


def test_test_sets_hear_held_out_noise(fsdd_root, shared_cache):
    dataset = get_registry().get("datasets", "noisy-speech").build(
        {"clean": {"name": "fsdd-digits", "options": {"root": str(fsdd_root), "held_out_speakers": ["theo"],
                                                      "train_utterances": 24, "test_utterances": 12, "max_digits": 2}},
         "train_noises": ["white", "pink"], "test_noises": ["brown", "hum"]}, cache_dir=shared_cache)
    corpus = dataset.load()
    assert {e.meta["noise"] for e in corpus.train} <= {"white", "pink"}
    for examples in corpus.tests.values():
        assert {e.meta["noise"] for e in examples} <= {"brown", "hum"}
    e = corpus.train[0]
    snr = 10 * np.log10(np.sum(e.target.numpy() ** 2) / np.sum((e.input - e.target).numpy() ** 2))
    assert snr == pytest.approx(e.meta["snr_db"], abs=0.2)
    again = get_registry().get("datasets", "noisy-speech").build(dataset.options, cache_dir=shared_cache).load()
    assert again.fingerprint == corpus.fingerprint and torch.equal(again.train[3].input, corpus.train[3].input)


def test_unknown_noise_names_the_choices():
    with pytest.raises(Exception, match="unknown noise 'rain'; available: babble, brown, hum, pink, tones, white"):
        get_registry().get("datasets", "noisy-speech").options.model_validate({"train_noises": ["rain"]})


def test_corrupt_wav_is_a_data_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "%s", "text": "one", "duration": 1.0}\n' % bad)
    suite = enhancement_suite(None, clean={"name": "manifest", "options": {"train": str(manifest), "tests": {"test": str(manifest)}}})
    path = write_suite(tmp_path / "s.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(tmp_path / "c"), "--no-tracking"])
    assert result.exit_code == 4, result.output
    assert "cannot read audio file" in result.output and "bad.wav" in result.output


def enhancement_suite(fsdd_root, clean=None, **overrides):
    suite = {
        "name": "tiny-enh", "task": "enhancement",
        "dataset": {"name": "noisy-speech", "options": {"clean": clean or {"name": "fsdd-digits", "options": {
            "root": str(fsdd_root), "held_out_speakers": ["theo"], "train_utterances": 24, "test_utterances": 6,
            "max_digits": 2}}}},
        "frontend": "waveform",
        "teachers": [{"name": "convtasnet", "options": {"enc_num_feats": 16, "msk_num_feats": 8, "msk_num_hidden_feats": 16,
                                                        "msk_num_layers": 2, "msk_num_stacks": 1},
                      "training": {"steps": 3, "batch_size": 8}}],
        "references": [{"name": "passthrough", "label": "noisy input"}],
        "students": [{"name": "stft-mask-gru", "options": {"hidden": 8}}],
        "losses": ["si-sdr", "si-sdr-kd", "encoder-hint"],
        "training": {"steps": 3, "batch_size": 8},
        "metrics": ["si-sdr", "pesq", "stoi", "params", {"name": "latency", "options": {"utterances": 2, "runs": 4, "warmup": 1, "min_seconds": 0}}],
    }
    suite.update(overrides)
    return suite


def test_tiny_enhancement_suite_end_to_end_through_mlflow(tmp_path, fsdd_root, shared_cache):
    path = write_suite(tmp_path / "enh.yaml", enhancement_suite(fsdd_root))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--tracking-uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "teacher forward passes 1" in result.output  # one pass serves both KD losses
    board = pd.read_csv(tmp_path / "r" / "tiny-enh" / "leaderboard.csv")
    assert sorted(board["role"]) == ["reference", "student", "student", "student", "teacher"]
    noisy = board[board["role"] == "reference"].iloc[0]
    assert noisy["model"] == "noisy input" and noisy["test-unseen/si_sdri"] == pytest.approx(0.0, abs=1e-6)
    for column in ("test-seen/si_sdr", "test-unseen/pesq_nb", "test-unseen/stoi", "test-unseen/estoi", "latency_p50_ms"):
        assert board[column].notna().all(), column
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench-tiny-enh")
    evaluations = client.search_runs([exp.experiment_id], "tags.`kdbench.role` = 'evaluation'")
    assert len(evaluations) == 5
    kd = next(r for r in evaluations if r.data.tags["kdbench.loss"] == "si-sdr-kd")
    assert json.loads(kd.data.tags["kdbench.metric.test-unseen/pesq_nb.meta"])["unit"] == "MOS"
    assert json.loads(kd.data.tags["kdbench.metric.test-unseen/si_sdri.meta"])["higher_is_better"] is True
    # a few enhanced clips per test set are kept as WAV, logged to MLflow and playable on both pages
    clips = [a.path for split in ("audio/test-seen", "audio/test-unseen")
             for a in client.list_artifacts(kd.info.run_id, split)]
    assert len(clips) == 6 and all(c.endswith(".wav") for c in clips)
    local = next((tmp_path / "r" / "tiny-enh" / "runs").glob("*/audio-*/test-unseen/*.wav"))
    clip, rate = sf.read(local)
    assert rate == 8000 and clip.ndim == 1 and len(clip) > 0 and np.abs(clip).max() > 0
    for page in ("leaderboard.html", "mlflow-leaderboard/leaderboard.html"):
        html = (tmp_path / "r" / "tiny-enh" / page).read_text()
        assert html.count('<audio controls') == 5 and "data:audio/wav;base64," in html, page


def test_stft_enhancer_runs_on_onnxruntime_and_scores_as_in_pytorch(tmp_path, fsdd_root, shared_cache):
    suite = enhancement_suite(fsdd_root, teachers=[], references=[], losses=["si-sdr"], targets=["cpu", "onnxruntime"],
                              metrics=["si-sdr", "pesq", "size"])
    path = write_suite(tmp_path / "enh.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "r" / "tiny-enh" / "rows.csv").set_index("target")
    assert (rows["status"] == "ok").all()
    for column in ("test-unseen/si_sdr", "test-seen/pesq_nb"):
        assert rows.loc["onnxruntime", column] == pytest.approx(rows.loc["cpu", column], abs=0.01), column
    assert rows.loc["onnxruntime", "size_mb"] != rows.loc["cpu", "size_mb"]  # the .onnx file is what is sized


def test_an_all_linear_enhancer_is_pruned_and_trained_for_int8_and_scored_on_the_int8_targets(
        tmp_path, fsdd_root, shared_cache):
    """Issue 15: the enhancement suite gets pruning and QAT. The GRU student is out of their reach
    (compress: false keeps it dense); the feed-forward mask student takes both."""
    mlp = {"name": "stft-mask-mlp", "options": {"hidden": 32}}  # wide enough that half is a few channels
    teacher = {"name": "stft-mask-gru", "options": {"hidden": 8, "bidirectional": True},
               "training": {"steps": 3, "batch_size": 8}}
    suite = enhancement_suite(fsdd_root, teachers=[teacher],
                              students=[mlp, {"name": "stft-mask-gru", "options": {"hidden": 8}, "compress": False}],
                              compressions=[{"name": "prune", "options": {"keep": 0.5, "fine_tune_steps": 2}}, "qat"],
                              losses=["si-sdr", "si-sdr-kd"], targets=["cpu", "cpu-int8", "onnxruntime-int8"],
                              metrics=["si-sdr", "pesq", "params"])
    path = write_suite(tmp_path / "enh.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "r" / "tiny-enh" / "rows.csv", keep_default_na=False)
    students = rows[rows["role"] == "student"]
    assert sorted(set(students["model"])) == ["stft-mask-gru", "stft-mask-mlp", "stft-mask-mlp+prune",
                                              "stft-mask-mlp+qat"]
    assert set(students["status"]) == {"ok"}
    for model in ("stft-mask-mlp+prune", "stft-mask-mlp+qat", "stft-mask-gru"):
        on = students[(students["model"] == model) & (students["loss"] == "si-sdr-kd")].set_index("target")
        assert sorted(on.index) == ["cpu", "cpu-int8", "onnxruntime-int8"]
        assert all(isinstance(v, float) for v in on["test-unseen/pesq_nb"]), model
    params = students[students["target"] == "cpu"].groupby("model")["params"].first()
    assert params["stft-mask-mlp+prune"] / params["stft-mask-mlp"] == pytest.approx(0.5, abs=0.05)
    assert params["stft-mask-mlp+qat"] == params["stft-mask-mlp"]


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (512, 128)])
@pytest.mark.parametrize("samples", [300, 4001, 8000])
def test_convolutional_stft_is_torch_stft_and_istft(n_fft, hop, samples):
    from kdbench_enhance.stft import ConvStft

    torch.manual_seed(0)
    wave = torch.randn(samples)
    window = torch.hann_window(n_fft)
    reference = torch.stft(wave, n_fft, hop, window=window, return_complex=True).T
    stft = ConvStft(n_fft, hop)
    real, imag = stft(wave)
    torch.testing.assert_close(real, reference.real, atol=1e-4, rtol=0)
    torch.testing.assert_close(imag, reference.imag, atol=1e-4, rtol=0)
    # a masked spectrum, so the inverse is checked on more than perfect reconstruction
    mask = torch.rand(reference.shape)
    expected = torch.istft((reference * mask).T, n_fft, hop, window=window, length=samples)
    torch.testing.assert_close(stft.inverse(real * mask, imag * mask, samples), expected, atol=1e-5, rtol=0)


def test_bad_clean_source_option_names_its_key_path(tmp_path, fsdd_root):
    suite = enhancement_suite(fsdd_root)
    suite["dataset"]["options"]["clean"]["options"]["max_digits"] = "four"
    path = write_suite(tmp_path / "bad.yaml", suite)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "bad.yaml: dataset.options.clean: options.max_digits: Input should be a valid integer" in result.output


def test_enhancer_learns_to_improve_on_the_noisy_input(fsdd_root, shared_cache):
    """Real training through kdbench's loop: a small STFT-mask GRU, trained for 80 steps on 48
    real noisy utterances with the SI-SDR loss, must beat the unprocessed input on unseen test
    noise (positive SI-SDR improvement)."""
    from kdbench.evaluation import evaluate
    from kdbench.pipeline import InputPipeline
    from kdbench.suite import TrainingConfig
    from kdbench.training import train
    from kdbench_enhance.losses import SiSdrLoss
    from kdbench_enhance.task import Enhancement, Waveform
    from kdbench_standard.targets import CpuTarget

    corpus = get_registry().get("datasets", "noisy-speech").build(
        {"clean": {"name": "fsdd-digits", "options": {"root": str(fsdd_root), "train_utterances": 48,
                                                      "test_utterances": 12, "max_digits": 2}},
         "train_noises": ["white", "pink"], "test_noises": ["brown"], "snrs": [0.0, 5.0]}, cache_dir=shared_cache).load()
    task = Enhancement(Enhancement.Options())
    task.setup(corpus)
    frontend = Waveform(Waveform.Options(), corpus_info=corpus.info)
    torch.manual_seed(0)
    model = StftMaskGru(StftMaskGru.Options(hidden=32), ModelSpec(1, 1, {"sample_rate": SR}))
    losses = []
    train(model, SiSdrLoss(), InputPipeline(task, frontend), corpus.train,
          TrainingConfig(steps=80, batch_size=8, lr=5e-3, warmup_steps=5), seed=0,
          on_step=lambda step, loss: losses.append(loss))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0, losses  # at least 1 dB better while training
    result = evaluate(model, frontend, task, corpus.tests, [metric("si-sdr", workers=1)], CpuTarget(CpuTarget.Options()))
    assert result.as_dict()["test/si_sdri"] > 0.5, result.as_dict()
