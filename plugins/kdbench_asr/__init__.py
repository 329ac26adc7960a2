"""Built-in ASR components for kdbench, registered through the ``kdbench`` entry-point group
exactly as a third-party plugin would be."""

from kdbench.hookspecs import hookimpl
from kdbench.torch_pair import import_torchaudio

import_torchaudio()  # before the modules that use it: a torch/torchaudio mismatch names both versions

from kdbench_asr import augment, losses, metrics, models
from kdbench_asr.frontend import LogMel
from kdbench_asr.task import CtcAsr


@hookimpl
def register_tasks(register):
    register("asr-ctc", CtcAsr, summary="character CTC speech recognition, greedy decoding")


@hookimpl
def register_datasets(register):
    from kdbench_asr.data import fsdd, librispeech, manifest, synth

    register("synth-digits", synth.EspeakDigitsCommands,
             summary="digit strings and commands synthesized offline by espeak-ng voices (built-in default)")
    register("fsdd-digits", fsdd.FsddConnectedDigits,
             summary="connected digits from Free Spoken Digit Dataset recordings (real speech)")
    register("manifest", manifest.JsonlManifest, summary="NeMo-style JSONL manifest of local audio and transcripts")
    register("librispeech", librispeech.LibriSpeech, summary="LibriSpeech from a local root (torchaudio.datasets)")


@hookimpl
def register_frontends(register):
    register("log-mel", LogMel, summary="log-mel filterbank (torchaudio) with per-utterance normalisation")


@hookimpl
def register_augmentations(register):
    register("spec-augment", augment.SpecAugment, summary="frequency and time masks on features")
    register("speed-perturb", augment.SpeedPerturb, summary="speed perturbation by resampling")
    register("additive-noise", augment.AdditiveNoise, summary="white noise at a random SNR")
    register("vtlp", augment.VocalTractLengthPerturb,
             summary="vocal tract length perturbation: log-mel filters read at warped frequencies")
    register("pitch-shift", augment.PitchShift, summary="pitch shift keeping duration and formants")


def _register_models(register):
    register("conformer-ctc", models.ConformerCtc, summary="Conformer encoder + CTC head (torchaudio)")
    register("gru-ctc", models.GruCtc, summary="conv subsampling + GRU + CTC head")
    register("deepspeech-ctc", models.DeepSpeechCtc, summary="DeepSpeech (torchaudio) + CTC")
    register("wav2letter-ctc", models.Wav2LetterCtc, summary="Wav2Letter (torchaudio), ~23M parameters")


@hookimpl
def register_teachers(register):
    from kdbench_asr import references

    _register_models(register)
    from kdbench_asr.ensemble import CtcTeacherEnsemble

    register("ctc-ensemble", CtcTeacherEnsemble,
             summary="several teachers as one: average, weighted or per-utterance best posteriors (never trained)")
    # evaluated as it is: meant as a `references:` row (suites look references up among teachers)
    register("pocketsphinx", references.PocketSphinx,
             summary="CMU PocketSphinx en-us (offline, pretrained), word loop of the task's words: a peer reference")


@hookimpl
def register_students(register):
    _register_models(register)


@hookimpl
def register_losses(register):
    register("ctc", losses.CtcLoss, summary="CTC on ground truth (no KD baseline)")
    register("logit-kd", losses.LogitKd, summary="frame-level logit KD, T^2-scaled KL")
    register("ctc-kd", losses.CtcKd, summary="(1-alpha) CTC + alpha logit KD")
    register("hint", losses.HintLoss, summary="FitNets hint with a learned projection, plus CTC")
    register("sequence-kd", losses.SequenceKd, summary="CTC towards teacher greedy transcripts, plus CTC")


@hookimpl
def register_metrics(register):
    register("wer", metrics.WordErrorRate, summary="corpus word error rate (jiwer, pinned normalizer)")
    register("cer", metrics.CharacterErrorRate, summary="corpus character error rate (jiwer, pinned normalizer)")
