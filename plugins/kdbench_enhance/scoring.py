"""Per-utterance speech-quality scores, run in worker processes (numpy, pesq, pystoi, speechmos:
no torch, so a spawned worker starts quickly).

Every scorer returns ``{name: value}`` or raises ``Unscorable`` with the reason; the caller
turns a reason into NaN for that utterance and counts coverage (field notes, pitfall 2:
PESQ's NoUtterancesError must not crash or silently drop a batch).
"""

from __future__ import annotations

import warnings

import numpy as np

# below these durations the metric is not defined (VERSA's limits)
MIN_SECONDS = {"pesq": 0.25, "stoi": 0.3}


class Unscorable(Exception):
    pass


def _check_pair(est: np.ndarray, ref: np.ndarray) -> None:
    if len(est) != len(ref):
        raise Unscorable(f"estimate has {len(est)} samples, reference {len(ref)} (different lengths or rates)")
    if not np.all(np.isfinite(est)):
        raise Unscorable("estimate has NaN or infinite samples")


def si_sdr(est: np.ndarray, ref: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB, zero-mean convention, float64 (field notes, pitfall 4)."""
    est = np.asarray(est, np.float64) - np.mean(est)
    ref = np.asarray(ref, np.float64) - np.mean(ref)
    if np.sum(ref ** 2) < eps:
        raise Unscorable("silent reference")
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    noise = est - target
    return float(10 * np.log10((np.sum(target ** 2) + eps) / (np.sum(noise ** 2) + eps)))


def score_si_sdr(est, ref, noisy, sr, options):
    _check_pair(est, ref)
    value = si_sdr(est, ref)
    return {"si_sdr": value, "si_sdri": value - si_sdr(noisy, ref)}


def score_pesq(est, ref, noisy, sr, options):
    from pesq import NoUtterancesError, pesq

    _check_pair(est, ref)
    mode = options.get("mode") or {8000: "nb", 16000: "wb"}.get(sr)
    if mode is None or (mode == "wb" and sr != 16000) or sr not in (8000, 16000):
        raise Unscorable(f"PESQ is defined at 8 kHz (nb) and 16 kHz (wb), not {sr} Hz in {mode or 'any'} mode")
    if len(ref) < MIN_SECONDS["pesq"] * sr:
        raise Unscorable(f"shorter than PESQ's {MIN_SECONDS['pesq']} s")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return {f"pesq_{mode}": float(pesq(sr, ref, est, mode))}
    except NoUtterancesError:
        raise Unscorable("PESQ found no speech (silent reference)") from None


def score_stoi(est, ref, noisy, sr, options):
    from pystoi import stoi

    _check_pair(est, ref)
    if len(ref) < MIN_SECONDS["stoi"] * sr:
        raise Unscorable(f"shorter than STOI's {MIN_SECONDS['stoi']} s")
    if np.sum(np.asarray(ref, np.float64) ** 2) == 0:
        raise Unscorable("silent reference")
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["stoi"] = float(stoi(ref, est, sr, extended=False))
        out["estoi"] = float(stoi(ref, est, sr, extended=True))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise Unscorable("too little speech for STOI (fewer than 30 frames after silence removal)")
    return out


def score_dnsmos(est, ref, noisy, sr, options):
    from speechmos import dnsmos

    if sr != 16000:
        raise Unscorable(f"DNSMOS is trained on 16 kHz speech; this audio is {sr} Hz (resampled audio scores unreliably)")
    if not np.all(np.isfinite(est)):
        raise Unscorable("estimate has NaN or infinite samples")
    peak = np.max(np.abs(est)) if len(est) else 0.0
    if peak == 0:
        raise Unscorable("silent estimate")
    est = est / peak if peak > 1 else est  # DNSMOS wants samples in [-1, 1]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        result = dnsmos.run(np.asarray(est, np.float32), sr=16000)
    return {"dnsmos_sig": float(result["sig_mos"]), "dnsmos_bak": float(result["bak_mos"]),
            "dnsmos_ovrl": float(result["ovrl_mos"])}


SCORERS = {"si-sdr": score_si_sdr, "pesq": score_pesq, "stoi": score_stoi, "dnsmos": score_dnsmos}


def score_chunk(kind: str, items: list[tuple], sr: int, options: dict) -> list[tuple[dict | None, str]]:
    """Score ``(estimate, reference, noisy)`` triples: ``(values, "")`` or ``(None, reason)`` each.

    One BLAS/OpenMP thread per scoring process: parallelism comes from the processes, and
    numpy's own threads in each of them would only fight over the same cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [_score_one(kind, item, sr, options) for item in items]


def _score_one(kind: str, item: tuple, sr: int, options: dict) -> tuple[dict | None, str]:
    est, ref, noisy = item
    try:
        return SCORERS[kind](est, ref, noisy, sr, options), ""
    except Unscorable as exc:
        return None, str(exc)
    except Exception as exc:  # a library failing on one clip must not lose the others
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
