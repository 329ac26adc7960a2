"""Leaderboard files next to the runs: the same board ``kdbench leaderboard`` builds from MLflow,
here from this invocation's runs (CSV, JSON, Markdown, the HTML page and the Pareto fronts), the
raw rows with failures, and the provenance (commit, versions, normalizer, data hash, host) the
numbers depend on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from kdbench.board import from_result, write_all
from kdbench.cache import atomic_write_bytes
from kdbench.interfaces import Reporter


class LeaderboardFiles(Reporter):
    def __init__(self, options, **context):
        pass

    def report(self, result, out_dir: Path, suite_name: str) -> list[Path]:
        out_dir = Path(out_dir)
        board = getattr(result, "board", None) or from_result(result)
        paths = write_all(board, out_dir, f"Leaderboard: {suite_name}")
        failures = [r for r in result.rows if r.status != "ok"]
        if failures:
            md = out_dir / "leaderboard.md"
            md.write_text(md.read_text() + "\n## Not in the ranking\n\n" + "".join(
                f"- {r.model} · {r.loss} · seed {r.seed} @ {r.target}: {r.status}: {r.error}\n" for r in failures))
        rows_path = out_dir / "rows.csv"
        # where each row's per-utterance scores are (relative to this folder): `kdbench contrast` reads them
        flat = [{**r.flat(), "scores": os.path.relpath(r.scores_path, out_dir) if r.scores_path else ""}
                for r in result.rows]
        atomic_write_bytes(rows_path, pd.DataFrame(flat).to_csv(index=False).encode())
        prov_path = out_dir / "provenance.json"
        provenance = getattr(result, "provenance", None) or {}
        atomic_write_bytes(prov_path, json.dumps(provenance, indent=2, sort_keys=True).encode())
        return paths + [rows_path, prov_path]
