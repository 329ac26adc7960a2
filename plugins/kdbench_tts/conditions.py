"""Conditions of a synthesizer's evaluation: what makes its numbers suspect without being a
quality to rank by.

``cut-off``: the share (%) of a test set's utterances whose synthesis the model cut off at its
length bound instead of ending it: Tacotron2's stop token never fired within
``min(max_decoder_steps, max_frames_per_phoneme x phonemes)`` frames, or FastSpeech's predicted
durations ran past ``max_frames``. Such an utterance is still scored (its output is bounded and
real), but it is not the sentence, so the metric is a ``condition`` with ``warn_above=0``: any
cut-off puts a note (⚠) on the leaderboard row, and it is never ranked or gated. The task marks
each prediction (``kdbench_tts.task.SynthesizedMel.cut_off``); where that is unknown (a model
without a length bound reports nothing, a target such as ONNX Runtime drops hidden states) the
utterance is not counted and the coverage says so.
"""

from __future__ import annotations

import logging
import math

from kdbench.interfaces import Evaluation, Measurement, Metric

log = logging.getLogger("kdbench")

NOTE = "synthesis cut off at the model's length bound"


class CutOff(Metric):
    """Share of utterances (%) whose decoding was cut off at the model's length bound."""

    def __init__(self, options=None, **context):
        pass

    def compute(self, ev: Evaluation) -> list[Measurement]:
        flags = [getattr(p, "cut_off", None) for p in ev.predictions]
        known = [f for f in flags if f is not None]
        cut = sum(bool(f) for f in known)
        if cut:
            ids = [e.id for e, f in zip(ev.examples, flags) if f]
            log.warning("%s: %d of %d utterances cut off at the model's length bound (the stop token never fired, "
                        "or the durations ran past max_frames): %s%s", ev.split, cut, len(known), ", ".join(ids[:5]),
                        ", ..." if len(ids) > 5 else "")
        value = 100.0 * cut / len(known) if known else math.nan
        return [Measurement("cut_off", value, "%", False, coverage=(len(known), len(flags)), kind="condition",
                            gated=False, warn_above=0.0, note=NOTE)]
