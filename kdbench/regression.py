"""The nightly regression gate: a committed baseline file, per-metric tolerances, and a
comparison of the latest results against it.

The baseline is versioned YAML (``schema: 2``) so an old file is recognised and explained
instead of misread. It holds one section per machine class (CPU model, cores, torch version):
timings from one machine say nothing about another, and quality figures can move with the
CPU's instruction set. Rows are matched by identity (role, model, teacher, loss,
target), and then compared only when they are like for like: the same data, configuration
(model, loss, teacher, training, task) and component versions. Anything else is *not
comparable*, with the reason, never a regression: the nightly run is meant to come from a newer
commit, not from other data. A timing taken under load (a condition above its ``warn_above``,
on either side) is *inconclusive*.

Direction comes from each metric's ``higher_is_better``; a tolerance is one of

- ``abs: x``    worse by more than x units (WER in percentage points),
- ``rel: x``    worse by more than the fraction x of the baseline value,
- ``ratio: x``  worse by more than a factor x (latency on a shared, noisy machine: 2.0 means
  "fail only if more than twice as slow").

Any of them may add ``floor: y``: a change of at most y units is never a regression, whatever
the ratio says (a one-shot timing of a few milliseconds, such as a cold start, moves by more
than 2x between identical runs).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from kdbench.errors import BaselineError
from kdbench import records
from kdbench.records import IDENTITY as _BOARD_IDENTITY, MetricMeta
from kdbench.yaml_file import read_yaml

SCHEMA = 2
IDENTITY = tuple(k for k in _BOARD_IDENTITY if k != "suite")  # a baseline file is of one suite
KINDS = ("abs", "rel", "ratio")
CATCH_ALL = {"rel": 0.02}
#: what makes two machines one class: timings (and float rounding) are compared only within one
MACHINE = ("host.cpu", "host.cores", "version.torch")
#: provenance that must match for two rows to be compared, grouped by the reason given when not
LIKE_FOR_LIKE = {
    "data changed": (records.DATA_HASH,),
    "configuration changed": (records.CONFIG_HASH, records.TEACHER_HASH, "task."),
    "component version differs": (records.PROVIDER, "version."),
}


def gated(meta: MetricMeta) -> bool:
    """Conditions of a measurement (machine load) and values that restate a gated one are shown,
    never gated."""
    return meta.kind != "condition" and meta.gated


def default_tolerances(columns: dict[str, MetricMeta]) -> dict[str, dict[str, float]]:
    """The tolerance each metric declares, then the catch-all; the file is meant to be edited.
    Patterns match metric names (fnmatch); the first match wins, so specific patterns come first."""
    tol = {name: dict(meta.tolerance) for name, meta in columns.items() if meta.tolerance and gated(meta)}
    tol["*"] = dict(CATCH_ALL)
    return tol


def merge_tolerances(kept: dict[str, dict[str, float]], defaults: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The user's tolerances, plus defaults for metrics none of their own patterns covers (a
    metric added since would otherwise fall to the catch-all), catch-all last."""
    own = {p: t for p, t in kept.items() if p != "*"}
    merged = dict(own)
    for name, tol in defaults.items():
        if name != "*" and not any(fnmatch.fnmatchcase(name, p) for p in own):
            merged[name] = tol
    merged["*"] = kept.get("*", defaults.get("*", CATCH_ALL))
    return merged


def _label(row: dict[str, Any]) -> str:
    who = row["model"] + (f" · {row['loss']}" if row["role"] == "student" else f" ({row['role']})")
    if row.get("teacher"):
        who += f" ← {row['teacher']}"
    return f"{who} @ {row['target']}"


def machine_of(row: dict[str, Any]) -> dict[str, str]:
    return {k: str(row.get(k, "")) for k in MACHINE}


def machine_text(machine: dict[str, str]) -> str:
    return (f"{machine.get('host.cpu') or '?'}, {machine.get('host.cores') or '?'} cores, "
            f"torch {machine.get('version.torch') or '?'}")


@dataclass
class Finding:
    kind: str  # "regression", "improvement", "inconclusive", "not comparable", "missing"
    metric: str
    row: str
    baseline: float | None = None
    current: float | None = None
    allowed: str = ""  # the tolerance, or why there is no verdict
    unit: str = ""

    def line(self) -> str:
        if self.baseline is None or self.current is None:
            return f"{self.kind.upper():<15} {self.metric}  {self.row}: {self.allowed}"
        delta = self.current - self.baseline
        pct = f", {100 * delta / abs(self.baseline):+.1f}%" if self.baseline else ""
        return (f"{self.kind.upper():<15} {self.metric}  {self.row}: {self.baseline:.4g} -> {self.current:.4g} "
                f"{self.unit} ({delta:+.4g}{pct}; {self.allowed})")


#: the report's groups, in the order a reader needs them
GROUPS = ("regression", "not comparable", "missing", "inconclusive", "improvement")


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def regressions(self) -> list[Finding]:
        return self.of("regression")

    @property
    def missing(self) -> list[Finding]:
        return self.of("missing")

    def counts(self) -> str:
        return (f"{len(self.regressions)} regression(s), {len(self.of('improvement'))} improvement(s), "
                f"{len(self.of('inconclusive'))} inconclusive, {len(self.of('not comparable'))} not comparable, "
                f"{len(self.missing)} missing; {self.checked} value(s) compared")

    def text(self) -> str:
        lines = []
        for kind in GROUPS:
            found = self.of(kind)
            if found:
                lines += [f"{kind} ({len(found)}):"] + ["  " + f.line() for f in found] + [""]
        return "\n".join(lines + [self.counts()]) + "\n"


# ---- the file --------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaselineRow(_Strict):
    role: str
    model: str
    teacher: str = ""
    loss: str = ""
    target: str
    n: StrictInt = 1
    values: dict[str, float]
    #: the measurement's conditions (machine load) when the baseline was taken
    conditions: dict[str, float] = Field(default_factory=dict)
    #: what the values depend on besides the code: compared with the latest results' (LIKE_FOR_LIKE)
    provenance: dict[str, str] = Field(default_factory=dict)


class MachineSection(_Strict):
    machine: dict[str, str]
    created: str = ""
    rows: list[BaselineRow]


class BaselineFile(_Strict):
    schema_: StrictInt = Field(alias="schema")
    suite: str | None = None
    tolerances: dict[str, dict[str, float]] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    machines: list[MachineSection]


def load(path: Path) -> dict[str, Any]:
    """The baseline file, validated: every problem is one line naming the file and key."""
    from kdbench.suite import format_location

    path = Path(path)
    if not path.exists():
        raise BaselineError(f"{path}: no such baseline file (write one with `kdbench baseline update`)")
    data = read_yaml(path, "baseline", BaselineError)
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: not a kdbench baseline (expected a mapping with `schema: {SCHEMA}`)")
    schema = data.get("schema")
    if schema is None:
        raise BaselineError(f"{path}: baseline from an older kdbench (no `schema` field); this kdbench reads "
                            f"schema {SCHEMA}: regenerate it with `kdbench baseline update --baseline {path}`")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise BaselineError(f"{path}: schema: expected an integer such as {SCHEMA}, got {schema!r}")
    if schema != SCHEMA:
        older = schema < SCHEMA
        raise BaselineError(f"{path}: baseline schema {schema} is {'older' if older else 'newer'} than this kdbench's "
                            f"(schema {SCHEMA}); " + ("regenerate it with `kdbench baseline update`" if older
                                                       else "upgrade kdbench"))
    try:
        parsed = BaselineFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise BaselineError(f"{path}: {format_location(tuple(first['loc']))}: {msg}") from None
    for pattern, tol in parsed.tolerances.items():
        kinds = [k for k in tol if k in KINDS]
        if len(kinds) != 1 or set(tol) - {*KINDS, "floor"}:
            raise BaselineError(f"{path}: tolerances.{pattern}: expected exactly one of {', '.join(KINDS)} "
                                f"(and optionally floor), got {tol!r}")
        if not all(v >= 0 for v in tol.values()):
            raise BaselineError(f"{path}: tolerances.{pattern}: amounts must be numbers >= 0, got {tol!r}")
    return parsed.model_dump(by_alias=True)


def make(board, *, previous: dict[str, Any] | None = None, suite: str | None = None) -> dict[str, Any]:
    """A baseline from the latest rows of a leaderboard: the section of each machine class those
    rows come from is written afresh, other machines' sections are kept from ``previous``, and so
    are its tolerances."""
    from kdbench.board import latest

    frame = latest(board)
    conditions = [m for m, meta in board.columns.items() if meta.kind == "condition"]
    sections: dict[tuple, dict[str, Any]] = {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for rec in frame.to_dict("records"):
        machine = machine_of(rec)
        section = sections.setdefault(tuple(machine.values()), {"machine": machine, "created": now, "rows": []})
        values = {m: float(rec[m]) for m, meta in board.columns.items()
                  if m in rec and not _nan(rec[m]) and gated(meta)}
        section["rows"].append({
            **{k: rec[k] for k in IDENTITY}, "n": int(rec["n"]), "values": values,
            "conditions": {m: float(rec[m]) for m in conditions if m in rec and not _nan(rec[m])},
            "provenance": {"git_commit": str(rec.get("git_commit", "")),
                           **{k: str(rec[k]) for k in rec if _like_for_like(k) and not _nan(rec[k])}}})
    kept = [s for s in (previous or {}).get("machines", []) if tuple(machine_of(s["machine"]).values()) not in sections]
    tolerances = merge_tolerances((previous or {}).get("tolerances") or {}, default_tolerances(board.columns))
    return {"schema": SCHEMA, "suite": suite or (frame["suite"].iloc[0] if len(frame) else None),
            "tolerances": tolerances,
            "metrics": {m: {"unit": meta.unit, "higher_is_better": meta.higher_is_better}
                        for m, meta in board.columns.items()},
            "machines": kept + list(sections.values())}


def save(path: Path, baseline: dict[str, Any]) -> None:
    header = ("# kdbench regression baseline: `kdbench compare --baseline THIS` checks the latest results.\n"
              "# One section per machine class; `kdbench baseline update` on a new machine adds its own.\n"
              "# tolerances: first matching pattern wins; abs = units, rel = fraction, ratio = factor.\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(baseline, sort_keys=False, allow_unicode=True))


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _like_for_like(key: str) -> bool:
    return any(key.startswith(p) for group in LIKE_FOR_LIKE.values() for p in group)


def _matching(metric: str, tolerances: dict[str, dict[str, float]]) -> dict[str, float]:
    for pattern, tol in tolerances.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return tol
    return {"abs": 0.0}


def tolerance_for(metric: str, tolerances: dict[str, dict[str, float]]) -> tuple[str, float]:
    return next((k, float(v)) for k, v in _matching(metric, tolerances).items() if k in KINDS)


def noise_floor_for(metric: str, tolerances: dict[str, dict[str, float]]) -> float:
    return float(_matching(metric, tolerances).get("floor", 0.0))


def allowed_worsening(kind: str, amount: float, base: float, higher_is_better: bool) -> float:
    if kind == "abs":
        return amount
    if kind == "rel":
        return amount * abs(base)
    # ratio: lower-is-better may grow to base*ratio; higher-is-better may shrink to base/ratio
    return abs(base) * (amount - 1) if not higher_is_better else abs(base) * (1 - 1 / amount)


def not_comparable(base: dict[str, str], now: dict[str, Any]) -> list[str]:
    """Why a baseline row's values cannot be compared with the latest row's: each group of
    LIKE_FOR_LIKE whose keys differ, with the first difference (a key missing on one side is not
    a difference: older runs lack newer tags)."""
    reasons = []
    for reason, prefixes in LIKE_FOR_LIKE.items():
        for key in sorted(k for k in base if any(k.startswith(p) for p in prefixes)):
            current = now.get(key)
            if current is not None and not _nan(current) and str(current) != base[key]:
                reasons.append(f"{reason} ({key}: {_short(base[key])} -> {_short(str(current))})")
                break
    return reasons


def _short(value: str) -> str:
    return value if len(value) <= 24 else value[:21] + "..."


def _loaded(conditions: dict[str, float], columns: dict[str, MetricMeta]) -> str:
    """The first condition above its declared threshold, as text, or ''."""
    for name, value in conditions.items():
        meta = columns.get(name)
        if meta is not None and meta.warn_above is not None and value > meta.warn_above:
            return f"{meta.note or 'measured under load'}: {name} {value:.2f} {meta.unit} > {meta.warn_above:g}"
    return ""


def compare(baseline: dict[str, Any], board) -> Comparison:
    from kdbench.board import latest

    frame = latest(board)
    current = {tuple(r[k] for k in IDENTITY): r for r in frame.to_dict("records")}
    sections = {tuple(machine_of(s["machine"]).values()): s for s in baseline["machines"]}
    tolerances = baseline.get("tolerances") or {}
    conditions = [m for m, meta in board.columns.items() if meta.kind == "condition"]
    out = Comparison()
    machines_seen: dict[tuple, dict[str, str]] = {}
    for now in current.values():
        machine = machine_of(now)
        machines_seen[tuple(machine.values())] = machine
    for key_machine, machine in machines_seen.items():
        if key_machine not in sections:
            known = "; ".join(machine_text(s["machine"]) for s in baseline["machines"]) or "none"
            out.findings.append(Finding("not comparable", "*", f"every row timed on {machine_text(machine)}",
                                        allowed=f"the baseline has no section for this machine (it has: {known}); "
                                                "on it, run `kdbench baseline update` and commit the section"))
    for key_machine, section in sections.items():
        for row in section["rows"]:
            label = _label(row)
            now = current.get(tuple(row[k] for k in IDENTITY))
            if now is None:
                if key_machine in machines_seen or not machines_seen:
                    out.findings.append(Finding("missing", "*", label, allowed="no such run in the latest results "
                                                "(renamed or removed? update the baseline)"))
                continue
            if tuple(machine_of(now).values()) != key_machine:
                continue  # reported above, once per machine, not once per row
            reasons = not_comparable(row["provenance"], now)
            if reasons:
                out.findings.append(Finding("not comparable", "*", label, allowed="; ".join(reasons)))
                continue
            loaded = _loaded(row.get("conditions", {}), board.columns) or _loaded(
                {m: float(now[m]) for m in conditions if m in now and not _nan(now[m])}, board.columns)
            for metric, base in row["values"].items():
                meta = board.columns.get(metric) or MetricMeta(**{k: v for k, v in baseline["metrics"].get(metric, {}).items()
                                                                  if k in ("unit", "higher_is_better")})
                unit, hib = meta.unit, bool(meta.higher_is_better)
                if metric not in now or _nan(now[metric]):
                    out.findings.append(Finding("missing", metric, label, allowed="metric not in the latest results "
                                                "(no longer measured? update the baseline)"))
                    continue
                kind, amount = tolerance_for(metric, tolerances)
                value = float(now[metric])
                worse_by = (base - value) if hib else (value - base)
                floor = noise_floor_for(metric, tolerances)
                allowed = max(allowed_worsening(kind, amount, base, hib), floor)
                shown = f"tolerance {kind} {amount:g}" + (f", floor {floor:g}" if floor else "")
                out.checked += 1
                beyond = worse_by > allowed + 1e-12 or (-worse_by > allowed + 1e-12 and allowed > 0)
                if beyond and loaded and meta.timed:
                    out.findings.append(Finding("inconclusive", metric, label, base, value, loaded, unit))
                elif worse_by > allowed + 1e-12:
                    out.findings.append(Finding("regression", metric, label, base, value, shown, unit))
                elif beyond:
                    out.findings.append(Finding("improvement", metric, label, base, value, shown, unit))
    return out


def failure(result: Comparison, baseline_path: Path, allow_missing: bool = False,
            require_comparable: bool = False) -> str | None:
    """The one-line verdict when the gate fails (a regression; a missing value unless
    ``allow_missing``; with ``require_comparable``, a row that cannot be compared), else None."""
    counts = result.counts()
    if result.regressions:
        worst = result.regressions[0]
        return (f"{counts} against {baseline_path}; e.g. {worst.metric} of {worst.row}: "
                f"{worst.baseline:.4g} -> {worst.current:.4g}")
    if result.missing and not allow_missing:
        return (f"{counts}: baseline value(s) missing from the latest results "
                f"(see MISSING above; --allow-missing to ignore, or `kdbench baseline update`)")
    apart = result.of("not comparable")
    if apart and require_comparable:
        return f"{counts}: nothing to compare like with like, e.g. {apart[0].row}: {apart[0].allowed}"
    return None
