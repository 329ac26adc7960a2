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
