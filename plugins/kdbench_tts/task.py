"""Text to speech as a kdbench task: phoneme ids in, a log-mel spectrogram out.

The acoustic model's prediction is a log-mel; the task turns it into audio a person can listen to
(and an ASR judge can transcribe) with a fixed, parameter-free vocoder (Griffin-Lim), so every
acoustic model is heard through the same ears. Speed is per second of *synthesized* audio.

Bad input and bad output, each named rather than crashing or passing silently:

- an example with no phonemes, or an id outside the symbol table (a third-party corpus), is a
  one-line ``DataError`` naming the utterance when it is collated;
- a prediction says whether the model's decoding was cut off at its length bound
  (:class:`SynthesizedMel` ``.cut_off``, read from ``hidden["stopped"]``): the ``cut-off``
  metric (:mod:`kdbench_tts.conditions`) reports the share as a condition, which puts a note on
  the leaderboard row;
- a log-mel with NaN or infinite values is heard as NaN samples (audio metrics leave it
  unscored) and saved as silence.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import torch
from pydantic import Field

from kdbench.errors import DataError
from kdbench.interfaces import Batch, Corpus, Example, Frontend, ModelOutput, Task
from kdbench.options import Options
from kdbench_tts import audio
from kdbench_tts.text import PAD_ID, SYMBOLS, TEXT_STATE, TEXT_VERSION


class Synthesis(Task):
    """Phonemes -> log-mel (80 bins, hop 256 at 16 kHz). Targets are the ground-truth log-mels of
    the recordings; batches carry the phoneme durations (``extras["durations"]``) when the
    corpus has them, for models trained on ground-truth durations."""

    default_loss = "mel"

    class Options(Options):
        listen_iterations: int = Field(32, ge=1, description="Griffin-Lim iterations for the audio kept to listen to")

    def __init__(self, options: "Synthesis.Options", **context):
        self.options = options
        self._mel_cache: dict[str, torch.Tensor] = {}

    def setup(self, corpus: Corpus) -> None:
        rate = int(corpus.info.get("sample_rate", 0))
        if rate != audio.SAMPLE_RATE:
            raise DataError(f"dataset {corpus.name!r} is at {rate} Hz; the TTS task needs {audio.SAMPLE_RATE} Hz")

    def output_dim(self) -> int:
        return audio.N_MELS

    def _mel(self, example: Example) -> torch.Tensor:
        # (frames, n_mels), computed once per example: every epoch and evaluation reads it again
        if example.id not in self._mel_cache:
            self._mel_cache[example.id] = audio.log_mel(example.target).T.contiguous()
        return self._mel_cache[example.id]

    def collate(self, examples: Sequence[Example]) -> Batch:
        ids = [torch.as_tensor(e.input, dtype=torch.long) for e in examples]
        for e, x in zip(examples, ids):
            _check_ids(e.id, x)
        inputs = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=PAD_ID)
        mels = [self._mel(e) for e in examples]
        targets = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=float(np.log(audio.LOG_CLAMP)))
        extras: dict[str, Any] = {}
        if all("durations" in e.meta for e in examples):
            durations = [torch.as_tensor(e.meta["durations"], dtype=torch.long) for e in examples]
            extras["durations"] = torch.nn.utils.rnn.pad_sequence(durations, batch_first=True)
        return Batch([e.id for e in examples], inputs, torch.tensor([len(x) for x in ids]), targets,
                     torch.tensor([len(m) for m in mels]), extras)

    def predict(self, output: ModelOutput) -> list["SynthesizedMel"]:
        """One (frames, n_mels) log-mel per utterance, saying whether its decoding was cut off
        (``hidden["stopped"]`` 0) or not (1); unknown when the model or target does not say."""
        stopped = output.hidden.get("stopped")
        return [SynthesizedMel.of(output.output[i, :int(n)].float().cpu().numpy(),
                                  None if stopped is None else not bool(stopped[i].reshape(-1)[0] > 0.5))
                for i, n in enumerate(output.lengths)]

    def reference(self, example: Example) -> np.ndarray:
        return self._mel(example).numpy()

    def seconds(self, example: Example, output: ModelOutput | None = None) -> float:
        """Seconds synthesized: the model's output frames (a synthesizer's real-time factor is
        compute time over the audio it produced, not over its text)."""
        if output is None:
            return float(example.meta.get("duration", 0.0) or 0.0)
        return float(output.lengths[0]) * audio.HOP_LENGTH / audio.SAMPLE_RATE

    def audio(self, prediction: np.ndarray) -> tuple[np.ndarray, int]:
        """The predicted log-mel through Griffin-Lim (the same for every model)."""
        wave = griffin_lim(torch.from_numpy(np.asarray(prediction, dtype=np.float32)), self.options.listen_iterations)
        return wave.numpy(), audio.SAMPLE_RATE

    def save_prediction(self, prediction: np.ndarray, path: Path) -> Path | None:
        """As every task saves audio, but NaN samples (a NaN log-mel) as silence: 16-bit PCM would
        make full-scale clicks of them, and the metrics, not the clip, say it is unscorable."""
        wave, rate = self.audio(prediction)
        out = path.with_suffix(".wav")
        wave = np.nan_to_num(np.asarray(wave, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        sf.write(out, np.clip(wave, -1.0, 1.0), int(rate), subtype="PCM_16")
        return out

    def state(self) -> dict[str, Any]:
        return {"text": TEXT_STATE, "audio": audio.AUDIO_CONFIG}


def griffin_lim(log_mel: torch.Tensor, iterations: int = 32) -> torch.Tensor:
    """(frames, n_mels) log-mel -> waveform, by inverting the mel filterbank (least squares) and
    Griffin-Lim phase recovery: no parameters, the same for every model."""
    import torchaudio

    if not bool(torch.isfinite(log_mel).all()):
        # a model's NaN or infinite output cannot be heard (the mel inversion's solver fails on
        # it): NaN samples of the length it stands for, which audio metrics leave unscored
        return torch.full((max(log_mel.shape[0] - 1, 0) * audio.HOP_LENGTH,), math.nan)
    if log_mel.shape[0] <= audio.N_FFT // audio.HOP_LENGTH:
        # too short for one STFT window (an untrained student may predict a frame or two): the
        # clip is silence of the length it stands for
        return torch.zeros(max(log_mel.shape[0] - 1, 0) * audio.HOP_LENGTH)
    inverse = torchaudio.transforms.InverseMelScale(n_stft=audio.N_FFT // 2 + 1, n_mels=audio.N_MELS,
                                                    sample_rate=audio.SAMPLE_RATE, f_min=audio.F_MIN,
                                                    f_max=audio.F_MAX)
    gl = torchaudio.transforms.GriffinLim(n_fft=audio.N_FFT, win_length=audio.WIN_LENGTH, hop_length=audio.HOP_LENGTH,
                                          power=1.0, n_iter=iterations)
    torch.manual_seed(0)  # Griffin-Lim starts from random phases: the same clip every time
    with torch.no_grad():
        return gl(inverse(torch.exp(log_mel.T)).clamp(min=0))


class SynthesizedMel(np.ndarray):
    """A predicted (frames, n_mels) log-mel, read as a plain array everywhere, which also says
    whether the model's decoding was cut off at its length bound: ``cut_off`` True (Tacotron2's
    stop token never fired, FastSpeech's durations overran ``max_frames``), False (it ended on
    its own), None (unknown: the model reports no ``hidden["stopped"]``, or the target drops
    hidden states, as ONNX Runtime does). It rides on the prediction because a metric sees the
    predictions, not the model output the task read it from."""

    cut_off: bool | None = None

    @classmethod
    def of(cls, mel: np.ndarray, cut_off: bool | None) -> "SynthesizedMel":
        out = np.asarray(mel).view(cls)
        out.cut_off = cut_off
        return out

    def __array_finalize__(self, obj) -> None:
        self.cut_off = getattr(obj, "cut_off", None)

    def __reduce__(self):
        # the flag survives pickling (a metric scoring in worker processes), which an
        # ndarray subclass's attributes do not by default
        rebuild, args, state = super().__reduce__()
        return rebuild, args, (state, self.cut_off)

    def __setstate__(self, state) -> None:
        array_state, self.cut_off = state
        super().__setstate__(array_state)


def _check_ids(uid: str, ids: torch.Tensor) -> None:
    """One line naming the utterance, instead of an embedding's IndexError deep in a model or an
    empty utterance that a recurrent encoder cannot pack."""
    if ids.ndim != 1:
        raise DataError(f"utterance {uid}: input of shape {tuple(ids.shape)} is not a sequence of phoneme ids")
    if ids.numel() == 0:
        raise DataError(f"utterance {uid}: no phonemes to synthesize")
    low, high = int(ids.min()), int(ids.max())
    if low < 1 or high >= len(SYMBOLS):
        bad = low if low < 1 else high
        raise DataError(f"utterance {uid}: phoneme id {bad} is outside the symbol table {TEXT_VERSION} "
                        f"(ids 1..{len(SYMBOLS) - 1}; 0 is padding)")


class PhonemeIds(Frontend):
    """Phoneme ids pass through unchanged: an acoustic model embeds them itself. Exported with
    int64 ids in the symbol table (``example_features``), not random floats."""

    export_lengths = (48, 33)

    def __init__(self, options=None, **context):
        super().__init__()
        self.output_dim = len(SYMBOLS)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs, lengths

    def example_features(self, length: int) -> torch.Tensor:
        return torch.randint(1, len(SYMBOLS), (1, length), dtype=torch.long)
