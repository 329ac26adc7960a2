"""The `f0` metric (log-F0 RMSE in cents, V/UV error in %) on real eSpeak NG speech whose F0 is
changed by a known amount with Praat's PSOLA ("Change gender": every F0 value multiplied by one
factor, the spectral envelope kept), and DNSMOS scoring a synthesizer's Griffin-Lim audio."""

import math

import numpy as np
import pytest

from kdbench.interfaces import Evaluation
from kdbench.plugins import get_registry

pytest.importorskip("espeakng_loader")
parselmouth = pytest.importorskip("parselmouth")
from parselmouth.praat import call  # noqa: E402

from kdbench_asr import espeak  # noqa: E402
from kdbench_tts import audio  # noqa: E402
from kdbench_tts.data import EspeakSentences  # noqa: E402
from kdbench_tts.metrics import MelCepstralDistortion  # noqa: E402
from kdbench_tts.prosody import F0Metrics, f0_track  # noqa: E402
from kdbench_tts.task import Synthesis  # noqa: E402

if not espeak.available()[0]:
    pytest.skip(f"eSpeak NG not available: {espeak.available()[1]}", allow_module_level=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three real utterances, a male and a female voice (F0 from ~70 to ~230 Hz)."""
    options = EspeakSentences.Options(train_utterances=1, test_utterances=3, speakers=["m3", "f1"])
    return EspeakSentences(options, cache_dir=tmp_path_factory.mktemp("tts")).load().tests["test"]


def changed(wave: np.ndarray, cents: float, duration: float = 1.0) -> np.ndarray:
    """``wave`` with every F0 value multiplied by 2^(cents/1200) (and its duration by ``duration``):
    Praat's "Change gender" scales the pitch contour by new median / its measured median, with
    the formants (formant shift ratio 1) and the pitch range (factor 1) unchanged."""
    sound = parselmouth.Sound(wave.astype(np.float64), audio.SAMPLE_RATE)
    median = call(sound.to_pitch(0.8 / 60, 60, 500), "Get quantile", 0, 0, 0.5, "Hertz")
    out = call(sound, "Change gender", 60, 500, 1.0, median * 2 ** (cents / 1200), 1.0, duration)
    return out.values[0].astype(np.float32)


def f0(predictions, examples, audio_of=None, **options):
    """The metric's two measurements on predictions against the examples' recordings, by name."""
    refs = [e.target for e in examples]
    ev = Evaluation("test", list(examples), list(predictions), refs, None, None, None, audio=audio_of)
    return {m.name: m for m in F0Metrics(F0Metrics.Options(**options)).compute(ev)}


def test_identical_speech_scores_zero(speech):
    # the tts task's view: a log-mel prediction, heard through the audio the task renders
    mels = [audio.log_mel(e.target).T.numpy() for e in speech]
    out = f0(mels, speech, audio_of=lambda i: (speech[i].target, audio.SAMPLE_RATE))
    assert out["f0_rmse"].value == 0 and out["vuv_error"].value == 0
    assert out["f0_rmse"].coverage == out["vuv_error"].coverage == (3, 3)
    assert out["f0_rmse"].unit == "cents" and out["vuv_error"].unit == "%"
    assert not out["f0_rmse"].higher_is_better and out["f0_rmse"].kind == "quality"


@pytest.mark.parametrize("cents", [300, -300, 100])
def test_a_known_pitch_shift_is_measured_in_cents(speech, cents):
    # waveform predictions with no renderer (a vocoder's view): the metric hears them as they are
    out = f0([changed(e.target, cents) for e in speech], speech)
    # the RMSE is unsigned: |shift|, plus PSOLA's and the tracker's own few cents
    assert out["f0_rmse"].value == pytest.approx(abs(cents), abs=20)
    assert out["f0_rmse"].coverage == (3, 3)
    # the voicing hardly changes (a percent or two of frames at voicing boundaries)
    assert out["vuv_error"].value < 6


def test_alignment_pairs_frames_of_utterances_of_different_lengths(speech):
    # 25% slower and 200 cents higher: frame i of one is not frame i of the other; along the
    # DTW path the F0 difference is still the shift
    slow = [changed(e.target, 200, duration=1.25) for e in speech]
    assert all(len(s) > 1.2 * len(e.target) for s, e in zip(slow, speech))
    out = f0(slow, speech)
    assert out["f0_rmse"].value == pytest.approx(200, abs=25)
    assert out["vuv_error"].value < 10


def test_silence_against_speech_is_all_voicing_error(speech):
    silent = [np.zeros_like(e.target) for e in speech]
    out = f0(silent, speech)
    voiced = [f0_track(e.target, audio.SAMPLE_RATE, audio.frame_count(len(e.target))) > 0 for e in speech]
    # every reference frame is on the DTW path at least once, each voiced one an error: at least
    # the recording's voiced share (most of speech), and never a frame voiced in both
    assert out["vuv_error"].value > 0.9 * 100 * np.mean(np.concatenate(voiced))
    assert out["vuv_error"].value > 40
    assert out["vuv_error"].coverage == (3, 3)
    # no frame to compare F0 on: not a number, with its coverage (0 of 3), instead of a 0 cents
    assert math.isnan(out["f0_rmse"].value) and out["f0_rmse"].coverage == (0, 3)


def test_samples_and_weights_reproduce_the_value(speech):
    # one utterance of each kind: identical, shifted, silent
    predictions = [speech[0].target, changed(speech[1].target, 300), np.zeros_like(speech[2].target)]
    out = f0(predictions, speech)
    rmse, vuv = out["f0_rmse"], out["vuv_error"]
    assert rmse.value == pytest.approx(np.average(rmse.samples, weights=rmse.weights), rel=1e-12)
    assert vuv.value == pytest.approx(np.average(vuv.samples, weights=vuv.weights), rel=1e-12)
    assert rmse.samples[0] == 0 and rmse.samples[1] == pytest.approx(300, abs=25)
    # the silent utterance has no voiced frame in common: weight 0, outside the F0 coverage
    # (its sample is 0.0, not NaN: the paired bootstrap sums weight * sample)
    assert rmse.weights[2] == 0 and rmse.samples[2] == 0 and rmse.coverage == (2, 3)
    # weights are frames: F0 pairs voiced in both, V/UV every pair on the path (>= the frames)
    frames = [audio.frame_count(len(e.target)) for e in speech]
    assert 0 < rmse.weights[0] < frames[0] and all(v >= f for v, f in zip(vuv.weights, frames))
    assert vuv.samples[0] == 0 and vuv.samples[2] > 40


def test_a_prediction_with_nan_is_left_out_not_scored_as_silence(speech):
    broken = speech[1].target.copy()
    broken[100] = np.nan
    out = f0([speech[0].target, broken], speech[:2])
    assert out["f0_rmse"].coverage == out["vuv_error"].coverage == (1, 2)
    assert out["vuv_error"].weights[1] == 0 and out["vuv_error"].value == 0


def test_f0_shares_mcds_alignment_and_names_its_recipe(speech):
    registry = get_registry()
    metric = registry.get("metrics", "f0").build({})
    config = metric.config()
    assert config["implementation"].startswith("praat-parselmouth 0.4.7 to_pitch_ac")
    assert (config["floor_hz"], config["ceiling_hz"]) == (60.0, 500.0)
    mcd = MelCepstralDistortion(MelCepstralDistortion.Options()).config()
    assert (config["alignment"], config["alignment_coefficients"]) == (mcd["implementation"], mcd["coefficients"])
    with pytest.raises(ValueError, match="ceiling_hz"):
        F0Metrics.Options(floor_hz=300, ceiling_hz=200)
    # the cross-correlation method is another recipe, and still finds the shift
    out = f0([changed(speech[0].target, 300)], speech[:1], method="cc")
    assert out["f0_rmse"].value == pytest.approx(300, abs=25)


def test_dnsmos_scores_a_synthesizers_griffin_lim_audio(speech):
    # the tts task's predictions are log-mels (here the recordings' own, a perfect acoustic
    # model); DNSMOS hears them through the task's Griffin-Lim (Evaluation.audio), no reference
    task = Synthesis(Synthesis.Options())
    clips = speech[:2]  # the real model is slow on its first call
    mels = [task.reference(e) for e in clips]
    dnsmos = get_registry().get("metrics", "dnsmos").build({"workers": 1})
    out = {m.name: m for m in dnsmos.compute(Evaluation("test", clips, mels, mels, None, None, None,
                                                        audio=lambda i: task.audio(mels[i])))}
    assert set(out) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    for m in out.values():
        assert m.coverage == (2, 2) and m.unit == "MOS" and m.higher_is_better
        assert all(1.0 <= s <= 5.0 for s in m.samples), m  # a MOS scale, finite
    # without the task's rendering a log-mel is not audio: unscored, not a number made up from it
    unheard = dnsmos.compute(Evaluation("test", clips, mels, mels, None, None, None))
    assert all(math.isnan(m.value) and m.coverage == (0, 2) for m in unheard)
