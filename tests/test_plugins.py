"""Plugin loading through the real entry-point path, selection, and fault isolation."""

import sys
import textwrap

import pytest

from kdbench.errors import AmbiguousComponentError, PluginError
from kdbench.hookspecs import hookimpl
from kdbench.plugins import build_registry

from conftest import load_plugins


def make_distribution(tmp_path, monkeypatch, dist: str, modules: dict[str, str], entry_points: dict[str, str],
                      load: bool = True):
    """A distribution importlib.metadata finds on sys.path, without installing anything; with
    ``load``, the test opts in to its entry points (conftest loads the built-ins only)."""
    info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"  # wheel naming: no dash in the name part
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[kdbench]\n{eps}\n")
    for module, source in modules.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in modules:
        sys.modules.pop(module, None)
    if load:
        load_plugins(monkeypatch, *entry_points)


GOOD_PLUGIN = """
    from kdbench.hookspecs import hookimpl
    from kdbench.interfaces import Measurement, Metric

    class Words(Metric):
        '''mean number of words per hypothesis'''
        def __init__(self, options, **context):
            pass
        def compute(self, ev):
            n = [len(p.split()) for p in ev.predictions]
            return [Measurement("words", sum(n) / max(len(n), 1), "words", True)]

    @hookimpl
    def register_metrics(register):
        register("words", Words)
"""


def test_builtins_load_through_entry_points():
    registry = build_registry()
    names = {p.name for p in registry.plugins}
    assert {"asr", "standard"} <= names
    asr = next(p for p in registry.plugins if p.name == "asr")
    assert asr.distribution == "kdbench" and asr.version
    assert "register_losses" in asr.hooks
    assert registry.get("losses", "ctc-kd").plugin == "asr"
    assert not registry.problems


def test_third_party_distribution_is_loaded_and_attributed(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "kdbench-words", {"kdbench_words": GOOD_PLUGIN},
                      {"words": "kdbench_words"})
    registry = build_registry()
    plugin = next(p for p in registry.plugins if p.name == "words")
    assert (plugin.distribution, plugin.version, plugin.hooks) == ("kdbench-words", "1.2.3", ["register_metrics"])
    component = registry.get("metrics", "words")
    assert component.plugin == "words" and component.summary == "mean number of words per hypothesis"


def test_load_plugins_env_selects(monkeypatch):
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "standard")
    registry = build_registry()
    assert [p.name for p in registry.plugins] == ["standard"]
    assert registry.names("losses") == []
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")
    assert build_registry().plugins == []


def test_broken_plugin_does_not_stop_the_others(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "kdbench-broken", {"kdbench_broken": "import not_a_module_xyz\n"},
                      {"broken": "kdbench_broken"})
    registry = build_registry()
    assert any("plugin 'broken' (entry point 'kdbench_broken', kdbench-broken 1.2.3) failed to load: ModuleNotFoundError" in p
               for p in registry.problems)
    assert "ctc" in registry.names("losses")


def test_a_name_two_plugins_register_must_be_qualified(tmp_path, monkeypatch):
    """Never the wrong implementation silently: a bare clashing name is an error naming both
    plugins, and `plugin:name` picks one (so its runs are keyed apart from the other's)."""
    dup = GOOD_PLUGIN.replace('register("words", Words)', 'register("wer", Words)')
    make_distribution(tmp_path, monkeypatch, "kdbench-dup", {"kdbench_dup": dup}, {"dup": "kdbench_dup"})
    registry = build_registry()
    assert any("metrics 'wer' is registered by both 'asr' and 'dup'; a suite must name one: asr:wer or dup:wer" in p
               for p in registry.problems)
    with pytest.raises(AmbiguousComponentError,
                       match="metric 'wer' is registered by both 'asr' and 'dup': name the one you mean, as 'asr:wer' or 'dup:wer'"):
        registry.get("metrics", "wer")
    assert registry.get("metrics", "asr:wer").plugin == "asr"
    mine = registry.get("metrics", "dup:wer")
    assert mine.plugin == "dup" and mine.factory.__name__ == "Words"
    assert registry.get("metrics", "cer").plugin == "asr"  # names nobody else registers stay bare


def test_hook_with_no_spec_is_an_error():
    class Typo:
        @hookimpl
        def register_studnets(self, register):
            pass

    with pytest.raises(PluginError, match="register_studnets"):
        build_registry(extra_plugins=[Typo()])


def test_unknown_hook_argument_is_an_error():
    class WrongArgs:
        @hookimpl
        def register_losses(self, register, extra):
            pass

    with pytest.raises(Exception, match="extra"):
        build_registry(extra_plugins=[WrongArgs()])
