"""Speech-enhancement built-ins: noisy-speech data, the enhancement task, ConvTasNet and STFT-mask
models, SI-SDR and KD losses, and PESQ, STOI, SI-SDR and DNSMOS metrics. Registered through the
``kdbench`` entry-point group, as a third-party plugin would be.

Hooks import their modules when called: the metrics' worker processes import this package,
and they need none of torch.
"""

from kdbench.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from kdbench_enhance.data import NoisySpeech

    register("noisy-speech", NoisySpeech, summary="clean speech from another dataset mixed with offline noise at set SNRs")


@hookimpl
def register_tasks(register):
    from kdbench_enhance.task import Enhancement

    register("enhancement", Enhancement, summary="noisy waveform in, enhanced waveform out")


@hookimpl
def register_frontends(register):
    from kdbench_enhance.task import Waveform

    register("waveform", Waveform, summary="the raw waveform, one channel")


def _models(register):
    from kdbench_enhance.models import ConvTasNetEnhancer, Passthrough, StftMaskGru, StftMaskMlp

    register("convtasnet", ConvTasNetEnhancer, summary="torchaudio ConvTasNet, one source")
    register("stft-mask-gru", StftMaskGru, summary="STFT magnitude -> causal GRU -> mask (real-time)")
    register("stft-mask-mlp", StftMaskMlp, summary="STFT magnitude of a causal frame window -> linear layers -> mask "
             "(real-time; QAT and pruning reach it)")
    register("passthrough", Passthrough, summary="the unprocessed input (a reference row)")


@hookimpl
def register_teachers(register):
    _models(register)


@hookimpl
def register_students(register):
    _models(register)


@hookimpl
def register_losses(register):
    from kdbench_enhance.losses import EncoderHint, OutputKd, SiSdrKd, SiSdrLoss

    register("si-sdr", SiSdrLoss, summary="negative SI-SDR to the clean speech (no KD)")
    register("output-kd", OutputKd, summary="negative SI-SDR to the teacher's enhanced waveform")
    register("si-sdr-kd", SiSdrKd, summary="(1-alpha) SI-SDR to clean + alpha SI-SDR to the teacher's output")
    register("encoder-hint", EncoderHint, summary="FitNets hint on the encoder, learned projection, + SI-SDR")


@hookimpl
def register_metrics(register):
    from kdbench_enhance.metrics import Dnsmos, Pesq, SiSdr, Stoi

    register("si-sdr", SiSdr, summary="SI-SDR and its improvement over the noisy input (dB)")
    register("pesq", Pesq, summary="PESQ: narrow-band at 8 kHz, wide-band at 16 kHz")
    register("stoi", Stoi, summary="STOI and ESTOI (pystoi)")
    register("dnsmos", Dnsmos, summary="DNSMOS SIG/BAK/OVRL (speechmos), 16 kHz only")
