"""WaveRNN vocoders: log-mel frames in, a distribution over the next sample's mu-law class out.

``WaveRnn`` wraps torchaudio's ``WaveRNN`` (Kalchbrenner et al., 2018, as in fatchord/WaveRNN):
the architecture only, trained here (no weights are downloaded). A mel-conditioning network
(MelResNet + upsampling to one vector per sample) feeds two GRUs that read the previous sample
and give logits over ``2 ** n_bits`` mu-law classes of the next one. ``WaveRnnStudent`` is the
same network with narrower GRUs and fully connected layers and a smaller conditioning network,
at the same upsampling (the task's hop of 256).

It runs two ways, and the two return different things:

- ``forward_train(features, lengths, batch)`` (teacher forcing, what the vocoder task's
  ``train_forward`` calls): every sample is predicted from the *recording's* previous sample, in
  one parallel pass. Output: logits ``(batch, samples, 2 ** n_bits)`` with lengths in samples,
  which the class losses (``wave-ce``, ``wave-class-kd``) score against the recording's mu-law
  classes and the teacher's logits.
- ``forward(features, lengths)`` (free running, what evaluation and deployment run): torchaudio's
  ``WaveRNN.infer`` draws one sample at a time from the model's own distribution and feeds it
  back. Output: the waveform ``(batch, frames * hop, 1)``, as every vocoder of the task returns,
  so ``Vocoding.predict``, MCD and the clips heard need nothing special.

Decoding is sampling (``infer``'s multinomial draw, which argmax would turn into the buzz or
silence a WaveRNN is known for), made reproducible: each utterance is decoded alone, inside
``torch.random.fork_rng`` with the global generator seeded with ``sample_seed``. So an
utterance's waveform depends only on its own log-mel, the weights and the seed, never on its
batch-mates or on whatever drew random numbers before, and the caller's random state is left
as it was.

Cost: ``infer`` is a Python loop over samples. Measured here (1 thread, 0.38 s of audio) it ran
at RTF 52 at torchaudio's default size (n_rnn 512) and RTF 10 at n_rnn 64: keep test sets tiny.

Conditioning: the task's log-mels (natural log, clamped at 1e-5) are shifted so that silence is
0 and scaled to about unit range. ``infer`` pads the log-mel with zeros on both sides for the
conditioning network's first convolution (``kernel_size`` frames, no padding of its own), so
with this shift that padding is silence, and ``forward_train`` pads every utterance the same way
(its valid frames, then zeros): an utterance conditions the same alone as in a padded batch, and
the same in training as in decoding.

BatchNorm (in torchaudio's MelResNet) normalises over the batch in training mode, padding
frames included; evaluation uses running statistics, so outputs at eval are batch-independent.
The task's training segments all have the same length, except utterances shorter than a segment.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from kdbench.interfaces import Batch, Model, ModelOutput, ModelSpec
from kdbench.options import Options
from kdbench.torch_pair import import_torchaudio

torchaudio = import_torchaudio()  # a torch/torchaudio mismatch names both versions

from kdbench_tts.audio import HOP_LENGTH, LOG_CLAMP  # noqa: E402

#: the log-mel of silence (audio.log_mel clamps at LOG_CLAMP) maps to 0, the value infer pads with
_MEL_FLOOR = math.log(LOG_CLAMP)
#: natural-log range of the task's magnitude mels, from the clamp (-11.5) to about +5.5 for
#: full-scale speech: dividing by it keeps the conditioning input near [0, 1]
_MEL_RANGE = 16.0


def mu_law_classes(wave: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Waveform in [-1, 1] -> mu-law class indices in [0, n_classes) (int64)."""
    return torchaudio.functional.mu_law_encoding(wave.clamp(-1.0, 1.0), n_classes)


def class_amplitudes(n_classes: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_classes,) the amplitude each mu-law class decodes to."""
    return torchaudio.functional.mu_law_decoding(torch.arange(n_classes, device=device), n_classes).to(dtype)


def _class_input(classes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices -> the value WaveRNN reads as the previous sample: the index mapped
    linearly onto [-1, 1], exactly what torchaudio's ``infer`` feeds back after each draw."""
    return 2.0 * classes.float() / (n_classes - 1.0) - 1.0


def _classes_of_input(x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse of ``_class_input``: ``infer``'s output back to class indices. Rounded, not
    truncated as torchaudio's bundle does, which can land one class low on a float error."""
    return torch.round((x + 1.0) * (n_classes - 1.0) / 2.0).clamp(0, n_classes - 1).long()


def normalize_mel(features: torch.Tensor) -> torch.Tensor:
    """The task's log-mel -> WaveRNN's conditioning input: 0 at silence, about 1 at full scale."""
    return (features - _MEL_FLOOR) / _MEL_RANGE


class WaveRnn(Model):
    """WaveRNN (torchaudio's architecture, trained here): mu-law sample classes, teacher-forced
    in training, sampled one at a time (seeded) in inference. Defaults: torchaudio's sizes."""

    version = 1

    class Options(Options):
        n_bits: int = Field(8, ge=2, le=16, description="mu-law bits: 2 ** n_bits sample classes")
        n_rnn: int = Field(512, ge=1, description="width of both GRUs")
        n_fc: int = Field(512, ge=1, description="width of the two fully connected layers after them")
        n_res_block: int = Field(10, ge=0, description="residual blocks of the conditioning MelResNet")
        n_hidden: int = Field(128, ge=1, description="MelResNet channels")
        n_output: int = Field(128, ge=4, description="MelResNet output channels (a quarter feeds each of 4 layers)")
        kernel_size: int = Field(5, ge=1, description="frames seen by MelResNet's first convolution (odd)")
        upsample_scales: tuple[int, ...] = Field((4, 8, 8), description="their product must be the hop (256)")
        sample_seed: int = Field(0, description="seed of the free-running decoder's draws (each utterance alone)")

        @model_validator(mode="after")
        def _fits(self):
            if math.prod(self.upsample_scales) != HOP_LENGTH:
                raise ValueError(f"upsample_scales {tuple(self.upsample_scales)} multiply to "
                                 f"{math.prod(self.upsample_scales)}, not the hop of {HOP_LENGTH} samples per frame")
            if self.kernel_size % 2 == 0:
                # torchaudio pads kernel_size // 2 frames each side: an even kernel would then
                # render one frame more than the log-mel has
                raise ValueError(f"kernel_size {self.kernel_size} must be odd")
            if self.n_output % 4:
                # torchaudio splits it into 4 equal parts; a remainder would be computed and unused
                raise ValueError(f"n_output {self.n_output} must be a multiple of 4")
            return self

    @classmethod
    def n_classes_for(cls, options: "WaveRnn.Options") -> int:
        """Sample classes the model's training output has (class losses check the suite with it)."""
        return 2 ** options.n_bits

    def __init__(self, options: "WaveRnn.Options", model_spec: ModelSpec, **context):
        super().__init__()
        o = options
        self.n_classes = self.n_classes_for(o)
        self.sample_seed = o.sample_seed
        self.wavernn = torchaudio.models.WaveRNN(
            upsample_scales=list(o.upsample_scales), n_classes=self.n_classes, hop_length=HOP_LENGTH,
            n_res_block=o.n_res_block, n_rnn=o.n_rnn, n_fc=o.n_fc, kernel_size=o.kernel_size,
            n_freq=model_spec.input_dim, n_hidden=o.n_hidden, n_output=o.n_output)
        self.pad = self.wavernn._pad  # frames infer pads each side with
        self.hidden_dims = {}

    def _conditioning(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, frames, n_mels) -> (B, 1, n_mels, frames + 2 * pad): each utterance's valid frames,
        then zeros (silence), with ``pad`` zero frames before: what ``infer`` builds for an
        utterance alone."""
        keep = (torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        mel = normalize_mel(features) * keep
        return torch.nn.functional.pad(mel.transpose(1, 2), (self.pad, self.pad)).unsqueeze(1)

    def forward_train(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        """Teacher forcing on the batch's recording: logits (B, frames * hop, n_classes); the
        logits at sample t read the recording's sample t - 1 (0 before the first, as ``infer``
        starts)."""
        steps = features.shape[1] * HOP_LENGTH
        wave = batch.targets.to(features.device, torch.float32)[:, :steps]
        # the recording may stop short of the last frame's hop: zeros past it (never scored)
        wave = torch.nn.functional.pad(wave, (0, steps - wave.shape[1]))
        valid = torch.arange(steps, device=wave.device)[None, :] < batch.target_lengths.to(wave.device)[:, None]
        previous = _class_input(mu_law_classes(wave * valid, self.n_classes), self.n_classes)
        previous = torch.nn.functional.pad(previous[:, :-1], (1, 0))
        logits = self.wavernn(previous.unsqueeze(1), self._conditioning(features, lengths)).squeeze(1)
        return ModelOutput(logits, lengths * HOP_LENGTH, {})

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        """Free running: the decoded waveform (B, frames * hop, 1), each utterance drawn alone
        from a generator seeded with ``sample_seed``."""
        out = features.new_zeros(features.shape[0], features.shape[1] * HOP_LENGTH, 1)
        # the draws are not differentiable, and a graph through thousands of steps would only
        # hold memory
        with torch.no_grad():
            for i, n in enumerate(lengths.tolist()):
                mel = normalize_mel(features[i, :n]).T.unsqueeze(0)  # (1, n_mels, n): infer pads it
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.sample_seed)
                    x, _ = self.wavernn.infer(mel)
                classes = _classes_of_input(x[0, 0], self.n_classes)
                out[i, :n * HOP_LENGTH, 0] = torchaudio.functional.mu_law_decoding(classes, self.n_classes)
        return ModelOutput(out, lengths * HOP_LENGTH, {})


class WaveRnnStudent(WaveRnn):
    """The same WaveRNN, narrow (GRUs and fully connected layers of 64, a 3-block conditioning
    network of 32 channels): a student whose sample loop is cheaper."""

    class Options(WaveRnn.Options):
        n_rnn: int = Field(64, ge=1, description="width of both GRUs")
        n_fc: int = Field(64, ge=1, description="width of the two fully connected layers after them")
        n_res_block: int = Field(3, ge=0, description="residual blocks of the conditioning MelResNet")
        n_hidden: int = Field(32, ge=1, description="MelResNet channels")
        n_output: int = Field(32, ge=4, description="MelResNet output channels (a quarter feeds each of 4 layers)")
