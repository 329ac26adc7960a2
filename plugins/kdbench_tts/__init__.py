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
    from kdbench_tts import task, vocoding

    register("tts", task.Synthesis, summary="phonemes -> log-mel; heard through Griffin-Lim; speed per second synthesized")
    register("vocoder", vocoding.Vocoding,
             summary="a recording's log-mel -> its waveform; trains on fixed segments; speed per second rendered")


@hookimpl
def register_frontends(register):
    from kdbench_tts import task, vocoding

    register("phonemes", task.PhonemeIds, summary="phoneme ids, passed through (exported as int64 ids)")
    register("log-mel-input", vocoding.LogMelInput, summary="the vocoder task's log-mels (80 bins), passed through")


@hookimpl
def register_teachers(register):
    from kdbench_tts import models, references, vocoders, wavernn

    register("tacotron2", models.Tacotron2Teacher,
             summary="Tacotron2 (torchaudio), autoregressive; bounded free-running decode, stop flag, attention durations")
    register("fastspeech", models.FastSpeech,
             summary="FastSpeech-style, non-autoregressive, trained on the recordings' durations: a fast teacher")
    register("hifigan-v3", vocoders.HifiGan,
             summary="HiFi-GAN V3-sized generator (~1.5M parameters), the teacher vocoder")
    register("wavernn", wavernn.WaveRnn,
             summary="WaveRNN (torchaudio, trained here): mu-law sample classes, teacher-forced training, seeded sampling")
    # no parameters: meant as a `references:` row (suites look references up among teachers)
    register("griffin-lim", vocoders.GriffinLim,
             summary="Griffin-Lim phase recovery from the log-mel (torchaudio), no parameters: a reference")
    register("recorded", references.Recorded,
             summary="the test recording's own log-mel, heard through the same Griffin-Lim: the TTS ceiling row")


@hookimpl
def register_students(register):
    from kdbench_tts import models, vocoders, wavernn

    register("fastspeech", models.FastSpeech,
             summary="FastSpeech-style non-autoregressive: duration predictor + length regulator")
    register("hifigan-student", vocoders.HifiGanStudent,
             summary="the HiFi-GAN generator, narrow (64 channels, one residual block per stage): a student vocoder")
    register("wavernn-student", wavernn.WaveRnnStudent,
             summary="WaveRNN, narrow (GRUs of 64, a small conditioning network): a class-output student vocoder")


@hookimpl
def register_losses(register):
    from kdbench_tts import losses, vocoder_losses

    register("mel", losses.GroundTruthMel, summary="log-mel L1 (+ stop token, + durations) to the recording: no KD")
    register("mel-sequence-kd", losses.SequenceKd,
             summary="FastSpeech's sequence-level KD: the teacher's free-running mels and durations as targets")
    register("wave", vocoder_losses.WaveLoss,
             summary="multi-resolution STFT + log-mel L1 to the recording (a vocoder's, no KD)")
    register("wave-kd", vocoder_losses.WaveKd,
             summary="the same to the teacher vocoder's waveform, mixed with the recording's by alpha")
    register("wave-ce", vocoder_losses.WaveCrossEntropy,
             summary="cross-entropy of a WaveRNN's sample classes to the recording's mu-law classes (no KD)")
    register("wave-class-kd", vocoder_losses.WaveClassKd,
             summary="Hinton KD on the sample classes: T^2 KL to the teacher-forced teacher, mixed with CE by alpha")


@hookimpl
def register_metrics(register):
    from kdbench_tts import conditions, judge, metrics, prosody

    register("mcd", metrics.MelCepstralDistortion,
             summary="mel-cepstral distortion (dB) to the recording, DTW-aligned (librosa)")
    register("cut-off", conditions.CutOff,
             summary="share (%) of utterances cut off at the model's length bound: a condition, a row note when > 0")
    register("f0", prosody.F0Metrics,
             summary="log-F0 RMSE (cents) and V/UV error (%) to the recording, Praat pitch, MCD's DTW alignment")
    register("judge", judge.AsrJudge,
             summary="intelligibility: CER/WER (%) of the speech as PocketSphinx en-us transcribes it (offline)")
