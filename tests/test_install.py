"""The install is reproducible and self-contained: the locked torch/torchaudio pair loads, a
mismatched pair says so by name, and nothing reads from outside the repository."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.torch_pair import import_torchaudio

from conftest import REPO


def locked_versions() -> dict[str, str]:
    text = (REPO / "requirements" / "lock.txt").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M)}


def test_torchaudio_loads_against_the_installed_torch():
    try:
        torchaudio = import_torchaudio()
    except ImportError as exc:  # the message names both versions; see test below
        pytest.fail(str(exc))
    from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE

    assert _IS_TORCHAUDIO_EXT_AVAILABLE, "torchaudio's C++ extension is not available"
    assert torchaudio.__version__.split("+")[0] == importlib.metadata.version("torchaudio").split("+")[0]


def test_a_mismatched_pair_names_both_versions_and_the_plugin(tmp_path):
    """What a user with a hand-installed torchaudio that does not match torch sees: the
    extension's loader error is replaced by a fake torchaudio that fails the same way."""
    fake = tmp_path / "torchaudio"
    (fake / "_extension").mkdir(parents=True)
    (fake / "__init__.py").write_text("from torchaudio import _extension\n")
    (fake / "_extension" / "__init__.py").write_text(
        "raise OSError('libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(REPO / "suites" / "asr.yaml")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    torch_v, audio_v = importlib.metadata.version("torch"), importlib.metadata.version("torchaudio")
    assert "task.name: unknown task 'asr-ctc'" in error[0]
    assert "it may come from plugin 'asr' (kdbench " in error[0]
    assert f"torchaudio {audio_v} does not load against torch {torch_v}" in error[0]
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in error[0]


def test_the_lock_pins_the_pair_pyproject_declares_and_this_environment_has():
    locked = locked_versions()
    pyproject = (REPO / "pyproject.toml").read_text()
    for name in ("torch", "torchaudio"):
        pin = re.search(rf'"{name}==([^"]+)"', pyproject)
        assert pin and pin[1] == locked[name], f"pyproject pins {name} {pin and pin[1]}, the lock {locked[name]}"
        assert importlib.metadata.version(name).split("+")[0] == locked[name], \
            f"installed {name} {importlib.metadata.version(name)} is not the locked {locked[name]}: run `make setup`"


def test_every_locked_requirement_carries_hashes():
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REPO / "requirements" / "lock.txt").read_text())
    pins = [e for e in entries if re.match(r"[A-Za-z0-9_.\-]+==", e)]
    assert len(pins) > 50
    assert all("--hash=sha256:" in e for e in pins), [e.split()[0] for e in pins if "--hash" not in e]


# what a clone holds that a user or CI runs or reads (not the venv, caches or results)
_SKIP_DIRS = {".git", ".venv", "results", ".cache", "__pycache__", ".pytest_cache", "build"}
_RELATIVE = re.compile(r"(?:\.\./)+[\w.-]+")


def _outside(target: Path) -> bool:
    return REPO not in target.resolve().parents and target.resolve() != REPO


def test_nothing_refers_to_a_path_outside_the_repository():
    """A fresh clone has nothing beside it: no file may point at a folder next to the clone,
    by a relative path that leaves the repository (from the file's folder and from the root,
    where make and CI run) or by the absolute path of the folder the clone sits in."""
    beside = str(REPO.parent).rstrip("/") + "/"
    offenders = []
    for path in REPO.rglob("*"):
        if not path.is_file() or _SKIP_DIRS & set(path.relative_to(REPO).parts) or path.suffix in (".wav", ".png", ".pyc"):
            continue
        text = path.read_text(errors="ignore")
        for ref in _RELATIVE.findall(text):
            if _outside(path.parent / ref) and _outside(REPO / ref):
                offenders.append(f"{path.relative_to(REPO)}: {ref}")
        if beside != "/" and re.search(re.escape(beside) + r"(?!" + re.escape(REPO.name) + r"\b)\w", text):
            offenders.append(f"{path.relative_to(REPO)}: {beside}...")
    assert not offenders, f"refer to a folder beside the clone, which a new user does not have: {offenders}"
