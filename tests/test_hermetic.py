"""Installing a third-party plugin never changes a test's outcome: conftest pins the plugin set
to the built-ins, for the test process and every kdbench process a test starts."""

import importlib.metadata
import os
import subprocess
import sys

from conftest import BUILTIN_PLUGINS
from kdbench.plugins import build_registry
from test_plugins import GOOD_PLUGIN, make_distribution

# a student no built-in suite names, and a metric name a built-in already has: loaded, the
# first would change every "available: ..." message and the second would make `wer` ambiguous
INTRUDER = GOOD_PLUGIN.replace('register("words", Words)', 'register("wer", Words)') + """
    from kdbench_asr.models import GruCtc

    @hookimpl
    def register_students(register):
        register("intruder-ctc", GruCtc)
"""


def _snapshot(registry):
    return ([p.name for p in registry.plugins],
            {kind: sorted((name, c.plugin) for name, c in components.items())
             for kind, components in registry.components.items()},
            registry.problems)


def _install_intruder(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "kdbench-intruder", {"kdbench_intruder": INTRUDER},
                      {"intruder": "kdbench_intruder"}, load=False)  # installed, but this test does not opt in
    assert "intruder" in {ep.name for ep in importlib.metadata.entry_points(group="kdbench")}


def test_the_pin_is_the_entry_points_kdbench_declares():
    declared = {ep.name for ep in importlib.metadata.entry_points(group="kdbench") if ep.dist.name == "kdbench"}
    assert set(BUILTIN_PLUGINS) == declared
    assert os.environ["KDBENCH_LOAD_PLUGINS"].split(",") == list(BUILTIN_PLUGINS)


def test_an_installed_third_party_plugin_leaves_the_registry_unchanged(tmp_path, monkeypatch):
    before = _snapshot(build_registry())
    _install_intruder(tmp_path, monkeypatch)
    pinned = build_registry()
    assert _snapshot(pinned) == before
    assert pinned.get("metrics", "wer").plugin == "asr"
    # only the pin keeps it out: unpinned, the same session would see it, and `wer` would clash
    monkeypatch.delenv("KDBENCH_LOAD_PLUGINS")
    unpinned = build_registry()
    assert "intruder-ctc" in unpinned.names("students") and "wer" in unpinned.clashes["metrics"]


def test_kdbench_processes_a_test_starts_are_pinned_too(tmp_path, monkeypatch):
    _install_intruder(tmp_path, monkeypatch)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    code = "from kdbench.plugins import build_registry; print(','.join(p.name for p in build_registry().plugins))"
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert sorted(loaded.stdout.strip().split(",")) == sorted(BUILTIN_PLUGINS)
