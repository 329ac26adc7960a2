"""An offline ASR judge of synthesized speech: how intelligible is it? The speech is transcribed
by CMU PocketSphinx (the ``pocketsphinx`` wheel, with the en-us acoustic model, dictionary and
language model that ship inside it; nothing is downloaded; the recognizer the ASR plugin's
``pocketsphinx`` peer uses too, ``kdbench_asr.pocketsphinx``) and scored against the text it
should say as a character and a word error rate.

What the judge hears is ``Evaluation.audio(i)`` (``Task.audio``): for ``tts`` the predicted
log-mel rendered by Griffin-Lim, for ``vocoder`` the waveform itself, the very clip a person
hears. What it should say is ``example.meta["text"]``, split into words (runs of ``a-z``, ``0-9``
and inner apostrophes; other punctuation separates words).

Decoding, per utterance and independent of every other one (so order and batch-mates never
change a transcript: the feature extractor is reset before each clip):

- the clip is resampled to 16 kHz (the acoustic model's rate), padded with ``padding_s`` of
  silence at both ends (PocketSphinx's front end estimates the noise floor from a clip's first
  frames: on FSDD digits 0.1 s cut WER from 27% to 21%; on the eSpeak test sentences 0 to 0.3 s
  were within noise, 29-32% CER), turned into 16-bit PCM, and dithered: 1 is added to a quarter
  of the samples, drawn from a generator seeded afresh for every clip. Digital silence
  (eSpeak's pauses, the padding) otherwise gives -inf log energies that upset the cepstral mean
  and the noise estimate: on 50 eSpeak test sentences dithering took CER from 41% to 32% on the
  recordings and from 35% to 31% on their Griffin-Lim renderings (on FSDD digits, 8 kHz
  recordings with nothing above 4 kHz, it cost WER instead: an input no task here renders).
  PocketSphinx's own ``-dither`` draws from one generator for the whole run (seeded from the
  clock by default), so a transcript would depend on the utterances before it;
- ``grammar: word-loop`` (default): a finite-state grammar accepting any sequence of one or more
  vocabulary words (as the JSGF ``public <utt> = ( w1 | ... | wN )+;``; built with
  ``Decoder.create_fsg`` so no word is read as JSGF syntax), the vocabulary being the words of the
  split's references (``vocabulary: references``), or those plus every word of the
  ``synth-sentences`` grammar (``vocabulary: synth-sentences``: the same judge for every split of
  that corpus, whatever the sample). Every vocabulary word must be in the shipped dictionary;
  one that is not fails the metric with one line naming it (no spelling rule is guessed: a word
  pronounced wrongly would be an error the judge makes, not the synthesizer). The lattice
  rescoring pass (``bestpath``) is off: it ignores the grammar and returned a whole clip as
  silence;
- ``grammar: lm``: the shipped en-us trigram language model, open vocabulary (a reference word
  outside it simply counts as an error);
- decoder settings (``DECODER``) beyond PocketSphinx's defaults: ``topn`` 16 Gaussians per frame
  (4 by default) and, for the word loop, a word insertion probability ``wip`` of 0.05 (0.65 by
  default inserted short words such as "the" and "an"). Compared on 50 test and 60 training
  sentences of the synthetic corpus, which agreed: with dithering they took eSpeak speech from
  78% WER (PocketSphinx's defaults) to 47-49%. PocketSphinx's acoustic model was trained on
  natural speech, and eSpeak NG's formant voices are far from it (the female voices fare worst,
  homophones such as "for"/"four" cannot be told apart): the judge ranks synthesizers, its absolute
  rates are not those of a listener. ``grammar: lm`` is slower (real-time factor 1-2 against
  ~0.15 on a loaded 2-core machine) and less accurate here (57% CER on the recordings).

Scoring: corpus-level rates in percent (total edits / total reference characters or words,
jiwer, spaces counting as characters as in the ASR plugin's CER), with per-utterance rates as
``samples`` weighted by reference length (their weighted mean is the value), for paired bootstrap
confidence intervals.

- A clip that is empty or all zeros (a synthesizer that said nothing) is transcribed as nothing:
  100% error (all deletions), counted in coverage. It is not decoded: the word loop must emit a
  word, and a guess on silence could hit.
- An utterance without reference text, whose task renders no audio (``audio(i)`` is None, or
  the evaluation offers no ``audio`` at all), or whose clip has NaN or infinite samples (a NaN
  log-mel, heard as NaN: the project's NaN policy, as MCD) cannot be judged: weight 0, left out
  of coverage, one warning line per reason naming the split and the count. When none can be
  judged the value is NaN with coverage ``(0, n)``: not applicable.

The judge and its settings are the metric's ``config()`` and part of its cache key (``version``
carries the PocketSphinx version), so rates from another judge are never read as these.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import Field

from kdbench.errors import DataError
from kdbench.interfaces import Evaluation, Measurement, Metric
from kdbench.options import Options
from kdbench_asr import pocketsphinx
from kdbench_asr.pocketsphinx import LANGUAGE, SAMPLE_RATE, Recognizer, listing, pcm, words

#: decoder settings per grammar, beyond PocketSphinx's defaults (the module docstring says why)
DECODER = {"word-loop": {"topn": 16, "wip": 0.05, "bestpath": False}, "lm": {"topn": 16}}
#: dithering: +1 on this share of the 16-bit samples, from a generator seeded with DITHER_SEED per clip
DITHER_SHARE = 0.25
DITHER_SEED = 0
# error rates move in percentage points; the judge turns a small change in the audio into a word
# flip (0.5 points of a 200-word test set) more readily than a listener would, so the gate
# allows two points whatever the level
TOLERANCE = {"abs": 2.0}

log = logging.getLogger("kdbench")


def unscorable(wave: np.ndarray) -> str:
    """Why the judge cannot hear a clip, or '' if it can."""
    if not np.isfinite(np.asarray(wave, dtype=np.float32)).all():
        return "clip has NaN or infinite samples"
    return ""


def _edits(reference: str, hypothesis: str, unit: str) -> tuple[int, int]:
    """(edits, reference units) of one utterance: substitutions + deletions + insertions, and
    the reference's words or characters."""
    import jiwer

    out = (jiwer.process_words if unit == "words" else jiwer.process_characters)(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


class AsrJudge(Metric):
    """Intelligibility: CER and WER (%) of the speech as PocketSphinx (en-us, offline) transcribes
    it, word-loop grammar of the references' words."""

    scope = "split"
    # part of the cache key: another PocketSphinx may transcribe the same clip differently
    version = f"1+pocketsphinx-{pocketsphinx.version()}"

    class Options(Options):
        grammar: Literal["word-loop", "lm"] = Field(
            "word-loop", description="word-loop: any sequence of vocabulary words; lm: the shipped en-us LM")
        vocabulary: Literal["references", "synth-sentences"] = Field(
            "references", description="the word loop's words: the split's references' (+ synth-sentences grammar's)")
        padding_s: float = Field(0.1, ge=0.0, le=2.0, description="silence added at both ends of a clip (s)")

    def __init__(self, options: "AsrJudge.Options", **context):
        self.options = options

    @functools.cached_property
    def recognizer(self) -> Recognizer:
        """One decoder per metric instance, built on first use (a missing PocketSphinx fails the
        rows that need it, not the suite)."""
        home = pocketsphinx.shipped()
        lm = home / f"{LANGUAGE}.lm.bin" if self.options.grammar == "lm" else None
        return Recognizer(pocketsphinx.shipped_acoustic_model(), pocketsphinx.shipped_dictionary(), SAMPLE_RATE, lm=lm,
                          **DECODER[self.options.grammar])

    def config(self) -> dict:
        o = self.options
        return {"judge": f"pocketsphinx {pocketsphinx.version()} {LANGUAGE}", "grammar": o.grammar,
                "vocabulary": o.vocabulary if o.grammar == "word-loop" else "open (en-us lm)",
                "padding_s": o.padding_s, "sample_rate": SAMPLE_RATE,
                "dither": {"share": DITHER_SHARE, "seed": DITHER_SEED}, "decoder": DECODER[o.grammar]}

    # ---- decoding -----------------------------------------------------------------------
    def _activate(self, vocabulary: list[str], split: str | None) -> None:
        if self.options.grammar == "lm":
            return  # the decoder's only search
        missing = self.recognizer.unknown(vocabulary)
        if missing:
            raise DataError(f"judge on {split}: {listing(missing)} not in PocketSphinx's {LANGUAGE} dictionary, so "
                            "the word-loop grammar cannot hold them (grammar: lm transcribes open vocabulary)")
        self.recognizer.use_words(vocabulary)

    def transcripts(self, ev: Evaluation) -> list[str | None]:
        """One transcript per utterance, None for one that cannot be judged (no reference text,
        no audio from the task, a clip with non-finite samples), with a warning line per reason."""
        references = [" ".join(words(e.meta.get("text") or "")) for e in ev.examples]
        reasons = Counter()
        if ev.audio is None:
            reasons["the task renders no audio"] = sum(1 for r in references if r)
        reasons["no reference text (meta['text'])"] = sum(1 for r in references if not r)
        judged = [i for i, r in enumerate(references) if r and ev.audio is not None]
        vocabulary = set()
        if self.options.vocabulary == "synth-sentences":
            from kdbench_tts import sentences

            vocabulary = {w for s in sentences.all_sentences() for w in words(s)}
        vocabulary = sorted(vocabulary | {w for i in judged for w in references[i].split()})
        out: list[str | None] = [None] * len(references)
        if judged:
            self._activate(vocabulary, ev.split)
        for i in judged:
            heard = ev.audio(i)
            reason = "the task renders no audio" if heard is None else unscorable(heard[0])
            if reason:
                reasons[reason] += 1
            else:
                out[i] = self.recognizer.transcribe(pcm(heard[0], heard[1], self.options.padding_s,
                                                        dither=DITHER_SHARE, dither_seed=DITHER_SEED))
        for reason, count in reasons.items():
            if count:
                log.warning("judge on %s: %d of %d utterances not scored: %s", ev.split, count, len(out), reason)
        return out

    # ---- scoring ------------------------------------------------------------------------
    def compute(self, ev: Evaluation) -> list[Measurement]:
        n = len(ev.examples)
        references = [" ".join(words(e.meta.get("text") or "")) for e in ev.examples]
        hypotheses = self.transcripts(ev) if n else []
        scored = [i for i, h in enumerate(hypotheses) if h is not None]
        result = []
        for name, unit, headline in (("judge_cer", "characters", True), ("judge_wer", "words", False)):
            if not scored:  # nothing judged is not a perfect score
                result.append(Measurement(name, math.nan, "%", False, coverage=(0, n), tolerance=TOLERANCE,
                                          headline=headline, kind="quality"))
                continue
            edits, units = [0] * n, [0] * n
            for i in scored:
                edits[i], units[i] = _edits(references[i], hypotheses[i], unit)
            value = 100.0 * sum(edits) / sum(units)
            samples = [100.0 * e / u if u else 0.0 for e, u in zip(edits, units)]
            result.append(Measurement(name, value, "%", False, coverage=(len(scored), n), samples=samples,
                                      weights=[float(u) for u in units], tolerance=TOLERANCE, headline=headline,
                                      kind="quality"))
        return result
