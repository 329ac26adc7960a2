import os
from pathlib import Path

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once, when it loads
import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
#: kdbench's own plugins: the entry points pyproject.toml declares in the `kdbench` group
BUILTIN_PLUGINS = tuple(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["kdbench"])
# Every test, and every kdbench process a test starts, loads these plugins only: a plugin a
# developer installed (the example plugin, as docs/plugins.md suggests) must not change an
# outcome. A test that needs a third-party plugin opts in (`load_plugins`, below).
os.environ["KDBENCH_LOAD_PLUGINS"] = ",".join(BUILTIN_PLUGINS)
#: 250 real FSDD recordings committed with the tests (README.md beside them: source, licence).
FSDD_FIXTURE = REPO / "tests" / "data" / "fsdd"
# Every real-speech test, and every kdbench process a test starts, reads the committed subset:
# a full FSDD a developer points KDBENCH_FSDD_ROOT at must not change what the tests see.
os.environ["KDBENCH_FSDD_ROOT"] = str(FSDD_FIXTURE)


def load_plugins(monkeypatch, *names: str) -> None:
    """Opt this test in to the third-party entry points (or distributions) ``names``, on top
    of the built-ins."""
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", ",".join([*BUILTIN_PLUGINS, *names]))


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    return FSDD_FIXTURE


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
