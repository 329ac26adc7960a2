"""CMU PocketSphinx, offline: one recognizer for every place kdbench decodes speech with it (the
ASR plugin's ``pocketsphinx`` peer, a ``references:`` row; the TTS plugin's intelligibility
judge). The ``pocketsphinx`` wheel ships an en-us acoustic model, dictionary and language model;
nothing is ever downloaded.

- ``Recognizer``: a decoder over an acoustic model folder and a pronunciation dictionary, with a
  word-loop grammar over a vocabulary (``use_words``: a finite-state grammar accepting any
  sequence of one or more of the words, as the JSGF ``public <utt> = ( w1 | ... | wN )+;``; built
  with ``Decoder.create_fsg`` so no word is read as JSGF syntax) or a language model. Each clip is
  decoded independently of every other one: the feature extractor is reset before each (it keeps
  state from one utterance to the next: the first clip a decoder hears was transcribed
  differently from the same clip heard later), and the clip is processed as one full utterance
  (batch cepstral mean over the clip). The lattice rescoring pass (``bestpath``) ignores a
  grammar and returned a whole clip as silence: callers turn it off with a grammar.
- ``pcm``: a clip as the decoder hears it: resampled to the model's rate, padded with silence at
  both ends, 16-bit PCM, optionally dithered from a generator seeded afresh for every clip
  (PocketSphinx's own ``-dither`` draws from one generator for a whole run, so a transcript would
  depend on the clips before it).
- ``check_model``: whether an acoustic model folder can decode at a sample rate, or one line
  saying why not.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from kdbench.errors import KdbenchError
from kdbench.hashing import stable_hash

SAMPLE_RATE = 16000  # the shipped en-us acoustic model's
LANGUAGE = "en-us"
INSTALL = "pip install pocketsphinx==5.1.1"

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
_ALTERNATE = re.compile(r"\(\d+\)$")  # the dictionary's "word(2)": a second pronunciation of "word"


def version() -> str:
    try:
        return importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def shipped() -> Path:
    """The en-us folder inside the pocketsphinx wheel: acoustic model ``en-us/``,
    ``cmudict-en-us.dict``, ``en-us.lm.bin``. Not ``pocketsphinx.get_model_path()``: it follows the
    POCKETSPHINX_PATH environment variable, which would swap the model silently."""
    spec = importlib.util.find_spec("pocketsphinx.model")
    if spec is None or not spec.submodule_search_locations:
        raise KdbenchError(f"PocketSphinx with its models is not installed ({INSTALL})")
    return Path(spec.submodule_search_locations[0]) / LANGUAGE


def shipped_acoustic_model() -> Path:
    return shipped() / LANGUAGE


def shipped_dictionary() -> Path:
    return shipped() / f"cmudict-{LANGUAGE}.dict"


def words(text: str) -> list[str]:
    """Lower-case words of a text: runs of a-z, 0-9 and inner apostrophes (``o'clock``)."""
    return _WORD.findall(str(text).lower())


def listing(items: list[str], most: int = 5) -> str:
    """``'a', 'b' and 3 more``: the first few of a list, for a one-line message."""
    shown = ", ".join(repr(w) for w in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def feature_params(acoustic_model: Path) -> dict[str, str]:
    """The acoustic model's ``feat.params`` (``-name value`` per line): the front end it was
    trained with, which the decoder applies. {} when the folder has none (PocketSphinx's defaults)."""
    path = Path(acoustic_model) / "feat.params"
    if not path.is_file():
        return {}
    params = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("-"):
            params[parts[0][1:]] = parts[1]
    return params


def check_model(acoustic_model: Path, sample_rate: int) -> str:
    """Why a decoder at ``sample_rate`` cannot use this acoustic model folder, or '' if it can:
    its ``feat.params`` names another rate (``-samprate``), or its filterbank reaches above half
    of ``sample_rate`` (``-upperf``: the shipped en-us model's 6800 Hz needs 16 kHz audio).
    PocketSphinx itself would only say "Failed to initialize PocketSphinx"."""
    acoustic_model = Path(acoustic_model)
    if not acoustic_model.is_dir():
        return f"{acoustic_model}: no such folder (a PocketSphinx acoustic model folder: mdef, means, ...)"
    if not (acoustic_model / "mdef").is_file():
        return f"{acoustic_model}: not a PocketSphinx acoustic model folder (no mdef file in it)"
    params = feature_params(acoustic_model)
    rate = int(float(params.get("samprate", sample_rate)))
    if rate != sample_rate:
        return (f"{acoustic_model} is an acoustic model for {rate} Hz audio (feat.params -samprate {rate}), "
                f"not {sample_rate} Hz: set sample_rate: {rate}")
    upper = float(params.get("upperf", 0))
    if upper > sample_rate / 2:
        return (f"{acoustic_model} is an acoustic model for a higher sample rate than {sample_rate} Hz "
                f"(feat.params -upperf {upper:g} Hz is above half of it)")
    return ""


def pcm(wave: np.ndarray, sample_rate: int, padding_s: float, rate: int = SAMPLE_RATE, dither: float = 0.0,
        dither_seed: int = 0) -> bytes | None:
    """A clip as the decoder hears it: ``rate`` Hz 16-bit PCM with ``padding_s`` of silence at
    both ends, +1 added to a ``dither`` share of its samples (drawn from a generator seeded with
    ``dither_seed`` for every clip); None when it is empty or all zeros (nothing to transcribe).
    Its samples must be finite."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if int(sample_rate) != rate and len(wave):
        import torch
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), int(sample_rate), rate).numpy()
    if not np.any(wave):
        return None
    pad = np.zeros(int(round(padding_s * rate)), np.float32)
    samples = np.round(np.clip(np.concatenate([pad, wave, pad]), -1.0, 1.0) * 32767.0).astype(np.int32)
    if dither > 0:
        samples += np.random.default_rng(dither_seed).random(len(samples)) < dither
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


class Recognizer:
    """A PocketSphinx decoder, built on first use (loading a model takes about a second) and
    never copied: a copy (a target's fresh load of a model) builds its own."""

    def __init__(self, acoustic_model: Path, dictionary: Path, sample_rate: int = SAMPLE_RATE,
                 lm: Path | None = None, **settings):
        self.acoustic_model = Path(acoustic_model)
        self.dictionary = Path(dictionary)
        self.sample_rate = sample_rate
        self.lm = lm
        self.settings = settings  # decoder options beyond PocketSphinx's defaults (topn, wip, ...)
        self._decoder = None
        self._searches: dict[tuple[str, ...], str] = {}  # vocabulary -> its word-loop search

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_decoder": None, "_searches": {}}

    def files_bytes(self) -> int:
        """What the decoder reads from disk: the acoustic model folder, the dictionary, the LM."""
        files = [*self.acoustic_model.iterdir(), self.dictionary, *([Path(self.lm)] if self.lm else [])]
        return sum(f.stat().st_size for f in files if f.is_file())

    def reset(self) -> None:
        """Forget the decoder: the next clip loads the model from disk again (a cold start)."""
        self._decoder = None
        self._searches = {}

    def decoder(self):
        if self._decoder is None:
            try:
                from pocketsphinx import Decoder
            except ImportError as exc:
                raise KdbenchError(f"PocketSphinx is not installed ({INSTALL}): {exc}") from exc
            self._decoder = Decoder(hmm=str(self.acoustic_model), dict=str(self.dictionary),
                                    lm=str(self.lm) if self.lm else None, samprate=self.sample_rate,
                                    loglevel="ERROR", **self.settings)
        return self._decoder

    def unknown(self, vocabulary: Iterable[str]) -> list[str]:
        """The words the dictionary has no pronunciation for (a grammar cannot hold them)."""
        decoder = self.decoder()
        return [w for w in vocabulary if decoder.lookup_word(w) is None]

    def use_words(self, vocabulary: Iterable[str]) -> None:
        """Decode with a word loop over ``vocabulary`` (every word must be known: ``unknown``)."""
        key = tuple(sorted(set(vocabulary)))
        decoder = self.decoder()
        if key not in self._searches:
            name = f"loop-{stable_hash(key)}"
            # state 0 -word-> 1 (final) -> back to 0: one or more words, each equally likely
            transitions = [(0, 1, 1.0 / len(key), w) for w in key] + [(1, 0, 1.0)]
            decoder.add_fsg(name, decoder.create_fsg(name, 0, 1, transitions))
            self._searches[key] = name
        decoder.activate_search(self._searches[key])

    def transcribe(self, clip: bytes | None) -> str:
        """The words heard in a clip from ``pcm`` (the active search); "" for None."""
        if clip is None:
            return ""
        decoder = self.decoder()
        decoder.reinit_feat()  # 70 us: every transcript independent of what came before
        decoder.start_utt()
        decoder.process_raw(clip, False, True)  # full utterance: batch cepstral mean over the clip
        decoder.end_utt()
        hyp = decoder.hyp()
        # fillers (<sil>, [NOISE]) are not words said, should a search report them
        return " ".join(w for token in (hyp.hypstr.split() if hyp else []) if token[:1] not in "<["
                        for w in words(_ALTERNATE.sub("", token)))
