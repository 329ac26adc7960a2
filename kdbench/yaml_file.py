"""Reading a YAML file kdbench is given (a suite, a regression baseline): bytes decoded as UTF-8,
``yaml.safe_load`` (no tags that run code), and a refusal of alias bombs. Every problem is one
line naming the file, raised as the caller's error type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import KdbenchError


class Refused(ValueError):
    """Data kdbench will not read (see expanded_size)."""

#: A suite or a baseline is a few hundred values. YAML aliases let a file of a few lines stand for billions
#: (a "billion laughs"): harmless as loaded (an alias shares its object) until something hashes,
#: prints or validates the suite item by item, which expands it and exhausts memory.
MAX_VALUES = 100_000


def expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds with every alias expanded, counted without expanding it:
    a container shared by several aliases is counted once and its count reused. Refused past
    ``limit``, or for a container that contains itself (``&a [*a]``)."""
    sizes: dict[int, int] = {}

    def size(node: Any, open_: set[int]) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise Refused("a YAML alias refers to a value that contains it")
        open_.add(key)
        items = [x for kv in node.items() for x in kv] if isinstance(node, dict) else node
        total = 1
        for item in items:
            total += size(item, open_)
            if total > limit:
                raise Refused(f"more than {limit:,} values once its YAML aliases are expanded")
        open_.discard(key)
        sizes[key] = total
        return total

    return size(data, set())


def read_yaml(path: Path, what: str, error: type[KdbenchError]) -> Any:
    """The data in ``path`` (``what``: "suite", "baseline", named in messages)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                    f"save the {what} as UTF-8") from None
    try:
        data = yaml.safe_load(text)
        expanded_size(data, MAX_VALUES)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where} malformed YAML: {problem}") from None
    except Refused as exc:
        raise error(f"{path}: refused: {exc}") from None
    except RecursionError:
        raise error(f"{path}: refused: nested too deeply") from None
    except ValueError as exc:  # a scalar PyYAML cannot convert, such as the date 2024-13-01
        raise error(f"{path}: malformed YAML: {exc}") from None
    return data
