"""eSpeak NG text-to-speech through a minimal ctypes binding.

The ``espeakng-loader`` wheel ships only ``libespeak-ng`` and its data (no
``espeak-ng`` binary to shell out to), so we call the C API directly.

Reproducibility: eSpeak NG draws noise (breath, whisper, some female variants) from a random
generator it seeds from the clock, and its waveform generator carries state from one utterance
to the next. The engine fixes the seed, and :func:`isolated` runs a corpus build in a fresh
process, so the same calls in the same order give the same samples on every build.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

__all__ = ["available", "isolated", "list_variants", "synthesize", "synthesize_phonemes"]

T = TypeVar("T")
RANDOM_SEED = 0  # eSpeak NG's noise generator; otherwise seeded from the wall clock

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path calls exit(1)
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}

# espeak-ng copies the data path into a fixed ~160-byte buffer; longer paths
# silently fall back to the library's build-time location and fail.
_MAX_DATA_PATH = 150

# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Event(ctypes.Structure):
    """espeak_EVENT; for a phoneme event ``id`` holds the phoneme's name (UTF-8, NUL-padded)."""

    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int),  # audio_position is in whole ms
        ("sample", ctypes.c_int),  # the exact sample offset in this utterance's output
        ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
    ]


class _Engine:
    """The process-wide eSpeak NG instance (the C library keeps global state)."""

    def __init__(self) -> None:
        data_path = _data_path()
        import espeakng_loader

        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:
            raise RuntimeError(f"cannot load libespeak-ng: {exc}") from None

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetPhonemeEvents.restype = ctypes.c_int

        # buflength=0 -> default 60 ms chunks. Failure shows up as rate <= 0
        # because DONT_EXIT makes the library carry on instead of exiting.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data_path), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            hint = " (path too long for eSpeak NG)" if len(os.fsencode(data_path)) > _MAX_DATA_PATH else ""
            raise RuntimeError(f"espeak_Initialize failed for data at {data_path}{hint}")

        # Not in every build of the library (eSpeak NG 1.52 added it); without it the noisy
        # variants differ from one process to the next.
        set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if set_seed is not None:
            set_seed.argtypes, set_seed.restype = [ctypes.c_long], None
            set_seed(RANDOM_SEED)

        self.lib = lib
        self.sample_rate = rate
        self._chunks: list[bytes] = []
        self._samples = 0  # samples received so far in the current utterance
        self._phonemes: list[tuple[str, int]] | None = None  # collected only when asked for
        # Keep a reference: ctypes frees the trampoline if the object is collected.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(ctypes.string_at(wav, numsamples * ctypes.sizeof(ctypes.c_short)))
        if self._phonemes is not None and events:
            event = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while event[i].type != _EVENT_LIST_TERMINATED:
                if event[i].type == _EVENT_PHONEME:
                    self._phonemes.append((event[i].id.decode("utf-8"), event[i].sample))
                i += 1
        return 0  # 0 = continue synthesis

    def _check(self, code: int, what: str) -> None:
        if code != _EE_OK:
            raise RuntimeError(f"{what} failed: {_ERRORS.get(code, f'error {code}')}")

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        return self._synthesize(text, voice, rate, pitch)

    def synthesize_phonemes(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list]:
        # Phoneme events are switched on only for this call: with them on, eSpeak NG renders
        # some voices with slightly different samples, and plain synthesis (the ASR corpus,
        # whose cache key is its content) must keep giving what it always gave.
        self._check(self.lib.espeak_ng_SetPhonemeEvents(1, 0), "enabling phoneme events")
        self._phonemes = []
        try:
            wave = self._synthesize(text, voice, rate, pitch)
            return wave, self._phonemes
        finally:
            self._phonemes = None
            self.lib.espeak_ng_SetPhonemeEvents(0, 0)

    def _synthesize(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        code = self.lib.espeak_SetVoiceByName(voice.encode("utf-8"))
        if code != _EE_OK:
            raise RuntimeError(f"unknown eSpeak NG voice {voice!r} ({_ERRORS.get(code, code)})")
        # Set after the voice so a voice change cannot override them.
        self._check(self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0), "setting rate")
        self._check(self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0), "setting pitch")

        data = text.encode("utf-8")
        self._chunks = []
        try:
            self._check(
                self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None),
                "espeak_Synth",
            )
            self._check(self.lib.espeak_Synchronize(), "espeak_Synchronize")
            pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        finally:
            self._chunks = []
        return pcm.astype(np.float32) / np.float32(32768.0)


# The library is not thread-safe: one lock guards both initialisation and synthesis.
_lock = threading.Lock()
_engine: _Engine | None = None
_init_error: str | None = None


def _data_path() -> str:
    try:
        import espeakng_loader
    except ImportError:
        raise RuntimeError("espeakng-loader is not installed") from None
    try:
        path = espeakng_loader.get_data_path()
    except RuntimeError as exc:  # the loader raises when its data dir is missing
        raise RuntimeError(f"eSpeak NG data missing: {exc}") from None
    if not os.path.isfile(os.path.join(path, "phontab")):
        raise RuntimeError(f"eSpeak NG data incomplete at {path} (no phontab)")
    return path


def _get_engine() -> _Engine:
    """Create the engine on first use; caller must hold ``_lock``."""
    global _engine, _init_error
    if _engine is None:
        # Don't retry a failed initialisation: the C library's global state is
        # then unknown, and the cause (missing package/data) won't fix itself.
        if _init_error is not None:
            raise RuntimeError(_init_error)
        try:
            _engine = _Engine()
        except RuntimeError as exc:
            _init_error = str(exc)
            raise
    return _engine


def isolated(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` in a fresh process (``fn`` and ``args`` must pickle), so the synthesis it
    does starts from a fresh engine: what this process synthesized before cannot change the
    samples. Corpus builders call it; a single utterance does not need it."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def available() -> tuple[bool, str]:
    """Return ``(True, "")`` if synthesis works here, else ``(False, reason)``."""
    try:
        with _lock:
            _get_engine()
    except RuntimeError as exc:
        return False, str(exc)
    return True, ""


@functools.cache
def _variants() -> tuple[str, ...]:
    vdir = os.path.join(_data_path(), "voices", "!v")
    return tuple(sorted(f for f in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, f))))


def list_variants() -> list[str]:
    """Names of the voice variants shipped with the data (e.g. ``"m3"``, ``"f2"``), sorted."""
    return list(_variants())


def _voice(language: str, variant: str | None) -> str:
    if "+" in language:
        raise ValueError(f"language {language!r} contains '+'; pass the variant via variant=")
    if variant is None:
        return language
    # espeak silently ignores unknown variants, so check them ourselves.
    if variant not in _variants():
        raise RuntimeError(f"unknown eSpeak NG variant {variant!r}; see list_variants()")
    return f"{language}+{variant}"


def synthesize(
    text: str,
    *,
    language: str = "en-us",
    variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
) -> tuple[np.ndarray, int]:
    """Return (float32 mono waveform in [-1, 1], sample_rate) for `text`.

    ``rate`` is in words per minute (eSpeak clamps it to 80-450); ``pitch`` is
    0-100 with 50 the voice's normal pitch. No silence is trimmed. eSpeak's
    waveform generator carries state between utterances, so repeating a call
    gives slightly different samples; a fixed sequence of calls in a fresh
    process is reproducible.
    """
    voice = _voice(language, variant)
    with _lock:
        engine = _get_engine()
        return engine.synthesize(text, voice, rate, pitch), engine.sample_rate


def synthesize_phonemes(
    text: str,
    *,
    language: str = "en-us",
    variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
) -> tuple[np.ndarray, int, list[tuple[str, int]]]:
    """Like :func:`synthesize`, plus the phonemes eSpeak NG spoke: ``(wave, sample_rate,
    [(phoneme, start_sample), ...])`` in order.

    Phoneme names are eSpeak's ASCII mnemonics (``"aI"``, ``"t#"``, pauses ``"_"``,
    ``"_:"``), a vowel prefixed by its stress mark (``"'"`` primary, ``","`` secondary).
    ``start_sample`` is the exact offset into ``wave`` where the phoneme begins; it ends
    where the next one begins (the last one at ``len(wave)``). Audio before the first
    phoneme is leading silence.
    """
    voice = _voice(language, variant)
    with _lock:
        engine = _get_engine()
        wave, phonemes = engine.synthesize_phonemes(text, voice, rate, pitch)
        return wave, engine.sample_rate, phonemes
