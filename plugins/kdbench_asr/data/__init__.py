"""Dataset components of the ASR plugin. Each class is a factory:
``Cls(options, cache_dir=Path).load() -> kdbench.interfaces.Corpus``; ``Cls.Options`` holds its options."""

from .fsdd import FsddConnectedDigits
from .librispeech import LibriSpeech
from .manifest import JsonlManifest
from .synth import EspeakDigitsCommands

__all__ = ["EspeakDigitsCommands", "FsddConnectedDigits", "JsonlManifest", "LibriSpeech"]
