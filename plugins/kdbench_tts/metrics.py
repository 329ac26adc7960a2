"""Quality of synthesized speech against the recording of the same sentence.

Mel-cepstral distortion here is computed on mel-frequency cepstra (DCT-II of the 80-bin log-mel,
coefficients 1 to ``coefficients``, c0 left out as loudness), aligned by dynamic time warping
(librosa's ``sequence.dtw``): the synthesized and recorded utterances differ in length. It is
reported with its implementation and parameters in the metric name's options, so values from
another MCD recipe (SPTK mel-cepstra, another alpha) are never compared with these.

Predictions and references may be log-mels (frames, n_mels), as an acoustic model predicts, or
waveforms (samples,), as a vocoder renders: a waveform is first analysed with the shared
``audio.log_mel``, so both tasks are scored by the one MCD.

What cannot be scored is left out, never counted as 0 (the project's NaN policy): a prediction
or recording with NaN or infinite values, or with no frame (a clip shorter than half an analysis
window), is NaN for that utterance; the value is the mean over the others, the coverage says how
many, and one warning line per reason names the split and the count. A silent prediction (the
log clamp everywhere) and one of a frame or two are scorable: they are far from the recording,
and a model that says nothing should score badly rather than drop out of the mean.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
from pydantic import Field
from scipy.fft import dct

from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench.options import Options

_DB = 10.0 / math.log(10.0) * math.sqrt(2.0)  # the MCD constant, in dB

log = logging.getLogger("kdbench")


def cepstra(log_mel: np.ndarray, coefficients: int) -> np.ndarray:
    """(frames, n_mels) natural-log mel -> (frames, coefficients) cepstra, c0 dropped."""
    return dct(np.asarray(log_mel, dtype=np.float64), type=2, axis=1, norm="ortho")[:, 1:coefficients + 1]


def unscorable(predicted: np.ndarray, reference: np.ndarray) -> str:
    """Why MCD cannot score these two (frames, n_mels) log-mels, or '' if it can. DTW refuses a
    NaN cost, and an infinite one would make any mean meaningless."""
    for what, x in (("prediction", predicted), ("recording", reference)):
        if len(x) == 0:
            return f"{what} has no frame"
        if not np.isfinite(x).all():
            return f"{what} has NaN or infinite values"
    return ""


def as_log_mel(x: np.ndarray) -> np.ndarray:
    """A (frames, n_mels) log-mel as given; a 1-D waveform as its (frames, n_mels) log-mel. A clip
    shorter than half an analysis window has no frame to score (zero frames)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        return x
    from kdbench_tts import audio

    if len(x) <= audio.N_FFT // 2:  # the centred analysis cannot reflect-pad it
        return np.zeros((0, audio.N_MELS), np.float32)
    return audio.log_mel(x).T.numpy()


def dtw_path(predicted: np.ndarray, reference: np.ndarray, coefficients: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """The alignment every metric comparing a synthesized utterance with its recording shares
    (MCD, F0 and voicing in ``prosody``): DTW (librosa) on the Euclidean distance between
    cepstra c1..c``coefficients``. Returns the path as (pairs, 2) ``(predicted frame, reference
    frame)`` rows in librosa's order (last pair first) and the cepstral distance of each pair;
    both empty if either input has no frame. Either may be a log-mel or a waveform
    (``as_log_mel``)."""
    import librosa

    predicted, reference = as_log_mel(predicted), as_log_mel(reference)
    if len(predicted) == 0 or len(reference) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float64)
    a, b = cepstra(predicted, coefficients), cepstra(reference, coefficients)
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    _, path = librosa.sequence.dtw(C=cost)
    path = np.asarray(path, np.int64)
    return path, cost[path[:, 0], path[:, 1]]


def mcd_dtw(predicted: np.ndarray, reference: np.ndarray, coefficients: int = 13) -> float:
    """Mean per-frame cepstral distance (dB) along the DTW path; NaN if either is empty.
    Either may be a log-mel or a waveform (``as_log_mel``)."""
    path, distances = dtw_path(predicted, reference, coefficients)
    if len(path) == 0:
        return math.nan
    return float(_DB * np.mean(distances))


class MelCepstralDistortion(Metric):
    """MCD (dB, lower is better) between synthesized and recorded log-mels (of waveforms, for a
    vocoder), DTW-aligned."""

    class Options(Options):
        coefficients: int = Field(13, ge=1, le=79, description="cepstral coefficients c1..cN")

    def __init__(self, options: "MelCepstralDistortion.Options", **context):
        self.options = options

    def config(self) -> dict:
        return {"implementation": "dct-ii log-mel cepstra + librosa dtw", "coefficients": self.options.coefficients}

    def compute(self, ev: Evaluation) -> list[Measurement]:
        values, reasons = [], Counter()
        for p, r in zip(ev.predictions, ev.references):
            p, r = as_log_mel(p), as_log_mel(r)
            reason = unscorable(p, r)
            if reason:
                reasons[reason] += 1
            values.append(math.nan if reason else mcd_dtw(p, r, self.options.coefficients))
        for reason, count in reasons.items():
            log.warning("mcd on %s: %d of %d utterances not scored: %s", ev.split, count, len(values), reason)
        scored = [v for v in values if not math.isnan(v)]
        samples = [0.0 if math.isnan(v) else v for v in values]
        weights = [0.0 if math.isnan(v) else 1.0 for v in values]
        value = float(np.mean(scored)) if scored else math.nan
        return [Measurement("mcd", value, "dB", False, coverage=(len(scored), len(values)),
                            samples=samples if scored else None, weights=weights if scored else None,
                            tolerance={"abs": 0.5}, headline=True)]
