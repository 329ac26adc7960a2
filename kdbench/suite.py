"""The suite file: schema, loading, and resolution of every component it names.

Suites are plain data, read by ``kdbench.yaml_file`` (``yaml.safe_load``: no tags that run code;
UTF-8; no alias bombs) with every number finite. Every error names the file and the key path,
e.g. ``suites/asr.yaml: losses[1].options.alpha: ...``.

Resolution looks every name up in the registry, fills an omitted ``targets``, ``reporters`` or
``executor`` with the default a plugin registers for that kind, and then lets each component
check its options against the rest of the suite (``check_suite``), so ``kdbench validate``
catches what one component's options alone cannot show (a hint loss naming a layer its
teacher lacks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from kdbench.errors import CheckpointError, PluginError, SuiteError, UnknownComponentError
from kdbench.hashing import stable_hash
from kdbench.options import Options
from kdbench.yaml_file import read_yaml
from kdbench.plugins import Component, Registry, _one_line


class _Strict(BaseModel):
    # an infinite learning rate (`lr: 1e999`) is a typo that would only show as a NaN loss
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ComponentRef(_Strict):
    """``name`` of a registered component, its ``options``, and an optional display ``label``.
    A bare string is shorthand for ``{name: <string>}``."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def display(self) -> str:
        return self.label or self.name


class TrainingConfig(_Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads while training")


class TeacherRef(ComponentRef):
    checkpoint: Path | None = Field(None, description="local weights (torch.load weights_only); else trained")
    training: TrainingConfig | None = Field(None, description="budget when kdbench trains the teacher")
    loss: ComponentRef | None = Field(None, description="the loss kdbench trains the teacher with (default: the "
                                      "task's own); its options are part of the teacher's cache key")


class StudentRef(ComponentRef):
    compress: bool = Field(True, description="crossed with the suite's compressions; false: this student runs "
                           "dense only (a dense baseline of a compressed student's size, a recurrent student the "
                           "compressions cannot handle)")


class ReferenceRef(ComponentRef):
    checkpoint: Path | None = Field(None, description="local weights (torch.load weights_only); else used as built")


class TeacherOutputsConfig(_Strict):
    mode: Literal["cached", "online"] = "cached"
    copies: int = Field(1, ge=1, description="fixed augmented copies of the training set in cached mode")


class TrackingConfig(_Strict):
    uri: str | None = None
    experiment: str | None = None


class FoldsConfig(_Strict):
    """Folds of one suite: each sets some dataset options (e.g. which speakers are held out) and
    runs as a suite of its own, ``<name>.<fold>``; ``kdbench run`` then also reports the mean and
    spread over the folds it ran."""

    each: dict[str, dict[str, Any]] = Field(min_length=1, description="fold name -> the dataset options it sets, "
                                            "over dataset.options")
    run: list[str] | Literal["all"] | None = Field(None, description="the folds `kdbench run` runs without --fold "
                                                   "(default: the first)")

    @field_validator("each")
    @classmethod
    def _folder_names(cls, each: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in each:  # a fold names results/<suite>.<fold>/
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", name):
                raise ValueError(f"fold {name!r} cannot name a results folder: use letters, digits, '_' and '-'")
        return each

    @field_validator("run")
    @classmethod
    def _known_run(cls, run, info: ValidationInfo):
        each = info.data.get("each")  # absent when `each` itself was wrong: that error is the one to show
        if isinstance(run, list) and each:
            from kdbench.suggest import unknown_name_message

            for name in run:
                if name not in each:
                    raise ValueError(unknown_name_message("fold", name, list(each)))
        return run

    def default(self) -> list[str]:
        if self.run == "all":
            return list(self.each)
        return list(self.run) if self.run else [next(iter(self.each))]


class Suite(_Strict):
    name: str = Field(description="names the results folder results/<name>/ and the MLflow experiment")
    description: str = ""
    task: ComponentRef
    dataset: ComponentRef
    frontend: ComponentRef
    augmentations: list[ComponentRef] = Field(default_factory=list)
    teacher_outputs: TeacherOutputsConfig = Field(default_factory=TeacherOutputsConfig)
    teachers: list[TeacherRef] = Field(default_factory=list)
    # evaluated as they are, never trained or distilled from: the unprocessed input, a
    # pretrained system, ... (their rows put the teachers and students in context)
    references: list[ReferenceRef] = Field(default_factory=list)
    students: list[StudentRef] = Field(min_length=1)
    losses: list[ComponentRef] = Field(min_length=1)
    # crossed with the students (each student also runs without; `compress: false` on a student
    # keeps it dense only): quantization-aware training, pruning
    compressions: list[ComponentRef] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    metrics: list[ComponentRef] = Field(min_length=1)
    # omitted (or empty): the default a plugin registers for the kind, filled in by
    # resolve_suite, so the core knows no component by name. Empty rather than None keeps
    # every reader of a suite file's targets iterating (a suite with no target measures nothing).
    targets: list[ComponentRef] = Field(default_factory=list)
    reporters: list[ComponentRef] = Field(default_factory=list)
    executor: ComponentRef | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    folds: FoldsConfig | None = None

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        # `..` or `.` would put results/<name>/ outside --results-dir (into its parent, or on top
        # of other suites' folders); a leading '-' reads as a command-line option
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{name!r} cannot name the results folder: use letters, digits, '_', '.' and '-', "
                             "starting with a letter, a digit or '_'")
        return name


@dataclass(frozen=True)
class Resolved:
    """A component reference resolved against the registry, with validated options."""

    ref: ComponentRef
    component: Component
    options: Options
    path: str  # key path in the suite, for messages

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def label(self) -> str:
        return self.ref.display

    def config(self) -> dict[str, Any]:
        """The fully resolved configuration (defaults filled in): what changes results. A
        component's ``version`` attribute, bumped when its behaviour changes, invalidates caches."""
        config = {"name": self.component.name, "options": self.options.model_dump(mode="json")}
        if self.component.provider is not None:
            # which implementation: two plugins may register one name (issue 12)
            config["provider"] = self.component.provider.identity()
        version = getattr(self.component.factory, "version", None)
        if version is not None:
            config["version"] = version
        return config

    def fingerprint(self) -> str:
        return stable_hash(self.config())

    def build(self, **context: Any) -> Any:
        return self.component.factory(self.options, **context)


@dataclass(frozen=True)
class ResolvedSuite:
    path: Path
    suite: Suite
    task: Resolved
    dataset: Resolved
    frontend: Resolved
    augmentations: list[Resolved]
    teachers: list[Resolved]
    references: list[Resolved]
    students: list[Resolved]
    losses: list[Resolved]
    metrics: list[Resolved]
    targets: list[Resolved]
    reporters: list[Resolved]
    executor: Resolved
    #: per teacher, the loss kdbench trains it with (None: no loss, a checkpoint is needed)
    teacher_losses: list[Resolved | None] = field(default_factory=list)
    compressions: list[Resolved] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.suite.name

    def teacher_ref(self, i: int) -> TeacherRef:
        return self.suite.teachers[i]


class OptionMismatch(ValueError):
    """Raised by a component's ``check_suite`` when one of its options does not fit the rest of
    the suite; ``option`` (dotted, within the component's options) is where the message points."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _validation_message(where: str, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = format_location(prefix + tuple(first["loc"]))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "value_error":  # a validator's own sentence, without pydantic's prefix
        msg = msg.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {loc}: {msg}{more}"


#: the suite's axes: lists whose entries are crossed into runs, where ``sweep:`` may expand one entry
SWEEPABLE = ("teachers", "students", "losses", "compressions")


def _expand_sweeps(path: Path, data: dict) -> dict:
    """``{name: ctc-kd, sweep: {temperature: [1, 2, 4]}}`` is three entries, one per value (every
    combination when several options are swept), labelled ``ctc-kd temperature=1`` and so on: an
    axis read like the others, each value its own row. Expanded as the file is read, so what ran is
    recorded entry by entry."""
    import itertools

    for key in SWEEPABLE:
        items = data.get(key)
        if not isinstance(items, list):
            continue
        expanded = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "sweep" not in item:
                expanded.append(item)
                continue
            sweep, where = item["sweep"], f"{path}: {key}[{i}].sweep"
            if not isinstance(sweep, dict) or not sweep:
                raise SuiteError(f"{where}: map each option to sweep to a list of its values")
            for option, values in sweep.items():
                if not isinstance(values, list) or not values:
                    raise SuiteError(f"{where}.{option}: a non-empty list of values, got {values!r}")
            options = item.get("options") or {}
            if not isinstance(options, dict):
                raise SuiteError(f"{path}: {key}[{i}].options: a mapping of option names to values")
            clash = sorted(set(sweep) & set(options))
            if clash:
                raise SuiteError(f"{where}.{clash[0]}: also set in options; give it in one place")
            base = item.get("label") or item.get("name")
            for combo in itertools.product(*sweep.values()):
                chosen = dict(zip(sweep, combo))
                label = f"{base} " + ",".join(f"{k}={v}" for k, v in chosen.items())
                entry = {k: v for k, v in item.items() if k != "sweep"}
                expanded.append({**entry, "options": {**options, **chosen}, "label": label})
        data[key] = expanded
    return data


def read_suite(path: str | Path) -> Suite:
    path = Path(path)
    data = read_yaml(path, "suite", SuiteError)
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a mapping of keys, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    data = _expand_sweeps(path, data)
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(_validation_message(str(path), exc)) from None


def suite_identity(path: str | Path) -> tuple[str, str | None, str | None]:
    """A suite file's name (its file's stem when it has no ``name:``), tracking URI and MLflow
    experiment, read the way ``kdbench run`` reads them."""
    suite = read_suite(path)
    return suite.name, suite.tracking.uri, suite.tracking.experiment


_SINGLE = {"task": "tasks", "dataset": "datasets", "frontend": "frontends", "executor": "executors"}
_LISTS = {"augmentations": "augmentations", "teachers": "teachers", "references": "teachers", "students": "students",
          "losses": "losses", "compressions": "compressions", "metrics": "metrics", "targets": "targets", "reporters": "reporters"}


#: suite keys that may be omitted -> the kind whose registered default fills them in
_DEFAULTED = {"targets": "targets", "reporters": "reporters", "executor": "executors"}


def _default_ref(path: Path, registry: Registry, kind: str, key: str) -> ComponentRef:
    try:
        component = registry.default(kind)
    except UnknownComponentError as exc:  # an ambiguous default included
        raise type(exc)(f"{path}: {key}: none given, and {exc}") from None
    if component.name in registry.clashes[kind]:  # its bare name would be ambiguous
        return ComponentRef(name=f"{component.plugin}:{component.name}", label=component.name)
    return ComponentRef(name=component.name)


def _with_defaults(path: Path, suite: Suite, registry: Registry) -> Suite:
    """The suite with each omitted defaultable key filled in, so what ran is what it records."""
    filled: dict[str, Any] = {}
    for key, kind in _DEFAULTED.items():
        if not getattr(suite, key):
            ref = _default_ref(path, registry, kind, key)
            filled[key] = [ref] if key in _LISTS else ref
    return suite.model_copy(update=filled) if filled else suite


def _check_against_suite(rs: ResolvedSuite) -> None:
    """Call each component's optional ``check_suite(options, suite)``: a ValueError (an
    OptionMismatch to point at one option) is the user's, anything else the plugin's."""
    components = [getattr(rs, key) for key in _SINGLE] + [r for key in _LISTS for r in getattr(rs, key)]
    for resolved in components:
        check = getattr(resolved.component.factory, "check_suite", None)
        if check is None:
            continue
        try:
            check(resolved.options, rs)
        except ValueError as exc:
            option = getattr(exc, "option", None)
            where = f"{resolved.path}.options" + (f".{option}" if option else "")
            raise SuiteError(f"{rs.path}: {where}: {_one_line(exc)}") from None
        except Exception as exc:  # a bug in the plugin, not in the suite: say whose
            raise PluginError(f"{rs.path}: {resolved.path}: plugin {resolved.component.plugin!r} failed checking "
                              f"{resolved.name!r} against the suite: {type(exc).__name__}: {_one_line(exc)}") from None


def _resolve(path: Path, registry: Registry, kind: str, ref: ComponentRef, key: str) -> Resolved:
    try:
        component = registry.get(kind, ref.name)
    except UnknownComponentError as exc:
        raise UnknownComponentError(f"{path}: {key}.name: {exc}") from None
    try:
        options = component.options.model_validate(ref.options)
    except ValidationError as exc:
        raise SuiteError(_validation_message(str(path), exc, prefix=(key, "options"))) from None
    return Resolved(ref, component, options, key)


def _teacher_loss(path: Path, registry: Registry, task: Resolved, ref: TeacherRef, index: int) -> Resolved | None:
    """The loss a teacher trains with: its own ``loss:``, else the task's ``default_loss``."""
    loss = ref.loss
    if loss is None:
        default = getattr(task.component.factory, "default_loss", "")
        if not default:
            if ref.checkpoint is None:
                raise SuiteError(f"{path}: teachers[{index}]: task {task.name!r} has no default loss to train a "
                                 "teacher with: give the teacher a 'loss' or a 'checkpoint'")
            return None
        loss = ComponentRef(name=default)
    resolved = _resolve(path, registry, "losses", loss, f"teachers[{index}].loss")
    if getattr(resolved.component.factory, "requires_teacher", False):
        raise SuiteError(f"{path}: teachers[{index}].loss: {resolved.name!r} distills from a teacher; "
                         "a teacher trains without one")
    return resolved


def resolve_suite(suite: Suite, registry: Registry, path: str | Path = "<suite>") -> ResolvedSuite:
    path = Path(path)
    suite = _with_defaults(path, suite, registry)
    fields: dict[str, Any] = {}
    for key, kind in _SINGLE.items():
        fields[key] = _resolve(path, registry, kind, getattr(suite, key), key)
    for key, kind in _LISTS.items():
        fields[key] = [_resolve(path, registry, kind, ref, f"{key}[{i}]") for i, ref in enumerate(getattr(suite, key))]
        labels = [r.label for r in fields[key]]
        dup = next((lab for lab in labels if labels.count(lab) > 1), None)
        if dup is not None:
            raise SuiteError(f"{path}: {key}: {dup!r} appears twice; give one a distinct 'label'")
    fields["teacher_losses"] = [_teacher_loss(path, registry, fields["task"], ref, i)
                                for i, ref in enumerate(suite.teachers)]
    _check_checkpoints(path, suite)
    rs = ResolvedSuite(path=path, suite=suite, **fields)
    _check_against_suite(rs)
    return rs


def _check_checkpoints(path: Path, suite: Suite) -> None:
    """A checkpoint that is not a file is named here: by `validate`, and before a run trains anything."""
    for key in ("teachers", "references"):
        for i, ref in enumerate(getattr(suite, key)):
            if ref.checkpoint is not None and not ref.checkpoint.is_file():
                problem = "is a folder, not a file" if ref.checkpoint.is_dir() else "no such file"
                raise CheckpointError(f"{path}: {key}[{i}].checkpoint: {problem}: {ref.checkpoint}")


def load_suite(path: str | Path, registry: Registry) -> ResolvedSuite:
    return resolve_suite(read_suite(path), registry, path)
