"""The leaderboard as the MLflow tracking store sees it: every evaluation run logged by any
machine, read with ``search_runs`` (tags and metrics only, paged) into pandas.

Everything a row needs is on the evaluation run's tags: identity (suite, role, model, teacher,
loss, seed, target), metric metadata (unit, direction, coverage) and provenance (commit,
package versions, normalizer, config/teacher/data hashes, host CPU and threads). Runs are
folded into one row only when identity *and* provenance agree, so a result from another
commit, library version or CPU is never averaged into this one. Artifacts are downloaded only
for the paired bootstrap, and only the per-utterance scores of the rows that need it.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

import os

from kdbench.hashing import stable_hash
from kdbench.leaderboard import _fmt, to_markdown
from kdbench.measurement import timing_note

IDENTITY = ["suite", "role", "model", "teacher", "loss", "target"]
_IDENTITY_TAGS = {"suite": "kdbench.suite", "role": "kdbench.model_role", "model": "kdbench.model",
                  "teacher": "kdbench.teacher", "loss": "kdbench.loss", "target": "kdbench.target"}
# provenance: a change in any of these means "a different experiment", never "another seed"
PROVENANCE_EXACT = ("git_commit", "kdbench.config_hash", "kdbench.teacher_hash", "kdbench.data_hash",
                    "host.cpu", "host.cores", "host.torch_threads")
PROVENANCE_PREFIXES = ("version.", "task.")
# provenance that may differ between a KD student and the baseline/teacher it is compared with
_OWN_CONFIG = ("kdbench.config_hash", "kdbench.teacher_hash")
DEFAULT_MIN_COVERAGE = 0.95


def evaluation_filter(suite: str | None = None) -> str:
    f = "tags.`kdbench.role` = 'evaluation' and attributes.status = 'FINISHED'"
    if suite:
        f += f" and tags.`kdbench.suite` = '{suite}'"
    return f


def fetch_evaluations(client, experiment_ids: list[str], suite: str | None = None,
                      page_size: int = 1000, extra: str = "") -> pd.DataFrame:
    """One row per evaluation run: run id, start/end time, ``tag:<name>`` and ``metric:<name>``."""
    records, token = [], None
    query = evaluation_filter(suite) + (f" and {extra}" if extra else "")
    while True:
        page = client.search_runs(experiment_ids, query, max_results=page_size, page_token=token)
        for run in page:
            rec: dict[str, Any] = {"run_id": run.info.run_id, "start_time": run.info.start_time,
                                   "end_time": run.info.end_time, "experiment_id": run.info.experiment_id}
            rec.update({f"tag:{k}": v for k, v in run.data.tags.items()})
            rec.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
            records.append(rec)
        token = page.token
        if not token:
            break
    return pd.DataFrame(records)


# finished runs do not change, so a leaderboard re-reads only runs that ended since the last read;
# the slack covers clocks of other machines (MLflow clients stamp end_time) being a little behind
CACHE_SLACK_MS = 2 * 60 * 1000
CACHE_TTL_S = 3600  # and a full re-read every hour picks up deleted or re-tagged runs


def fetch_cached(client, experiment_ids: list[str], suite: str | None, cache_dir: Path,
                 refresh: bool = False) -> pd.DataFrame:
    """``fetch_evaluations`` with an incremental local copy under ``cache_dir``."""
    import pickle
    import time

    uri = str(getattr(client, "tracking_uri", ""))
    if uri.startswith("sqlite:///"):  # a relative path names another store from another directory
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    path = Path(cache_dir) / f"{stable_hash({'uri': uri, 'exp': sorted(experiment_ids), 'suite': suite})}.pkl"
    cached = None
    if not refresh and path.exists():
        try:
            cached = pickle.loads(path.read_bytes())
        except Exception:  # a corrupt or foreign cache file is just re-read
            cached = None
    if cached is not None and time.time() - cached["written"] < CACHE_TTL_S:
        since = cached["watermark"] - CACHE_SLACK_MS
        new = fetch_evaluations(client, experiment_ids, suite, extra=f"attributes.end_time >= {since}")
        raw = pd.concat([cached["raw"], new]).drop_duplicates("run_id", keep="last") if len(new) else cached["raw"]
        written = cached["written"]
    else:
        raw = fetch_evaluations(client, experiment_ids, suite)
        written = time.time()
    watermark = int(raw["end_time"].max()) if len(raw) and raw["end_time"].notna().any() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps({"raw": raw, "watermark": watermark, "written": written}))
    tmp.replace(path)
    return raw.reset_index(drop=True)


def experiment_ids(client, suite: str | None, experiment: str | None = None) -> list[str]:
    """The suite's experiment (``kdbench-<suite>`` unless the suite names one), else every experiment."""
    name = experiment or (f"kdbench-{suite}" if suite else None)
    if name:
        exp = client.get_experiment_by_name(name)
        return [exp.experiment_id] if exp else []
    return [e.experiment_id for e in client.search_experiments()]


@dataclass
class Board:
    """The aggregated leaderboard and what is needed to display it."""

    frame: pd.DataFrame
    columns: dict[str, tuple[str, bool]]  # metric -> (unit, higher_is_better), in display order
    primary: str | None
    provenance_columns: list[str]
    min_coverage: float
    runs: int  # evaluation runs read
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.frame.empty


def _metric_meta(raw: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    names = [c[len("metric:"):] for c in raw.columns if c.startswith("metric:")]

    def first(tag: str, default: str) -> str:
        col = f"tag:{tag}"
        if col in raw:
            values = raw[col].dropna()
            if len(values):
                return values.iloc[0]
        return default

    meta = {n: (first(f"kdbench.metric.{n}.unit", ""), first(f"kdbench.metric.{n}.higher_is_better", "False") == "True")
            for n in names}
    # per-split metrics first, the primary metric's family leading, then model-level ones
    primary = first("kdbench.primary_metric", "")
    lead = primary.split("/")[-1]

    def order(name: str) -> tuple:
        base = name.split("/")[-1]
        return ("/" not in name, base != lead, base, name)

    return dict(sorted(meta.items(), key=lambda kv: order(kv[0])))


def _coverage(raw: pd.DataFrame, names: Iterable[str]) -> pd.Series:
    """Lowest scored/total over a run's metrics (1.0 when no metric declares coverage). A metric
    that scored nothing in any run is not applicable here (DNSMOS on 8 kHz audio), not a gap."""
    out = pd.Series(1.0, index=raw.index)
    for n in names:
        col = f"tag:kdbench.metric.{n}.coverage"
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


def build(client, exp_ids: list[str], suite: str | None = None, *, target: str | None = None,
          min_coverage: float = DEFAULT_MIN_COVERAGE, metric: str | None = None, bootstrap: bool = True,
          resamples: int = 2000, cache_dir: Path | None = None, refresh: bool = False) -> Board:
    """``cache_dir``: keep an incremental local copy of the runs read (see ``fetch_cached``)."""
    if not exp_ids:
        raw = pd.DataFrame()
    elif cache_dir is not None:
        raw = fetch_cached(client, exp_ids, suite, cache_dir, refresh)
    else:
        raw = fetch_evaluations(client, exp_ids, suite)
    return aggregate(raw, client=client if bootstrap else None, target=target, min_coverage=min_coverage,
                     metric=metric, resamples=resamples,
                     scores_dir=Path(cache_dir) / "scores" if cache_dir is not None else None)


def aggregate(raw: pd.DataFrame, *, client=None, target: str | None = None,
              min_coverage: float = DEFAULT_MIN_COVERAGE, metric: str | None = None, resamples: int = 2000,
              scores_dir: Path | None = None) -> Board:
    n_runs = len(raw)
    if raw.empty:
        return Board(pd.DataFrame(), {}, None, [], min_coverage, 0)
    for col, tag in _IDENTITY_TAGS.items():
        raw[col] = raw.get(f"tag:{tag}", pd.Series("", index=raw.index)).fillna("")
    if target:
        raw = raw[raw["target"] == target].copy()
        if raw.empty:
            return Board(pd.DataFrame(), {}, None, [], min_coverage, n_runs, notes=[f"no runs on target {target!r}"])
    raw["seed"] = raw.get("tag:kdbench.seed", pd.Series("", index=raw.index)).fillna("")
    prov_cols = [c for c in raw.columns if c.startswith("tag:") and
                 (c[4:] in PROVENANCE_EXACT or c[4:].startswith(PROVENANCE_PREFIXES))]
    prov_cols.sort()
    for c in prov_cols + [c for c in ("tag:kdbench.student_hash",) if c in raw]:
        raw[c] = raw[c].fillna("")
    raw["provenance"] = [stable_hash(dict(zip(prov_cols, vals)), 8) for vals in raw[prov_cols].itertuples(index=False)]
    # the same evaluation logged again (a rerun that reused everything) counts once: the latest
    run_key = raw.get("tag:kdbench.run_key", raw["run_id"]).fillna("")
    target_key = raw.get("tag:kdbench.target_key", pd.Series("", index=raw.index)).fillna("")
    raw = raw.assign(_dedupe=run_key.astype(str) + "|" + target_key.astype(str) + "|" + raw["seed"].astype(str)
                     + "|" + raw["provenance"])
    raw = raw.sort_values("start_time").drop_duplicates("_dedupe", keep="last")

    columns = _metric_meta(raw)
    primary = metric or _primary(raw, columns)
    raw["coverage"] = _coverage(raw, columns)

    # one vectorised groupby (not a Python loop over groups): 1,000 runs aggregate in milliseconds
    keys = IDENTITY + ["provenance"]
    metric_cols = [f"metric:{n}" for n in columns if f"metric:{n}" in raw]
    raw[metric_cols] = raw[metric_cols].astype(float)
    g = raw.groupby(keys, sort=False, dropna=False)
    frame = g.size().rename("n").to_frame()
    frame["seeds"] = g["seed"].agg(lambda s: ",".join(sorted(x for x in s if x != "")))
    frame["coverage"] = g["coverage"].min().astype(float)
    frame["last_run"] = pd.to_datetime(g["start_time"].max(), unit="ms", utc=True)
    frame["run_ids"] = g["run_id"].agg(list)
    means, stds = g[metric_cols].mean(), g[metric_cols].std(ddof=1)
    for name in columns:
        col = f"metric:{name}"
        frame[name] = means[col] if col in means else math.nan
        frame[f"{name} std"] = stds[col] if col in stds else math.nan
    carried = prov_cols + [c for c in ("tag:kdbench.student_hash",) if c in raw]
    frame = frame.join(g[carried].first().rename(columns=lambda c: c[4:])).reset_index()
    prov_names = [c[4:] for c in prov_cols]
    frame["flag"] = np.where(frame["coverage"] < min_coverage,
                             [f"coverage {c:.0%} < {min_coverage:.0%}" for c in frame["coverage"]], "")
    frame["timing"] = [timing_note(rec, columns) for rec in frame[list(columns)].to_dict("records")]
    board = Board(frame, columns, primary, prov_names, min_coverage, n_runs)
    if primary and primary in frame:
        _add_context(board)
        _teacher_fraction(board)
        _kd_gain(board, client, resamples, scores_dir)
        board.frame = board.frame.drop(columns=["_context"])
    _rank(board)
    return board


def _primary(raw: pd.DataFrame, columns: dict[str, tuple[str, bool]]) -> str | None:
    tagged = raw.get("tag:kdbench.primary_metric")
    if tagged is not None and tagged.dropna().size:
        return tagged.dropna().mode().iloc[0]
    from kdbench.leaderboard import primary_column

    return primary_column(columns)


def _add_context(board: Board) -> None:
    """``_context``: a hash of the provenance a KD student shares with the baseline and teacher it
    is compared with (everything but their own config and teacher hashes), so those lookups are
    dictionary hits instead of a scan of the frame per row."""
    frame = board.frame
    shared = [c for c in board.provenance_columns if c not in _OWN_CONFIG]
    frame["_context"] = [stable_hash(list(v), 8) for v in frame[shared].itertuples(index=False)] if shared else ""


def _latest_by(frame: pd.DataFrame, mask: pd.Series, keys: list[str]) -> dict[tuple, int]:
    """Index of the newest row per key among ``mask``-ed rows."""
    sub = frame[mask].sort_values("last_run")  # later rows overwrite earlier ones below
    return {tuple(row): idx for idx, row in zip(sub.index, sub[keys].itertuples(index=False))}


def _quality(value: float, unit: str, higher_is_better: bool) -> float:
    """A number where bigger is better, so "% of teacher" reads the same for every metric: a rate
    in percent that should be low (WER) becomes its complement (word accuracy), any other
    lower-is-better cost its reciprocal."""
    if higher_is_better:
        return value
    if unit == "%":
        return 100.0 - value
    return 1.0 / value if value else math.nan


def _teacher_fraction(board: Board) -> None:
    frame, primary = board.frame, board.primary
    unit, hib = board.columns[primary]
    col = f"{primary} % of teacher"
    frame[col] = math.nan
    has_hash = "kdbench.teacher_hash" in frame
    # the very teacher this student learned from: same teacher hash (or label), target, context
    tkey = ["suite", "kdbench.teacher_hash" if has_hash else "model", "target", "_context"]
    teachers = _latest_by(frame, frame["role"] == "teacher", tkey)
    for i, row in frame[(frame["role"] == "student") & (frame["teacher"] != "")].iterrows():
        j = teachers.get((row["suite"], row["kdbench.teacher_hash"] if has_hash else row["teacher"], row["target"],
                          row["_context"]))
        if j is None:
            continue
        qs, qt = _quality(row[primary], unit, hib), _quality(frame.at[j, primary], unit, hib)
        # a ratio needs a ratio scale: not dB, not a negative quality
        frame.at[i, col] = 100.0 * qs / qt if qt > 0 and qs >= 0 and unit != "dB" else math.nan


def _download_scores(client, run_id: str, metric: str, cache: dict, disk: Path | None = None) -> Any:
    """Per-utterance scores of one run, from ``disk`` if read before (a finished run's artifacts
    do not change), else downloaded."""
    from kdbench.statistics import Scores

    if run_id not in cache:
        local = Path(disk) / f"{run_id}.json" if disk else None
        if local is not None and local.exists():
            cache[run_id] = json.loads(local.read_text())
        else:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep logs readable
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = client.download_artifacts(run_id, "scores.json", tmp)
                    cache[run_id] = json.loads(Path(path).read_text())
                if local is not None:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(json.dumps(cache[run_id]))
            except Exception:  # an older run without per-utterance scores: no interval for it
                cache[run_id] = None
    data = cache[run_id]
    return Scores.from_json(data[metric]) if data and metric in data else None


def _kd_gain(board: Board, client, resamples: int, disk: Path | None = None) -> None:
    """KD student vs the same student trained without KD (same target, data and code): the gain
    on the primary metric (positive = KD helped) and its paired-bootstrap 95% CI over utterances."""
    from kdbench.statistics import paired_bootstrap

    frame, primary = board.frame, board.primary
    unit, hib = board.columns[primary]
    gain, low, high = f"{primary} KD gain", f"{primary} KD gain low", f"{primary} KD gain high"
    frame[gain] = math.nan
    frame[low] = math.nan
    frame[high] = math.nan
    cache: dict = {}
    # the same student, trained with the same budget on the same data, only without KD
    keys = ["suite", "model", "target", "_context"] + (["kdbench.student_hash"] if "kdbench.student_hash" in frame else [])
    baselines = _latest_by(frame, (frame["role"] == "student") & (frame["teacher"] == ""), keys)
    for i, row in frame[(frame["role"] == "student") & (frame["teacher"] != "")].iterrows():
        j = baselines.get(tuple(row[k] for k in keys))
        if j is None:
            continue
        b = frame.loc[j]
        sign = 1.0 if hib else -1.0  # gain is "better by", whatever the metric's direction
        frame.at[i, gain] = sign * (row[primary] - b[primary]) + 0.0  # + 0.0: no "-0"
        if client is None:
            continue
        kd_scores = [_download_scores(client, r, primary, cache, disk) for r in row["run_ids"]]
        base_scores = [_download_scores(client, r, primary, cache, disk) for r in b["run_ids"]]
        if any(s is None for s in kd_scores + base_scores):
            continue
        ci = paired_bootstrap(base_scores, kd_scores, resamples=resamples)
        if ci is not None:
            lo, hi = sorted((sign * ci.low + 0.0, sign * ci.high + 0.0))
            frame.at[i, low], frame.at[i, high] = lo, hi


def _rank(board: Board) -> None:
    """Rank within (target, role) by the primary metric; rows below the coverage threshold are
    listed after the ranked ones, unranked, because a score on part of the test set is not
    comparable with a score on all of it."""
    frame, primary = board.frame, board.primary
    frame["rank"] = np.nan
    if primary and primary in frame:
        hib = board.columns[primary][1]
        ok = frame["flag"] == ""
        frame.loc[ok, "rank"] = frame[ok].groupby(["target", "role"])[primary].rank(ascending=not hib, method="min")
        frame = frame.assign(_flagged=~ok, _role=frame["role"] != "teacher")
        frame = frame.sort_values(["target", "_role", "_flagged", primary], ascending=[True, True, True, not hib],
                                  kind="stable", na_position="last").drop(columns=["_flagged", "_role"])
    frame = frame.reset_index(drop=True)
    board.frame = frame


def latest(board: Board) -> pd.DataFrame:
    """Per identity, the row with the newest run: "the latest results" a regression gate checks."""
    frame = board.frame
    if frame.empty:
        return frame
    return frame.sort_values("last_run").groupby(IDENTITY, sort=False).tail(1)


# ---- presentation ----------------------------------------------------------------------------
def display(board: Board) -> pd.DataFrame:
    frame = board.frame
    if frame.empty:
        return frame
    out = pd.DataFrame({"rank": [("" if math.isnan(r) else str(int(r))) for r in frame["rank"]]})
    for c in ["role", "model", "teacher", "loss", "target", "n"]:
        out[c] = frame[c].values
    for name, (unit, higher) in board.columns.items():
        if name not in frame:
            continue
        arrow = "↑" if higher else "↓"
        header = f"{name} ({unit}) {arrow}" if unit else f"{name} {arrow}"
        out[header] = [_fmt(m) + ("" if math.isnan(s) else f" ± {_fmt(s)}")
                       for m, s in zip(frame[name], frame[f"{name} std"])]
    p = board.primary
    if p and f"{p} KD gain" in frame:
        out[f"KD gain {p} (95% CI)"] = [
            "" if math.isnan(g) else _fmt(g) + ("" if math.isnan(lo) else f" [{_fmt(lo)}, {_fmt(hi)}]")
            for g, lo, hi in zip(frame[f"{p} KD gain"], frame[f"{p} KD gain low"], frame[f"{p} KD gain high"])]
        out["% of teacher"] = ["" if math.isnan(v) else f"{v:.1f}%" for v in frame[f"{p} % of teacher"]]
    out["coverage"] = [f"{c:.0%}" for c in frame["coverage"]]
    out["flag"] = frame["flag"].values
    if frame["timing"].astype(bool).any():
        out["timing"] = frame["timing"].values
    out["provenance"] = frame["provenance"].values
    # rows that differ only in provenance are told apart by when they ran, too
    out["last run (UTC)"] = [t.strftime("%Y-%m-%d %H:%M") for t in frame["last_run"]]
    return out


def export_frame(board: Board) -> pd.DataFrame:
    """Raw numbers and every provenance field: what CSV and JSON exports carry."""
    frame = board.frame.drop(columns=["run_ids"], errors="ignore").copy()
    if "last_run" in frame:
        frame["last_run"] = frame["last_run"].astype(str)
    return frame


def render(board: Board, fmt: str) -> str:
    if fmt == "csv":
        return export_frame(board).to_csv(index=False)
    if fmt == "json":
        return json.dumps({"primary": board.primary, "min_coverage": board.min_coverage,
                           "metrics": {k: {"unit": u, "higher_is_better": h} for k, (u, h) in board.columns.items()},
                           "rows": json.loads(export_frame(board).to_json(orient="records"))}, indent=2)
    if fmt == "md":
        return to_markdown(display(board))
    if fmt == "html":
        return html_page(board, "kdbench leaderboard", [])
    raise ValueError(fmt)


def html_page(board: Board, title: str, images: list[Path]) -> str:
    """A self-contained page: the table, the Pareto fronts inlined as base64 PNG, provenance."""
    import base64
    import html

    table = display(board).to_html(index=False, border=0, classes="board", na_rep="")
    imgs = "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}" '
                   f'alt="{html.escape(Path(p).stem)}"><figcaption>{html.escape(Path(p).stem)}</figcaption></figure>'
                   for p in images)
    prov = board.frame[["provenance", *board.provenance_columns]].drop_duplicates() if not board.empty else pd.DataFrame()
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in board.notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table.board,table.prov{{border-collapse:collapse;font-size:13px}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}} figure{{display:inline-block;margin:1em}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Ranked by <b>{html.escape(str(board.primary))}</b>; mean ± std over n seeds; KD gain = better-by vs the same
student without KD, paired bootstrap 95% CI over utterances; rows with coverage below {board.min_coverage:.0%}
are listed unranked. Read from {board.runs} MLflow evaluation runs.</p>
{table}<h2>Pareto fronts</h2>{imgs or "<p>no cost metrics</p>"}
<h2>Provenance</h2>{prov.to_html(index=False, border=0, classes="prov")}<ul>{notes}</ul></body></html>"""


def cost_axes(columns: dict[str, tuple[str, bool]]) -> list[tuple[str, str, bool]]:
    """Cost metrics to plot quality against, recognised by unit so the core names no metric:
    latency in ms (p50 per utterance) and size in MB. (name, label, log scale)."""
    axes = []
    # the median latency (not a tail, a length bucket or a cold start); the model's size (not memory)
    for unit, prefer, label, log in (("ms", "p50", "p50 latency", False), ("MB", "size", "size", True)):
        names = [n for n, (u, _) in columns.items() if u == unit and "/" not in n]
        names.sort(key=lambda n: (prefer not in n, len(n)))
        if names:
            axes.append((names[0], f"{label} ({unit})", log))
    return axes


def pareto_images(board: Board, out_dir: Path) -> list[Path]:
    from kdbench.pareto import plot_front

    if board.empty or not board.primary:
        return []
    paths = []
    unit, hib = board.columns[board.primary]
    for target, group in board.frame.groupby("target"):
        group = group[group["flag"] == ""]
        labels = [m if role == "teacher" else f"{m}·{loss}" for m, role, loss in
                  zip(group["model"], group["role"], group["loss"])]
        # the same model under two provenances (another commit, budget, host) is two points
        labels = [f"{label} [{prov}]" if labels.count(label) > 1 else label
                  for label, prov in zip(labels, group["provenance"])]
        for cost, label, log in cost_axes(board.columns):
            slug = cost.replace("/", "-")
            paths.append(plot_front(labels, list(group["role"]), group[cost], group[board.primary],
                                    higher_is_better=hib, cost_label=label,
                                    quality_label=f"{board.primary} ({unit})" if unit else board.primary,
                                    title=f"{target}: {board.primary} vs {label}",
                                    path=Path(out_dir) / f"pareto-{target}-{slug}.png", log_x=log))
    return paths


def write_all(board: Board, out_dir: Path, title: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = pareto_images(board, out_dir)
    files = {"leaderboard.csv": render(board, "csv"), "leaderboard.json": render(board, "json"),
             "leaderboard.md": f"# {title}\n\n" + render(board, "md"),
             "leaderboard.html": html_page(board, title, images)}
    paths = []
    for name, text in files.items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths + images


def publish(tracker, suite: str, out_dir: Path) -> list[Path]:
    """Build the suite's MLflow leaderboard and write every export and picture to ``out_dir``."""
    if getattr(tracker, "client", None) is None:
        return []
    board = build(tracker.client, [tracker.experiment_id], suite)
    if board.empty:
        return []
    return write_all(board, out_dir, f"Leaderboard: {suite} (MLflow)")
