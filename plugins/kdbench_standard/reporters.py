"""Leaderboard files next to the runs: raw numbers as CSV, formatted as Markdown, and the
provenance (commit, versions, normalizer, data hash, host) the numbers depend on."""

from __future__ import annotations

import json
from pathlib import Path

from kdbench.cache import atomic_write_bytes
from kdbench.leaderboard import display_frame, leaderboard_frame, rows_frame, to_markdown
from kdbench.interfaces import Reporter


class LeaderboardFiles(Reporter):
    def __init__(self, options, **context):
        pass

    def report(self, result, out_dir: Path, suite_name: str) -> list[Path]:
        out_dir = Path(out_dir)
        frame = leaderboard_frame(result)
        csv_path, md_path, rows_path = out_dir / "leaderboard.csv", out_dir / "leaderboard.md", out_dir / "rows.csv"
        atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
        atomic_write_bytes(rows_path, rows_frame(result).to_csv(index=False).encode())
        failures = [r for r in result.rows if r.status != "ok"]
        text = f"# Leaderboard: {suite_name}\n\n" + to_markdown(display_frame(frame, result.columns))
        if failures:
            text += "\n## Not in the ranking\n\n" + "".join(
                f"- {r.model} · {r.loss} · seed {r.seed} @ {r.target}: {r.status}: {r.error}\n" for r in failures)
        provenance = getattr(result, "provenance", None) or {}
        if provenance:
            text += "\n## Provenance\n\n" + "".join(f"- {k}: {v}\n" for k, v in sorted(provenance.items())
                                                     if k != "task.chars")
        atomic_write_bytes(md_path, text.encode())
        prov_path = out_dir / "provenance.json"
        atomic_write_bytes(prov_path, json.dumps(provenance, indent=2, sort_keys=True).encode())
        return [csv_path, md_path, rows_path, prov_path]
