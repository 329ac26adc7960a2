"""The leaderboard: one package behind every view of results (``kdbench run``'s summary, the
local files, ``kdbench leaderboard`` and the HTML page), so they all give one answer.

``fetch`` reads evaluation runs from MLflow, ``aggregate`` folds them into rows, ``compare``
adds the KD gain and the teacher comparisons, ``render`` and ``pareto`` draw them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kdbench.board.aggregate import DEFAULT_MIN_COVERAGE, Board, aggregate, latest
from kdbench.board.fetch import experiment_ids, fetch_cached, fetch_evaluations
from kdbench.board.render import display, html_page, render, summary_text
from kdbench.cache import move_aside

__all__ = ["Board", "DEFAULT_MIN_COVERAGE", "aggregate", "build", "display", "experiment_ids", "fetch_evaluations",
           "from_result", "html_page", "latest", "publish", "render", "summary_text", "write_all"]


def _quiet_downloads() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep logs readable


def mlflow_scores(client, disk: Path | None = None):
    """A scores loader for MLflow runs: ``scores.json`` of a run, from ``disk`` if read before
    (a finished run's artifacts do not change), else downloaded."""

    def load(run_id: str) -> dict[str, Any] | None:
        local = Path(disk) / f"{run_id}.json" if disk else None
        if local is not None and local.exists():
            try:
                return json.loads(local.read_bytes())
            except ValueError:  # a torn or foreign copy: kept aside, downloaded again
                move_aside(local, "not JSON")
        _quiet_downloads()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                data = json.loads(Path(client.download_artifacts(run_id, "scores.json", tmp)).read_text())
        except Exception:  # an older run without per-utterance scores: no interval for it
            return None
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(json.dumps(data))
        return data

    return load


def mlflow_audio(client, disk: Path | None = None):
    """An audio loader for MLflow runs: the ``audio/<split>/*`` artifacts of a run, downloaded
    once (into ``disk`` when given, else one temporary folder, made on the first download and
    removed with the loader or at exit: the HTML page embeds the clips, so nothing needs them
    after; finished runs' artifacts do not change)."""
    temporary: list[tempfile.TemporaryDirectory] = []

    def root() -> Path:
        if disk is not None:
            return Path(disk)
        if not temporary:
            temporary.append(tempfile.TemporaryDirectory(prefix="kdbench-audio-"))
        return Path(temporary[0].name)

    def load(run_id: str) -> list[Path]:
        try:
            splits = [a.path for a in client.list_artifacts(run_id, "audio") if a.is_dir]
            names = [a.path for split in splits for a in client.list_artifacts(run_id, split) if not a.is_dir]
        except Exception:  # a run logged before audio was kept, or a store without artifacts
            return []
        if not names:
            return []
        folder = root() / run_id
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name in names:
            local = folder / name  # audio/<split>/<clip>: the page prefers the ranked split's clips
            if not local.exists():
                _quiet_downloads()
                # MLflow puts a single file in the folder given, under its base name
                local.parent.mkdir(parents=True, exist_ok=True)
                local = Path(client.download_artifacts(run_id, name, str(local.parent)))
            out.append(local)
        return out

    return load


def build(client, exp_ids: list[str], suite: str | None = None, *, target: str | None = None,
          min_coverage: float = DEFAULT_MIN_COVERAGE, metric: str | None = None, bootstrap: bool = True,
          resamples: int = 2000, cache_dir: Path | None = None, refresh: bool = False,
          target_order: list[str] = ()) -> Board:
    """The board of every evaluation run in ``exp_ids``. ``cache_dir``: keep an incremental local
    copy of the runs read (see ``fetch_cached``) and of downloaded scores."""
    import pandas as pd

    if not exp_ids:
        raw = pd.DataFrame()
    elif cache_dir is not None:
        raw = fetch_cached(client, exp_ids, suite, cache_dir, refresh)
    else:
        raw = fetch_evaluations(client, exp_ids, suite)
    scores = mlflow_scores(client, Path(cache_dir) / "scores" if cache_dir is not None else None) if bootstrap else None
    board = aggregate(raw, scores=scores, target=target, min_coverage=min_coverage, metric=metric,
                      resamples=resamples, target_order=target_order)
    board.audio = mlflow_audio(client, Path(cache_dir) / "audio" if cache_dir is not None else None)
    return board


def from_result(result, **options: Any) -> Board:
    """The board of one invocation (``SuiteResult``), from the very tags and metrics its runs
    were logged to MLflow with: what ``kdbench run`` prints and the local files hold."""
    import pandas as pd

    paths = {r.as_run(result.suite)["run_id"]: r.scores_path for r in result.rows if r.status == "ok" and r.scores_path}

    def scores(run_id: str) -> dict[str, Any] | None:
        path = paths.get(run_id)
        return json.loads(Path(path).read_text()) if path else None

    targets = list(dict.fromkeys(r.target for r in result.rows))
    board = aggregate(pd.DataFrame(result.runs()), scores=scores, target_order=targets, **options)
    audio = {r.as_run(result.suite)["run_id"]: list(r.audio) for r in result.rows if r.status == "ok"}
    board.audio = lambda run_id: audio.get(run_id, [])
    return board


def write_all(board: Board, out_dir: Path, title: str) -> list[Path]:
    from kdbench.board.pareto import front_images

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = front_images(board, out_dir)
    files = {"leaderboard.csv": render(board, "csv"), "leaderboard.json": render(board, "json"),
             "leaderboard.md": f"# {title}\n\n" + render(board, "md"),
             "leaderboard.html": html_page(board, title, images)}
    paths = []
    for name, text in files.items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths + [p for ps in images.values() for p in ps]


def publish(tracker, suite: str, out_dir: Path, target_order: list[str] = ()) -> list[Path]:
    """Build the suite's MLflow leaderboard and write every export and picture to ``out_dir``."""
    if getattr(tracker, "client", None) is None:
        return []
    board = build(tracker.client, [tracker.experiment_id], suite, target_order=target_order)
    if board.empty:
        return []
    return write_all(board, out_dir, f"Leaderboard: {suite} (MLflow)")
