"""Speaker-widening training recipes (issue 17): vocal tract length perturbation on log-mel
features, pitch shift on the waveform, and eSpeak NG voices mixed into FSDD's training set."""

import numpy as np
import pytest
import torch

from kdbench_asr.augment import PitchShift, VocalTractLengthPerturb
from kdbench_asr.data.fsdd import FsddConnectedDigits
from kdbench_asr.frontend import LogMel

RATE = 8000


def _tone_features(hz: float) -> torch.Tensor:
    t = torch.arange(RATE) / RATE
    wave = torch.sin(2 * torch.pi * hz * t)
    frontend = LogMel(LogMel.Options(normalize=False), corpus_info={"sample_rate": RATE})
    feats, _ = frontend(wave[None], torch.tensor([RATE]))
    return feats[0]


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_vtlp_moves_a_spectral_peak_the_way_a_vocal_tract_would(factor):
    """Filter i reads the spectrum at warp(f_i): a factor above 1 reads higher up, so a peak
    shows at a lower filter (a longer vocal tract's formant at a shorter one's place), below 1 higher."""
    x = _tone_features(1000.0)
    vtlp = VocalTractLengthPerturb(VocalTractLengthPerturb.Options(factors=(factor, factor)),
                                   corpus_info={"sample_rate": RATE})
    peak = int(x.mean(0).argmax())
    moved = int(vtlp(x, torch.Generator().manual_seed(0)).mean(0).argmax())
    assert (moved < peak) if factor > 1 else (moved > peak)


def test_vtlp_keeps_the_ends_of_the_band_and_a_factor_of_one_changes_nothing():
    vtlp = VocalTractLengthPerturb(VocalTractLengthPerturb.Options(), corpus_info={"sample_rate": RATE})
    ends = torch.tensor([0.0, RATE / 2])
    for factor in (0.9, 1.1):
        assert vtlp.warp(ends, factor).tolist() == pytest.approx(ends.tolist())
        grid = torch.linspace(0, RATE / 2, 200)
        assert bool((vtlp.warp(grid, factor).diff() > 0).all())  # monotone: no two filters swap
    x = torch.randn(50, 40)
    same = VocalTractLengthPerturb(VocalTractLengthPerturb.Options(factors=(1.0, 1.0)), corpus_info={"sample_rate": RATE})
    assert torch.allclose(same(x, torch.Generator()), x, atol=1e-6)


def test_vtlp_bad_range_is_one_line():
    with pytest.raises(ValueError, match=r"vtlp: factors must be \[low, high\]"):
        VocalTractLengthPerturb(VocalTractLengthPerturb.Options(factors=(1.1, 0.9)), corpus_info={"sample_rate": RATE})


def test_pitch_shift_moves_pitch_keeps_length_and_replays_from_the_generator():
    t = torch.arange(RATE) / RATE
    wave = torch.sin(2 * torch.pi * 200.0 * t)
    shift = PitchShift(PitchShift.Options(semitones=(12.0, 12.0), probability=1.0), corpus_info={"sample_rate": RATE})
    out = shift(wave, torch.Generator().manual_seed(3))
    assert out.shape == wave.shape
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(int(spectrum.argmax()) - 400) <= 8  # an octave up: 200 Hz -> 400 Hz (1 Hz bins)
    for semitones, ratio in [(3.0, 95 / 80), (-2.0, 71 / 80)]:  # 2^(3/12) = 1.189, 2^(-2/12) = 0.891
        by = PitchShift(PitchShift.Options(semitones=(semitones, semitones), probability=1.0),
                        corpus_info={"sample_rate": RATE})
        out = by(wave, torch.Generator())
        assert out.shape == wave.shape
        assert abs(int(np.abs(np.fft.rfft(out.numpy())).argmax()) - 200 * ratio) <= 3
    random = PitchShift(PitchShift.Options(), corpus_info={"sample_rate": RATE})
    a = random(wave, torch.Generator().manual_seed(5))
    b = random(wave, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)  # the teacher's cached copy and the student see the same shift


def test_synthetic_voices_join_training_only(fsdd_root, tmp_path):
    def load(n):
        options = FsddConnectedDigits.Options(root=fsdd_root, held_out_speakers=["theo"], train_utterances=10,
                                              test_utterances=4, max_digits=3, synthetic_utterances=n)
        return FsddConnectedDigits(options, cache_dir=tmp_path).load()

    real, mixed = load(0), load(6)
    extra = mixed.train[len(real.train):]
    assert len(extra) == 6 and all(e.meta["speaker"].startswith("espeak:") for e in extra)
    assert len({e.meta["speaker"] for e in extra}) == 6  # six voices, one each
    assert all(set(e.target.split()) <= {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                         "nine"} for e in extra)
    assert [e.id for e in mixed.train[:len(real.train)]] == [e.id for e in real.train]
    for split in real.tests:  # the test sets stay the same real recordings
        assert [torch.equal(a.input, b.input) for a, b in zip(real.tests[split], mixed.tests[split])] == \
            [True] * len(real.tests[split])
    assert mixed.fingerprint != real.fingerprint
