"""Real-synthesis tests for the eSpeak NG ctypes binding (kdbench_asr.espeak)."""

import importlib.util
import pathlib
import threading

import pytest

pytest.importorskip("espeakng_loader")
np = pytest.importorskip("numpy")

try:
    from kdbench_asr import espeak
except ImportError:  # plugins/ not on sys.path: load the module file directly
    _path = pathlib.Path(__file__).resolve().parents[1] / "plugins" / "kdbench_asr" / "espeak.py"
    _spec = importlib.util.spec_from_file_location("kdbench_asr_espeak", _path)
    espeak = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(espeak)

TEXT = "three seven"


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def median_f0(x, sr):
    """Median autocorrelation pitch (Hz) over the loud frames; crude but robust for TTS."""
    n, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    energy = np.sqrt(np.mean(frames**2, axis=1))
    lo, hi = int(sr / 400), int(sr / 60)
    f0s = []
    for f in frames[energy > 0.3 * energy.max()]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1 :]
        f0s.append(sr / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(f0s))


def assert_plausible_speech(x, sr):
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1
    assert 8000 <= sr <= 48000
    assert 0.3 <= len(x) / sr <= 3.0
    assert np.abs(x).max() <= 1.0
    assert rms(x) > 0.01


def test_available():
    assert espeak.available() == (True, "")


def test_list_variants():
    variants = espeak.list_variants()
    assert len(variants) >= 5
    assert variants == sorted(variants)
    assert {"m3", "f2"} <= set(variants)


def test_variants_give_distinct_plausible_speech():
    male, sr_m = espeak.synthesize(TEXT, variant="m3")
    female, sr_f = espeak.synthesize(TEXT, variant="f2")
    assert sr_m == sr_f
    assert_plausible_speech(male, sr_m)
    assert_plausible_speech(female, sr_f)
    assert male.shape != female.shape or not np.array_equal(male, female)
    # The female variant must actually sound higher, not merely differ.
    assert median_f0(female, sr_f) > 1.4 * median_f0(male, sr_m)


def test_pitch_raises_f0():
    low, sr = espeak.synthesize(TEXT, pitch=20)
    high, _ = espeak.synthesize(TEXT, pitch=80)
    assert_plausible_speech(low, sr)
    assert_plausible_speech(high, sr)
    assert median_f0(high, sr) > 1.3 * median_f0(low, sr)


def test_rate_shortens_speech():
    slow, sr = espeak.synthesize(TEXT, rate=100)
    fast, _ = espeak.synthesize(TEXT, rate=300)
    assert_plausible_speech(slow, sr)
    assert_plausible_speech(fast, sr)
    assert len(slow) > 1.5 * len(fast)


def test_unknown_variant_raises():
    # eSpeak itself would silently fall back to the default voice.
    with pytest.raises(RuntimeError, match="variant"):
        espeak.synthesize(TEXT, variant="no-such-variant")


def test_unknown_language_raises():
    with pytest.raises(RuntimeError, match="voice"):
        espeak.synthesize(TEXT, language="xx-nosuch")


def test_concurrent_calls_are_serialized():
    results, errors = [], []

    def worker(variant):
        try:
            results.append(espeak.synthesize(TEXT, variant=variant))
        except Exception as exc:  # surfaced below; pytest can't see thread exceptions
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in ("m1", "m3", "f1", "f2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    for x, sr in results:
        assert_plausible_speech(x, sr)
        # Interleaved callbacks would splice utterances together.
        assert len(x) / sr < 1.2
