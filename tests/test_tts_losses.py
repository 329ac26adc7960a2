"""The TTS training objectives: the guided-attention term that lets Tacotron2 align on a CPU budget."""

import pytest
import torch

from kdbench.interfaces import Batch, ModelOutput
from kdbench_tts.losses import GroundTruthMel, guided_attention


def _alignment(frames, phonemes, anti=False, width=None):
    a = torch.zeros(1, frames, width or phonemes)
    for t in range(frames):
        n = min(phonemes - 1, t * phonemes // frames)
        a[0, t, phonemes - 1 - n if anti else n] = 1.0
    return a


def test_a_diagonal_alignment_costs_almost_nothing_and_an_anti_diagonal_one_a_lot():
    frames, phonemes = torch.tensor([40]), torch.tensor([10])
    diagonal = guided_attention(_alignment(40, 10), frames, phonemes, 0.4).item()
    anti = guided_attention(_alignment(40, 10, anti=True), frames, phonemes, 0.4).item()
    assert diagonal < 0.01 and anti > 0.4


def test_padding_neither_adds_cost_nor_dilutes_it():
    alone = guided_attention(_alignment(40, 10, anti=True), torch.tensor([40]), torch.tensor([10]), 0.4)
    padded = torch.zeros(1, 60, 14)
    padded[0, :40, :10] = _alignment(40, 10, anti=True)[0]
    padded[0, 40:, :] = 1.0  # garbage in the padding must not count
    assert guided_attention(padded, torch.tensor([40]), torch.tensor([10]), 0.4).item() == pytest.approx(alone.item())


def test_the_guided_weight_decays_to_zero_by_the_configured_share_of_training():
    loss = GroundTruthMel(GroundTruthMel.Options(guided_attention=2.0, guided_attention_until=0.5))
    weights = []
    for progress in (0.0, 0.25, 0.5, 0.9):
        loss.progress = progress
        weights.append(loss.guided_weight())
    assert weights == [2.0, 1.0, 0.0, 0.0]


def test_the_term_applies_only_to_models_that_expose_attention():
    frames, phonemes = 40, 10
    mel = torch.zeros(1, frames, 80)
    batch = Batch(["a"], torch.ones(1, phonemes, dtype=torch.long), torch.tensor([phonemes]), mel.clone(),
                  torch.tensor([frames]), {})
    loss = GroundTruthMel(GroundTruthMel.Options())
    plain = loss(ModelOutput(mel.clone(), torch.tensor([frames]), {}), batch).item()
    attending = ModelOutput(mel.clone(), torch.tensor([frames]), {"alignments": _alignment(frames, phonemes, True)})
    assert plain == 0.0 and loss(attending, batch).item() > 0.4
    loss.progress = 0.6  # past guided_attention_until: the term is gone
    assert loss(attending, batch).item() == 0.0
