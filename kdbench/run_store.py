"""Finished work on disk, so a rerun reuses it and a crash loses nothing already computed.

Layout: ``<results>/<suite>/runs/<run key>/`` holds ``training.json`` and the checkpoint;
``evaluation-<target key>.json``, the predictions and the per-utterance scores sit beside them, one per target, so
adding a target re-measures without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdbench.cache import atomic_write_bytes, load_or_move_aside, move_aside, torch_bytes


class RunStore:
    def __init__(self, suite_dir: Path):
        self.suite_dir = Path(suite_dir)

    def run_dir(self, run_key: str) -> Path:
        return self.suite_dir / "runs" / run_key

    def checkpoint_path(self, run_key: str) -> Path:
        return self.run_dir(run_key) / "model.pt"

    def save_checkpoint(self, run_key: str, state_dict: dict) -> Path:
        path = self.checkpoint_path(run_key)
        atomic_write_bytes(path, torch_bytes(state_dict))
        return path

    def load_checkpoint(self, run_key: str) -> dict | None:
        """The run's weights, or None: missing, or unreadable (moved aside, so the run retrains)."""
        return load_or_move_aside(self.checkpoint_path(run_key))

    def _write_json(self, path: Path, data: Any) -> None:
        atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        """The record, or None: missing, or unreadable (moved aside, so the work is redone)."""
        try:
            record = json.loads(path.read_bytes())
        except OSError:
            return None
        except ValueError as exc:  # not JSON (a UnicodeDecodeError is a ValueError too)
            record, problem = None, f"not JSON ({type(exc).__name__})"
        else:
            problem = f"a JSON {type(record).__name__}, not a record"
        if isinstance(record, dict):
            return record
        move_aside(path, problem)
        return None

    def save_training(self, run_key: str, record: dict[str, Any]) -> None:
        self._write_json(self.run_dir(run_key) / "training.json", record)

    def load_training(self, run_key: str) -> dict[str, Any] | None:
        record = self._read_json(self.run_dir(run_key) / "training.json")
        if record and self.checkpoint_path(run_key).exists():
            return record
        return None

    def evaluation_path(self, run_key: str, target_key: str) -> Path:
        return self.run_dir(run_key) / f"evaluation-{target_key}.json"

    def save_predictions(self, run_key: str, target_key: str,
                         predictions: dict[str, list[dict[str, Any]]]) -> list[Path]:
        paths = []
        for split, rows in predictions.items():
            path = self.run_dir(run_key) / f"predictions-{target_key}-{split}.jsonl"
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
            paths.append(path)
        return paths

    def save_evaluation(self, run_key: str, target_key: str, record: dict[str, Any],
                        predictions: dict[str, list[dict[str, Any]]] | None = None) -> list[Path]:
        """The record, written last: its presence means the evaluation is complete."""
        paths = self.save_predictions(run_key, target_key, predictions or {})
        self._write_json(self.evaluation_path(run_key, target_key), record)
        return paths

    def load_evaluation(self, run_key: str, target_key: str) -> dict[str, Any] | None:
        return self._read_json(self.evaluation_path(run_key, target_key))

    def quality_path(self, run_key: str, target_key: str) -> Path:
        """An evaluation's quality half, measured apart from its timing (kdbench.runner)."""
        return self.run_dir(run_key) / f"quality-{target_key}.json"

    def save_quality(self, run_key: str, target_key: str, record: dict[str, Any]) -> None:
        self._write_json(self.quality_path(run_key, target_key), record)

    def load_quality(self, run_key: str, target_key: str) -> dict[str, Any] | None:
        return self._read_json(self.quality_path(run_key, target_key))

    def scores_path(self, run_key: str, target_key: str) -> Path:
        return self.run_dir(run_key) / f"scores-{target_key}.json"

    def save_scores(self, run_key: str, target_key: str, scores: dict[str, dict[str, list]]) -> Path | None:
        """Per-utterance scores (metric -> ids, samples, weights), kept apart from the evaluation
        record so reading a leaderboard never has to parse them."""
        if not scores:
            return None
        path = self.scores_path(run_key, target_key)
        self._write_json(path, scores)
        return path

    def audio_dir(self, run_key: str, target_key: str) -> Path:
        """Predictions a person can listen to, as the task wrote them: ``<split>/<id>.wav``."""
        return self.run_dir(run_key) / f"audio-{target_key}"

    def prediction_paths(self, run_key: str, target_key: str) -> list[Path]:
        return sorted(self.run_dir(run_key).glob(f"predictions-{target_key}-*.jsonl"))
