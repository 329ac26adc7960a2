"""The results contract: what a result is called, what identifies it, and how it is hashed.

The runner writes runs through this module and the leaderboard reads them through it, so a tag
name, an identity key or a hash recipe is defined once. A leaderboard row can be rebuilt from an
evaluation run's tags and metrics alone (``search_runs``), without the plugins that computed it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from kdbench.hashing import stable_hash

RUN_FORMAT = 1  # bump when a change to kdbench invalidates finished runs

# ---- tag names -----------------------------------------------------------------------------------
PREFIX = "kdbench."
RUN_KIND = "kdbench.role"  # suite, teacher, reference, student or evaluation: what an MLflow run is
SUITE = "kdbench.suite"
ROLE = "kdbench.model_role"  # teacher, reference or student: what the evaluated model is
MODEL = "kdbench.model"
TEACHER = "kdbench.teacher"
LOSS = "kdbench.loss"
SEED = "kdbench.seed"
TARGET = "kdbench.target"
RUN_KEY = "kdbench.run_key"  # the trained model (one seed): names its folder under results/<suite>/runs/
TARGET_KEY = "kdbench.target_key"  # the target with the metrics measured on it
CONFIG_HASH = "kdbench.config_hash"  # the model's configuration, seed left out: seeds fold into one row
STUDENT_HASH = "kdbench.student_hash"  # the student as trained, whatever the loss: pairs KD with no-KD
TEACHER_HASH = "kdbench.teacher_hash"  # the very teacher a student learned from (or a teacher's own key)
EVALUATION_HASH = "kdbench.evaluation_hash"  # config hash and target key: one leaderboard cell
DATA_HASH = "kdbench.data_hash"
PRIMARY_METRIC = "kdbench.primary_metric"
REUSED = "kdbench.reused"
ERROR = "kdbench.error"
TRACEBACK = "kdbench.traceback"
PROVIDER = "kdbench.provider."  # + role of the component (student, loss, target, ...): who implemented it
METRIC = "kdbench.metric."  # + "<metric>.meta" (its declared semantics) or "<metric>.coverage"
TRACK_KEY = "kdbench.track_key"  # what a run is within its parent, so a rerun finds it (kdbench.tracking)
OWNER = "kdbench.owner."  # + host, pid, started: the process writing the run (kdbench.owner)

#: one leaderboard row: these, then the provenance, tell rows apart (seeds fold into a row)
IDENTITY = ("suite", "role", "model", "teacher", "loss", "target")
IDENTITY_TAGS = {"suite": SUITE, "role": ROLE, "model": MODEL, "teacher": TEACHER, "loss": LOSS, "target": TARGET}

#: provenance: a change in any of these means "a different experiment", never "another seed"
PROVENANCE_EXACT = ("git_commit", CONFIG_HASH, TEACHER_HASH, DATA_HASH, "host.cpu", "host.cores",
                    "host.torch_threads")
PROVENANCE_PREFIXES = ("version.", "task.", PROVIDER)
#: provenance that may differ between a KD student and the baseline or teacher it is compared with
OWN_CONFIG = (CONFIG_HASH, TEACHER_HASH, PROVIDER + "loss", PROVIDER + "student", PROVIDER + "teacher",
              PROVIDER + "reference")


# ---- identity ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunIdentity:
    """What a leaderboard row is about."""

    suite: str
    role: str  # teacher, reference or student
    model: str
    teacher: str = ""
    loss: str = ""
    seed: int | None = None

    def tags(self) -> dict[str, str]:
        return {SUITE: self.suite, ROLE: self.role, MODEL: self.model, TEACHER: self.teacher, LOSS: self.loss,
                SEED: "" if self.seed is None else str(self.seed)}

    def describe(self) -> str:
        """``model · loss ← teacher · seed n`` for run names and messages."""
        text = self.model
        if self.role == "student":
            text += f" · {self.loss}" + (f" ← {self.teacher}" if self.teacher else "") + f" · seed {self.seed}"
        return text


# ---- hash recipes --------------------------------------------------------------------------------
def trained_teacher_key(teacher: dict, training: dict, data: dict, loss: dict) -> str:
    """A teacher kdbench trains. How students later read its outputs is left out of ``data``:
    it does not change the teacher itself. ``loss`` is its training loss's resolved config
    (name, options, provider), so a changed default option trains the teacher anew."""
    return stable_hash({"teacher": teacher, "training": training, "base": data, "loss": loss})


def loaded_model_key(role: str, config: dict, checkpoint: str | None, data: dict) -> str:
    """A teacher or reference loaded from a checkpoint file (``checkpoint`` is its content hash)."""
    return stable_hash({role: config, "checkpoint": checkpoint, "base": data})


def student_run_key(base: dict, student: dict, loss: dict, teacher_key: str | None, seed: int, training: dict) -> str:
    """One trained student: everything that changes its weights."""
    return stable_hash({"format": RUN_FORMAT, "base": base, "student": student, "loss": loss, "teacher": teacher_key,
                        "seed": seed, "training": training})


def config_hash(base: dict, student: dict, loss: dict, teacher_key: str, training: dict) -> str:
    """The student run's key without the seed: seeds of one configuration fold into one row."""
    return stable_hash({"student": student, "loss": loss, "teacher": teacher_key, "training": training, "base": base})


def student_hash(base: dict, student: dict, training: dict) -> str:
    """The student as trained, whatever the loss: pairs a KD student with its no-KD baseline."""
    return stable_hash({"student": student, "training": training, "base": base})


def target_key(target: dict, metrics: list[dict]) -> str:
    """A target with the metrics measured on it: adding a target re-measures without retraining."""
    return stable_hash({"target": target, "metrics": metrics})


def evaluation_hash(config: str, target: str) -> str:
    return stable_hash({"run": config, "target": target})


def provider_tags(components: dict[str, Any]) -> dict[str, str]:
    """``kdbench.provider.<role>``: the distribution, version, plugin and class behind each
    component (a ``Resolved``), so a result is never read under another implementation."""
    return {PROVIDER + role: c.component.provider.text() for role, c in components.items()
            if c is not None and c.component.provider is not None}


# ---- metric semantics ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricMeta:
    """A metric's declared semantics (the fields of ``interfaces.Measurement`` that describe the
    metric, not one value of it)."""

    unit: str = ""
    higher_is_better: bool = False
    kind: str = "quality"
    tolerance: dict[str, float] | None = None
    scale: str = "linear"
    headline: bool = False
    speedup: bool = False
    gated: bool = True
    warn_above: float | None = None
    note: str = ""
    timed: bool = False  # a timing: inconclusive for the gate when measured under load
    method: dict[str, Any] | None = None  # implementation and parameters (Measurement.method)

    @classmethod
    def of(cls, measurement: Any) -> "MetricMeta":
        """From a Measurement, or its dict as stored in an evaluation record."""
        data = measurement if isinstance(measurement, dict) else measurement.__dict__
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag(cls, text: str | None, unit: str = "", higher_is_better: str = "False") -> "MetricMeta":
        """From the ``.meta`` tag; runs logged before it existed carry only unit and direction."""
        if isinstance(text, str) and text:
            try:
                data = json.loads(text)
                return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
            except (ValueError, TypeError):
                pass
        return cls(unit=unit if isinstance(unit, str) else "", higher_is_better=str(higher_is_better) == "True")


def metric_tags(measurements: Iterable[Any]) -> dict[str, str]:
    """Semantics and coverage of every measurement, as tags: a leaderboard built from MLflow
    alone knows units, sort direction, kind and coverage without the plugin that computed them."""
    tags: dict[str, str] = {}
    for m in measurements:
        meta = MetricMeta.of(m)
        tags[f"{METRIC}{_name(m)}.meta"] = meta.to_tag()
        coverage = m.get("coverage") if isinstance(m, dict) else m.coverage
        if coverage:
            tags[f"{METRIC}{_name(m)}.coverage"] = "%d/%d" % tuple(coverage)
    return tags


def _name(m: Any) -> str:
    return m["name"] if isinstance(m, dict) else m.name


def split_of(metric: str) -> str | None:
    """``test-unseen/wer`` -> ``test-unseen``; model-level metrics (size, latency) have no split."""
    return metric.split("/", 1)[0] if "/" in metric else None


def primary_metric(columns: dict[str, MetricMeta]) -> str | None:
    """The one rule for the metric a leaderboard ranks by: the first quality metric measured per
    test split, on the last split (held-out conditions are listed last, e.g. ``test-unseen``);
    else the first quality metric."""
    quality = [n for n, m in columns.items() if m.kind == "quality"]
    per_split = [n for n in quality if split_of(n)]
    if not per_split:
        return quality[0] if quality else None
    family = per_split[0].split("/", 1)[1]
    return [n for n in per_split if n.split("/", 1)[1] == family][-1]


# ---- rows of one invocation ----------------------------------------------------------------------
@dataclass
class Row:
    """One model evaluated on one target (or a failure to produce it)."""

    role: str  # "teacher", "reference" or "student"
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
    #: the evaluation's tags exactly as MLflow gets them, so the local leaderboard and the MLflow
    #: one are built by the same code from the same record
    tags: dict[str, str] = field(default_factory=dict)
    scores_path: Path | None = None  # per-utterance scores, for the KD gain's confidence interval
    started: float = 0.0  # seconds since the epoch
    audio: list[Path] = field(default_factory=list)  # a few predictions to listen to (<split>/<id>.wav)

    def flat(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()
             if k not in ("measurements", "tags", "scores_path", "started", "audio")}
        d.update(self.measurements)
        return d

    def as_run(self, suite: str = "") -> dict[str, Any]:
        """The row as ``board.fetch`` reads an evaluation run from MLflow."""
        rec: dict[str, Any] = {"run_id": f"{self.run_key}/{self.tags.get(TARGET_KEY, self.target)}",
                               "start_time": int(self.started * 1000), "end_time": int(self.started * 1000)}
        identity = RunIdentity(suite, self.role, self.model, self.teacher, self.loss, self.seed).tags()
        rec.update({f"tag:{k}": v for k, v in {**identity, TARGET: self.target, **self.tags}.items()})
        rec.update({f"metric:{k}": v for k, v in self.measurements.items()})
        return rec


@dataclass
class SuiteResult:
    suite: str
    rows: list[Row]
    columns: dict[str, MetricMeta]  # measurement name -> its declared semantics
    out_dir: Path
    parent_run_id: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)  # what every row of this invocation depends on
    board: Any = None  # the kdbench.board.Board of these rows, once built

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == "failed"]

    def runs(self) -> list[dict[str, Any]]:
        """Every successful evaluation, in the form ``board.fetch`` reads from MLflow."""
        return [r.as_run(self.suite) for r in self.rows if r.status == "ok"]
