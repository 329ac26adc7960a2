"""What each kind of component provides. Plugins implement these; the core only calls them.

Nothing here assumes audio in or text out: a Task turns examples into batches and model
outputs into predictions, so ASR, enhancement and TTS share one runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Example:
    """One utterance: an id unique within its corpus, the model input and the reference."""

    id: str
    input: Any
    target: Any
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Corpus:
    """A training set and named test sets (e.g. ``test-seen``, ``test-unseen``)."""

    name: str
    train: list[Example]
    tests: dict[str, list[Example]]
    info: dict[str, Any]
    fingerprint: str  # content hash: changes whenever any example's data changes


@dataclass
class Batch:
    """Padded inputs and targets of several examples, as a Task collates them."""

    ids: list[str]
    inputs: torch.Tensor
    input_lengths: torch.Tensor
    targets: Any = None
    target_lengths: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelOutput:
    """A model's output sequence, its valid lengths, and named hidden states for hint losses.

    ``output`` is (batch, time, channels); every ``hidden`` tensor is (batch, time, dim)
    and may run at another frame rate than ``output``.
    """

    output: torch.Tensor
    lengths: torch.Tensor
    hidden: dict[str, torch.Tensor] = field(default_factory=dict)
    #: valid steps of a hidden state whose length does not follow the output's frame rate (a
    #: synthesizer's per-phoneme durations next to its per-frame mels); others are inferred
    hidden_lengths: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """What a model factory needs to know: input feature size, output size, task extras."""

    input_dim: int
    output_dim: int
    extras: Mapping[str, Any] = field(default_factory=dict)


class Model(nn.Module):
    """A teacher or student. ``hidden_dims`` names the layers a hint loss may match."""

    hidden_dims: dict[str, int] = {}
    #: True for a model that runs outside PyTorch, in a runtime of its own (a pretrained
    #: recognizer as a ``references:`` row). It has its own front end, so it receives the task's
    #: inputs (the waveforms), not the suite front end's features. Only a target that runs a model
    #: as it is given (``Target.runs_as_is``: eager on this machine's CPU) can evaluate it; on the
    #: others its row is skipped, with the reason. Its size is ``artifact_bytes()``; parameters
    #: and FLOPs, which PyTorch cannot see, are not reported.
    external: bool = False
    #: True for a teacher that combines the suite's other teachers (several teachers per student):
    #: its factory also receives ``teachers={label: Model}``, the teachers its options name (listed
    #: before it in the suite, each trained and cached once), and kdbench never trains it.
    combines: bool = False

    def teacher_forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: "Batch") -> ModelOutput:
        """What a student distils from, given the training batch (its targets too): ``forward`` by
        default. A teacher that chooses, per utterance, which of its members to follow (the one
        closest to the transcript) overrides it; its evaluated row still comes from ``forward``,
        which never sees the targets."""
        return self(features, lengths)

    def artifact_bytes(self) -> int:
        """An external model's size as deployed: the bytes of the files it loads."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError


class Frontend(nn.Module):
    """Fixed transform from padded raw inputs to model features: ``(x, lengths) -> (feats, lengths)``."""

    output_dim: int = 0
    #: the shortest input (samples of a waveform) it can featurise, e.g. one analysis window;
    #: the runner refuses a corpus with a shorter example before anything trains, naming it
    min_input_length: int = 0
    #: two feature-sequence lengths to export a model at and then check the exported graph on
    #: (a length it was not exported with); long enough for any window the model applies
    export_lengths: tuple[int, int] = (200, 137)

    def example_features(self, length: int) -> torch.Tensor:
        """One utterance of features as the model receives them, (1, length, output_dim), to
        export a model with: random floats by default; a front end whose features are token ids
        returns int64 ids in its vocabulary instead."""
        return torch.randn(1, length, self.output_dim)


class Augmentation(ABC):
    """A training-time perturbation of one example's input (stage ``input``) or features
    (stage ``features``). Drawing all randomness from ``generator`` lets kdbench replay the
    exact perturbation for the teacher and the student."""

    stage: str = "input"

    @abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class Compression(ABC):
    """A change to a student's network around its distillation: quantization-aware training,
    pruning. A suite's ``compressions`` are crossed with its students like the other axes (each
    student also runs without), and the runner calls, on every run a compression is crossed with:

    * ``prepare(model)`` on the freshly built student, before the first training step (insert fake
      quantizers; prune before training). It returns the model to train.
    * ``step(model, progress)`` after every step, ``progress`` in (0, 1] (a gradual schedule). It
      returns True when it replaced parameters (a pruning step shrank them): the optimizer is then
      rebuilt over the new ones at the same point of its learning-rate schedule (Adam's moments
      restart).
    * ``finish(model)`` after the last step: the model that is saved, evaluated and exported to the
      targets (fake quantizers stripped, so the int8 targets quantize weights that learned to live
      with int8; a one-shot pruning after distillation).
    * ``restore(model, state)`` on a freshly built student and the saved ``state_dict``: the trained
      model again (a pruned one has other shapes than its options build).

    After ``finish``, ``fine_tune_steps`` more steps of the run's own loss (KD included) train what
    it returned, at ``fine_tune_lr_scale`` times the suite's learning rate, without warm-up (a
    pruned student recovers; 0: none).

    A compression that cannot handle a student raises ``ValueError`` naming the option, from
    ``prepare``: the run fails with that line instead of silently training without compression."""

    fine_tune_steps: int = 0
    fine_tune_lr_scale: float = 1.0

    def prepare(self, model: "Model") -> "Model":
        return model

    def step(self, model: "Model", progress: float) -> bool:
        """After every training step; True when the model's parameters were replaced."""
        return False

    def finish(self, model: "Model") -> "Model":
        return model

    def restore(self, model: "Model", state: dict[str, Any]) -> "Model":
        model.load_state_dict(state)
        return model


class Task(ABC):
    """Turns examples into batches and model outputs into predictions comparable to references."""

    #: the loss a teacher is trained with when no checkpoint is given
    default_loss: str = ""

    def setup(self, corpus: Corpus) -> None:
        """Learn whatever depends on the data (a vocabulary, ...). Called before anything else."""

    @abstractmethod
    def output_dim(self) -> int: ...

    @abstractmethod
    def collate(self, examples: Sequence[Example]) -> Batch: ...

    @abstractmethod
    def predict(self, output: ModelOutput) -> list[Any]:
        """One prediction per batch item (a transcript, a waveform, ...)."""

    def reference(self, example: Example) -> Any:
        return example.target

    def train_forward(self, model: "Model", features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> ModelOutput:
        """How the model runs while it trains. By default as it runs deployed; a task may pass
        what only training has: targets for teacher forcing (Tacotron2), ground-truth durations
        (FastSpeech). The built-in convention: a model's ``forward_train(features, lengths,
        batch)``, when it has one."""
        forward_train = getattr(model, "forward_train", None)
        if forward_train is not None:
            return forward_train(features, lengths, batch)
        return model(features, lengths)

    def infer(self, deployed: nn.Module, batch: Batch) -> ModelOutput:
        """How a deployed model (front end included) runs on a collated batch in evaluation."""
        return deployed(batch.inputs, batch.input_lengths)

    def seconds(self, example: Example, output: ModelOutput | None = None) -> float:
        """The audio seconds that speed and compute are normalised by (a real-time factor is
        compute time over these). By default the input audio's duration (``meta["duration"]``);
        a synthesizer returns the seconds it produced, read from ``output`` (the model's output
        for this example alone)."""
        return float(example.meta.get("duration", 0.0) or 0.0)

    def audio(self, prediction: Any) -> tuple[np.ndarray, int] | None:
        """What one prediction sounds like: ``(waveform, sample_rate)``, a 1-D float array in
        [-1, 1]; None (the default) for predictions that are not audio (a transcript). An
        enhancer or vocoder returns its prediction; a synthesizer predicting log-mels renders
        them with a fixed vocoder. Audio metrics (DNSMOS, an ASR judge) and the clips kept to
        listen to both hear this, so they hear the same thing."""
        return None

    def save_prediction(self, prediction: Any, path: Path) -> Path | None:
        """Write one prediction a person can listen to at ``path`` plus the suffix the task
        chooses, and return that path; None for predictions kept as text only. By default the
        prediction's ``audio`` as 16-bit WAV."""
        sound = self.audio(prediction)
        if sound is None:
            return None
        import soundfile as sf

        wave, rate = sound
        out = path.with_suffix(".wav")
        sf.write(out, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), int(rate), subtype="PCM_16")
        return out

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state that changes outputs (part of cache keys)."""
        return {}


class Loss(nn.Module):
    """A training objective. A KD loss declares what it needs from the teacher."""

    requires_teacher: bool = False
    #: how far training has gone, in [0, 1): set by the training loop before every step (0 at
    #: the first), so a loss can follow a schedule (a temperature annealed, a guided-attention
    #: weight decayed) without knowing the step count
    progress: float = 0.0
    #: True: the teacher outputs this loss receives come from the task's ``train_forward`` run on
    #: the student's very batch (teacher forcing: the recording's previous samples for a WaveRNN,
    #: its mels for a Tacotron2), in eval mode without gradients, instead of the teacher's
    #: free-running ``forward``. A distribution over the next step is comparable with the
    #: student's only when both read the same history. Read from the class, like ``requires_teacher``.
    teacher_forcing: bool = False

    @classmethod
    def teacher_layers_for(cls, options: Any) -> tuple[str, ...]:
        """Teacher hidden layers this loss reads, so the teacher-output cache stores them."""
        return ()

    def annealed(self, start: float, end: float | None) -> float:
        """A value moved linearly from ``start`` to ``end`` over training (``progress``), or
        ``start`` throughout when ``end`` is None: a KD temperature annealed, say."""
        return start if end is None else start + (end - start) * self.progress

    def student_batch(self, batch: Batch, teacher: ModelOutput | None) -> Batch:
        """The batch the student trains on. Unchanged by default; sequence-level KD replaces
        the targets (and, for a synthesizer, the durations) with the teacher's outputs, so the
        student's own ``forward_train`` sees them too. Replacing ``inputs`` (and
        ``input_lengths``) makes the teacher's outputs the student's inputs: the training loop
        then runs the front end on them, as on the data's."""
        return batch

    def forward(self, student: ModelOutput, batch: Batch, teacher: ModelOutput | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Measurement:
    """One reported number with what a leaderboard and the regression gate need to know about
    it. A metric declares its own semantics, so the core sorts, plots and gates a new metric in a
    new unit (joules, say) without knowing its name."""

    name: str
    value: float
    unit: str = ""
    higher_is_better: bool = False
    coverage: tuple[int, int] | None = None  # (scored, total) utterances
    #: ``quality`` (what distillation should improve: ranked, compared with the teacher),
    #: ``cost`` (what a deployment pays: latency, size; plotted against quality), or
    #: ``condition`` (the circumstances of the measurement, such as machine load: shown,
    #: never ranked or gated)
    kind: str = "quality"
    #: the regression gate's default for this metric, one of ``{"abs": x}`` (units),
    #: ``{"rel": x}`` (fraction of the baseline) or ``{"ratio": x}`` (factor), optionally with
    #: ``"floor": y`` (a change of at most y units is noise); None: the gate's catch-all
    tolerance: dict[str, float] | None = None
    #: axis scale when plotted: ``linear`` or ``log`` (sizes spanning orders of magnitude)
    scale: str = "linear"
    #: one of the few columns shown first (terminal summary, HTML page) and, for a cost, a
    #: Pareto axis
    headline: bool = False
    #: a cost whose teacher-over-student ratio is shown as the speed-up vs the teacher
    speedup: bool = False
    #: False for a value that restates another gated one (so one slowdown is not reported twice)
    gated: bool = True
    #: for a condition: above this value the row's numbers are suspect and the row carries a note
    warn_above: float | None = None
    #: for a condition: what that note says (default "measured under load", the built-in one)
    note: str = ""
    #: a timing (latency, RTF, achieved throughput): where a condition of its row is above its
    #: ``warn_above``, the regression gate calls a change in it inconclusive, not a regression
    timed: bool = False
    #: how the value was obtained: the implementation and its parameters (``{"judge":
    #: "pocketsphinx 5.1.1 en-us", "grammar": "word-loop"}``), kept with the value so numbers from
    #: two recipes of one metric (MCD with SPTK or DCT cepstra) are never read as one. None: the
    #: harness fills in the metric's ``config()`` when it has one.
    method: dict[str, Any] | None = None
    # Per-utterance scores (in the order of the evaluated examples) so a leaderboard can put
    # a paired bootstrap confidence interval on a difference. ``value`` must equal the
    # ``weights``-weighted mean of ``samples`` (corpus WER = per-utterance WER weighted by
    # reference words); ``weights`` None means equal weights.
    samples: list[float] | None = None
    weights: list[float] | None = None


@dataclass
class Evaluation:
    """Everything a metric may read about one model evaluated on one target."""

    split: str | None  # test-set name; None for model-level metrics (size, latency)
    examples: list[Example]
    predictions: list[Any]
    references: list[Any]
    run: Callable[[Example], Any] | None  # runs the prepared model on one example
    model: nn.Module | None  # the eager fp32 model (front end included): parameters, FLOPs
    artifact_bytes: int | None  # size of the model as deployed on the target
    extras: dict[str, Any] = field(default_factory=dict)
    # What kdbench.measurement times (model-scope metrics only): ``prepare_input(example)`` is
    # outside the timed region, ``forward(prepared)`` inside it. ``startup()`` returns ``load``
    # (set-up untimed); ``load()`` loads the target's artifact afresh and returns a new
    # ``forward``: the cold start is ``load()`` plus its first call.
    prepare_input: Callable[[Example], Any] | None = None
    forward: Callable[[Any], Any] | None = None
    startup: Callable[[], Callable[[], Callable[[Any], Any]]] | None = None
    threads: int | None = None  # intra-op threads the target runs with
    #: audio seconds of an example that speed is normalised by (``Task.seconds``: the input's,
    #: or for a synthesizer the seconds it produced)
    seconds: Callable[[Example], float] | None = None
    #: ``audio(i)``: what prediction ``i`` sounds like (``Task.audio``: ``(waveform,
    #: sample_rate)`` or None), rendered once however many metrics listen
    audio: Callable[[int], tuple[np.ndarray, int] | None] | None = None


class Metric(ABC):
    """``scope`` is ``split`` (computed per test set from predictions) or ``model``
    (computed once per target from the model itself). An optional ``config() -> dict`` says how
    the metric measures (implementation, parameters): it is recorded with every value it gives
    (``Measurement.method``)."""

    scope: str = "split"

    @abstractmethod
    def compute(self, evaluation: Evaluation) -> list[Measurement]: ...


class Target(ABC):
    """Where a model is re-measured. ``prepare`` returns the model as it runs there; kdbench
    then computes every metric on it, quality included, and times it with its own method
    (kdbench.measurement), so targets never time anything themselves."""

    #: intra-op threads the target runs with (recorded with every measurement)
    threads: int | None = None
    #: True for a target whose ``prepare`` runs the model as it is given (eager PyTorch on the
    #: CPU), False for one that converts it (export, quantization, another device): only the
    #: former can evaluate a model that runs outside PyTorch (``Model.external``)
    runs_as_is: bool = False

    def available(self) -> tuple[bool, str]:
        """Can this machine run the target, and if not, why (shown in the skipped row)."""
        return True, ""

    def can_run(self, model: nn.Module) -> tuple[bool, str]:
        """Can this target evaluate ``model`` here, and if not, why (the model's skipped row):
        ``available()``, and for a model that runs outside PyTorch, ``runs_as_is``."""
        ok, reason = self.available()
        if ok and getattr(model, "external", False) and not self.runs_as_is:
            return False, (f"{type(model).__name__} runs outside PyTorch; this target converts a PyTorch network "
                           "(export, quantization or another device)")
        return ok, reason

    @abstractmethod
    def prepare(self, model: nn.Module) -> nn.Module:
        """The model as deployed here: ``model`` is a ``kdbench.evaluation.Deployable`` (front
        end + model, ``(inputs, lengths) -> ModelOutput``); return a module with the same call.
        Do not modify ``model``: copy it first if the conversion works in place."""

    def startup(self, prepared: nn.Module, model: nn.Module) -> Callable[[], nn.Module]:
        """A function that loads the deployed model afresh from its artifact, as a device does
        when it starts (timed as cold start, up to the first result). By default: the state dict
        is deserialised into a copy of ``model`` and prepared again."""
        import copy
        import io

        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        skeleton = copy.deepcopy(model)

        def load() -> nn.Module:
            skeleton.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
            return self.prepare(skeleton)

        return load

    def artifact_bytes(self, model: nn.Module) -> int:
        """Size of ``model`` (as returned by ``prepare``) when deployed on this target."""
        import io

        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        return buf.getbuffer().nbytes

    def describe(self) -> dict[str, Any]:
        """What to record about this target (threads, precision, runtime ...)."""
        return {}


class Reporter(ABC):
    @abstractmethod
    def report(self, results: Any, out_dir: Any, suite_name: str) -> list[Any]:
        """Publish a results table; return the paths written."""


@dataclass
class JobFailed:
    """What an executor returns for a job it could not finish: the process doing it died (and
    its retries did too), not an error of the job's own, which ``fn`` records itself."""

    error: str


class Executor(ABC):
    """Runs a suite's jobs: in this process, or in others (kdbench.work)."""

    #: jobs run in other processes, maybe on other machines: they then track to a tracking
    #: server (an sqlite file breaks under concurrent writers) and share the cache and results
    #: folders through a filesystem every machine mounts
    distributed: bool = False
    #: measure every evaluation's quality (metrics of scope ``split``) in a phase of its own,
    #: side by side, before the exclusive timings: worth a second export per target when quality
    #: metrics cost more than timing (a TTS judge, PESQ), not for a few WERs
    quality_apart: bool = False

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """``[fn(job) for job in jobs]``, in order. ``fn`` records a failing job itself and never
        raises for one; a job whose process died is ``JobFailed``. ``fn`` pickles (a
        ``kdbench.work.Work``), so it can run anywhere kdbench is installed. When
        ``getattr(fn, "exclusive", False)``, the jobs time models: run each with a machine's
        CPUs to itself (one at a time per machine)."""

    def close(self) -> None:
        """Called once the suite's jobs are done: release what ``map`` started (a cluster)."""
