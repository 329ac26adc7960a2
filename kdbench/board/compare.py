"""What a distilled student is compared with: its no-KD baseline (the KD gain, with a paired
bootstrap confidence interval over speakers and their utterances where the test set has several
speakers, else over utterances) and its teacher (the quality gap and the speed-up), each matched
on the same target, data and code."""

from __future__ import annotations

import math

import pandas as pd

from kdbench import records
from kdbench.board.aggregate import Board, ScoresLoader
from kdbench.hashing import stable_hash

GAIN, GAIN_LOW, GAIN_HIGH = "KD gain", "KD gain low", "KD gain high"
#: what a row's KD gain interval resampled: "4 speakers", "1 speaker's utterances", "utterances"
GAIN_OVER = "KD gain CI over"
GAP = "gap to teacher"
SPEEDUP = "speed-up vs teacher"
COMPARISONS = (GAIN, GAIN_LOW, GAIN_HIGH, GAP, SPEEDUP)


def add_comparisons(board: Board, scores: ScoresLoader | None, resamples: int) -> None:
    frame = board.frame
    for col in COMPARISONS:
        frame[col] = math.nan
    frame[GAIN_OVER] = ""
    if not board.primary or board.primary not in frame:
        return
    # the provenance a student shares with the baseline and teacher it is compared with
    # (everything but their own configuration), hashed once so each lookup is a dictionary hit
    shared = [c for c in board.provenance_columns if c not in records.OWN_CONFIG]
    frame["_context"] = [stable_hash(list(v), 8) for v in frame[shared].itertuples(index=False)] if shared else ""
    _teacher(board)
    _kd_gain(board, scores, resamples)
    board.frame = frame.drop(columns=["_context"])


def _latest_by(frame: pd.DataFrame, mask: pd.Series, keys: list[str]) -> dict[tuple, int]:
    """Index of the newest row per key among ``mask``-ed rows."""
    sub = frame[mask].sort_values("last_run")  # later rows overwrite earlier ones below
    return {tuple(row): idx for idx, row in zip(sub.index, sub[keys].itertuples(index=False))}


def _teacher(board: Board) -> None:
    """Student minus teacher on the primary metric, and the teacher's value over the student's on
    the cost the metrics declare as the speed-up. A KD student is compared with the very teacher it
    learned from (same teacher hash); a student trained without one, with the suite's teacher when
    the suite has exactly one."""
    frame, primary = board.frame, board.primary
    speed = board.speedup_metric()
    by_key = records.TEACHER_HASH if records.TEACHER_HASH in frame else "model"
    teachers = frame[frame["role"] == "teacher"]
    exact = _latest_by(frame, frame["role"] == "teacher", ["suite", by_key, "target", "_context"])
    only = {}
    for (suite, target, context), group in teachers.groupby(["suite", "target", "_context"]):
        if group["model"].nunique() == 1:
            only[(suite, target, context)] = group.sort_values("last_run").index[-1]
    for i, row in frame[frame["role"] == "student"].iterrows():
        if row["teacher"]:
            j = exact.get((row["suite"], row[by_key] if by_key != "model" else row["teacher"], row["target"],
                           row["_context"]))
        else:
            j = only.get((row["suite"], row["target"], row["_context"]))
        if j is None:
            continue
        frame.at[i, GAP] = row[primary] - frame.at[j, primary] + 0.0  # + 0.0: no "-0"
        if speed and row[speed] > 0:
            frame.at[i, SPEEDUP] = frame.at[j, speed] / row[speed]


def _kd_gain(board: Board, scores: ScoresLoader | None, resamples: int) -> None:
    """KD student vs the same student trained without KD (same target, data and code): the gain
    on the primary metric (positive = KD helped) and its paired-bootstrap 95% CI over utterances."""
    from kdbench.statistics import Scores, paired_bootstrap

    frame, primary = board.frame, board.primary
    sign = 1.0 if board.columns[primary].higher_is_better else -1.0  # gain is "better by"
    keys = ["suite", "model", "target", "_context"]
    if records.STUDENT_HASH in frame:
        keys.append(records.STUDENT_HASH)
    students = frame["role"] == "student"
    baselines = _latest_by(frame, students & (frame["teacher"] == ""), keys)
    loaded: dict[str, object] = {}

    def per_utterance(run_id: str):
        if run_id not in loaded:
            data = scores(run_id) if scores else None
            loaded[run_id] = Scores.from_json(data[primary]) if data and primary in data else None
        return loaded[run_id]

    for i, row in frame[students & (frame["teacher"] != "")].iterrows():
        j = baselines.get(tuple(row[k] for k in keys))
        if j is None:
            continue
        base = frame.loc[j]
        frame.at[i, GAIN] = sign * (row[primary] - base[primary]) + 0.0
        if scores is None:
            continue
        kd = [per_utterance(r) for r in row["run_ids"]]
        baseline = [per_utterance(r) for r in base["run_ids"]]
        if any(s is None for s in kd + baseline):  # a run without per-utterance scores: no interval
            continue
        ci = paired_bootstrap(baseline, kd, resamples=resamples)
        if ci is not None:
            lo, hi = sorted((sign * ci.low + 0.0, sign * ci.high + 0.0))
            frame.at[i, GAIN_LOW], frame.at[i, GAIN_HIGH] = lo, hi
            frame.at[i, GAIN_OVER] = (f"{ci.groups} speakers" if ci.clustered else
                                      "1 speaker's utterances" if ci.groups == 1 else "utterances")
    _describe_intervals(board)


def _describe_intervals(board: Board) -> None:
    """Say what the KD gain intervals resampled: in the legends (``Board.gain_ci``) and, as a
    note, how many rows each way, and that one speaker's utterances say nothing about others."""
    over = board.frame[GAIN_OVER]
    kinds = set(over[over != ""])
    clustered = {k for k in kinds if k.endswith(" speakers")}
    if kinds == {"1 speaker's utterances"}:
        board.gain_ci = ("paired bootstrap 95% CI over the utterances of one speaker "
                         "(it says nothing about other speakers)")
    elif clustered and kinds == clustered:
        board.gain_ci = "paired bootstrap 95% CI over speakers, then their utterances (clustered)"
    elif clustered:
        board.gain_ci = ("paired bootstrap 95% CI over speakers, then their utterances, where the test set has "
                         f"several speakers; else over utterances (column {GAIN_OVER!r})")
    if kinds:
        rows = {k: int((over == k).sum()) for k in sorted(kinds)}
        counts = ", ".join(f"{k} ({n} row{'s' * (n > 1)})" for k, n in rows.items())
        note = f"KD gain 95% CIs on {board.primary}, resampled over: {counts}"
        if "1 speaker's utterances" in kinds:
            note += "; over one speaker's utterances an interval says nothing about other speakers"
        board.notes.append(note)
