"""The conformance kit's inputs for the ``tts`` and ``vocoder`` tasks (``kdbench.testing.inputs``): a
tiny corpus of phoneme sequences with exact durations and tone "speech", a stand-in synthesizer,
and stand-in vocoders (the vocoder task reads the same corpus: log-mels of the tones in, tones out),
waveform vocoders for the task's own inputs and class-output ones for the sample-class losses.

No eSpeak here: the kit must check components in milliseconds, and the corpus must be the same
on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kdbench.hashing import stable_hash
from kdbench.interfaces import Batch, Corpus, Example, Model, ModelOutput, ModelSpec
from kdbench.testing.inputs import KitInputs
from kdbench_tts import audio
from kdbench_tts.text import SYMBOLS


def tiny_corpus(train: int = 8, test: int = 4, seed: int = 0) -> Corpus:
    """Each phoneme is a steady tone lasting its duration (2 to 5 frames); utterances of 3 to 7
    phonemes, so batches carry padding."""
    rng = np.random.default_rng(seed)

    def split(name: str, n: int) -> list[Example]:
        examples = []
        for k in range(n):
            phonemes = rng.integers(1, len(SYMBOLS), 3 + k % 5)
            durations = rng.integers(2, 6, len(phonemes))
            frames = int(durations.sum())
            samples = (frames - 1) * audio.HOP_LENGTH  # frame_count(samples) == frames
            tone = np.repeat(200.0 + 20.0 * (phonemes % 20), durations * audio.HOP_LENGTH)[:samples]
            wave = 0.3 * np.sin(2 * np.pi * np.cumsum(tone) / audio.SAMPLE_RATE).astype(np.float32)
            examples.append(Example(f"kit-{name}-{k}", torch.tensor(phonemes, dtype=torch.long), wave,
                                    {"durations": durations.tolist(), "frames": frames, "speaker": "kit",
                                     "sample_rate": audio.SAMPLE_RATE, "duration": samples / audio.SAMPLE_RATE}))
        return examples

    recipe = {"kdbench_tts.testing": 1, "train": train, "test": test, "seed": seed}
    return Corpus("kdbench-tts-testing", split("train", train), {"test": split("test", test)},
                  {"sample_rate": audio.SAMPLE_RATE, "modality": "text", "task": "tts", "durations": True},
                  stable_hash(recipe))


class TinySynthesizer(Model):
    """Embeds each phoneme and repeats it for its duration: in training the batch's durations,
    at inference ``frames`` per phoneme. Exposes per-phoneme ``encoder``, ``durations`` and
    ``log_durations`` (a trained head), as the real synthesizers do."""

    def __init__(self, model_spec: ModelSpec, hidden: int = 16, frames: int = 3):
        super().__init__()
        self.frames = frames
        self.embed = nn.Embedding(model_spec.input_dim, hidden)
        self.head = nn.Linear(hidden, model_spec.output_dim)
        self.duration = nn.Linear(hidden, 1)
        self.hidden_dims = {"encoder": hidden, "durations": 1, "log_durations": 1}

    def _synthesize(self, features, lengths, durations) -> ModelOutput:
        keep = (torch.arange(features.shape[1])[None, :] < lengths[:, None])
        encoder = self.embed(features) * keep.unsqueeze(-1)
        durations = durations * keep
        frames = durations.sum(1)
        rows = [torch.repeat_interleave(encoder[i], durations[i], dim=0) for i in range(len(features))]
        mel = self.head(torch.nn.utils.rnn.pad_sequence(rows, batch_first=True))
        hidden = {"encoder": encoder, "durations": durations.unsqueeze(-1).float(),
                  "log_durations": self.duration(encoder) * keep.unsqueeze(-1)}
        return ModelOutput(mel, frames, hidden,
                           hidden_lengths={"encoder": lengths, "durations": lengths, "log_durations": lengths})

    def forward_train(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        return self._synthesize(features, lengths, batch.extras["durations"][:, :features.shape[1]])

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        return self._synthesize(features, lengths, torch.full_like(features, self.frames))


class TinyVocoder(Model):
    """A convolution over log-mel frames, then one transposed convolution rendering each frame as
    a hop of samples: the kit's stand-in vocoder. Padding is zeroed after every layer, so an
    utterance sounds the same alone as in a batch. The ``encoder`` state keeps every
    ``stride``-th frame, so a hint loss meets two frame rates."""

    def __init__(self, model_spec: ModelSpec, hidden: int = 8, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(model_spec.input_dim, hidden, 3, padding=1)
        self.up = nn.ConvTranspose1d(hidden, model_spec.output_dim, audio.HOP_LENGTH, stride=audio.HOP_LENGTH)
        self.hidden_dims = {"encoder": hidden}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        keep = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).unsqueeze(1)
        h = torch.tanh(self.conv(features.transpose(1, 2) * keep)) * keep
        samples = lengths * audio.HOP_LENGTH
        wave_keep = (torch.arange(h.shape[-1] * audio.HOP_LENGTH)[None, :] < samples[:, None]).unsqueeze(1)
        wave = torch.tanh(self.up(h)) * wave_keep
        return ModelOutput(wave.transpose(1, 2), samples, {"encoder": h.transpose(1, 2)[:, ::self.stride]})


class TinyClassVocoder(Model):
    """The kit's stand-in for a class-output vocoder (WaveRNN-like), for the sample-class losses:
    logits ``(batch, frames * hop, n_classes)`` from the log-mel (a convolution, then a transposed
    convolution rendering each frame as a hop). ``forward_train`` adds a term for the recording's
    previous sample (teacher forcing, as WaveRNN trains), so a loss that asks for the teacher's
    teacher-forced outputs gets different logits from one that reads its free-running ones.
    ``forward`` returns logits too (not a waveform as WaveRNN's does): the kit's loss check feeds
    the student's ``forward`` to the loss. Padding is zeroed, so batch-mates never matter."""

    def __init__(self, model_spec: ModelSpec, hidden: int = 8, stride: int = 1, n_classes: int = 16):
        super().__init__()
        self.stride, self.n_classes = stride, n_classes
        self.conv = nn.Conv1d(model_spec.input_dim, hidden, 3, padding=1)
        self.up = nn.ConvTranspose1d(hidden, n_classes, audio.HOP_LENGTH, stride=audio.HOP_LENGTH)
        self.previous = nn.Linear(1, n_classes)
        self.hidden_dims = {"encoder": hidden}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        keep = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).unsqueeze(1)
        h = torch.tanh(self.conv(features.transpose(1, 2) * keep)) * keep
        samples = lengths * audio.HOP_LENGTH
        wave_keep = (torch.arange(h.shape[-1] * audio.HOP_LENGTH)[None, :] < samples[:, None]).unsqueeze(-1)
        logits = self.up(h).transpose(1, 2) * wave_keep
        return ModelOutput(logits, samples, {"encoder": h.transpose(1, 2)[:, ::self.stride]})

    def forward_train(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        out = self.forward(features, lengths)
        steps = out.output.shape[1]
        wave = torch.nn.functional.pad(batch.targets[:, :steps].float(), (0, max(0, steps - batch.targets.shape[1])))
        previous = torch.nn.functional.pad(wave[:, :-1], (1, 0)).unsqueeze(-1)
        return ModelOutput(out.output + self.previous(previous), out.lengths, out.hidden)


KIT_INPUTS = {
    "tts": KitInputs(corpus=tiny_corpus, frontend="phonemes",
                     student=lambda spec: TinySynthesizer(spec, hidden=8, frames=2),
                     teacher=lambda spec: TinySynthesizer(spec, hidden=12, frames=3),
                     # a model that synthesizes nothing: zero frames of log-mel
                     empty_prediction=np.zeros((0, audio.N_MELS), np.float32)),
    "vocoder": KitInputs(corpus=tiny_corpus, frontend="log-mel-input",
                         student=lambda spec: TinyVocoder(spec, hidden=8, stride=2),
                         teacher=lambda spec: TinyVocoder(spec, hidden=12, stride=1),
                         # a vocoder that renders nothing: a clip of zero samples
                         empty_prediction=np.zeros(0, np.float32)),
}


#: stand-ins for the sample-class losses (``wave-ce``, ``wave-class-kd``) on the vocoder task: not
#: the task's own (its metrics and targets expect waveforms), so a check names them: ``bench=
#: tiny_bench(task="vocoder", inputs=CLASS_VOCODER_INPUTS)``
CLASS_VOCODER_INPUTS = KitInputs(corpus=tiny_corpus, frontend="log-mel-input",
                                 student=lambda spec: TinyClassVocoder(spec, hidden=8, stride=2),
                                 teacher=lambda spec: TinyClassVocoder(spec, hidden=12, stride=1),
                                 empty_prediction=np.zeros(0, np.float32))
