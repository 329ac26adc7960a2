"""Noise made offline, and mixing it with speech at a chosen SNR.

Every generator draws from the ``numpy`` generator it is given, so a mixture is reproducible
from its utterance id alone. Babble is built from other utterances of the same split: test
babble never contains a training speaker's voice.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

NoiseFn = Callable[[int, int, np.random.Generator, Sequence[np.ndarray]], np.ndarray]


def _coloured(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), by shaping a
    white spectrum; the DC bin is dropped."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = np.inf
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def white(n, sr, rng, others):
    return rng.standard_normal(n)


def pink(n, sr, rng, others):
    return _coloured(n, rng, 1.0)


def brown(n, sr, rng, others):
    return _coloured(n, rng, 2.0)


def hum(n, sr, rng, others):
    """Mains hum: 50 or 60 Hz and its harmonics below Nyquist (amplitude 1/k), plus a little hiss."""
    t = np.arange(n) / sr
    base = rng.choice([50.0, 60.0])
    harmonics = [k for k in range(1, 40) if k * base < sr / 2]
    out = sum(np.sin(2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi)) / k for k in harmonics)
    return out + 0.05 * rng.standard_normal(n)


def tones(n, sr, rng, others):
    """A few steady whistles between 300 Hz and 0.4 x the sample rate."""
    t = np.arange(n) / sr
    freqs = rng.uniform(300, 0.4 * sr, size=rng.integers(2, 5))
    return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs)


def babble(n, sr, rng, others):
    """Four other talkers at random offsets, each looped to the length."""
    if len(others) < 2:
        raise ValueError("babble needs at least two other utterances in the split")
    picks = rng.choice(len(others), size=min(4, len(others)), replace=False)
    out = np.zeros(n)
    for i in picks:
        talker = np.asarray(others[i], dtype=np.float64)
        talker = talker / (np.sqrt(np.mean(talker ** 2)) + 1e-8)
        start = rng.integers(0, len(talker))
        out += np.resize(np.roll(talker, -start), n)
    return out


NOISES: dict[str, NoiseFn] = {"white": white, "pink": pink, "brown": brown, "hum": hum, "tones": tones,
                              "babble": babble}


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)`` with noise scaled to ``snr_db`` against the clean speech's power; both
    scaled by the same factor when the mixture would clip, so the target stays consistent."""
    clean = np.asarray(clean, dtype=np.float64)
    p_clean = np.mean(clean ** 2)
    p_noise = np.mean(noise ** 2) + 1e-12
    noise = noise * np.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    noisy = clean + noise
    peak = np.max(np.abs(noisy))
    scale = 0.95 / peak if peak > 0.95 else 1.0
    return (noisy * scale).astype(np.float32), (clean * scale).astype(np.float32)
