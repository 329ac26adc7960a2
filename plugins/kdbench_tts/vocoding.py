"""Vocoding as a kdbench task: a recording's log-mel in, its waveform out.

The vocoder half of text-to-speech, benchmarked on its own so a teacher vocoder can be distilled
into a student vocoder: every model hears the log-mels of real recordings (the same shared audio
configuration as the acoustic task, ``kdbench_tts.audio``) and is scored against the recording.
Speed is per second of audio produced.

Training on whole utterances makes every step as long as the longest sentence in the batch, and
the generator's cost grows with samples, so training batches are cut to fixed-length segments
(``segment_frames``, HiFi-GAN's 8192 samples by default), as HiFi-GAN and Parallel WaveGAN train.
The segment of an utterance is a function of its id and ``segment_seed`` only: the teacher's
outputs are cached per training utterance, and a distilled student must see the very segment the
teacher vocoded. Evaluation always vocodes whole utterances.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from pydantic import Field

from kdbench.errors import DataError
from kdbench.hashing import stable_hash
from kdbench.interfaces import Batch, Corpus, Example, Frontend, ModelOutput, Task
from kdbench.options import Options
from kdbench_tts import audio

#: what padded log-mel frames hold: the log of the clamp, i.e. silence
_SILENT = float(np.log(audio.LOG_CLAMP))


class Vocoding(Task):
    """Log-mel (frames, 80) -> waveform. Batches: inputs (B, frames, 80) log-mels padded with
    silence, targets (B, samples) recordings padded with zeros, target_lengths in samples. A model
    returns (B, frames * hop, 1) with lengths in samples."""

    default_loss = "wave"

    class Options(Options):
        segment_frames: int | None = Field(
            32, ge=8, description="train on this many frames of each utterance (32 frames = 8192 samples); "
                                  "None: whole utterances. Evaluation always vocodes whole utterances")
        segment_seed: int = Field(0, description="where each training utterance's segment starts is a function "
                                                 "of its id and this seed (so cached teacher outputs line up)")

    def __init__(self, options: "Vocoding.Options", **context):
        self.options = options
        self._mel_cache: dict[str, torch.Tensor] = {}
        self._train_ids: frozenset[str] = frozenset()

    def setup(self, corpus: Corpus) -> None:
        rate = int(corpus.info.get("sample_rate", 0))
        if rate != audio.SAMPLE_RATE:
            raise DataError(f"dataset {corpus.name!r} is at {rate} Hz; the vocoder task needs {audio.SAMPLE_RATE} Hz")
        # segments are for training only: a test utterance is always vocoded whole
        self._train_ids = frozenset(e.id for e in corpus.train)

    def output_dim(self) -> int:
        return 1

    def _mel(self, example: Example) -> torch.Tensor:
        # (frames, n_mels), computed once per example: every epoch and evaluation reads it again
        if example.id not in self._mel_cache:
            self._mel_cache[example.id] = audio.log_mel(example.target).T.contiguous()
        return self._mel_cache[example.id]

    def _segment_start(self, example_id: str, frames: int) -> int:
        span = frames - int(self.options.segment_frames)
        if span <= 0:
            return 0
        return int(stable_hash([example_id, self.options.segment_seed, "segment"]), 16) % (span + 1)

    def _pair(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-mel frames, waveform) of one example: a fixed segment of a training utterance,
        else the whole utterance. Mel frame t is centred on sample t * hop, which a vocoder
        renders as samples [t * hop, (t + 1) * hop): frames [s, s + F) go with those samples."""
        mel = self._mel(example)
        wave = torch.as_tensor(np.asarray(example.target, dtype=np.float32))
        segment = self.options.segment_frames
        if segment is None or example.id not in self._train_ids or len(mel) <= segment:
            return mel, wave
        start = self._segment_start(example.id, len(mel))
        return mel[start:start + segment], wave[start * audio.HOP_LENGTH:(start + segment) * audio.HOP_LENGTH]

    def collate(self, examples: Sequence[Example]) -> Batch:
        mels, waves = zip(*(self._pair(e) for e in examples))
        inputs = torch.nn.utils.rnn.pad_sequence(list(mels), batch_first=True, padding_value=_SILENT)
        targets = torch.nn.utils.rnn.pad_sequence(list(waves), batch_first=True)
        return Batch([e.id for e in examples], inputs, torch.tensor([len(m) for m in mels]), targets,
                     torch.tensor([len(w) for w in waves]))

    def predict(self, output: ModelOutput) -> list[np.ndarray]:
        """One waveform per utterance (frames * hop samples)."""
        return [output.output[i, :int(n), 0].detach().float().cpu().numpy().copy()
                for i, n in enumerate(output.lengths)]

    def reference(self, example: Example) -> np.ndarray:
        return np.asarray(example.target, dtype=np.float32)

    def seconds(self, example: Example, output: ModelOutput | None = None) -> float:
        """Seconds of audio produced (a vocoder's real-time factor is over what it rendered)."""
        if output is None:
            return float(example.meta.get("duration", 0.0) or 0.0)
        return float(output.lengths[0]) / audio.SAMPLE_RATE

    def audio(self, prediction: np.ndarray) -> tuple[np.ndarray, int]:
        """The rendered waveform itself."""
        return np.asarray(prediction, dtype=np.float32), audio.SAMPLE_RATE

    def state(self) -> dict[str, Any]:
        return {"audio": audio.AUDIO_CONFIG, "segment_frames": self.options.segment_frames,
                "segment_seed": self.options.segment_seed}


class LogMelInput(Frontend):
    """The task's log-mels pass through unchanged: the mel analysis belongs to the task (the
    one every TTS component shares), so no vocoder can be fed a different one."""

    output_dim = audio.N_MELS

    def __init__(self, options=None, **context):
        super().__init__()

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs, lengths
