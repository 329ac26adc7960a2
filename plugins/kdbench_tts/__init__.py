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


@hookimpl
def register_tasks(register):
    from kdbench_tts import task

    register("tts", task.Synthesis, summary="phonemes -> log-mel; heard through Griffin-Lim; speed per second synthesized")


@hookimpl
def register_frontends(register):
    from kdbench_tts import task

    register("phonemes", task.PhonemeIds, summary="phoneme ids, passed through (exported as int64 ids)")


@hookimpl
def register_teachers(register):
    from kdbench_tts import models

    register("tacotron2", models.Tacotron2Teacher,
             summary="Tacotron2 (torchaudio), autoregressive; bounded free-running decode, stop flag, attention durations")


@hookimpl
def register_students(register):
    from kdbench_tts import models

    register("fastspeech", models.FastSpeechStudent,
             summary="FastSpeech-style non-autoregressive: duration predictor + length regulator")


@hookimpl
def register_losses(register):
    from kdbench_tts import losses

    register("mel", losses.GroundTruthMel, summary="log-mel L1 (+ stop token, + durations) to the recording: no KD")
    register("mel-sequence-kd", losses.SequenceKd,
             summary="FastSpeech's sequence-level KD: the teacher's free-running mels and durations as targets")


@hookimpl
def register_metrics(register):
    from kdbench_tts import metrics

    register("mcd", metrics.MelCepstralDistortion,
             summary="mel-cepstral distortion (dB) to the recording, DTW-aligned (librosa)")
