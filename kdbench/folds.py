"""Folds: one suite run several times, each fold setting some dataset options (which speakers are
held out, for instance), and the mean and spread over the folds that ran.

A fold runs as a suite of its own, ``<suite>.<fold>``: its own results folder, its own teachers
(a teacher must not have heard the fold's test speakers) and its own rows, all in the suite's one
MLflow experiment. Nothing is pooled inside a fold's board; the cross-fold table is built after the
folds from their boards and per-utterance scores:

* per row identity (role, model, teacher, loss, target): the primary metric on each fold (the mean
  over seeds), the mean over folds, the standard deviation over folds and the range;
* per KD student: the gain over the same student without KD on the utterances of all folds
  together, with a paired bootstrap CI clustered by speaker (``kdbench.statistics``): speakers are
  drawn, then their utterances, so with one held-out speaker per fold the interval is over the
  folds' speakers, the unit the claim is about;
* per reference (a pretrained peer), every other row's distance to it on the same target.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from kdbench.errors import SuiteError
from kdbench.suite import ResolvedSuite, Suite, resolve_suite

#: ``--fold all``: every fold the suite declares
ALL = "all"


def fold_names(path: Path, suite: Suite, requested: Sequence[str]) -> list[str | None]:
    """The folds to run: those asked for on the command line, else the suite's ``folds.run``;
    ``[None]`` for a suite without folds (it runs as written)."""
    if suite.folds is None:
        if requested:
            raise SuiteError(f"{path}: --fold {requested[0]}: the suite declares no folds")
        return [None]
    if not requested:
        return suite.folds.default()
    if ALL in requested:
        return list(suite.folds.each)
    from kdbench.suggest import unknown_name_message

    for name in requested:
        if name not in suite.folds.each:
            raise SuiteError(f"{path}: --fold: {unknown_name_message('fold', name, list(suite.folds.each))}")
    return list(dict.fromkeys(requested))


def fold_suite(suite: Suite, fold: str) -> Suite:
    """The suite of one fold: its dataset options over the suite's, named ``<suite>.<fold>``,
    tracked in the suite's own experiment."""
    dataset = suite.dataset.model_copy(update={"options": {**suite.dataset.options, **suite.folds.each[fold]}})
    tracking = suite.tracking.model_copy(update={"experiment": suite.tracking.experiment or f"kdbench-{suite.name}"})
    return suite.model_copy(update={"name": f"{suite.name}.{fold}", "dataset": dataset, "tracking": tracking,
                                    "folds": None})


def resolve_folds(path: Path, suite: Suite, registry, folds: Sequence[str | None]) -> list[tuple[str | None, ResolvedSuite]]:
    """Every fold resolved and checked before any of them runs: a fold naming a speaker the data
    lacks fails here, not after the folds before it have trained."""
    resolved = []
    for fold in folds:
        if fold is None:
            resolved.append((None, resolve_suite(suite, registry, path)))
            continue
        try:
            resolved.append((fold, resolve_suite(fold_suite(suite, fold), registry, path)))
        except SuiteError as exc:  # say which fold: its options are what the message is about
            raise type(exc)(str(exc).replace(f"{path}: ", f"{path}: folds.each.{fold}: ", 1)) from None
    return resolved


# ---- across folds ----------------------------------------------------------------------------------
KEYS = ("role", "model", "teacher", "loss", "target")


@dataclass
class FoldSummary:
    primary: str
    higher_is_better: bool
    folds: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for row in self.rows for c in row))


def _scores_loader(results: Sequence[tuple[str, Any]]):
    paths = {}
    for _, result in results:
        paths.update({r.as_run(result.suite)["run_id"]: r.scores_path for r in result.rows
                      if r.status == "ok" and r.scores_path})

    def load(run_id: str) -> dict | None:
        path = paths.get(run_id)
        return json.loads(Path(path).read_text()) if path else None

    return load


def _in_fold(fold: str, s: "Scores | None") -> "Scores | None":
    """Utterance ids repeat across folds (``test-unseen-00000`` on each): prefixed with the fold;
    scores that name no speakers take the fold as their one."""
    from kdbench.statistics import Scores

    if s is None:
        return None
    return Scores([f"{fold}/{u}" for u in s.ids], s.samples, s.weights,
                  s.groups if s.groups is not None else [fold] * len(s.ids))


def _pool(found: list) -> list | None:
    """Every fold's and seed's scores as one: the folds scored different utterances, which the
    bootstrap's "utterances every run scored" would reduce to none; seeds of one utterance add up
    (a weighted sum per utterance, as ``statistics`` folds seeds)."""
    from kdbench.statistics import Scores

    if not found or any(s is None for s in found):
        return None
    weights = None if any(s.weights is None for s in found) else [w for s in found for w in s.weights]
    return [Scores([u for s in found for u in s.ids], [x for s in found for x in s.samples], weights,
                   [g for s in found for g in s.groups])]


def summarize(results: Sequence[tuple[str, Any]], *, resamples: int = 2000) -> FoldSummary:
    """The cross-fold table of ``(fold, SuiteResult)`` pairs (each with its board built)."""
    import numpy as np

    from kdbench.statistics import Scores, paired_bootstrap

    boards = [(fold, result.board) for fold, result in results if result.board is not None and not result.board.empty]
    if not boards:
        return FoldSummary("", False, [fold for fold, _ in results], [])
    primary = boards[0][1].primary
    hib = bool(boards[0][1].columns[primary].higher_is_better)
    sign = 1.0 if hib else -1.0
    folds = [fold for fold, _ in boards]
    values: dict[tuple, dict[str, float]] = {}
    run_ids: dict[tuple, dict[str, list[str]]] = {}
    for fold, board in boards:
        if board.primary != primary:
            raise SuiteError(f"fold {fold} is ranked by {board.primary}, fold {folds[0]} by {primary}")
        for rec in board.frame[board.frame["flag"] == ""].to_dict("records"):
            key = tuple(rec[k] for k in KEYS)
            values.setdefault(key, {})[fold] = float(rec[primary])
            run_ids.setdefault(key, {})[fold] = list(rec["run_ids"])
    load = _scores_loader(results)
    cache: dict[str, Scores | None] = {}

    def scores(fold: str, run_id: str) -> Scores | None:
        if run_id not in cache:
            data = load(run_id)
            s = Scores.from_json(data[primary]) if data and primary in data else None
            cache[run_id] = _in_fold(fold, s)
        return cache[run_id]

    def pooled(key: tuple) -> list[Scores] | None:
        return _pool([scores(f, r) for f, ids in run_ids[key].items() for r in ids])

    references = [k for k in values if k[0] == "reference"]
    rows = []
    for key, per_fold in values.items():
        row: dict[str, Any] = dict(zip(KEYS, key))
        seen = [per_fold[f] for f in folds if f in per_fold]
        for f in folds:
            row[f] = per_fold.get(f, math.nan)
        row["folds"] = len(seen)
        row["mean"] = float(np.mean(seen))
        row["sd"] = float(np.std(seen, ddof=1)) if len(seen) > 1 else math.nan
        row["min"], row["max"] = min(seen), max(seen)
        role, model, teacher, loss, target = key
        base = next((k for k in values if k[0] == "student" and k[1] == model and k[2] == "" and k[4] == target
                     and k != key), None) if role == "student" and teacher else None
        row["KD gain"] = row["gain low"] = row["gain high"] = math.nan
        row["gain over"] = ""
        if base is not None and set(values[base]) >= set(per_fold):
            a, b = pooled(base), pooled(key)
            if a and b:
                ci = paired_bootstrap(a, b, resamples=resamples)
                if ci is not None:
                    row["KD gain"] = sign * ci.estimate + 0.0
                    row["gain low"], row["gain high"] = sorted((sign * ci.low + 0.0, sign * ci.high + 0.0))
                    row["gain over"] = f"{ci.groups} speakers" if ci.clustered else "utterances of 1 speaker"
        for ref in references:
            if ref[4] == target and ref != key:
                common = [f for f in folds if f in per_fold and f in values[ref]]
                row[f"vs {ref[1]}"] = (float(np.mean([per_fold[f] - values[ref][f] for f in common]))
                                       if common else math.nan)
        rows.append(row)
    order = {t: i for i, t in enumerate(dict.fromkeys(k[4] for k in values))}
    roles = {"teacher": 0, "reference": 1, "student": 2}
    rows.sort(key=lambda r: (order[r["target"]], roles.get(r["role"], 3), r["mean"] * (-1 if hib else 1)))
    notes = [f"{primary}: mean over seeds on each fold, then mean and sample standard deviation over folds",
             "KD gain: over the same student without KD, on every fold's utterances together (positive = KD "
             "helped); paired bootstrap 95% CI over speakers, then their utterances"]
    missing = [f for f in folds if any(f not in v for v in values.values())]
    if missing:
        notes.append(f"some rows have no value on fold(s) {', '.join(missing)} (failed or unranked there)")
    return FoldSummary(primary, hib, folds, rows, notes)


def _cell(value: Any) -> str:
    from kdbench.board.render import fmt

    return fmt(value) if isinstance(value, float) else str(value)


def render_markdown(summary: FoldSummary, title: str) -> str:
    from kdbench.board.render import to_markdown

    import pandas as pd

    frame = pd.DataFrame([{c: _cell(r.get(c, math.nan)) for c in summary.columns()} for r in summary.rows])
    notes = "".join(f"- {n}\n" for n in summary.notes)
    return f"# {title}\n\n{summary.primary} over folds {', '.join(summary.folds)}\n\n{to_markdown(frame)}\n{notes}"


def write(summary: FoldSummary, out_dir: Path, title: str) -> list[Path]:
    """``folds.md``, ``folds.csv`` and ``folds.json`` in ``out_dir`` (the suite's results folder)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"folds.md": render_markdown(summary, title),
             "folds.csv": pd.DataFrame(summary.rows).to_csv(index=False),
             "folds.json": json.dumps({"primary": summary.primary, "higher_is_better": summary.higher_is_better,
                                       "folds": summary.folds, "rows": summary.rows, "notes": summary.notes},
                                      indent=1, default=str, allow_nan=True)}
    for name, text in paths.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / name for name in paths]


def summary_text(summary: FoldSummary) -> str:
    """The terminal's view: one line per row, the mean ± sd and the KD gain with its CI."""
    lines = [f"{summary.primary} over {len(summary.folds)} folds ({', '.join(summary.folds)}): mean ± sd [min, max]"]
    for r in summary.rows:
        what = " · ".join(p for p in (r["model"], r["loss"], f"from {r['teacher']}" if r["teacher"] else "") if p)
        line = f"  {r['target']:<14} {r['role']:<9} {what:<44} {_cell(r['mean'])} ± {_cell(r['sd'])} " \
               f"[{_cell(r['min'])}, {_cell(r['max'])}]"
        if not math.isnan(r["KD gain"]):
            line += f"  KD gain {r['KD gain']:+.2f}"
            if not math.isnan(r["gain low"]):
                line += f" [{r['gain low']:+.2f}, {r['gain high']:+.2f}] over {r['gain over']}"
        lines.append(line)
    return "\n".join(lines)


# ---- two suites, fold by fold ----------------------------------------------------------------------
@dataclass
class Contrast:
    """``other`` against ``base`` on the rows both have: per fold and over the folds together."""

    base: str
    other: str
    primary: str
    higher_is_better: bool
    folds: list[str]
    rows: list[dict[str, Any]]


def _finished(results_dir: Path, name: str) -> dict[str, tuple[Any, dict]]:
    """The folds of suite ``name`` with results on disk (``results/<name>.<fold>/``; a suite without
    folds is its own one, ``-``): each one's ok rows (rows.csv) and leaderboard.json."""
    import pandas as pd

    found = {}
    folders = [(Path(results_dir) / name, "-")] + [(p, p.name[len(name) + 1:])
                                                  for p in sorted(Path(results_dir).glob(f"{name}.*"))]
    for folder, fold in folders:
        rows, board = folder / "rows.csv", folder / "leaderboard.json"
        if rows.is_file() and board.is_file():
            frame = pd.read_csv(rows, keep_default_na=False)
            if "scores" not in frame:
                raise SuiteError(f"{rows}: written before rows.csv named each row's scores; run the suite again "
                                 "(its finished runs are reused)")
            frame = frame[(frame["status"] == "ok") & (frame["scores"] != "")].assign(
                scores=lambda f: [str(folder / p) for p in f["scores"]])
            found[fold] = (frame, json.loads(board.read_text()))
    return found


def _varied(found: dict[str, tuple[Any, dict]], key: str, value: str, shown: str) -> dict[str, tuple[Any, dict]]:
    """The rows whose ``key`` is ``value``, that column shown as ``shown`` (so both sides pair)."""
    return {fold: (frame[frame[key].astype(str) == value].assign(**{key: shown}), board)
            for fold, (frame, board) in found.items()}


def _fill_blank(side: dict[str, tuple[Any, dict]], against: dict[str, tuple[Any, dict]],
                keys: Sequence[str]) -> dict[str, tuple[Any, dict]]:
    """A column blank on every row of ``side`` and holding one value on ``against`` takes that
    value, so that a student without KD (no teacher) pairs with its KD run (one teacher)."""
    out = {}
    for fold, (frame, board) in side.items():
        for column in KEYS:
            theirs = {str(v) for f, _ in against.values() for v in f[column]}
            if column not in keys and set(frame[column].astype(str)) == {""} and len(theirs) == 1 and "" not in theirs:
                frame = frame.assign(**{column: theirs.pop()})
        out[fold] = (frame, board)
    return out


def contrast(results_dir: Path, base: str, other: str, folds: Sequence[str] = (), *,
             vary: Sequence[tuple[str, str, str]] = (), resamples: int = 2000) -> Contrast:
    """How suite ``other`` differs from suite ``base`` (the same test utterances, another recipe)
    on the primary metric, row by row: on each fold a paired bootstrap over its utterances, and
    over all folds together one clustered over speakers. Positive = ``other`` is better.

    ``vary=[(key, a, b), ...]``: the rows of ``base`` whose ``key`` (a column of KEYS) is ``a``
    against those of ``other`` whose ``key`` is ``b``, paired on the other columns: two rows of one
    suite (a pruned student against a dense one of its size; the int8 target against fp32; both
    at once: a QAT student on int8 against the dense one on fp32)."""
    from kdbench.statistics import Scores, paired_bootstrap

    a = _finished(results_dir, base)
    b = a if other == base else _finished(results_dir, other)
    for name, found in ((base, a), (other, b)):
        if not found:
            raise SuiteError(f"no finished results of suite {name!r} in {results_dir}/ ({name}/ or {name}.<fold>/)")
    for key, x, y in vary:
        if key not in KEYS:
            raise SuiteError(f"--vary {key}: not a row column; one of {', '.join(KEYS)}")
        for side, value, name in ((a, x, base), (b, y, other)):
            have = sorted({str(v) for frame, _ in side.values() for v in frame[key] if str(v)})
            if value not in have:
                from kdbench.suggest import unknown_name_message

                raise SuiteError(f"--vary {key}={x},{y}: suite {name!r}: {unknown_name_message(key, value, have)}")
    varied = [key for key, _, _ in vary]
    for key, x, y in vary:  # every value checked above on the whole suite, then the rows narrowed
        a, b = _varied(a, key, x, f"{x} -> {y}"), _varied(b, key, y, f"{x} -> {y}")
    if vary:
        a, b = _fill_blank(a, b, varied), _fill_blank(b, a, varied)
    common = [f for f in a if f in b and (not folds or f in folds)]
    missing = [f for f in folds if f not in common]
    if missing or not common:
        raise SuiteError(f"fold(s) {', '.join(missing) or '(none in common)'} not finished in both {base!r} "
                         f"(has {', '.join(a)}) and {other!r} (has {', '.join(b)})")
    primary = a[common[0]][1]["primary"]
    hib = bool(a[common[0]][1]["metrics"][primary]["higher_is_better"])
    sign = 1.0 if hib else -1.0
    loaded: dict[str, Scores] = {}

    def scores(fold: str, path: str) -> Scores | None:
        if path not in loaded:
            data = json.loads(Path(path).read_text())
            loaded[path] = _in_fold(fold, Scores.from_json(data[primary])) if primary in data else None
        return loaded[path]

    def per_key(fold: str, frame) -> dict[tuple, list]:
        out: dict[tuple, list] = {}
        for rec in frame.to_dict("records"):
            out.setdefault(tuple(rec[k] for k in KEYS), []).append(scores(fold, rec["scores"]))
        return out

    sides = {f: (per_key(f, a[f][0]), per_key(f, b[f][0])) for f in common}
    keys = [k for k in dict.fromkeys(k for f in common for k in sides[f][0]) if all(k in sides[f][1] for f in common)
            and all(k in sides[f][0] for f in common)]
    rows = []
    for key in keys:
        row: dict[str, Any] = dict(zip(KEYS, key))
        for fold in common:
            x, y = _pool(sides[fold][0][key]), _pool(sides[fold][1][key])
            ci = paired_bootstrap(x, y, resamples=resamples) if x and y else None
            row[fold] = None if ci is None else tuple(sorted((sign * ci.low + 0.0, sign * ci.high + 0.0)))
            row[f"{fold} gain"] = math.nan if ci is None else sign * ci.estimate + 0.0
        if len(common) > 1:
            x = _pool([s for f in common for s in sides[f][0][key]])
            y = _pool([s for f in common for s in sides[f][1][key]])
            ci = paired_bootstrap(x, y, resamples=resamples) if x and y else None
            row["all"] = None if ci is None else tuple(sorted((sign * ci.low + 0.0, sign * ci.high + 0.0)))
            row["all gain"] = math.nan if ci is None else sign * ci.estimate + 0.0
            row["all over"] = "" if ci is None else (f"{ci.groups} speakers" if ci.clustered else "utterances")
        rows.append(row)
    if vary:
        if not rows:
            raise SuiteError(f"--vary {' --vary '.join(f'{k}={x},{y}' for k, x, y in vary)}: no rows of the two "
                             f"agree on {', '.join(k for k in KEYS if k not in varied)}")
        # the title names the rows set against each other
        base = f"{base} ({', '.join(f'{k} {x}' for k, x, _ in vary)})"
        other = f"{other} ({', '.join(f'{k} {y}' for k, _, y in vary)})"
    return Contrast(base, other, primary, hib, common, rows)


def contrast_markdown(c: Contrast) -> str:
    from kdbench.board.render import to_markdown

    import pandas as pd

    def cell(gain: float, ci) -> str:
        return "–" if ci is None or math.isnan(gain) else f"{gain:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"

    columns = c.folds + (["all"] if len(c.folds) > 1 else [])
    frame = pd.DataFrame([{**{k: r[k] for k in KEYS}, **{f: cell(r[f"{f} gain"], r[f]) for f in columns}}
                          for r in c.rows])
    over = next((r["all over"] for r in c.rows if r.get("all over")), "")
    return (f"{c.other} vs {c.base}: gain in {c.primary} (positive = {c.other} better), paired bootstrap 95% CI "
            f"over each fold's utterances" + (f"; `all`: every fold's utterances, clustered over {over}" if over else "")
            + f"\n\n{to_markdown(frame)}")
