"""The one pinned text normalizer: WER moves with normalization (field notes, pitfall 1), so
raw hypotheses are stored and this versioned function is applied only at scoring time."""

import re

NORMALIZER_VERSION = "kdbench-en-1"

_NOT_ALLOWED = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, drop everything but letters, apostrophes and spaces, squeeze spaces."""
    return _SPACES.sub(" ", _NOT_ALLOWED.sub(" ", text.lower())).strip()
