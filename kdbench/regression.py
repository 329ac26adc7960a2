"""The nightly regression gate: a committed baseline file, per-metric tolerances, and a
comparison of the latest results against it.

The baseline is versioned YAML (``schema: 1``) so an old file is recognised and explained
instead of misread. Rows are matched by identity (role, model, teacher, loss, target), not by
provenance: the nightly run is *meant* to come from a newer commit. Direction comes from each
metric's ``higher_is_better``; a tolerance is one of

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

from kdbench.errors import BaselineError
from kdbench.records import IDENTITY as _BOARD_IDENTITY, MetricMeta

SCHEMA = 1
IDENTITY = tuple(k for k in _BOARD_IDENTITY if k != "suite")  # a baseline file is of one suite
KINDS = ("abs", "rel", "ratio")
CATCH_ALL = {"rel": 0.02}


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
    who = row["model"] + (f" · {row['loss']}" if row["role"] == "student" else " (teacher)")
    if row.get("teacher"):
        who += f" ← {row['teacher']}"
    return f"{who} @ {row['target']}"


@dataclass
class Finding:
    kind: str  # "regression", "improvement", "missing"
    metric: str
    row: str
    baseline: float | None = None
    current: float | None = None
    allowed: str = ""
    unit: str = ""

    def line(self) -> str:
        if self.kind == "missing":
            return f"MISSING     {self.metric}  {self.row}: {self.allowed}"
        delta = self.current - self.baseline
        pct = f", {100 * delta / abs(self.baseline):+.1f}%" if self.baseline else ""
        word = "REGRESSION " if self.kind == "regression" else "improved   "
        return (f"{word} {self.metric}  {self.row}: {self.baseline:.4g} -> {self.current:.4g} {self.unit} "
                f"({delta:+.4g}{pct}; tolerance {self.allowed})")


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "regression"]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "missing"]

    def text(self) -> str:
        lines = [f.line() for f in self.findings]
        verdict = (f"{len(self.regressions)} regression(s), {len(self.missing)} missing, "
                   f"{self.checked} value(s) checked")
        return "\n".join(lines + [verdict]) + "\n"


# ---- the file --------------------------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file (write one with `kdbench baseline update`)") from None
    except yaml.YAMLError as exc:
        raise BaselineError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: not a kdbench baseline (expected a mapping with `schema: {SCHEMA}`)")
    schema = data.get("schema")
    if schema is None:
        raise BaselineError(f"{path}: baseline from an older kdbench (no `schema` field); this kdbench reads "
                            f"schema {SCHEMA}: regenerate it with `kdbench baseline update --baseline {path}`")
    if schema != SCHEMA:
        older = isinstance(schema, int) and schema < SCHEMA
        raise BaselineError(f"{path}: baseline schema {schema} is {'older' if older else 'newer'} than this kdbench's "
                            f"(schema {SCHEMA}); " + ("regenerate it with `kdbench baseline update`" if older
                                                       else "upgrade kdbench"))
    for key in ("rows", "metrics"):
        if not isinstance(data.get(key), (list if key == "rows" else dict)):
            raise BaselineError(f"{path}: `{key}` is missing or malformed")
    for i, row in enumerate(data["rows"]):
        absent = [k for k in (*IDENTITY, "values") if k not in row]
        if absent:
            raise BaselineError(f"{path}: rows[{i}]: missing {', '.join(absent)}")
    for pattern, tol in (data.get("tolerances") or {}).items():
        kinds = [k for k in tol if k in KINDS] if isinstance(tol, dict) else []
        if len(kinds) != 1 or set(tol) - {*KINDS, "floor"}:
            raise BaselineError(f"{path}: tolerances.{pattern}: expected exactly one of {', '.join(KINDS)} "
                                f"(and optionally floor), got {tol!r}")
        if not all(isinstance(v, (int, float)) and v >= 0 for v in tol.values()):
            raise BaselineError(f"{path}: tolerances.{pattern}: amounts must be numbers >= 0, got {tol!r}")
    return data


def make(board, *, previous: dict[str, Any] | None = None, suite: str | None = None) -> dict[str, Any]:
    """A baseline from the latest rows of a leaderboard; tolerances kept from ``previous``."""
    from kdbench.board import latest

    frame = latest(board)
    rows = []
    for rec in frame.to_dict("records"):
        values = {m: float(rec[m]) for m, meta in board.columns.items()
                  if m in rec and not _nan(rec[m]) and gated(meta)}
        rows.append({**{k: rec[k] for k in IDENTITY}, "n": int(rec["n"]), "values": values,
                     "provenance": {"git_commit": rec.get("git_commit", ""), "config_hash": rec.get("kdbench.config_hash", ""),
                                    "host.cpu": rec.get("host.cpu", "")}})
    tolerances = merge_tolerances((previous or {}).get("tolerances") or {}, default_tolerances(board.columns))
    return {"schema": SCHEMA, "suite": suite or (frame["suite"].iloc[0] if len(frame) else None),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tolerances": tolerances,
            "metrics": {m: {"unit": meta.unit, "higher_is_better": meta.higher_is_better}
                        for m, meta in board.columns.items()},
            "rows": rows}


def save(path: Path, baseline: dict[str, Any]) -> None:
    header = ("# kdbench regression baseline: `kdbench compare --baseline THIS` checks the latest results.\n"
              "# tolerances: first matching pattern wins; abs = units, rel = fraction, ratio = factor.\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(baseline, sort_keys=False, allow_unicode=True))


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


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


def compare(baseline: dict[str, Any], board) -> Comparison:
    from kdbench.board import latest

    current = {tuple(r[k] for k in IDENTITY): r for r in latest(board).to_dict("records")}
    tolerances = baseline.get("tolerances") or {}
    out = Comparison()
    for row in baseline["rows"]:
        key = tuple(row[k] for k in IDENTITY)
        label = _label(row)
        now = current.get(key)
        if now is None:
            out.findings.append(Finding("missing", "*", label, allowed="no such run in the latest results "
                                        "(renamed or removed? update the baseline)"))
            continue
        for metric, base in row["values"].items():
            meta = board.columns.get(metric) or MetricMeta(**baseline["metrics"].get(metric, {}))
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
            shown = f"{kind} {amount:g}" + (f", floor {floor:g}" if floor else "")
            out.checked += 1
            if worse_by > allowed + 1e-12:
                out.findings.append(Finding("regression", metric, label, base, value, shown, unit))
            elif -worse_by > allowed + 1e-12 and allowed > 0:
                out.findings.append(Finding("improvement", metric, label, base, value, shown, unit))
    return out



def failure(result: Comparison, baseline_path: Path, allow_missing: bool = False) -> str | None:
    """The one-line verdict when the gate fails (a regression, or a missing value unless
    ``allow_missing``), else None."""
    if result.regressions:
        worst = result.regressions[0]
        return (f"{len(result.regressions)} regression(s) against {baseline_path}, e.g. {worst.metric} "
                f"of {worst.row}: {worst.baseline:.4g} -> {worst.current:.4g}")
    if result.missing and not allow_missing:
        return (f"{len(result.missing)} baseline value(s) missing from the latest results "
                f"(see MISSING above; --allow-missing to ignore, or `kdbench baseline update`)")
    return None
