"""The leaderboard: one row per (model, teacher, loss, target), seeds folded into mean, std and n."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdbench.measurement import timing_note

KEYS = ["role", "model", "teacher", "loss", "target"]


def rows_frame(result) -> pd.DataFrame:
    return pd.DataFrame([r.flat() for r in result.rows])


def primary_column(columns: dict[str, tuple[str, bool]]) -> str | None:
    """The metric to rank by: the first per-split metric on the last test split (held-out
    conditions are listed last by convention, e.g. ``test-unseen``)."""
    split_metrics = [c for c in columns if "/" in c and not c.endswith("_gap_to_teacher")]
    if not split_metrics:
        return None
    first_metric = split_metrics[0].split("/", 1)[1]
    candidates = [c for c in split_metrics if c.split("/", 1)[1] == first_metric]
    return candidates[-1]


def leaderboard_frame(result) -> pd.DataFrame:
    """Aggregated numbers: ``<metric>`` is the mean over seeds, ``<metric> std`` the spread."""
    raw = rows_frame(result)
    if raw.empty:
        return raw
    ok = raw[raw["status"] == "ok"]
    metrics = [c for c in result.columns if c in ok.columns]
    records: list[dict[str, Any]] = []
    for key, group in ok.groupby(KEYS, sort=False, dropna=False):
        rec = dict(zip(KEYS, key))
        rec["n"] = len(group)
        rec["params"] = group["params"].iloc[0]
        for m in metrics:
            values = group[m].astype(float)
            rec[m] = values.mean()
            rec[f"{m} std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        records.append(rec)
    frame = pd.DataFrame(records)
    primary = primary_column(result.columns)
    if primary and primary in frame:
        ascending = not result.columns[primary][1]
        frame = frame.sort_values(["role", primary], ascending=[False, ascending], kind="stable")
    return frame.reset_index(drop=True)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or value == 0:
        return f"{value:.3f}".rstrip("0").rstrip(".") if magnitude < 1 else f"{value:.2f}"
    return f"{value:.2e}"


def display_frame(frame: pd.DataFrame, columns: dict[str, tuple[str, bool]]) -> pd.DataFrame:
    """Human-readable cells: ``mean ± std`` and units in headers."""
    if frame.empty:
        return frame
    out = frame[KEYS + ["n"]].copy()
    for name, (unit, higher) in columns.items():
        if name not in frame:
            continue
        arrow = "↑" if higher else "↓"
        header = f"{name} ({unit}) {arrow}" if unit else f"{name} {arrow}"
        std = frame.get(f"{name} std")
        out[header] = [
            _fmt(m) + (f" ± {_fmt(s)}" if s is not None and not (isinstance(s, float) and math.isnan(s)) else "")
            for m, s in zip(frame[name], std if std is not None else [None] * len(frame))
        ]
    notes = [timing_note(rec, columns) for rec in frame.to_dict("records")]
    if any(notes):
        out["timing"] = notes
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no successful runs_\n"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


SUMMARY_WIDTH = 100  # what a terminal shows without wrapping; the files hold every column
_SUMMARY_NAME_WIDTH = 18


def _p50_latency_column(columns: dict[str, tuple[str, bool]]) -> str | None:
    from kdbench.mlflow_leaderboard import cost_axes

    return next((name for name, label, _ in cost_axes(columns) if label.startswith("p50 latency")), None)


def _count(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def summary_frame(frame: pd.DataFrame, columns: dict[str, tuple[str, bool]], target_order: list[str] = ()) -> pd.DataFrame:
    """The few numbers a person reads at the end of a run, one row per ranked model and target:
    the primary metric, the KD gain over the same student trained without a teacher (positive =
    KD helped), size, median latency and the speed-up over the teacher on the same target."""
    primary = primary_column(columns)
    if frame.empty or primary is None or primary not in frame:
        return pd.DataFrame()
    unit, higher = columns[primary]
    latency = _p50_latency_column(columns)
    metric = primary.split("/", 1)[1]
    frame = frame.assign(_teacher=frame["teacher"].fillna("").astype(str))
    baselines = {(r["model"], r["target"]): r[primary] for r in frame.to_dict("records")
                 if r["role"] == "student" and r["_teacher"] == ""}
    teacher_rows = frame[frame["role"] == "teacher"]
    teacher_latency = {(m, t): v for m, t, v in zip(teacher_rows["model"], teacher_rows["target"],
                                                    teacher_rows[latency] if latency else [math.nan] * len(teacher_rows))}
    only_teacher = teacher_rows["model"].iloc[0] if teacher_rows["model"].nunique() == 1 else None
    sign = 1.0 if higher else -1.0
    # grouped by target (in the suite's order), teachers first, then best first
    order = {t: i for i, t in enumerate(dict.fromkeys([*target_order, *frame["target"]]))}
    frame = frame.assign(_t=frame["target"].map(order), _r=frame["role"] != "teacher")
    frame = frame.sort_values(["_t", "_r", primary], ascending=[True, True, not higher], kind="stable")
    out = []
    for rec in frame.to_dict("records"):
        kd_teacher = rec["_teacher"]
        base = baselines.get((rec["model"], rec["target"])) if rec["role"] == "student" and kd_teacher else None
        gain = sign * (rec[primary] - base) + 0.0 if base is not None else math.nan
        # a student without a teacher is compared with the suite's teacher, when there is one
        ref = kd_teacher or only_teacher
        t_lat = teacher_latency.get((ref, rec["target"]), math.nan) if rec["role"] == "student" else math.nan
        own = rec.get(latency, math.nan) if latency else math.nan
        out.append({
            "model": rec["model"], "loss": rec["loss"] if isinstance(rec["loss"], str) and rec["loss"] else "–",
            "target": rec["target"],
            f"{metric} {unit}".strip() + (" ↑" if higher else " ↓"): _fmt(rec[primary]),
            "KD gain": "–" if math.isnan(gain) else f"{gain:+.2f}",
            "params": _count(rec.get("params", math.nan)),
            "p50 ms": _fmt(own),
            "vs teacher": "–" if math.isnan(t_lat) or not own else f"{t_lat / own:.1f}x",
        })
    return pd.DataFrame(out)


def summary_text(frame: pd.DataFrame, columns: dict[str, tuple[str, bool]], target_order: list[str] = ()) -> str:
    """:func:`summary_frame` as aligned plain text no wider than ``SUMMARY_WIDTH`` (long names are
    cut with "…"), the same in a terminal and in a CI log: names left-aligned, numbers right."""
    summary = summary_frame(frame, columns, target_order)
    if summary.empty:
        return "no successful runs to summarise"
    names = ("model", "loss", "target")
    for col in names:
        summary[col] = [v if len(v) <= _SUMMARY_NAME_WIDTH else v[:_SUMMARY_NAME_WIDTH - 1] + "…"
                        for v in summary[col].astype(str)]
    widths = {c: max(len(str(c)), *(len(str(v)) for v in summary[c])) for c in summary.columns}

    def line(cells) -> str:
        return "  ".join(str(v).ljust(widths[c]) if c in names else str(v).rjust(widths[c])
                         for c, v in zip(summary.columns, cells)).rstrip()[:SUMMARY_WIDTH]

    return "\n".join([line(summary.columns), *(line(row) for row in summary.itertuples(index=False))])
