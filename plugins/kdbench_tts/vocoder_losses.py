"""Training objectives for vocoders: the recording as the target (no KD), and the teacher
vocoder's waveform as a second target (KD), both as spectral distances.

The distance is HiFi-GAN's and Parallel WaveGAN's generator loss without discriminators:
multi-resolution STFT loss (spectral convergence + L1 of log magnitudes at three resolutions,
Yamamoto et al., 2020) plus an L1 between log-mels (HiFi-GAN's mel loss, in the task's shared
mel configuration). A sample-wise loss would punish a vocoder for a plausible phase; these do not.

Padding never counts: each waveform is zeroed past its valid length and the STFTs pad with zeros
(not by reflection), so every frame up to the last one centred inside the valid samples is the
same as the utterance's alone, and frames past it are left out of every sum and mean.

A vocoder whose output is a distribution over each sample's mu-law class (WaveRNN: logits
``(batch, samples, 2 ** n_bits)`` from teacher forcing) has its own losses: ``wave-ce``, the
cross-entropy to the recording's classes, and ``wave-class-kd``, Hinton's temperature-scaled KL
to the teacher's class distribution mixed with it. The teacher's distribution is only comparable
with the student's when both read the same previous samples, so ``wave-class-kd`` asks for the
teacher's teacher-forced outputs (``Loss.teacher_forcing``): the teacher runs through the task's
``train_forward`` on exactly the student's batch (the same segment of the same recording), not
free running. Its logits are 256 classes x 8192 samples a segment (4 MiB per utterance in the
cache's fp16), so a suite runs it with ``teacher_outputs: {mode: online}``.

The spectral losses accept such a vocoder too: its waveform is then the expected amplitude of
each sample under its class distribution (differentiable, so every class's logit learns), which
lets a HiFi-GAN teacher distil into a WaveRNN student with ``wave-kd``.
"""

from __future__ import annotations

import functools

import torch
from pydantic import Field

from kdbench.interfaces import Batch, Loss, ModelOutput
from kdbench.options import Options
from kdbench_tts import audio

#: (n_fft, hop, window) of Parallel WaveGAN's multi-resolution STFT loss
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
_MAG_FLOOR = 1e-7  # Parallel WaveGAN's clamp, so log |S| of silence stays finite


def _valid(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def _magnitude(wave: torch.Tensor, lengths: torch.Tensor, n_fft: int, hop: int,
               win: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, samples) -> |STFT| (B, n_fft // 2 + 1, frames) and the (B, 1, frames) mask of frames
    centred inside each waveform's valid samples."""
    window = torch.hann_window(win, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave * _valid(lengths, wave.shape[1]), n_fft, hop, win, window, center=True,
                      pad_mode="constant", return_complex=True)
    mag = torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=_MAG_FLOOR))
    frames = 1 + torch.div(lengths, hop, rounding_mode="floor")
    return mag, _valid(frames, mag.shape[-1]).unsqueeze(1).to(mag.dtype)


def _stft_terms(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, n_fft: int, hop: int,
                win: int) -> torch.Tensor:
    """Spectral convergence + mean |log magnitude difference| at one resolution."""
    p, mask = _magnitude(pred, lengths, n_fft, hop, win)
    t, _ = _magnitude(target, lengths, n_fft, hop, win)
    convergence = torch.linalg.vector_norm((t - p) * mask) / torch.linalg.vector_norm(t * mask).clamp(min=1e-7)
    log_l1 = ((t.log() - p.log()).abs() * mask).sum() / (mask.sum() * p.shape[1]).clamp(min=1)
    return convergence + log_l1


@functools.cache
def _mel_basis() -> torch.Tensor:
    # the filterbank torchaudio's MelSpectrogram uses in audio.log_mel: (n_fft // 2 + 1, n_mels)
    import torchaudio

    return torchaudio.functional.melscale_fbanks(audio.N_FFT // 2 + 1, audio.F_MIN, audio.F_MAX, audio.N_MELS,
                                                 audio.SAMPLE_RATE)


def _mel_l1(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean |log-mel difference| in the task's mel configuration (magnitude mel, natural log,
    clamped as audio.log_mel), over valid frames."""
    basis = _mel_basis().to(pred.device, pred.dtype)
    p, mask = _magnitude(pred, lengths, audio.N_FFT, audio.HOP_LENGTH, audio.WIN_LENGTH)
    t, _ = _magnitude(target, lengths, audio.N_FFT, audio.HOP_LENGTH, audio.WIN_LENGTH)
    log_p = torch.log(torch.clamp(torch.einsum("bft,fm->bmt", p, basis), min=audio.LOG_CLAMP))
    log_t = torch.log(torch.clamp(torch.einsum("bft,fm->bmt", t, basis), min=audio.LOG_CLAMP))
    return ((log_p - log_t).abs() * mask).sum() / (mask.sum() * audio.N_MELS).clamp(min=1)


def spectral_loss(pred: torch.Tensor, pred_lengths: torch.Tensor, target: torch.Tensor,
                  target_lengths: torch.Tensor, mel_weight: float = 1.0) -> torch.Tensor:
    """Multi-resolution STFT loss (mean over RESOLUTIONS) + ``mel_weight`` x log-mel L1 between
    two batches of waveforms (B, samples), over the samples both have. A vocoder renders whole
    hops, so its output may run up to a hop past the recording; that tail is not scored."""
    steps = min(pred.shape[1], target.shape[1])
    lengths = torch.minimum(pred_lengths, target_lengths).clamp(max=steps).to(pred.device)
    pred, target = pred[:, :steps].float(), target[:, :steps].to(pred.device).float()
    stft = sum(_stft_terms(pred, target, lengths, *r) for r in RESOLUTIONS) / len(RESOLUTIONS)
    return stft + mel_weight * _mel_l1(pred, target, lengths)


def _wave(out: ModelOutput) -> torch.Tensor:
    """(B, samples) waveform of a vocoder's output: the output itself, or for sample-class
    logits the expected amplitude of each sample (mu-law classes decoded, weighted by their
    probabilities)."""
    if out.output.shape[-1] == 1:
        return out.output[..., 0]
    from kdbench_tts.wavernn import class_amplitudes

    logits = out.output.float()
    return logits.softmax(-1) @ class_amplitudes(logits.shape[-1], logits.device)


class WaveLoss(Loss):
    """Multi-resolution STFT + log-mel L1 to the recording: no distillation."""

    class Options(Options):
        mel_weight: float = Field(1.0, ge=0, description="weight of the log-mel L1 next to the STFT terms")

    def __init__(self, options: "WaveLoss.Options", **context):
        super().__init__()
        self.mel_weight = options.mel_weight

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None = None) -> torch.Tensor:
        return spectral_loss(_wave(student), student.lengths, batch.targets, batch.target_lengths, self.mel_weight)


class WaveKd(Loss):
    """The same distance to the teacher vocoder's waveform (alpha) and to the recording
    (1 - alpha): the teacher's rendering of the same log-mel as a soft target."""

    requires_teacher = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's waveform; 1 - alpha: the recording")
        mel_weight: float = Field(1.0, ge=0, description="weight of the log-mel L1 next to the STFT terms")

    def __init__(self, options: "WaveKd.Options", **context):
        super().__init__()
        self.alpha, self.mel_weight = options.alpha, options.mel_weight

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None) -> torch.Tensor:
        wave = _wave(student)
        # cached teacher outputs arrive re-padded, in fp16 (spectral_loss compares in float32)
        kd = spectral_loss(wave, student.lengths, _wave(teacher), teacher.lengths, self.mel_weight)
        if self.alpha == 1:
            return kd
        truth = spectral_loss(wave, student.lengths, batch.targets, batch.target_lengths, self.mel_weight)
        return self.alpha * kd + (1 - self.alpha) * truth


# ---- sample-class (WaveRNN) losses ------------------------------------------------------

def _class_logits(out: ModelOutput, who: str) -> torch.Tensor:
    logits = out.output
    if logits.dim() != 3 or logits.shape[-1] < 2:
        raise ValueError(f"the {who}'s output has shape {tuple(logits.shape)}: a sample-class loss needs logits "
                         "(batch, samples, classes) from a class-output vocoder (wavernn, wavernn-student), "
                         "not a waveform; use 'wave' or 'wave-kd' for waveform vocoders")
    return logits.float()


def class_cross_entropy(student: ModelOutput, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the student's sample classes to the recording's mu-law classes,
    over the samples the student rendered and the recording has."""
    from kdbench_tts.wavernn import mu_law_classes

    logits = _class_logits(student, "student")
    steps = min(logits.shape[1], batch.targets.shape[1])
    lengths = torch.minimum(student.lengths.to(logits.device), batch.target_lengths.to(logits.device)).clamp(max=steps)
    target = mu_law_classes(batch.targets[:, :steps].to(logits.device).float(), logits.shape[-1])
    ce = torch.nn.functional.cross_entropy(logits[:, :steps].transpose(1, 2), target, reduction="none")
    keep = _valid(lengths, steps).to(ce.dtype)
    return (ce * keep).sum() / keep.sum().clamp(min=1)


def class_kl(student: ModelOutput, teacher: ModelOutput, temperature: float) -> torch.Tensor:
    """Mean over samples of KL(softmax(teacher / T) || softmax(student / T)), over the samples
    both have (the same segment: the teacher was run teacher-forced on the student's batch)."""
    s, t = _class_logits(student, "student"), _class_logits(teacher, "teacher").to(student.output.device)
    if s.shape[-1] != t.shape[-1]:
        raise ValueError(f"the student has {s.shape[-1]} sample classes and the teacher {t.shape[-1]}: "
                         "give both the same n_bits")
    steps = min(s.shape[1], t.shape[1])
    lengths = torch.minimum(student.lengths.to(s.device), teacher.lengths.to(s.device)).clamp(max=steps)
    log_s = torch.log_softmax(s[:, :steps] / temperature, -1)
    log_t = torch.log_softmax(t[:, :steps] / temperature, -1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    keep = _valid(lengths, steps).to(kl.dtype)
    return (kl * keep).sum() / keep.sum().clamp(min=1)


def _check_class_vocoders(suite, roles: tuple[str, ...], loss: str) -> None:
    """Every model of ``roles`` in the suite gives sample-class logits, with one class count."""
    counts = {}
    for role in roles:
        for resolved in getattr(suite, role):
            count = getattr(resolved.component.factory, "n_classes_for", None)
            if count is None:
                raise ValueError(f"{loss!r} scores sample-class logits, but {role[:-1]} {resolved.label!r} "
                                 f"({resolved.name}) renders a waveform: use 'wave' or 'wave-kd' for it")
            counts[resolved.label] = count(resolved.options)
    if len(set(counts.values())) > 1:
        raise ValueError(f"{loss!r} needs one number of sample classes, but the models have "
                         + ", ".join(f"{label}: {n}" for label, n in counts.items()) + " (give them the same n_bits)")


class WaveCrossEntropy(Loss):
    """Cross-entropy of a class-output vocoder's (teacher-forced) sample classes to the
    recording's mu-law classes: how WaveRNN trains, no distillation."""

    def __init__(self, options=None, **context):
        super().__init__()

    @classmethod
    def check_suite(cls, options, suite) -> None:
        _check_class_vocoders(suite, ("students",), "wave-ce")

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None = None) -> torch.Tensor:
        return class_cross_entropy(student, batch)


class WaveClassKd(Loss):
    """Hinton KD on the sample-class distribution: alpha * T^2 * KL(teacher_T || student_T) +
    (1 - alpha) * cross-entropy to the recording, the teacher run teacher-forced on the
    student's very segment; T optionally annealed over training."""

    requires_teacher = True
    #: the teacher's next-sample distribution is comparable only when it reads the recording's
    #: previous samples, as the student does in training
    teacher_forcing = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL to the teacher; 1 - alpha: the recording's CE")
        temperature: float = Field(2.0, gt=0, description="softmax temperature of both distributions (at the start)")
        temperature_end: float | None = Field(
            None, gt=0, description="if set, T moves linearly from `temperature` to this over training (Loss.progress)")

    def __init__(self, options: "WaveClassKd.Options", **context):
        super().__init__()
        self.options = options

    @classmethod
    def check_suite(cls, options, suite) -> None:
        _check_class_vocoders(suite, ("students", "teachers"), "wave-class-kd")

    @property
    def temperature(self) -> float:
        """T at the current ``progress``."""
        return self.annealed(self.options.temperature, self.options.temperature_end)

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None) -> torch.Tensor:
        alpha, t = self.options.alpha, self.temperature
        if alpha == 0:  # exactly the CE baseline: the teacher is not read at all
            return class_cross_entropy(student, batch)
        # T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al.)
        kd = t * t * class_kl(student, teacher, t)
        if alpha == 1:
            return kd
        return alpha * kd + (1 - alpha) * class_cross_entropy(student, batch)
