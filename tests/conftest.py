import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FSDD = REPO.parent / "shared" / "data" / "fsdd"
if (DEFAULT_FSDD / "recordings").is_dir():
    os.environ.setdefault("KDBENCH_FSDD_ROOT", str(DEFAULT_FSDD))


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    root = Path(os.environ.get("KDBENCH_FSDD_ROOT") or DEFAULT_FSDD)
    if not (root / "recordings").is_dir():
        pytest.skip(f"FSDD recordings not found at {root} (set KDBENCH_FSDD_ROOT)")
    return root


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the whole session, so the tiny corpus is spliced once."""
    return tmp_path_factory.mktemp("kdbench-cache")


def tiny_suite(fsdd_root: Path, **overrides) -> dict:
    """A suite small enough to train in seconds on real FSDD speech."""
    suite = {
        "name": "tiny",
        "task": "asr-ctc",
        "dataset": {"name": "fsdd-digits", "options": {
            "root": str(fsdd_root), "held_out_speakers": ["theo"], "train_utterances": 48,
            "test_utterances": 8, "max_digits": 3}},
        "frontend": {"name": "log-mel", "options": {"n_mels": 24}},
        "teachers": [{"name": "conformer-ctc", "options": {"d_model": 32, "layers": 1, "ffn_dim": 64, "heads": 2},
                      "training": {"steps": 6, "batch_size": 8}}],
        "students": [{"name": "gru-ctc", "options": {"hidden": 16, "layers": 1}}],
        "losses": ["ctc", "ctc-kd"],
        "seeds": [0],
        "training": {"steps": 4, "batch_size": 8},
        "metrics": ["wer", "cer", "params", "size", {"name": "latency", "options": {"utterances": 2, "warmup": 1, "runs": 4, "min_seconds": 0}}],
    }
    suite.update(overrides)
    return suite


def write_suite(path: Path, suite: dict) -> Path:
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path
