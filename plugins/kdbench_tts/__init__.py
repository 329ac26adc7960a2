"""Built-in text-to-speech components for kdbench, registered through the ``kdbench``
entry-point group exactly as a third-party plugin would be."""

from kdbench.hookspecs import hookimpl
from kdbench.torch_pair import import_torchaudio

import_torchaudio()  # before the modules that use it: a torch/torchaudio mismatch names both versions


@hookimpl
def register_datasets(register):
    from kdbench_tts import data, ljspeech

    register("synth-sentences", data.EspeakSentences,
             summary="short commands, times and digits spoken by eSpeak NG voices, exact phoneme durations (offline)")
    register("ljspeech", ljspeech.LJSpeech,
             summary="a local corpus in the LJSpeech layout (metadata.csv + wavs/), phonemes by eSpeak NG, no durations")
