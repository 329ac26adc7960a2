"""Prosody of synthesized speech against the recording of the same sentence: log-F0 RMSE (cents)
and voiced/unvoiced error (%), with Praat's pitch tracker (praat-parselmouth).

Recipe, reported in the metric's ``config()`` so values from another one (pyworld's DIO or
Harvest, another floor, another alignment) are never compared with these:

- **F0**: Praat's autocorrelation method (``Sound.to_pitch_ac``, Boersma 1993), the method Praat
  recommends for intonation; cross-correlation (``cc``, an option) is the one it recommends for
  voice analysis (jitter). Floor 60 Hz, ceiling 500 Hz by default: the lowest voice in the
  ``synth-sentences`` corpus (eSpeak NG ``m1``) reaches down to ~65 Hz, below Praat's default
  75 Hz floor, and its highest (``f1``, ``f4``) reaches ~230 Hz, so a 500 Hz ceiling still lets an
  octave-up error show as a wrong F0 rather than hiding it as "unvoiced". ESPnet's 40 Hz floor
  (pyworld) would make Praat's window 3 periods of 40 Hz = 75 ms, smearing F0 over more than
  four 16 ms frames; 60 Hz keeps it at 50 ms.
- **Frames**: Praat's time step is the log-mel hop (256 / 16000 s) and each log-mel frame ``i``
  (centred, at ``i * hop / sr``) takes the nearest Praat frame (at most half a hop away). The
  signal is zero-padded by one analysis window on each side first, so the edge frames are
  analysed too (the log-mel's centred frames reach half a window past each end).
- **Alignment**: the synthesized and recorded utterances differ in length, so frames are paired
  along the same DTW path as MCD (``metrics.dtw_path``: mel-cepstra c1..c13 of the 80-bin
  log-mel). The prediction's side of the DTW is the prediction itself when it is a log-mel (the
  ``tts`` task), or its log-mel when it is a waveform (``vocoder``); its F0 comes from what the
  task says it sounds like (``Evaluation.audio``: Griffin-Lim for ``tts``, the waveform itself for
  ``vocoder``). The reference's F0 comes from the recording (``Example.target``).

Per utterance: the F0 RMSE is over path pairs voiced in both signals, in cents
(``1200 * log2(f_pred / f_ref)``), weighted by those pairs; the V/UV error is the share of path
pairs where exactly one side is voiced, weighted by the path's length. Each metric value is the
weighted mean of those samples: for V/UV error exactly the corpus rate over all aligned pairs,
for F0 a frame-weighted mean of per-utterance RMSEs (an RMS is not additive; a weighted mean is
what the paired bootstrap resamples).
"""

from __future__ import annotations

import math
from importlib.metadata import version as package_version
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench.options import Options
from kdbench_tts import audio
from kdbench_tts.metrics import as_log_mel, dtw_path

#: Praat's autocorrelation window is 3 periods of the floor (its ``periods per window``); the
#: padding covers it whatever the method (cross-correlation's window is shorter)
_PERIODS_PER_WINDOW = 3.0


def f0_track(wave: np.ndarray, sample_rate: int, frames: int, floor_hz: float = 60.0, ceiling_hz: float = 500.0,
             method: str = "ac") -> np.ndarray:
    """F0 in Hz (0 where unvoiced) at the centres of ``frames`` log-mel frames (frame ``i`` at
    ``i * HOP_LENGTH / SAMPLE_RATE`` seconds), from Praat's pitch tracker on ``wave``."""
    import parselmouth

    wave = np.asarray(wave, np.float64).reshape(-1)
    if frames <= 0 or len(wave) == 0 or not np.all(np.isfinite(wave)) or not np.any(wave):
        return np.zeros(max(frames, 0))  # nothing voiced in silence (Praat would refuse a too-short clip)
    pad = int(math.ceil(_PERIODS_PER_WINDOW / floor_hz * sample_rate))
    # start_time keeps Praat's times in the unpadded clip's seconds
    sound = parselmouth.Sound(np.concatenate([np.zeros(pad), wave, np.zeros(pad)]), sampling_frequency=sample_rate,
                              start_time=-pad / sample_rate)
    to_pitch = sound.to_pitch_ac if method == "ac" else sound.to_pitch_cc
    pitch = to_pitch(time_step=audio.HOP_LENGTH / audio.SAMPLE_RATE, pitch_floor=floor_hz, pitch_ceiling=ceiling_hz)
    f0 = np.nan_to_num(pitch.selected_array["frequency"], nan=0.0)
    times = np.arange(frames) * audio.HOP_LENGTH / audio.SAMPLE_RATE
    # nearest Praat frame; floor(x + 0.5), not rint, so a tie always rounds the same way
    nearest = np.floor((times - pitch.x1) / pitch.dx + 0.5).astype(np.int64)
    inside = (nearest >= 0) & (nearest < len(f0))
    return np.where(inside, f0[np.clip(nearest, 0, max(len(f0) - 1, 0))] if len(f0) else 0.0, 0.0)


def compare(f0_pred: np.ndarray, f0_ref: np.ndarray, path: np.ndarray) -> tuple[float, int, float, int]:
    """Along ``path`` ((pairs, 2) of predicted and reference frames): (F0 RMSE in cents over
    pairs voiced in both, those pairs, V/UV error in % over all pairs, the pairs). NaN where
    there is nothing to average."""
    if len(path) == 0:
        return math.nan, 0, math.nan, 0
    p, r = f0_pred[path[:, 0]], f0_ref[path[:, 1]]
    both = (p > 0) & (r > 0)
    vuv = 100.0 * float(np.mean((p > 0) != (r > 0)))
    if not both.any():
        return math.nan, 0, vuv, len(path)
    cents = 1200.0 * np.log2(p[both] / r[both])
    return float(np.sqrt(np.mean(cents ** 2))), int(both.sum()), vuv, len(path)


def _weighted(name: str, unit: str, samples: list[float], weights: list[float], tolerance: dict) -> Measurement:
    """``value`` is the weighted mean of ``samples``; an unscored utterance is a 0.0 sample of
    weight 0 (a NaN would poison the paired bootstrap's sums: 0 * NaN is NaN) and counts in the
    coverage's total only."""
    total = float(sum(weights))
    scored = sum(1 for w in weights if w > 0)
    value = float(np.dot(samples, weights) / total) if total > 0 else math.nan
    return Measurement(name, value, unit, False, coverage=(scored, len(samples)), kind="quality",
                       tolerance=tolerance, samples=samples if scored else None, weights=weights if scored else None)


class F0Metrics(Metric):
    """Log-F0 RMSE (cents) and V/UV error (%) of synthesized speech against the recording,
    DTW-aligned on mel-cepstra (the module docstring gives the recipe)."""

    scope = "split"
    # a change in the recipe changes every value: it joins the metric's key
    version = 1

    class Options(Options):
        method: Literal["ac", "cc"] = Field("ac", description="Praat pitch method: autocorrelation (intonation) "
                                                              "or cross-correlation (voice analysis)")
        floor_hz: float = Field(60.0, gt=0, description="pitch floor (Hz): below the lowest voice")
        ceiling_hz: float = Field(500.0, gt=0, description="pitch ceiling (Hz): above twice the highest voice, "
                                                           "so an octave error is measured, not unvoiced")
        coefficients: int = Field(13, ge=1, le=79, description="cepstra c1..cN of the DTW alignment (as MCD's)")

        @model_validator(mode="after")
        def _range(self):
            if self.ceiling_hz <= self.floor_hz:
                raise ValueError(f"ceiling_hz {self.ceiling_hz} must exceed floor_hz {self.floor_hz}")
            return self

    def __init__(self, options: "F0Metrics.Options", **context):
        self.options = options

    def config(self) -> dict:
        o = self.options
        return {"implementation": f"praat-parselmouth {package_version('praat-parselmouth')} to_pitch_{o.method}",
                "floor_hz": o.floor_hz, "ceiling_hz": o.ceiling_hz,
                "time_step_s": audio.HOP_LENGTH / audio.SAMPLE_RATE,
                "frames": "nearest Praat frame to each log-mel frame, one analysis window of zeros each side",
                # MCD's alignment, named as MCD names its implementation
                "alignment": "dct-ii log-mel cepstra + librosa dtw", "alignment_coefficients": o.coefficients,
                "version": self.version}

    def _heard(self, ev: Evaluation, i: int) -> tuple[np.ndarray, int] | None:
        """What prediction ``i`` sounds like: the task's rendering, or a waveform prediction itself
        when the evaluation has no renderer (a log-mel without one cannot be heard)."""
        heard = ev.audio(i) if ev.audio is not None else None
        if heard is not None:
            return np.asarray(heard[0], np.float32), int(heard[1])
        prediction = np.asarray(ev.predictions[i])
        return (prediction.astype(np.float32), audio.SAMPLE_RATE) if prediction.ndim == 1 else None

    def score(self, prediction, heard: tuple[np.ndarray, int] | None, reference, recording: np.ndarray
              ) -> tuple[float, int, float, int]:
        """One utterance: ``compare`` of the prediction (DTW side: the log-mel ``prediction``, or
        its waveform's; F0 side: ``heard``) with the recording (``reference`` log-mel or waveform,
        F0 from ``recording``)."""
        o = self.options
        predicted, recorded = as_log_mel(prediction), as_log_mel(reference)
        if heard is None or len(predicted) == 0 or len(recorded) == 0:
            return math.nan, 0, math.nan, 0
        if not all(np.isfinite(x).all() for x in (predicted, recorded, heard[0], recording)):
            # NaN or infinite values: left out (DTW refuses a NaN cost; Praat would call the
            # clip silent, inventing an all-unvoiced score)
            return math.nan, 0, math.nan, 0
        path, _ = dtw_path(predicted, recorded, o.coefficients)
        f0_pred = f0_track(heard[0], heard[1], len(predicted), o.floor_hz, o.ceiling_hz, o.method)
        f0_ref = f0_track(recording, audio.SAMPLE_RATE, len(recorded), o.floor_hz, o.ceiling_hz, o.method)
        return compare(f0_pred, f0_ref, path)

    def compute(self, ev: Evaluation) -> list[Measurement]:
        scores = [self.score(p, self._heard(ev, i), r, np.asarray(e.target, np.float32))
                  for i, (p, r, e) in enumerate(zip(ev.predictions, ev.references, ev.examples))]
        rmse = [0.0 if math.isnan(s[0]) else s[0] for s in scores]
        vuv = [0.0 if math.isnan(s[2]) else s[2] for s in scores]
        # tolerances: a fifth of a semitone of F0 (one octave-jump frame in a short utterance
        # moves a 50-utterance mean by ~6 cents); a percentage point of frames, as error rates
        return [_weighted("f0_rmse", "cents", rmse, [float(s[1]) for s in scores], {"abs": 20.0}),
                _weighted("vuv_error", "%", vuv, [float(s[3]) for s in scores], {"abs": 1.0})]
