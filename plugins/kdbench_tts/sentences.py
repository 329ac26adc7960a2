"""The synthetic corpus's sentences: short English commands, times and digits from a small
grammar (a few hundred), and which of them are held out for testing.

A sentence is a test sentence when a hash of its text says so (about one in five), not by
position or draw: the split never depends on the seed, the utterance counts or the
grammar's order, so no option can leak a test sentence into training.
"""

from __future__ import annotations

import hashlib
import itertools

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
_MINUTES = ("o'clock", "fifteen", "thirty", "forty five")
_TIMES = tuple(f"{h} {m}" for h, m in itertools.product(_HOURS, _MINUTES))
_COUNTS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_DEVICES = ("light", "fan", "heater", "radio", "oven", "television", "kitchen lights", "alarm")
_OPENINGS = ("door", "window", "garage", "gate")
_DIRECTIONS = ("left", "right", "forward", "back", "up", "down")

GRAMMAR_VERSION = 1  # bump when a rule changes: it is part of the corpus cache key
TEST_SHARE = 5  # one sentence in TEST_SHARE (by hash) is a test sentence


def all_sentences() -> list[str]:
    """Every sentence of the grammar, sorted, without duplicates."""
    rules = [
        (f"{verb} the {thing}" for verb in ("turn on", "turn off", "switch on", "switch off", "check")
         for thing in _DEVICES),
        (f"{verb} the {thing}" for verb in ("open", "close", "lock", "unlock") for thing in _OPENINGS),
        (f"set a timer for {n} minutes" for n in (*_COUNTS, "twenty", "thirty", "forty five")),
        (f"set an alarm for {t}" for t in _TIMES),
        (f"wake me up at {t}" for t in _TIMES),
        (f"the meeting starts at {t}" for t in _TIMES),
        (f"it is {t} now" for t in _TIMES),
        (f"press {a} then {b}" for a, b in itertools.product(DIGITS, DIGITS)),
        (f"go {d} {n} steps" for d, n in itertools.product(_DIRECTIONS, _COUNTS)),
        (f"play song number {n}" for n in (*_COUNTS, "eleven", "twelve", "twenty")),
        (f"volume {d} by {n}" for d, n in itertools.product(("up", "down"), _COUNTS)),
    ]
    return sorted(set(itertools.chain.from_iterable(rules)))


def is_test_sentence(sentence: str) -> bool:
    return int(hashlib.sha256(sentence.encode()).hexdigest()[:8], 16) % TEST_SHARE == 0


def split_sentences() -> tuple[list[str], list[str]]:
    """(training sentences, test sentences): disjoint, each sorted."""
    sentences = all_sentences()
    return [s for s in sentences if not is_test_sentence(s)], [s for s in sentences if is_test_sentence(s)]
