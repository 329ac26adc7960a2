"""The text front end: English text -> normalised text -> eSpeak NG phonemes -> ids in a
fixed, versioned symbol table.

Normalisation (:func:`normalize`, version in :data:`TEXT_STATE`), in this order:

1. Unicode NFKD, then combining marks dropped (``é`` -> ``e``, ``…`` -> ``...``);
2. typographic apostrophes (``’ ‘ ʼ ´ ```) -> ``'``; en/em dashes and minus -> ``-``;
3. double quotes, brackets and braces -> a space (they delimit; eSpeak would read some aloud);
4. lower case (eSpeak spells short all-capital words letter by letter);
5. runs of whitespace -> one space, ends stripped.

What is left must use only :data:`TEXT_CHARS` (``a-z``, ``0-9``, space, ``' . , ; : ! ? -``);
eSpeak reads digits as numbers (``7`` -> "seven"). Anything else (``&``, ``%``, ``/``, ``*``,
other scripts) is refused with one line naming the utterance and the character, because
silently dropping or guessing a reading would change what the speech says. Text that is
empty, or has no letter or digit once normalised (``"()"``, ``...``), is refused too: eSpeak
would speak a lone pause for it (an example that is silence) or read the punctuation's name
aloud (``!?`` -> "exclamation"), neither of which is the sentence.

Phonemes are the ones eSpeak NG (the ``en-us`` voice) speaks, read from its phoneme events,
so the synthetic corpus and the phonemes of a real corpus's text come from one
tokenisation. Names are eSpeak's ASCII mnemonics; a vowel carries its stress mark
(``'aI`` primary, ``,aI`` secondary, ``aI`` unstressed) as one symbol, so every symbol has a
duration of its own. :data:`SYMBOLS` lists every pause, consonant and (stress-marked)
vowel of eSpeak NG 1.52's ``en-us`` phoneme table (read from its ``phontab``), id 0 being
padding. A phoneme outside it (another eSpeak build or language) is refused, naming the
utterance and the phoneme. Changing the table, the normalisation or the language changes
:data:`TEXT_VERSION`, which is part of every corpus's cache key and fingerprint.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from kdbench.errors import DataError
from kdbench.hashing import stable_hash

TEXT_VERSION = "kdbench-tts-text-1"
LANGUAGE = "en-us"
PAD = "<pad>"

_PAUSES = ("_", "_!", "_:", "_::", "_;_", "_X1", "_^_", "_|")
_CONSONANTS = (
    "#X1", "*", "**", ";", "?", "B", "C", "D", "J", "J^", "L", "L/", "N", "Q", 'Q"', "Q^", "R", "R2", "R3", "S",
    "S;", "T", "X", "Z", "Z;", "b", "c", "d", "d#", "dZ", "dZ;", "d[", "f", "g", "h", "j", "k", "l", "l#", "l.",
    "l/", "l/2", "l/3", "l^", "m", "n", "n.", "n^", "p", "q", "r", 'r"', "r-", "r.", "r/", "s", "s.", "s;", "t",
    "t#", "t2", "tS", "tS;", "t[", "v", "v#", "w", "w#", "x", "z", "z#", "z.", "z/2", "z;",
)
_VOWELS = (
    "0", "0#", "02", "3", "3:", "@", "@#", "@-", "@2", "@5", "@L", "A#", "A:", "A@", "A~", "E", "E#", "E2", "I",
    "I#", "I2", "I2#", "IR", "N-", "O", "O2", "O:", "O@", "OI", "O~", "U", "U@", "V", "VR", "a", "a#", "a#2",
    "a2", "aI", "aI3", "aI@", "aU", "aU@", "aa", "e", "e#", "e:", "e@", "eI", "i", "i:", "i@", "i@3", "l-", "m-",
    "n-", "o", "o:", "o@", "oU", "oU#", "u", "u:",
)
#: id -> symbol; append-only in spirit: any change needs a new TEXT_VERSION
SYMBOLS: tuple[str, ...] = (PAD, *_PAUSES, *_CONSONANTS, *_VOWELS,
                            *("'" + v for v in _VOWELS), *("," + v for v in _VOWELS))
SYMBOL_IDS: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
PAD_ID = 0
TEXT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 '.,;:!?-")
#: what a cache key or a task's state must include: anything here changes the ids
TEXT_STATE = {"version": TEXT_VERSION, "language": LANGUAGE, "symbols": stable_hash(SYMBOLS),
              "n_symbols": len(SYMBOLS)}

_APOSTROPHES = dict.fromkeys(map(ord, "\u2019\u2018\u02bc\u00b4`"), "'")
_DASHES = dict.fromkeys(map(ord, "\u2013\u2014\u2212\u2010\u2011"), "-")
_DELIMITERS = dict.fromkeys(map(ord, '"\u201c\u201d\u201e()[]{}'), " ")
_SPACES = re.compile(r"\s+")


def normalize(text: str, utterance: str) -> str:
    """The normalised text (rules in the module docstring); DataError for empty text or a
    character outside TEXT_CHARS."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"utterance {utterance}: empty text")
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = folded.translate(_APOSTROPHES).translate(_DASHES).translate(_DELIMITERS).lower()
    clean = _SPACES.sub(" ", folded).strip()
    if not clean:
        raise DataError(f"utterance {utterance}: empty text after normalisation (was {text!r})")
    # This refusal changes the ids of no text that is still accepted, so TEXT_VERSION (part of
    # every corpus's cache key) stays: rebuilding the caches would give the same corpora.
    if not any(c.isalnum() for c in clean):
        raise DataError(f"utterance {utterance}: no letter or digit to speak after normalisation (was {text!r})")
    bad = next((c for c in clean if c not in TEXT_CHARS), None)
    if bad is not None:
        raise DataError(f"utterance {utterance}: character {bad!r} (U+{ord(bad):04X}) is outside the text table "
                        f"(a-z, 0-9, space and ' . , ; : ! ? -)")
    return clean


def encode(phonemes: list[str], utterance: str) -> list[int]:
    """Symbol ids of ``phonemes``; DataError naming the first phoneme outside SYMBOLS."""
    bad = next((p for p in phonemes if p not in SYMBOL_IDS or p == PAD), None)
    if bad is not None:
        raise DataError(f"utterance {utterance}: phoneme {bad!r} is outside the symbol table {TEXT_VERSION}")
    return [SYMBOL_IDS[p] for p in phonemes]


def decode(ids) -> list[str]:
    return [SYMBOLS[int(i)] for i in ids]


@dataclass
class Spoken:
    """What eSpeak NG said: the waveform at its own rate and each phoneme's sample span."""

    text: str  # normalised
    wave: np.ndarray  # float32, starts at the first phoneme (leading silence cut)
    sample_rate: int
    phonemes: list[str]
    bounds: list[int]  # len(phonemes) + 1 sample offsets into wave: phoneme k is [bounds[k], bounds[k+1])


def speak(text: str, utterance: str, *, variant: str | None = None, rate: int = 175, pitch: int = 50) -> Spoken:
    """Normalise ``text`` and synthesize it, keeping the exact phoneme boundaries.

    Phonemes eSpeak reports with no samples (the zero-length ``_`` it ends on) are dropped,
    and the silence before the first phoneme is cut, so the phonemes cover the waveform
    exactly. Every phoneme is checked against SYMBOLS.
    """
    from kdbench_asr import espeak

    clean = normalize(text, utterance)
    ok, reason = espeak.available()
    if not ok:
        raise DataError(f"the TTS text front end needs eSpeak NG (pip install espeakng-loader): {reason}")
    wave, sample_rate, events = espeak.synthesize_phonemes(clean, language=LANGUAGE, variant=variant,
                                                           rate=rate, pitch=pitch)
    # Clamped and made non-decreasing so the spans tile the waveform whatever eSpeak reports.
    starts = np.maximum.accumulate(np.clip([s for _, s in events] + [len(wave)], 0, len(wave))).tolist()
    kept = [(name, a, b) for (name, _), a, b in zip(events, starts, starts[1:]) if b > a]
    if not kept:
        raise DataError(f"utterance {utterance}: eSpeak NG spoke no phonemes for {clean!r}")
    encode([name for name, _, _ in kept], utterance)
    offset = kept[0][1]
    return Spoken(clean, np.ascontiguousarray(wave[offset:]), sample_rate, [name for name, _, _ in kept],
                  [a - offset for _, a, _ in kept] + [kept[-1][2] - offset])


def phonemize(text: str, utterance: str) -> list[str]:
    """The phonemes of ``text`` as the default ``en-us`` voice at its normal rate speaks them."""
    return speak(text, utterance).phonemes
