"""Any corpus described by NeMo-style JSONL manifests: one ``{"audio_filepath", "text",
"duration"}`` object per line, relative audio paths resolved against the manifest's folder."""

from __future__ import annotations

import json
from pathlib import Path

from kdbench.errors import DataError
from kdbench.interfaces import Corpus, Example
from kdbench.options import Options

from .audio import Splits, content_fingerprint, make_corpus, make_example, read_audio

_READ_KEYS = {"audio_filepath", "text", "duration"}  # duration is re-measured from the audio


class JsonlManifest:
    """Your own corpus from NeMo-style JSONL manifests (audio_filepath, text, duration)."""

    class Options(Options):
        train: Path
        tests: dict[str, Path]
        sample_rate: int = 16000

    def __init__(self, options: Options, cache_dir: Path | None = None, **context):
        self.options = options

    def load(self) -> Corpus:
        o = self.options
        if "train" in o.tests:
            raise DataError("a test set cannot be named 'train'")
        splits: Splits = {"train": read_manifest(o.train, "train", o.sample_rate)}
        for name, path in o.tests.items():
            splits[name] = read_manifest(path, name, o.sample_rate)
        # Where the manifests live does not change the data, so paths stay out of the recipe.
        recipe = {"sample_rate": o.sample_rate, "tests": sorted(o.tests)}
        return make_corpus("manifest", splits, o.sample_rate, content_fingerprint(splits, recipe),
                           manifests={"train": str(o.train), **{k: str(v) for k, v in o.tests.items()}})


def read_manifest(path: Path, split: str, sample_rate: int) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    examples = []
    for lineno, raw in enumerate(raw_lines, 1):
        where = f"{path}:{lineno}"
        try:  # decoded line by line, so a bad byte is reported with its line
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON ({exc.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("audio_filepath"), str) or "text" not in entry:
            raise DataError(f"{where}: each line needs an object with 'audio_filepath' (a path) and 'text'")
        text = entry["text"].strip() if isinstance(entry["text"], str) else ""
        if not text:
            raise DataError(f"{where}: empty or non-text transcript")
        audio = path.parent / entry["audio_filepath"]  # an absolute path stays absolute
        if not audio.is_file():
            raise DataError(f"{where}: audio file not found: {audio}")
        try:
            wave = read_audio(audio, sample_rate)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        extra = {k: v for k, v in entry.items() if k not in _READ_KEYS}
        extra["speaker"] = str(extra.get("speaker", ""))
        examples.append(make_example(f"{split}-{lineno:06d}", wave, text, sample_rate,
                                     audio_filepath=str(audio), **extra))
    if not examples:
        raise DataError(f"manifest {path} lists no utterances")
    return examples
