"""'did you mean ...?' for unknown names."""

import difflib


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(sorted(available)) or "none loaded"
    return f"unknown {what} {name!r};{hint} available: {listing}"
