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


# ---- what `kdbench plugins` and the loader tell a plugin author ---------------------------------

def _cli(args, registry=None, monkeypatch=None):
    """`kdbench ARGS` in this process: on ``registry``, else on one built afresh (from the
    environment, as a new process would)."""
    from click.testing import CliRunner

    import kdbench.plugins
    from kdbench.cli import main

    if registry is None:
        monkeypatch.setattr(kdbench.plugins, "_registry", None)
    return CliRunner().invoke(main, args, obj=registry)


def test_load_plugins_naming_no_installed_plugin_is_a_plugin_error(monkeypatch, tmp_path):
    """Campaign case 54: the suite failed on "unknown task 'asr-ctc'" (exit 2), and `kdbench
    plugins` listed nothing with exit 0; the misspelt plugin was never named."""
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "nonexistent_plugin")
    with pytest.raises(PluginError, match=r"^KDBENCH_LOAD_PLUGINS=nonexistent_plugin: no installed kdbench plugin is "
                                          r"called 'nonexistent_plugin'; installed plugins: asr, enhance, ray, "
                                          r"standard, tts \(a distribution's name, 'kdbench', selects all of its plugins\)$"):
        build_registry()
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "asr,standard,enhanse")
    with pytest.raises(PluginError, match=r"no installed kdbench plugin is called 'enhanse'; did you mean 'enhance'\?"):
        build_registry()
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: x\ntask: asr-ctc\n")
    for args in (["validate", str(suite)], ["plugins"]):
        result = _cli(args, monkeypatch=monkeypatch)
        assert result.exit_code == 3, result.output
        assert result.output.startswith("error: KDBENCH_LOAD_PLUGINS=asr,standard,enhanse: no installed kdbench "
                                        "plugin is called 'enhanse'; did you mean 'enhance'?"), result.output
        assert "Traceback" not in result.output
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "kdbench")  # a distribution's name selects its plugins
    assert {"asr", "standard"} <= {p.name for p in build_registry().plugins}


UNDECORATED = GOOD_PLUGIN.replace("@hookimpl\n    def register_metrics", "def register_metrics")


def test_a_hook_without_hookimpl_is_reported(tmp_path, monkeypatch):
    """pluggy registers only marked functions and says nothing about the others."""
    make_distribution(tmp_path, monkeypatch, "kdbench-nodeco", {"kdbench_nodeco": UNDECORATED},
                      {"nodeco": "kdbench_nodeco"})
    registry = build_registry()
    assert registry.problems == [
        "plugin 'nodeco' (entry point 'kdbench_nodeco', kdbench-nodeco 1.2.3): register_metrics is not marked "
        "@hookimpl, so kdbench never calls it: put @hookimpl (from kdbench.hookspecs import hookimpl) above it"]
    assert "words" not in registry.names("metrics")


def test_a_misspelt_hook_without_hookimpl_is_reported(tmp_path, monkeypatch):
    typo = UNDECORATED.replace("def register_metrics(", "def register_metric(")
    make_distribution(tmp_path, monkeypatch, "kdbench-typo2", {"kdbench_typo2": typo}, {"typo2": "kdbench_typo2"})
    (problem,) = build_registry().problems
    assert problem == ("plugin 'typo2' (entry point 'kdbench_typo2', kdbench-typo2 1.2.3): register_metric is no "
                       "kdbench hook and is not marked @hookimpl, so kdbench never calls it: did you mean "
                       "'register_metrics'? (rename it, and put @hookimpl above it)")


def test_a_plugin_without_any_hook_is_reported(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "kdbench-empty", {"kdbench_empty": "X = 1\n"}, {"empty": "kdbench_empty"})
    assert build_registry().problems == ["plugin 'empty' implements no kdbench hook, so it registers nothing (a hook "
                                         "is a function named register_<kind>, marked @hookimpl)"]


BROKEN_DEEP = """
    from kdbench.hookspecs import hookimpl

    def helper():
        return undefined_name

    VALUE = helper()
"""


def test_load_problems_exit_3_with_strict_and_show_their_traceback_on_request(tmp_path, monkeypatch):
    """A NameError deep in a module is one line without a file; the traceback says where."""
    make_distribution(tmp_path, monkeypatch, "kdbench-deep", {"kdbench_deep": BROKEN_DEEP}, {"deep": "kdbench_deep"})
    registry = build_registry()
    (problem,) = registry.problems
    assert problem.endswith("failed to load: NameError: name 'undefined_name' is not defined")
    where = f'File "{tmp_path / "kdbench_deep.py"}", line 5, in helper'
    assert where in registry.tracebacks[problem]

    plain = _cli(["plugins", "--no-components"], registry)
    assert plain.exit_code == 0 and f"warning: {problem}" in plain.output and where not in plain.output
    strict = _cli(["plugins", "--no-components", "--strict", "--traceback"], registry)
    assert strict.exit_code == 3, strict.output
    assert where in strict.output and "error: 1 plugin load problem(s), listed above (--strict)" in strict.output
    monkeypatch.setenv("KDBENCH_TRACEBACK", "1")
    assert where in _cli(["plugins", "--no-components"], registry).output
    load_plugins(monkeypatch)  # the built-ins only: no load problem, so --strict passes
    assert _cli(["plugins", "--strict", "--no-components"], build_registry()).exit_code == 0


def test_plugins_verbose_lists_options_and_hidden_layers():
    """What a suite author had to read the source for: option names, types and defaults, and
    the hidden layers (with widths) a hint loss may name."""
    registry = build_registry()
    result = _cli(["plugins", "--verbose", "--no-components"], registry)
    assert result.exit_code == 0, result.output
    text = result.output
    conformer = text[text.index("student conformer-ctc: kdbench"):].split("\n\n")[0].splitlines()
    assert conformer[0].startswith("student conformer-ctc: kdbench ") and "kdbench_asr.models:ConformerCtc" in conformer[0]
    assert "    d_model      int    = 144  (>= 8)" in conformer
    assert "    dropout      float  = 0.1  (>= 0, < 1)" in conformer
    assert conformer[-1] == ("  hidden layers at the default options (name (width)): encoder (144), layer1 (144), "
                             "layer2 (144), layer3 (144), layer4 (144)")
    shown = _cli(["plugin", "show", "hint"], registry)
    assert shown.exit_code == 0 and "    student_layer  str    = 'encoder'" in shown.output.splitlines()
    both = _cli(["plugin", "show", "si-sdr"], registry).output  # a loss and a metric of one name: both shown
    assert "loss si-sdr: kdbench" in both and "metric si-sdr: kdbench" in both
    unknown = _cli(["plugin", "show", "conformr-ctc"], registry)
    assert unknown.exit_code == 2 and "unknown component 'conformr-ctc'; did you mean 'conformer-ctc'" in unknown.output
