"""Run a resolved suite: obtain teachers, cache their outputs, distill every planned student,
evaluate every model on every target, track everything, and isolate failures per run."""

from __future__ import annotations

import contextlib
import copy
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from kdbench.board import from_result
from kdbench.cache import Cache, move_aside, read_weights, unreadable
from kdbench.errors import CheckpointError, SuiteError
from kdbench.evaluation import evaluate
from kdbench import records
from kdbench.hashing import file_hash, stable_hash
from kdbench import work
from kdbench.interfaces import Compression, Corpus, JobFailed, Model, ModelSpec, Task
from kdbench.pipeline import InputPipeline, check_input_lengths
from kdbench.plan import StudentRun, plan_student_runs, requires_teacher, teacher_forcing, teacher_layers
from kdbench.plugins import Registry, _one_line
from kdbench.preflight import WRITE_ERRNOS
from kdbench.provenance import provenance
from kdbench.records import MetricMeta, Row, RunIdentity, SuiteResult
from kdbench.run_store import RunStore
from kdbench.suite import Resolved, ResolvedSuite, TrainingConfig
from kdbench.teacher_outputs import TeacherOutputStore, build_teacher_outputs
from kdbench.tracking import Tracker, flatten
from kdbench.training import seed_everything, train
from kdbench.work import RunnerSpec


class Progress:
    """What the runner reports while it works; the CLI draws it with rich."""

    def stage(self, text: str) -> None: ...
    def start(self, description: str, total: int) -> Any: return None
    def update(self, handle: Any, completed: int) -> None: ...
    def stop(self, handle: Any) -> None: ...


@dataclass
class TeacherState:
    model: Model
    key: str
    label: str
    #: cached outputs, by whether they were computed teacher-forced (Loss.teacher_forcing)
    outputs: dict[bool, TeacherOutputStore] = field(default_factory=dict)


@dataclass
class Evaluated:
    """A trained (or loaded) model about to be measured on every target, and what its
    evaluation runs are tagged with."""

    model: Model
    run_key: str
    identity: RunIdentity
    reused: bool
    parent: str | None  # the model's MLflow run
    tags: dict[str, str]  # identity, hashes and providers, shared by all its evaluations


@dataclass
class Trained:
    """What training one planned run left for its evaluations (picklable: it may cross processes)."""

    key: str
    child: str | None  # its MLflow run
    fresh: bool  # the MLflow run is this invocation's (not one a rerun found finished)
    reused: bool  # the weights were trained before
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # added to the suite's stats


@dataclass
class Measured:
    rows: list[Row]
    columns: dict[str, MetricMeta]


def _error_text(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Runner:
    def __init__(self, rs: ResolvedSuite, registry: Registry, *, cache: Cache, results_root: Path,
                 tracker: Tracker | None, force: bool = False, force_teachers: bool = False,
                 reevaluate: bool = False, progress: Progress | None = None):
        self.rs = rs
        self.registry = registry
        self.cache = cache
        self.out_dir = Path(results_root) / rs.name
        self.store = RunStore(self.out_dir)
        self.tracker = tracker
        self.force = force or force_teachers
        self.force_teachers = force_teachers
        self.reevaluate = reevaluate or self.force
        self.progress = progress or Progress()
        self.columns: dict[str, MetricMeta] = {}
        self.write_error: OSError | None = None  # a report that could not be written (see run)
        self.spec: RunnerSpec | None = None  # set in a process that works for another's runner (attach)
        self.teachers: dict[int, TeacherState] = {}
        self.stats: dict[str, Any] = {"teacher_forward_passes": 0, "teachers_trained": 0,
                                      "students_trained": 0, "runs_reused": 0}

    # ---- set-up -------------------------------------------------------------------------
    def _prepare(self) -> None:
        rs = self.rs
        self.progress.stage(f"loading dataset {rs.dataset.label}")
        self.corpus: Corpus = rs.dataset.build(cache_dir=self.cache.root).load()
        self.task: Task = rs.task.build()
        self.task.setup(self.corpus)
        self.frontend = rs.frontend.build(corpus_info=self.corpus.info)
        check_input_lengths(self.corpus, self.frontend)
        augmentations = [a.build(corpus_info=self.corpus.info) for a in rs.augmentations]
        self.base = {
            "data": self.corpus.fingerprint,
            "task": {**rs.task.config(), "state": self.task.state()},
            "frontend": rs.frontend.config(),
            "augmentations": [a.config() for a in rs.augmentations],
            "teacher_outputs": rs.suite.teacher_outputs.model_dump(),
        }
        self.pipeline = InputPipeline(self.task, self.frontend, augmentations, salt=stable_hash(self.base))
        self.model_spec = ModelSpec(input_dim=self.frontend.output_dim, output_dim=self.task.output_dim(),
                                    extras=dict(self.corpus.info))
        # a metric may build another registered component (an ASR model judging synthesized speech)
        self.metrics = [m.build(resolve=self._resolve) for m in rs.metrics]
        self.targets = [(t, t.build()) for t in rs.targets]
        self._check_compressions()

    def _compression(self, resolved: Resolved) -> Compression:
        # the front end: what one utterance of features looks like (a pruner traces the model on it)
        return resolved.build(model_spec=self.model_spec, frontend=self.frontend)

    def _check_compressions(self) -> None:
        """Every compression prepared and finished on every student it is crossed with, before
        anything trains: a student it cannot compress is one line here, not a failed row per run
        and target later. A compression that changes the student's shapes (pruning) cannot be
        crossed with a loss that reads its hidden layers: a hint projects them from their width."""
        hints = [(li, loss) for li, loss in enumerate(self.rs.losses) if teacher_layers(loss)]
        for ci, compression in enumerate(self.rs.compressions):
            for si, student in enumerate(self.rs.students):
                if not student.ref.compress:
                    continue
                where = f"{self.rs.path}: {compression.path} ({compression.label}) on students[{si}] ({student.label})"
                model = student.build(model_spec=self.model_spec)
                shapes = _shapes(model)
                try:
                    c = self._compression(compression)
                    reshaped = _shapes(c.finish(c.prepare(model))) != shapes
                except ValueError as exc:
                    raise SuiteError(f"{where}: {_one_line(exc)}") from None
                if reshaped and hints:
                    li, loss = hints[0]
                    raise SuiteError(f"{where} with losses[{li}] ({loss.label}): the loss reads the student's hidden "
                                     f"layers through a projection sized by their width, which {compression.label} "
                                     "changes; leave one of them out of the suite")

    # ---- teachers and references ----------------------------------------------------------
    def _providers(self, **models: Resolved | None) -> dict[str, str]:
        """Provider tags of everything a row depends on besides its targets and metrics."""
        rs = self.rs
        return records.provider_tags({"task": rs.task, "dataset": rs.dataset, "frontend": rs.frontend, **models})

    def _fixed_model_rows(self, role: str, resolved: Resolved, obtain: Callable[[], TeacherState],
                          loss: Resolved | None = None) -> list[Row]:
        """Rows of a model that is not distilled in this suite (a teacher, a reference)."""
        identity = RunIdentity(self.rs.name, role, resolved.label, loss=loss.label if loss is not None else "")
        tags = {**identity.tags(), **self._providers(**{role: resolved})}
        child = self._track_start(f"{role} {resolved.label}", {records.RUN_KIND: role, **tags},
                                  key=f"{role} {resolved.label}")
        key = ""
        try:
            state = obtain()
            key = state.key
            tags.update({records.TEACHER_HASH: key if role == "teacher" else "", records.CONFIG_HASH: key})
            if child:
                self.tracker.log(child, params=flatten("", {role: resolved.config(), "base": self.base}),
                                 tags={f"kdbench.{role}_key": key, **tags, **self.provenance})
            rows = self._evaluate_on_targets(Evaluated(state.model, key, identity, False, child, tags))
            self._track_finish(child, all(r.status != "failed" for r in rows))
            return rows
        except Exception as exc:
            self._track_finish(child, False, error=_error_text(exc), trace=traceback.format_exc())
            return [_failed(identity, key, t.label, exc) for t, _ in self.targets]

    def _obtain_reference(self, index: int) -> TeacherState:
        ref = self.rs.suite.references[index]
        resolved = self.rs.references[index]
        # a reference may be the data itself (the TTS task's recordings), so it may read the corpus;
        # a pretrained recognizer writes its transcripts in the task's output alphabet
        model: Model = resolved.build(model_spec=self.model_spec, corpus=self.corpus, task=self.task)
        checkpoint = None
        if ref.checkpoint is not None:
            load_checkpoint(model, ref.checkpoint, f"references[{index}].checkpoint")
            checkpoint = file_hash(ref.checkpoint)
        data = {k: v for k, v in self.base.items() if k != "teacher_outputs"}
        key = records.loaded_model_key("reference", resolved.config(), checkpoint, data)
        return TeacherState(model.eval(), key, resolved.label)


    def _obtain_teacher(self, index: int) -> TeacherState:
        state = self._teacher_state(index)
        self.teachers[index] = state
        return state

    def _teacher_state(self, index: int, may_train: bool = True) -> TeacherState:
        ref = self.rs.suite.teachers[index]
        resolved = self.rs.teachers[index]
        seed_everything(0)  # initial weights from the seed, not from whatever ran before in this process
        if getattr(resolved.component.factory, "combines", False):
            return self._combined_teacher(index, may_train)
        model: Model = resolved.build(model_spec=self.model_spec)
        if ref.checkpoint is not None:
            load_checkpoint(model, ref.checkpoint, f"teachers[{index}].checkpoint")  # first: it names a bad path
            key = records.loaded_model_key("teacher", resolved.config(), file_hash(ref.checkpoint), self.base)
            return TeacherState(model, key, resolved.label)
        training = ref.training or self.rs.suite.training
        data = {k: v for k, v in self.base.items() if k != "teacher_outputs"}
        trained_with = self.rs.teacher_losses[index]  # never None without a checkpoint (resolve_suite)
        key = records.trained_teacher_key(resolved.config(), training.model_dump(), data, trained_with.config())
        state = None if self.force_teachers else self.cache.load("teachers", key)
        if state is not None and not fits(model, state):  # a foreign entry: retrain, not fail every rerun
            move_aside(self.cache.path("teachers", key), f"not the weights of {resolved.label}")
            state = None
        if state is not None:
            model.load_state_dict(state)
        elif not may_train:  # a worker: the driver trained it, so the cache should hold it
            raise RuntimeError(f"teacher {resolved.label!r} is not in the cache {self.cache.root} here: "
                               "every node must mount the cache folder the suite was started with")
        else:
            loss = trained_with.build(student=model, teacher=None, task=self.task)
            self._train(f"teacher {resolved.label}", model, loss, training, seed=0, teacher=None, copies=None)
            self.cache.save("teachers", key, model.state_dict())
            self.stats["teachers_trained"] += 1
        model.eval()
        return TeacherState(model, key, resolved.label)

    def _combined_teacher(self, index: int, may_train: bool) -> TeacherState:
        """A teacher made of the suite's other teachers (Model.combines): each member obtained (and
        cached) as a teacher of its own, none trained again; its key is its members' keys."""
        resolved = self.rs.teachers[index]
        labels = [t.label for t in self.rs.teachers]
        members: dict[str, TeacherState] = {}
        for label in resolved.options.teachers:
            i = labels.index(label)  # check_suite: a teacher listed before this one
            state = self.teachers.get(i) or (self._teacher(i) if self.spec is not None else None)
            if state is None:
                state = self._teacher_state(i, may_train)
                self.teachers[i] = state
            members[label] = state
        model: Model = resolved.build(model_spec=self.model_spec, teachers={k: s.model for k, s in members.items()})
        key = records.loaded_model_key("teacher", resolved.config(), stable_hash({k: s.key for k, s in members.items()}),
                                       self.base)
        return TeacherState(model.eval(), key, resolved.label)

    def _teacher_forward(self, forcing: bool) -> Callable:
        """How the teacher runs for a loss: ``teacher_forward`` on the batch (by default free
        running, ``model(features, lengths)``), or teacher-forced through the task's
        ``train_forward`` on the student's batch."""
        if not forcing:
            return lambda model, feats: (model.teacher_forward(feats.features, feats.lengths, feats.batch)
                                         if isinstance(model, Model) else model(feats.features, feats.lengths))
        return lambda model, feats: self.task.train_forward(model, feats.features, feats.lengths, feats.batch)

    def _teacher_outputs(self, teacher: TeacherState, forcing: bool = False) -> TeacherOutputStore:
        if forcing not in teacher.outputs:
            layers = sorted({layer for loss in self.rs.losses
                             if requires_teacher(loss) and teacher_forcing(loss) == forcing
                             for layer in teacher_layers(loss)})
            cfg = self.rs.suite.teacher_outputs
            copies = cfg.copies if self.pipeline.augments else 1
            handle = self.progress.start(f"teacher outputs {teacher.label}" + (" (teacher-forced)" if forcing else ""),
                                         len(self.corpus.train) * copies)
            key_parts = {"teacher": teacher.key, "base": self.base}
            if forcing:  # only then: the keys of free-running outputs cached before stay valid
                key_parts["teacher_forcing"] = True
            if self.force_teachers:
                key_parts["forced"] = time.time()
            outputs = teacher.outputs[forcing] = build_teacher_outputs(
                self.cache, teacher.model, key_parts, self.pipeline, self.corpus.train, copies, layers,
                on_progress=lambda done, total: self.progress.update(handle, done),
                forward=self._teacher_forward(forcing))
            self.progress.stop(handle)
            self.stats["teacher_forward_passes"] += outputs.forward_passes
        return teacher.outputs[forcing]

    # ---- training -----------------------------------------------------------------------
    def _train(self, description: str, model, loss, training: TrainingConfig, seed: int, teacher, copies,
               compression: Compression | None = None):
        handle = self.progress.start(description, training.steps)

        def on_step(step: int, _) -> bool:
            self.progress.update(handle, step)
            # a gradual schedule (pruning) follows the training; True: it replaced parameters
            return compression is not None and bool(compression.step(model, step / training.steps))

        try:
            return train(model, loss, self.pipeline, self.corpus.train, training, seed, teacher=teacher,
                         copies=copies, on_step=on_step)
        finally:
            self.progress.stop(handle)

    def _teacher_source(self, teacher: TeacherState, forcing: bool = False,
                        counts: dict[str, int] | None = None) -> tuple[Callable, int | None]:
        """Cached mode: look up stored outputs of the replayed copy. Online: run the teacher.
        ``forcing``: teacher-forced on the batch (Loss.teacher_forcing), else free running.
        ``counts``: where online batches are counted (the job's, which the suite adds up)."""
        counts = {} if counts is None else counts
        if self.rs.suite.teacher_outputs.mode == "cached":
            store = self._teacher_outputs(teacher, forcing)
            copies = self.rs.suite.teacher_outputs.copies if self.pipeline.augments else None
            return (lambda feats, copy: store.batch(feats.batch.ids, copy)), copies
        forward = self._teacher_forward(forcing)

        def online(feats, copy):
            counts["teacher_online_batches"] = counts.get("teacher_online_batches", 0) + 1
            with torch.no_grad():
                return forward(teacher.model, feats)

        return online, None

    def _cached_teacher_outputs(self, runs: list[StudentRun]) -> None:
        """Every cached teacher output a run will read, computed here, once, before the runs are
        handed out: runs in other processes then only read them (kdbench.work)."""
        if self.rs.suite.teacher_outputs.mode != "cached":
            return
        for run in runs:
            teacher = self.teachers.get(run.teacher) if run.teacher is not None else None
            if teacher is not None and requires_teacher(run.loss):
                try:
                    self._teacher_outputs(teacher, teacher_forcing(run.loss))
                except Exception:  # the runs that need them fail with it, recorded (train), the rest go on
                    continue

    def _teacher(self, index: int | None) -> TeacherState | None:
        """The driver's teacher; in another process the one the driver obtained, from the cache."""
        if index is None or index in self.teachers or self.spec is None or index not in self.spec.teacher_keys:
            return self.teachers.get(index) if index is not None else None
        state = self._teacher_state(index, may_train=False)
        if state.key != self.spec.teacher_keys[index]:  # another kdbench, or other data, on this node
            raise RuntimeError(f"teacher {state.label!r} has key {state.key} here, {self.spec.teacher_keys[index]} "
                               "where the suite started: every node needs the same kdbench, plugins and data")
        self.teachers[index] = state
        return state

    def _student(self, index: int) -> tuple[StudentRun, str, RunIdentity, dict[str, str]]:
        """A planned run: its key, identity and tags."""
        run = self.runs[index]
        training = self.rs.suite.training
        teacher_keys = self.spec.teacher_keys if self.spec else {i: t.key for i, t in self.teachers.items()}
        teacher_label = self.rs.teachers[run.teacher].label if run.teacher is not None else ""
        key = run.key(self.base, teacher_keys, training.model_dump())
        identity = RunIdentity(self.rs.name, "student", run.label, teacher_label, run.loss.label, run.seed)
        teacher_key = teacher_keys.get(run.teacher, "") if run.teacher is not None else ""
        student, loss_config = run.student_config(), run.loss.config()
        tags = {**identity.tags(), records.RUN_KEY: key, records.TEACHER_HASH: teacher_key,
                records.CONFIG_HASH: records.config_hash(self.base, student, loss_config, teacher_key,
                                                         training.model_dump()),
                records.STUDENT_HASH: records.student_hash(self.base, student, training.model_dump()),
                **self._providers(student=run.student, loss=run.loss,
                                  teacher=self.rs.teachers[run.teacher] if run.teacher is not None else None)}
        return run, key, identity, tags

    def train(self, index: int) -> Trained:
        """Distil planned run ``index`` (or find it done): its weights in the run store, its
        training in its MLflow run, which its evaluations will nest under."""
        run, key, identity, tags = self._student(index)
        training = self.rs.suite.training
        counts: dict[str, int] = {}
        child = self._track_start(f"student {identity.describe()}", {records.RUN_KIND: "student", **tags},
                                  key=f"student {key}")
        fresh = bool(child) and child not in getattr(self.tracker, "done", ())
        try:
            teacher = self._teacher(run.teacher)
            if run.teacher is not None and teacher is None:
                raise RuntimeError(f"teacher {identity.teacher!r} is unavailable (it failed earlier)")
            # the seed decides the initial weights (and a loss's own, such as a hint projection),
            # not whatever this process ran before: a cached teacher or a fresh one
            seed_everything(run.seed)
            model: Model = run.student.build(model_spec=self.model_spec)
            compression = self._compression(run.compression) if run.compression else None
            record = None if self.force else self.store.load_training(key)
            state = self.store.load_checkpoint(key) if record is not None else None  # unreadable: retrained
            if state is not None and not _restores(compression, model, state):
                move_aside(self.store.checkpoint_path(key), f"not the weights of {run.label}")
                state = None
            reused = state is not None
            if reused:
                counts["runs_reused"] = 1
            else:
                if compression is not None:  # before the loss sees the student: fake quantizers, a pruned net
                    model = compression.prepare(model)
                loss = run.loss.build(student=model, teacher=teacher.model if teacher else None, task=self.task)
                source, copies = (self._teacher_source(teacher, teacher_forcing(run.loss), counts)
                                  if (teacher and loss.requires_teacher) else (None, None))
                report = self._train(f"{run.label} · {run.loss.label} · seed {run.seed}", model, loss,
                                     training, run.seed, source, copies, compression)
                if compression is not None:  # what is saved, evaluated and exported to the targets
                    model = compression.finish(model)
                    if compression.fine_tune_steps:  # the compressed student recovers under the same loss
                        tune = training.model_copy(update={"steps": compression.fine_tune_steps, "warmup_steps": 0,
                                                           "lr": training.lr * compression.fine_tune_lr_scale})
                        tuned = self._train(f"{run.label} · {run.loss.label} · seed {run.seed} · fine-tune", model,
                                            loss, tune, run.seed, source, copies)
                        report.seconds += tuned.seconds
                        report.history += [(training.steps + s, v) for s, v in tuned.history]
                        report.final_loss = tuned.final_loss
                self.store.save_checkpoint(key, model.state_dict())
                record = {"seconds": report.seconds, "final_loss": report.final_loss, "history": report.history,
                          "config": {"student": run.student_config(), "loss": run.loss.config(),
                                     "teacher": teacher.key if teacher else None, "seed": run.seed,
                                     "training": training.model_dump()}}
                self.store.save_training(key, record)
                counts["students_trained"] = 1
            if child:
                self.tracker.log(child, params=flatten("", {**record["config"], "base": self.base}),
                                 metrics={"train.seconds": record["seconds"], "train.final_loss": record["final_loss"]},
                                 tags={records.REUSED: reused, **self.provenance},
                                 steps=[("train.loss", s, v) for s, v in record["history"]])
                self.tracker.artifact(child, self.store.checkpoint_path(key))
                self._track_finish(child, True)  # trained; an evaluation that fails marks it (evaluate)
            return Trained(key, child, fresh, reused, counts=counts)
        except Exception as exc:  # one crashed run is recorded; the suite goes on
            self._track_finish(child, False, error=_error_text(exc), trace=traceback.format_exc())
            return Trained(key, child, fresh, False, error=_error_text(exc), counts=counts)

    def _trained_model(self, run: StudentRun, key: str) -> Model:
        """A trained run's model, read back from the run store."""
        model: Model = run.student.build(model_spec=self.model_spec)
        state = self.store.load_checkpoint(key)
        if state is None:
            raise RuntimeError(f"no checkpoint of run {key} in {self.store.suite_dir}: "
                               "does every node see the results folder?")
        if run.compression is not None:  # a pruned student has other shapes than its options build
            return self._compression(run.compression).restore(model, state).eval()
        model.load_state_dict(state)
        return model.eval()

    def measure_quality(self, job: tuple[int, Trained]) -> None:
        """The quality half of trained run ``job``'s evaluations, on every target (see ``evaluate``)."""
        index, trained = job
        run, key, identity, tags = self._student(index)
        if trained.error is not None:
            return
        try:
            ev = Evaluated(self._trained_model(run, key), key, identity, trained.reused, trained.child, tags)
        except Exception:  # evaluate records it
            return
        for resolved, target in self.targets:
            self._measure_quality(ev, resolved, target)

    def evaluate(self, job: tuple[int, Trained, str]) -> Measured:
        """Every target's rows of trained run ``job`` (index, training, part): "all" measured
        here, or "timing" after ``measure_quality``."""
        index, trained, part = job
        run, key, identity, tags = self._student(index)
        if trained.error is not None:
            return Measured([_failed(identity, key, t.label, trained.error) for t, _ in self.targets], {})
        try:
            model = self._trained_model(run, key)
        except Exception as exc:
            rows = [_failed(identity, key, t.label, exc) for t, _ in self.targets]
        else:
            rows = self._evaluate_on_targets(Evaluated(model, key, identity, trained.reused, trained.child, tags), part)
        failed = [r for r in rows if r.status == "failed"]
        if failed and trained.fresh:
            self._track_finish(trained.child, False, error=f"evaluation @ {failed[0].target}: {failed[0].error}")
        return Measured(rows, dict(self.columns))

    # ---- evaluation ---------------------------------------------------------------------
    def _evaluate_on_targets(self, evaluated: Evaluated, part: str = "all") -> list[Row]:
        rows = []
        n_params = sum(p.numel() for p in evaluated.model.parameters())
        handle = self.progress.start(f"evaluate {evaluated.identity.describe()}", len(self.targets))
        try:
            for resolved, target in self.targets:
                rows.append(self._evaluate_on_target(evaluated, n_params, resolved, target, part))
                self.progress.update(handle, len(rows))
        finally:
            self.progress.stop(handle)
        return rows

    def _measure(self, ev: Evaluated, resolved: Resolved, target: Any, target_key: str,
                 scopes: tuple[str, ...]) -> dict[str, Any]:
        """Evaluate on one target, keeping scores, predictions and audio in the run store: the
        record of what ``scopes`` measured (per-utterance samples go to their own file)."""
        audio_dir = self.store.audio_dir(ev.run_key, target_key)
        result = evaluate(ev.model, self.frontend, self.task, self.corpus.tests, self.metrics, target,
                          audio_dir=audio_dir, scopes=scopes)
        if "split" in scopes:
            self.store.save_scores(ev.run_key, target_key, result.scores)
            self.store.save_predictions(ev.run_key, target_key, result.predictions)
        return {"measurements": [{k: v for k, v in m.__dict__.items() if k not in ("samples", "weights")}
                                 for m in result.measurements],
                "target": {**resolved.config(), **target.describe()},
                "audio": [str(p.relative_to(audio_dir)) for p in result.audio]}

    def _measure_quality(self, ev: Evaluated, resolved: Resolved, target: Any) -> None:
        """The quality half of an evaluation, ahead of its timing (``part="timing"``), by a job
        that may share its machine: the timing job then only times, with the machine to itself."""
        target_key = records.target_key(resolved.config(), [m.config() for m in self.rs.metrics])
        if not target.can_run(ev.model)[0] or (not self.reevaluate and self.store.load_evaluation(ev.run_key, target_key)):
            return
        try:
            self.store.save_quality(ev.run_key, target_key, self._measure(ev, resolved, target, target_key, ("split",)))
        except Exception:  # the timing job measures it again and records the failure in its row
            return

    def _evaluate_on_target(self, ev: Evaluated, n_params: int, resolved: Resolved, target: Any,
                            part: str = "all") -> Row:
        """``part``: "all", or "timing" when the quality half was measured before (``_measure_quality``)."""
        identity = ev.identity
        row = Row(identity.role, identity.model, identity.teacher, identity.loss, identity.seed, resolved.label,
                  "ok", ev.run_key, params=n_params, reused=ev.reused, started=time.time())
        ok, reason = target.can_run(ev.model)
        if not ok:
            row.status, row.error = "skipped", reason
            return row
        target_key = records.target_key(resolved.config(), [m.config() for m in self.rs.metrics])
        record = None if self.reevaluate else self.store.load_evaluation(ev.run_key, target_key)
        try:
            if record is None:
                quality = self.store.load_quality(ev.run_key, target_key) if part == "timing" else None
                if quality is None:
                    record = self._measure(ev, resolved, target, target_key, ("split", "model"))
                else:
                    record = self._measure(ev, resolved, target, target_key, ("model",))
                    record.update(measurements=quality["measurements"] + record["measurements"],
                                  audio=quality["audio"])
                self.store.save_evaluation(ev.run_key, target_key, record, {})
            else:
                row.reused = True
        except Exception as exc:
            row.status, row.error = "failed", _error_text(exc)
            return row
        for m in record["measurements"]:
            row.measurements[m["name"]] = m["value"]
            self.columns.setdefault(m["name"], MetricMeta.of(m))
        primary = records.primary_metric({m["name"]: MetricMeta.of(m) for m in record["measurements"]})
        row.tags = {**ev.tags, records.RUN_KIND: "evaluation", records.TARGET: resolved.label,
                    records.RUN_KEY: ev.run_key, records.TARGET_KEY: target_key,
                    records.EVALUATION_HASH: records.evaluation_hash(ev.tags.get(records.CONFIG_HASH, ev.run_key),
                                                                     target_key),
                    **records.provider_tags({"target": resolved,
                                             **{f"metric.{m.label}": m for m in self.rs.metrics}}),
                    **self.provenance, **records.metric_tags(record["measurements"]),
                    **({records.PRIMARY_METRIC: primary} if primary else {})}
        scores = self.store.scores_path(ev.run_key, target_key)
        row.scores_path = scores if scores.exists() else None
        row.audio = [self.store.audio_dir(ev.run_key, target_key) / name for name in record.get("audio", [])]
        if ev.parent:
            # keyed by what it reports: the same record is found again, a new one (--reevaluate) is new
            grandchild = self.tracker.start(f"{identity.describe()} @ {resolved.label}", ev.parent,
                                            {records.RUN_KIND: "evaluation", **identity.tags()},
                                            key=f"evaluation {target_key} {stable_hash(record)}")
            self.tracker.log(grandchild, params=flatten("target", record["target"]), metrics=row.measurements,
                             tags=row.tags)
            for path in self.store.prediction_paths(ev.run_key, target_key):
                self.tracker.artifact(grandchild, path, "predictions")
            if row.scores_path:
                self.tracker.artifact_as(grandchild, scores, "scores.json")
            for path in row.audio:  # audio/<split>/<id>.wav: listened to in the UI and the HTML page
                self.tracker.artifact(grandchild, path, f"audio/{path.parent.name}")
            self.tracker.finish(grandchild)
        return row

    def _resolve(self, kind: str, name: str, options: dict | None = None, **context: Any) -> Any:
        """Build another registered component by name (``kind`` as in a suite: "teachers",
        "metrics", ...), with validated options: what a metric factory receives as ``resolve``."""
        return self.registry.get(kind, name).build(options, **context)

    # ---- tracking helpers ---------------------------------------------------------------
    def _track_start(self, name: str, tags: dict[str, str], key: str) -> str | None:
        if not self.tracker:
            return None
        return self.tracker.start(name, self.parent_run_id, tags, key=key)

    def _track_finish(self, run_id: str | None, ok: bool, error: str = "", trace: str = "") -> None:
        if run_id and self.tracker:
            if error:
                self.tracker.log(run_id, tags={records.ERROR: error, records.TRACEBACK: trace[-4000:]})
            self.tracker.finish(run_id, ok)

    # ---- the whole suite ----------------------------------------------------------------
    def _provenance(self) -> dict[str, str]:
        # task state carries e.g. the text-normalizer version, which moves WER on its own
        rs = self.rs
        components = [rs.task, rs.dataset, rs.frontend, rs.executor, *rs.augmentations, *rs.teachers,
                      *rs.references, *rs.students, *rs.losses, *rs.metrics, *rs.targets, *rs.reporters]
        providers = {r.component.provider.distribution for r in components if r.component.provider}
        return {**provenance(sorted(d for d in providers if d)), **flatten("task", self.task.state()),
                records.DATA_HASH: self.corpus.fingerprint}

    def attach(self, spec: RunnerSpec) -> None:
        """Work for the runner ``spec`` describes, in another process (kdbench.work): the same
        corpus and front end, this host's provenance, the same parent run."""
        self.spec = spec
        self._prepare()
        self.provenance = self._provenance()
        self.parent_run_id = spec.tracking[2] if spec.tracking else None
        self.runs = plan_student_runs(self.rs)

    def _spec(self) -> RunnerSpec:
        tracking = None
        if self.tracker is not None and getattr(self.tracker, "client", None) is not None:
            tracking = (self.tracker.uri, self.tracker.experiment, self.parent_run_id)
        return RunnerSpec(self.rs.suite, str(Path(self.rs.path).resolve()), str(Path(self.cache.root).resolve()),
                          str(self.out_dir.parent.resolve()), tracking, self.force, self.reevaluate,
                          {i: t.key for i, t in self.teachers.items()})

    def run(self) -> SuiteResult:
        self._prepare()
        self.provenance = self._provenance()
        self.runs = runs = plan_student_runs(self.rs)
        self.parent_run_id = None
        if self.tracker:
            # a rerun of this suite on this machine and data finds the runs it logged (kdbench.tracking)
            # and, like the results on disk, reuses them; a forced one (--force, --reevaluate) logs anew
            key = stable_hash({"suite": self.rs.suite.model_dump(mode="json"), "data": self.corpus.fingerprint,
                               "host": socket.gethostname(), "fresh": time.time() if self.reevaluate else None})
            self.parent_run_id = self.tracker.start(
                f"suite {self.rs.name}", tags={records.RUN_KIND: "suite", records.SUITE: self.rs.name, **self.provenance},
                key=f"suite {key}")
            self.tracker.log(self.parent_run_id, params=flatten("suite", self.rs.suite.model_dump(mode="json")))
        rows: list[Row] = []
        clock = time.perf_counter()
        overall = self.progress.start("suite", len(self.rs.teachers) + 2 * len(runs))
        done = 0
        for i, resolved in enumerate(self.rs.teachers):
            untrained = self.rs.suite.teachers[i].checkpoint or getattr(resolved.component.factory, "combines", False)
            rows += self._fixed_model_rows("teacher", resolved, lambda i=i: self._obtain_teacher(i),
                                           loss=None if untrained else self.rs.teacher_losses[i])
            done += 1
            self.progress.update(overall, done)
        for i, resolved in enumerate(self.rs.references):
            rows += self._fixed_model_rows("reference", resolved, lambda i=i: self._obtain_reference(i))
        self._cached_teacher_outputs(runs)
        clock = self._phase("teachers_s", clock)  # wall time per phase: what scale-out can and cannot shorten

        # The executor does the student runs: every training, then every evaluation (which times
        # models, so an executor gives each one a machine of its own), here or in other processes.
        spec = self._spec()
        work.register(spec, self)
        executor = self.rs.executor.build(shared={"cache": self.cache.root, "results": self.out_dir.parent},
                                          training_threads=self.rs.suite.training.threads)
        try:
            indices = list(range(len(runs)))
            trained = self._outcomes(executor.map(work.Work(spec, "train"), indices),
                                     lambda i, error: Trained(runs[i].key(self.base, spec.teacher_keys,
                                                                          self.rs.suite.training.model_dump()),
                                                              None, False, False, error=error))
            for t in trained:
                for name, n in t.counts.items():
                    self.stats[name] = self.stats.get(name, 0) + n
            done += len(runs)
            self.progress.update(overall, done)
            clock = self._phase("training_s", clock)
            part = "all"
            if getattr(executor, "quality_apart", False):  # quality side by side, then each timing alone
                executor.map(work.Work(spec, "measure_quality"), list(zip(indices, trained)))
                part = "timing"
            measured = self._outcomes(executor.map(work.Work(spec, "evaluate", exclusive=True),
                                                   [(i, t, part) for i, t in zip(indices, trained)]),
                                      lambda i, error: Measured(self.evaluate((i, Trained(
                                          trained[i].key, None, False, False, error=error), part)).rows, {}))
            self._phase("evaluation_s", clock)
        finally:
            work.forget(spec)
            executor.close()
        for m in measured:
            rows += m.rows
            for name, meta in m.columns.items():
                self.columns.setdefault(name, meta)
        self.progress.update(overall, done + len(runs))
        self.progress.stop(overall)
        result = SuiteResult(self.rs.name, rows, self.columns, self.out_dir, self.parent_run_id, self.stats,
                             provenance=dict(self.provenance))
        result.board = from_result(result)
        for reporter in self.rs.reporters:
            try:
                result.reports += reporter.build().report(result, self.out_dir, self.rs.name)
            except OSError as exc:  # a disk that filled must not lose a finished suite: the CLI still prints it
                if exc.errno not in WRITE_ERRNOS:
                    raise
                exc.filename = exc.filename or str(self.out_dir)  # a plot's write names no file
                self.write_error = exc
        if self.tracker and self.parent_run_id:
            self.tracker.log(self.parent_run_id, metrics={f"stats.{k}": v for k, v in self.stats.items()
                                                          if isinstance(v, (int, float))})
            for path in result.reports:
                self.tracker.artifact(self.parent_run_id, path, "leaderboard")
            result.reports += self._publish_mlflow_leaderboard()
            self.tracker.finish(self.parent_run_id, not result.failures)
        return result


    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.stats[name] = round(now - since, 1)
        return now

    @staticmethod
    def _outcomes(results: list[Any], failed: Callable[[int, str], Any]) -> list[Any]:
        """An executor's results, with a job it lost (``JobFailed``: its worker kept dying) as
        that job's failure."""
        return [failed(i, r.error) if isinstance(r, JobFailed) else r for i, r in enumerate(results)]

    def _publish_mlflow_leaderboard(self) -> list[Path]:
        """The leaderboard as MLflow sees it (every machine's runs of this suite), its HTML page and
        Pareto fronts, next to the local files and on the parent run, so the MLflow UI shows them."""
        from kdbench.board import publish

        try:
            paths = publish(self.tracker, self.rs.name, self.out_dir / "mlflow-leaderboard",
                            target_order=[t.label for t in self.rs.targets])
        except Exception as exc:  # a picture that cannot be drawn must not fail a finished suite
            self.progress.stage(f"MLflow leaderboard not published: {_error_text(exc)}")
            return []
        for path in paths:
            self.tracker.artifact(self.parent_run_id, path, "leaderboard")
        return paths


def _failed(identity: RunIdentity, run_key: str, target: str, exc: BaseException) -> Row:
    return Row(identity.role, identity.model, identity.teacher, identity.loss, identity.seed, target, "failed",
               run_key, error=_error_text(exc))


def _shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _restores(compression: Compression | None, model: torch.nn.Module, state: Any) -> bool:
    """Whether a saved state is this run's model: the student's shapes, or what the compression
    restores from it (on a copy: a failed load leaves a model half overwritten)."""
    if compression is None:
        return fits(model, state)
    try:
        compression.restore(copy.deepcopy(model), state)
        return True
    except Exception:
        return False


def fits(model: torch.nn.Module, state: Any) -> bool:
    """Whether ``state`` has exactly the model's tensors and shapes (checked before loading:
    a failed ``load_state_dict`` leaves the model half overwritten)."""
    own = model.state_dict()
    return (isinstance(state, dict) and state.keys() == own.keys()
            and all(isinstance(v, torch.Tensor) and v.shape == own[k].shape
                    for k, v in state.items() if isinstance(own[k], torch.Tensor)))


def load_checkpoint(model: torch.nn.Module, path: Path, what: str) -> None:
    if not Path(path).is_file():
        problem = "is a folder, not a file" if Path(path).is_dir() else "no such file"
        raise CheckpointError(f"{what}: {problem}: {path}")
    try:
        state = read_weights(path)
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load {path}: {unreadable(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load {path}: {_error_text(exc)}") from None
