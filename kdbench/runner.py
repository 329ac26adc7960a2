"""Run a resolved suite: obtain teachers, cache their outputs, distill every planned student,
evaluate every model on every target, track everything, and isolate failures per run."""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from kdbench.cache import Cache
from kdbench.errors import CheckpointError
from kdbench.evaluation import evaluate
from kdbench.hashing import file_hash, stable_hash
from kdbench.leaderboard import primary_column
from kdbench.interfaces import Corpus, Measurement, Model, ModelSpec, Task
from kdbench.pipeline import InputPipeline
from kdbench.plan import StudentRun, plan_student_runs, requires_teacher, teacher_layers
from kdbench.plugins import Registry
from kdbench.provenance import provenance
from kdbench.run_store import RunStore
from kdbench.suite import Resolved, ResolvedSuite, TrainingConfig
from kdbench.teacher_outputs import TeacherOutputStore, build_teacher_outputs
from kdbench.tracking import Tracker, flatten
from kdbench.training import seed_everything, train


class Progress:
    """What the runner reports while it works; the CLI draws it with rich."""

    def stage(self, text: str) -> None: ...
    def start(self, description: str, total: int) -> Any: return None
    def update(self, handle: Any, completed: int) -> None: ...
    def stop(self, handle: Any) -> None: ...


@dataclass
class Row:
    """One model evaluated on one target (or a failure to produce it)."""

    role: str  # "teacher" or "student"
    model: str
    teacher: str
    loss: str
    seed: int | None
    target: str
    status: str  # "ok", "failed", "skipped"
    run_key: str
    params: int | None = None
    error: str = ""
    reused: bool = False
    measurements: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "measurements"}
        d.update(self.measurements)
        return d


@dataclass
class SuiteResult:
    suite: str
    rows: list[Row]
    columns: dict[str, tuple[str, bool]]  # measurement name -> (unit, higher_is_better)
    out_dir: Path
    parent_run_id: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)  # what every row of this invocation depends on

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == "failed"]


@dataclass
class TeacherState:
    model: Model
    key: str
    label: str
    outputs: TeacherOutputStore | None = None


def _error_text(exc: BaseException) -> str:
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
        self.columns: dict[str, tuple[str, bool]] = {}
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
        self.metrics = [m.build() for m in rs.metrics]
        self.targets = [(t, t.build()) for t in rs.targets]

    # ---- teachers and references ----------------------------------------------------------
    def _fixed_model_rows(self, role: str, resolved: Resolved, obtain: Callable[[], TeacherState]) -> list[Row]:
        """Rows of a model that is not distilled in this suite (a teacher, a reference)."""
        row_base = dict(role=role, model=resolved.label, teacher="",
                        loss=(self.task.default_loss or "") if role == "teacher" else "", seed=None, run_key="")
        child = self._track_start(f"{role} {resolved.label}", {"kdbench.role": role, **self._identity_tags(row_base)})
        try:
            state = obtain()
            row_base["run_key"] = state.key
            ident = {"kdbench.teacher_hash": state.key if role == "teacher" else "", "kdbench.config_hash": state.key}
            if child:
                self.tracker.log(child, params=flatten("", {role: resolved.config(), "base": self.base}),
                                 tags={f"kdbench.{role}_key": state.key, **ident, **self.provenance})
            rows = self._evaluate_on_targets(state.model, state.key, row_base, False, child, ident)
            self._track_finish(child, all(r.status != "failed" for r in rows))
            return rows
        except Exception as exc:
            self._track_finish(child, False, error=_error_text(exc), trace=traceback.format_exc())
            return [Row(**row_base, target=t.label, status="failed", error=_error_text(exc)) for t, _ in self.targets]

    def _obtain_reference(self, index: int) -> TeacherState:
        ref = self.rs.suite.references[index]
        resolved = self.rs.references[index]
        model: Model = resolved.build(model_spec=self.model_spec)
        checkpoint = None
        if ref.checkpoint is not None:
            load_checkpoint(model, ref.checkpoint, f"references[{index}].checkpoint")
            checkpoint = file_hash(ref.checkpoint)
        data = {k: v for k, v in self.base.items() if k != "teacher_outputs"}
        key = stable_hash({"reference": resolved.config(), "checkpoint": checkpoint, "base": data})
        return TeacherState(model.eval(), key, resolved.label)


    def _obtain_teacher(self, index: int) -> TeacherState:
        state = self._teacher_state(index)
        self.teachers[index] = state
        return state

    def _teacher_state(self, index: int) -> TeacherState:
        ref = self.rs.suite.teachers[index]
        resolved = self.rs.teachers[index]
        seed_everything(0)  # initial weights from the seed, not from whatever ran before in this process
        model: Model = resolved.build(model_spec=self.model_spec)
        if ref.checkpoint is not None:
            key = stable_hash({"teacher": resolved.config(), "checkpoint": file_hash(ref.checkpoint),
                               "base": self.base})
            load_checkpoint(model, ref.checkpoint, f"teachers[{index}].checkpoint")
            return TeacherState(model, key, resolved.label)
        training = ref.training or self.rs.suite.training
        # how students later read the teacher's outputs does not change the teacher itself
        data = {k: v for k, v in self.base.items() if k != "teacher_outputs"}
        key = stable_hash({"teacher": resolved.config(), "training": training.model_dump(), "base": data,
                           "loss": self.task.default_loss})
        state = None if self.force_teachers else self.cache.load("teachers", key)
        if state is not None:
            model.load_state_dict(state)
        else:
            loss = self.registry.get("losses", self.task.default_loss).build(
                student=model, teacher=None, task=self.task)
            self._train(f"teacher {resolved.label}", model, loss, training, seed=0, teacher=None, copies=None)
            self.cache.save("teachers", key, model.state_dict())
            self.stats["teachers_trained"] += 1
        model.eval()
        return TeacherState(model, key, resolved.label)

    def _teacher_outputs(self, teacher: TeacherState) -> TeacherOutputStore:
        if teacher.outputs is None:
            layers = sorted({layer for loss in self.rs.losses if requires_teacher(loss)
                             for layer in teacher_layers(loss)})
            cfg = self.rs.suite.teacher_outputs
            copies = cfg.copies if self.pipeline.augments else 1
            handle = self.progress.start(f"teacher outputs {teacher.label}", len(self.corpus.train) * copies)
            key_parts = {"teacher": teacher.key, "base": self.base}
            if self.force_teachers:
                key_parts["forced"] = time.time()
            teacher.outputs = build_teacher_outputs(
                self.cache, teacher.model, key_parts, self.pipeline, self.corpus.train, copies, layers,
                on_progress=lambda done, total: self.progress.update(handle, done))
            self.progress.stop(handle)
            self.stats["teacher_forward_passes"] += teacher.outputs.forward_passes
        return teacher.outputs

    # ---- training -----------------------------------------------------------------------
    def _train(self, description: str, model, loss, training: TrainingConfig, seed: int, teacher, copies):
        handle = self.progress.start(description, training.steps)
        try:
            return train(model, loss, self.pipeline, self.corpus.train, training, seed, teacher=teacher,
                         copies=copies, on_step=lambda step, _: self.progress.update(handle, step))
        finally:
            self.progress.stop(handle)

    def _teacher_source(self, teacher: TeacherState) -> tuple[Callable, int | None]:
        """Cached mode: look up stored outputs of the replayed copy. Online: run the teacher."""
        if self.rs.suite.teacher_outputs.mode == "cached":
            store = self._teacher_outputs(teacher)
            copies = self.rs.suite.teacher_outputs.copies if self.pipeline.augments else None
            return (lambda feats, copy: store.batch(feats.batch.ids, copy)), copies

        def online(feats, copy):
            self.stats["teacher_online_batches"] = self.stats.get("teacher_online_batches", 0) + 1
            with torch.no_grad():
                return teacher.model(feats.features, feats.lengths)

        return online, None

    def _student_run(self, run: StudentRun) -> list[Row]:
        teacher = self.teachers.get(run.teacher) if run.teacher is not None else None
        teacher_label = teacher.label if teacher else (self.rs.teachers[run.teacher].label if run.teacher is not None else "")
        training = self.rs.suite.training
        key = run.key(self.base, {i: t.key for i, t in self.teachers.items()}, training.model_dump())
        row_base = dict(role="student", model=run.student.label, teacher=teacher_label, loss=run.loss.label,
                        seed=run.seed, run_key=key)
        teacher_key = self.teachers[run.teacher].key if run.teacher in self.teachers else ""
        # the config hash leaves out the seed: seeds of one configuration fold into one row
        config_hash = stable_hash({"student": run.student.config(), "loss": run.loss.config(), "teacher": teacher_key,
                                   "training": training.model_dump(), "base": self.base})
        # the student as trained, whatever the loss: pairs a KD student with its no-KD baseline
        student_hash = stable_hash({"student": run.student.config(), "training": training.model_dump(),
                                    "base": self.base})
        ident = {"kdbench.teacher_hash": teacher_key, "kdbench.config_hash": config_hash,
                 "kdbench.student_hash": student_hash}
        child = self._track_start(f"student {run.student.label} · {run.loss.label}"
                                  + (f" ← {teacher_label}" if teacher_label else "") + f" · seed {run.seed}",
                                  {"kdbench.role": "student", "kdbench.run_key": key, **self._identity_tags(row_base),
                                   **ident})
        try:
            if run.teacher is not None and teacher is None:
                raise RuntimeError(f"teacher {teacher_label!r} is unavailable (it failed earlier)")
            # the seed decides the initial weights (and a loss's own, such as a hint projection),
            # not whatever this process ran before: a cached teacher or a fresh one
            seed_everything(run.seed)
            model: Model = run.student.build(model_spec=self.model_spec)
            record = None if self.force else self.store.load_training(key)
            reused = record is not None
            if reused:
                load_checkpoint(model, self.store.checkpoint_path(key), "student checkpoint")
                self.stats["runs_reused"] += 1
            else:
                loss = run.loss.build(student=model, teacher=teacher.model if teacher else None, task=self.task)
                source, copies = self._teacher_source(teacher) if (teacher and loss.requires_teacher) else (None, None)
                report = self._train(f"{run.student.label} · {run.loss.label} · seed {run.seed}", model, loss,
                                     training, run.seed, source, copies)
                self.store.save_checkpoint(key, model.state_dict())
                record = {"seconds": report.seconds, "final_loss": report.final_loss, "history": report.history,
                          "config": {"student": run.student.config(), "loss": run.loss.config(),
                                     "teacher": teacher.key if teacher else None, "seed": run.seed,
                                     "training": training.model_dump()}}
                self.store.save_training(key, record)
                self.stats["students_trained"] += 1
            model.eval()
            if child:
                self.tracker.log(child, params=flatten("", {**record["config"], "base": self.base}),
                                 metrics={"train.seconds": record["seconds"], "train.final_loss": record["final_loss"]},
                                 tags={"kdbench.reused": reused, **self.provenance},
                                 steps=[("train.loss", s, v) for s, v in record["history"]])
                self.tracker.artifact(child, self.store.checkpoint_path(key))
            rows = self._evaluate_on_targets(model, key, row_base, reused, child, ident)
            self._track_finish(child, all(r.status != "failed" for r in rows))
            return rows
        except Exception as exc:  # one crashed run is recorded; the suite goes on
            self._track_finish(child, False, error=_error_text(exc), trace=traceback.format_exc())
            return [Row(**row_base, target=label, status="failed", error=_error_text(exc))
                    for label in [t.label for t, _ in self.targets]]

    # ---- evaluation ---------------------------------------------------------------------
    def _identity_tags(self, row_base: dict) -> dict[str, str]:
        """What a leaderboard row is about, as tags, so it can be built from ``search_runs`` alone."""
        return {"kdbench.suite": self.rs.name, "kdbench.model_role": row_base["role"],
                "kdbench.model": row_base["model"], "kdbench.teacher": row_base["teacher"],
                "kdbench.loss": row_base["loss"], "kdbench.seed": "" if row_base["seed"] is None else str(row_base["seed"])}

    def _evaluate_on_targets(self, model: Model, run_key: str, row_base: dict, reused: bool, parent: str | None,
                             ident: dict[str, str]) -> list[Row]:
        rows = []
        n_params = sum(p.numel() for p in model.parameters())
        what = row_base["model"] + (f" · {row_base['loss']} · seed {row_base['seed']}" if row_base["role"] == "student" else "")
        handle = self.progress.start(f"evaluate {what}", len(self.targets))
        try:
            for resolved, target in self.targets:
                rows.append(self._evaluate_on_target(model, run_key, row_base, reused, parent, ident, n_params,
                                                     resolved, target))
                self.progress.update(handle, len(rows))
        finally:
            self.progress.stop(handle)
        return rows

    def _evaluate_on_target(self, model: Model, run_key: str, row_base: dict, reused: bool, parent: str | None,
                            ident: dict[str, str], n_params: int, resolved: Resolved, target: Any) -> Row:
        row = Row(**row_base, target=resolved.label, status="ok", params=n_params, reused=reused)
        ok, reason = target.available()
        if not ok:
            row.status, row.error = "skipped", reason
            return row
        target_key = stable_hash({"target": resolved.config(), "metrics": [m.config() for m in self.rs.metrics]})
        record = None if self.reevaluate else self.store.load_evaluation(run_key, target_key)
        try:
            if record is None:
                result = evaluate(model, self.frontend, self.task, self.corpus.tests, self.metrics, target)
                # per-utterance samples go to their own file: the record stays small
                record = {"measurements": [{k: v for k, v in m.__dict__.items() if k not in ("samples", "weights")}
                                           for m in result.measurements],
                          "target": {**resolved.config(), **target.describe()}}
                self.store.save_scores(run_key, target_key, result.scores)
                self.store.save_evaluation(run_key, target_key, record, result.predictions)
            else:
                row.reused = True
        except Exception as exc:
            row.status, row.error = "failed", _error_text(exc)
            return row
        # metric metadata travels as tags, so a leaderboard built from MLflow alone knows
        # units, sort direction and coverage without the plugin that computed them
        metric_tags: dict[str, str] = {}
        for m in record["measurements"]:
            measurement = Measurement(**{**m, "coverage": tuple(m["coverage"]) if m.get("coverage") else None})
            row.measurements[measurement.name] = measurement.value
            self.columns.setdefault(measurement.name, (measurement.unit, measurement.higher_is_better))
            metric_tags[f"kdbench.metric.{measurement.name}.unit"] = measurement.unit
            metric_tags[f"kdbench.metric.{measurement.name}.higher_is_better"] = str(measurement.higher_is_better)
            if measurement.coverage:
                metric_tags[f"kdbench.metric.{measurement.name}.coverage"] = "%d/%d" % measurement.coverage
        primary = primary_column({m["name"]: None for m in record["measurements"]})
        if primary:
            metric_tags["kdbench.primary_metric"] = primary
        if parent:
            seed = f" · seed {row_base['seed']}" if row_base["seed"] is not None else ""
            loss = f" · {row_base['loss']}" if row_base["role"] == "student" else ""
            config_hash = stable_hash({"run": ident.get("kdbench.config_hash", run_key), "target": target_key})
            grandchild = self.tracker.start(
                f"{row_base['model']}{loss}{seed} @ {resolved.label}", parent,
                {"kdbench.role": "evaluation", "kdbench.target": resolved.label, "kdbench.run_key": run_key,
                 "kdbench.target_key": target_key, **self._identity_tags(row_base), **ident,
                 "kdbench.config_hash": config_hash})
            self.tracker.log(grandchild, params=flatten("target", record["target"]), metrics=row.measurements,
                             tags={**self.provenance, **metric_tags})
            for path in self.store.prediction_paths(run_key, target_key):
                self.tracker.artifact(grandchild, path, "predictions")
            scores = self.store.scores_path(run_key, target_key)
            if scores.exists():
                self.tracker.artifact_as(grandchild, scores, "scores.json")
            self.tracker.finish(grandchild)
        row.run_key = run_key
        return row

    def _add_teacher_gaps(self, rows: list[Row]) -> None:
        """Student minus its teacher on the first per-split metric, per split and target."""
        primary = next((name.split("/", 1)[1] for name in self.columns if "/" in name), None)
        if primary is None:
            return
        teachers = {(r.model, r.target): r for r in rows if r.role == "teacher" and r.status == "ok"}
        for row in rows:
            t = teachers.get((row.teacher, row.target))
            if row.role != "student" or row.status != "ok" or t is None:
                continue
            for split in self.corpus.tests:
                name = f"{split}/{primary}"
                if name in row.measurements and name in t.measurements:
                    gap = f"{split}/{primary}_gap_to_teacher"
                    row.measurements[gap] = row.measurements[name] - t.measurements[name]
                    unit, hib = self.columns[name]
                    self.columns.setdefault(gap, (unit, hib))

    # ---- tracking helpers ---------------------------------------------------------------
    def _track_start(self, name: str, tags: dict[str, str]) -> str | None:
        if not self.tracker:
            return None
        return self.tracker.start(name, self.parent_run_id, tags)

    def _track_finish(self, run_id: str | None, ok: bool, error: str = "", trace: str = "") -> None:
        if run_id and self.tracker:
            if error:
                self.tracker.log(run_id, tags={"kdbench.error": error, "kdbench.traceback": trace[-4000:]})
            self.tracker.finish(run_id, ok)

    # ---- the whole suite ----------------------------------------------------------------
    def run(self) -> SuiteResult:
        self._prepare()
        # task state carries e.g. the text-normalizer version, which moves WER on its own
        self.provenance = {**provenance(), **flatten("task", self.task.state()),
                           "kdbench.data_hash": self.corpus.fingerprint}
        runs = plan_student_runs(self.rs)
        self.parent_run_id = None
        if self.tracker:
            self.parent_run_id = self.tracker.start(
                f"suite {self.rs.name}", tags={"kdbench.role": "suite", "kdbench.suite": self.rs.name, **self.provenance})
            self.tracker.log(self.parent_run_id, params=flatten("suite", self.rs.suite.model_dump(mode="json")))
        rows: list[Row] = []
        self.teachers: dict[int, TeacherState] = {}
        overall = self.progress.start("suite", len(self.rs.teachers) + len(runs))
        done = 0
        for i, resolved in enumerate(self.rs.teachers):
            rows += self._fixed_model_rows("teacher", resolved, lambda i=i: self._obtain_teacher(i))
            done += 1
            self.progress.update(overall, done)
        for i, resolved in enumerate(self.rs.references):
            rows += self._fixed_model_rows("reference", resolved, lambda i=i: self._obtain_reference(i))

        executor = self.rs.executor.build()

        def job(run: StudentRun) -> list[Row]:
            nonlocal done
            result = self._student_run(run)
            done += 1
            self.progress.update(overall, done)
            return result

        for result in executor.map(job, runs):
            rows += result
        self.progress.stop(overall)
        self._add_teacher_gaps(rows)
        result = SuiteResult(self.rs.name, rows, self.columns, self.out_dir, self.parent_run_id, self.stats,
                             provenance=dict(self.provenance))
        for reporter in self.rs.reporters:
            result.reports += reporter.build().report(result, self.out_dir, self.rs.name)
        if self.tracker and self.parent_run_id:
            self.tracker.log(self.parent_run_id, metrics={f"stats.{k}": v for k, v in self.stats.items()
                                                          if isinstance(v, (int, float))})
            for path in result.reports:
                self.tracker.artifact(self.parent_run_id, path, "leaderboard")
            result.reports += self._publish_mlflow_leaderboard()
            self.tracker.finish(self.parent_run_id, not result.failures)
        return result


    def _publish_mlflow_leaderboard(self) -> list[Path]:
        """The leaderboard as MLflow sees it (every machine's runs of this suite), its HTML page and
        Pareto fronts, next to the local files and on the parent run, so the MLflow UI shows them."""
        from kdbench.mlflow_leaderboard import publish

        try:
            paths = publish(self.tracker, self.rs.name, self.out_dir / "mlflow-leaderboard")
        except Exception as exc:  # a picture that cannot be drawn must not fail a finished suite
            self.progress.stage(f"MLflow leaderboard not published: {_error_text(exc)}")
            return []
        for path in paths:
            self.tracker.artifact(self.parent_run_id, path, "leaderboard")
        return paths


def load_checkpoint(model: torch.nn.Module, path: Path, what: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    except FileNotFoundError:
        raise CheckpointError(f"{what}: no such file {path}") from None
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load {path}: {_error_text(exc)}") from None
