"""Leaderboard files next to the runs: raw numbers as CSV, formatted as Markdown."""

from __future__ import annotations

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
        atomic_write_bytes(md_path, text.encode())
        return [csv_path, md_path, rows_path]
