"""From evaluation runs to leaderboard rows: identity and provenance decide which runs are seeds
of one row, coverage decides which rows are ranked, the primary metric decides the order.

The runs come from MLflow (``board.fetch``) or from one invocation's results
(``SuiteResult.runs()``, the same tags and metrics): every view is built by this code, so
``kdbench run``, ``kdbench leaderboard`` and the HTML page give one answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from kdbench import records
from kdbench.hashing import stable_hash
from kdbench.records import IDENTITY, IDENTITY_TAGS, MetricMeta

DEFAULT_MIN_COVERAGE = 0.95

#: run id -> its per-utterance scores ({metric: {"ids", "samples", "weights", "groups"}}), or None
ScoresLoader = Callable[[str], "dict[str, Any] | None"]


@dataclass
class Board:
    """The aggregated leaderboard and what is needed to display it."""

    frame: pd.DataFrame
    columns: dict[str, MetricMeta]  # metric -> its declared semantics, in display order
    primary: str | None
    provenance_columns: list[str]
    min_coverage: float
    runs: int  # evaluation runs read
    notes: list[str] = field(default_factory=list)
    target_order: list[str] = field(default_factory=list)  # the suite's order, when known
    #: run id -> audio files of that evaluation (a few predictions to listen to), or None
    audio: Callable[[str], list] | None = None
    #: how the KD gain's intervals were drawn, as the legends say it (``compare``)
    gain_ci: str = "paired bootstrap 95% CI over utterances"

    @property
    def empty(self) -> bool:
        return self.frame.empty

    def costs(self, headline: bool = True) -> list[str]:
        """Cost metrics (headline ones only, by default), in the order the metrics reported them."""
        return [n for n, m in self.columns.items() if m.kind == "cost" and (m.headline or not headline)
                and n in self.frame]

    def speedup_metric(self) -> str | None:
        return next((n for n, m in self.columns.items() if m.speedup and n in self.frame), None)


def _first(raw: pd.DataFrame, column: str) -> Any:
    if column in raw:
        values = raw[column].dropna()
        if len(values):
            return values.iloc[0]
    return None


def metric_columns(raw: pd.DataFrame, primary: str | None = None) -> dict[str, MetricMeta]:
    """Each metric's semantics from its tags: per-split metrics first, the primary metric's
    family leading, then model-level ones."""
    names = [c[len("metric:"):] for c in raw.columns if c.startswith("metric:")]
    meta = {n: MetricMeta.from_tag(_first(raw, f"tag:{records.METRIC}{n}.meta"),
                                   _first(raw, f"tag:{records.METRIC}{n}.unit") or "",
                                   _first(raw, f"tag:{records.METRIC}{n}.higher_is_better") or "False")
            for n in names}
    lead = (primary or records.primary_metric(meta) or "").split("/")[-1]

    def order(name: str) -> tuple:
        base = name.split("/")[-1]
        return (records.split_of(name) is None, base != lead, names.index(name))

    return dict(sorted(meta.items(), key=lambda kv: order(kv[0])))


def _coverage(raw: pd.DataFrame, columns: dict[str, MetricMeta]) -> pd.Series:
    """Lowest scored/total over a run's metrics (1.0 when no metric declares coverage). A metric
    that scored nothing in any run is not applicable here (DNSMOS on 8 kHz audio), not a gap."""
    out = pd.Series(1.0, index=raw.index)
    for n in columns:
        if columns[n].kind == "condition":
            continue  # a condition is shown, never ranked: what it could not tell unranks nothing
        col = f"tag:{records.METRIC}{n}.coverage"
        if col not in raw:
            continue

        def frac(v):
            if not isinstance(v, str) or "/" not in v:
                return 1.0
            scored, total = (int(x) for x in v.split("/"))
            return scored / total if total else 0.0

        fractions = raw[col].map(frac)
        if fractions.max() > 0:
            out = np.minimum(out, fractions)
    return out


def condition_note(values: dict[str, float], columns: dict[str, MetricMeta]) -> str:
    """Why a row's numbers should not be trusted, or '': every condition metric above the limit
    it declared, in the words it declared (other processes busy while timing, say)."""
    notes = []
    for name, meta in columns.items():
        value = values.get(name)
        if meta.kind == "condition" and meta.warn_above is not None and value is not None \
                and not math.isnan(value) and value > meta.warn_above:
            notes.append(f"{meta.note or 'measured under load'}: {name} {value:.2f} {meta.unit} "
                         f"> {meta.warn_above:g}".replace("  ", " "))
    return "; ".join(notes)


def aggregate(raw: pd.DataFrame, *, scores: ScoresLoader | None = None, target: str | None = None,
              min_coverage: float = DEFAULT_MIN_COVERAGE, metric: str | None = None, resamples: int = 2000,
              target_order: list[str] = ()) -> Board:
    """Fold runs into rows. ``scores`` loads a run's per-utterance scores for the KD gain's
    confidence interval (None: no interval)."""
    from kdbench.board.compare import add_comparisons

    n_runs = len(raw)
    if raw.empty:
        return Board(pd.DataFrame(), {}, None, [], min_coverage, 0)
    raw = raw.copy()
    for col, tag in IDENTITY_TAGS.items():
        raw[col] = raw.get(f"tag:{tag}", pd.Series("", index=raw.index)).fillna("")
    if target:
        raw = raw[raw["target"] == target].copy()
        if raw.empty:
            return Board(pd.DataFrame(), {}, None, [], min_coverage, n_runs, notes=[f"no runs on target {target!r}"])
    raw["seed"] = raw.get(f"tag:{records.SEED}", pd.Series("", index=raw.index)).fillna("")
    prov_cols = sorted(c for c in raw.columns if c.startswith("tag:") and
                       (c[4:] in records.PROVENANCE_EXACT or c[4:].startswith(records.PROVENANCE_PREFIXES)))
    carried = prov_cols + [c for c in (f"tag:{records.STUDENT_HASH}",) if c in raw]
    for c in carried:
        raw[c] = raw[c].fillna("")
    raw["provenance"] = [stable_hash(dict(zip(prov_cols, vals)), 8) for vals in raw[prov_cols].itertuples(index=False)]
    # the same evaluation logged again (a rerun that reused everything) counts once: the latest
    run_key = raw.get(f"tag:{records.RUN_KEY}", raw["run_id"]).fillna("")
    target_key = raw.get(f"tag:{records.TARGET_KEY}", pd.Series("", index=raw.index)).fillna("")
    raw = raw.assign(_dedupe=run_key.astype(str) + "|" + target_key.astype(str) + "|" + raw["seed"].astype(str)
                     + "|" + raw["provenance"])
    raw = raw.sort_values("start_time").drop_duplicates("_dedupe", keep="last")

    tagged = raw.get(f"tag:{records.PRIMARY_METRIC}")
    tagged = tagged.dropna().mode().iloc[0] if tagged is not None and tagged.dropna().size else None
    columns = metric_columns(raw, metric or tagged)
    primary = metric or tagged or records.primary_metric(columns)
    raw["coverage"] = _coverage(raw, columns)
    # what unranks a row is a partial score on the metric it is ranked by; another metric's gaps
    # (F0 where nothing was voiced) show in the coverage column without unranking it
    raw["_ranked_coverage"] = _coverage(raw, {primary: columns[primary]}) if primary in columns else raw["coverage"]

    # one vectorised groupby (not a Python loop over groups): 1,000 runs aggregate in milliseconds
    keys = list(IDENTITY) + ["provenance"]
    metric_cols = [f"metric:{n}" for n in columns if f"metric:{n}" in raw]
    raw[metric_cols] = raw[metric_cols].astype(float)
    g = raw.groupby(keys, sort=False, dropna=False)
    frame = g.size().rename("n").to_frame()
    frame["seeds"] = g["seed"].agg(lambda s: ",".join(sorted(x for x in s if x != "")))
    frame["coverage"] = g["coverage"].min().astype(float)
    ranked_coverage = g["_ranked_coverage"].min().astype(float).to_numpy()
    frame["last_run"] = pd.to_datetime(g["start_time"].max(), unit="ms", utc=True)
    frame["run_ids"] = g["run_id"].agg(list)
    means, stds = g[metric_cols].mean(), g[metric_cols].std(ddof=1)
    for name in columns:
        col = f"metric:{name}"
        frame[name] = means[col] if col in means else math.nan
        frame[f"{name} std"] = stds[col] if col in stds else math.nan
    frame = frame.join(g[carried].first().rename(columns=lambda c: c[4:])).reset_index()
    frame["flag"] = np.where(ranked_coverage < min_coverage,
                             [f"coverage {c:.0%} < {min_coverage:.0%}" for c in ranked_coverage], "")
    frame["timing"] = [condition_note(rec, columns) for rec in frame[list(columns)].to_dict("records")]
    board = Board(frame, columns, primary, [c[4:] for c in prov_cols], min_coverage, n_runs,
                  target_order=list(dict.fromkeys([*target_order, *frame["target"]])))
    add_comparisons(board, scores, resamples)
    rank(board)
    return board


def rank(board: Board) -> None:
    """Rank students (and references) within (target, role) by the primary metric; rows below the coverage threshold are
    listed after the ranked ones, unranked, because a score on part of the test set is not
    comparable with a score on all of it. Targets in the suite's order, teachers first."""
    frame, primary = board.frame, board.primary
    frame["rank"] = np.nan
    order = {t: i for i, t in enumerate(board.target_order)}
    frame = frame.assign(_t=frame["target"].map(order), _role=frame["role"] != "teacher", _flagged=frame["flag"] != "")
    if primary and primary in frame:
        hib = board.columns[primary].higher_is_better
        # teachers are the context of a ranking, not in it
        ok = ~frame["_flagged"] & (frame["role"] != "teacher")
        frame.loc[ok, "rank"] = frame[ok].groupby(["target", "role"])[primary].rank(ascending=not hib, method="min")
        frame = frame.sort_values(["_t", "_role", "_flagged", primary], ascending=[True, True, True, not hib],
                                  kind="stable", na_position="last")
    else:
        frame = frame.sort_values(["_t", "_role"], kind="stable")
    board.frame = frame.drop(columns=["_t", "_role", "_flagged"]).reset_index(drop=True)


def latest(board: Board) -> pd.DataFrame:
    """Per identity, the row with the newest run: "the latest results" a regression gate checks."""
    frame = board.frame
    if frame.empty:
        return frame
    return frame.sort_values("last_run").groupby(list(IDENTITY), sort=False).tail(1)
