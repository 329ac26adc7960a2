"""The plugin author kit: the conformance kit on built-ins and on a deliberately broken plugin;
`kdbench plugin new` and the example plugin installed with a real pip and used end to end;
and what a plugin author is told (KDBENCH_TRACE_HOOKS, bad entry points)."""

import os
import re
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import main
from kdbench.alignment import layer_lengths
from kdbench.errors import PluginError
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Corpus, Frontend, Loss, Measurement, Metric, ModelOutput, Target
from kdbench.plugins import build_registry
from kdbench.scaffold import KINDS, new_plugin
from kdbench.testing import (ConformanceError, check_augmentation, check_component, check_dataset, check_frontend,
                             check_loss, check_metric, check_plugin, check_student, check_target, check_teacher,
                             tiny_bench)
from kdbench.testing import kdbench_bench, kdbench_registry  # noqa: F401  (the kit's pytest fixtures)
from kdbench_asr.losses import CtcLoss, ctc
from kdbench_asr.testing import TinyCtcModel, tiny_corpus

from conftest import load_plugins
from test_plugins import GOOD_PLUGIN, make_distribution

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kdbench-example-plugin"

# ---- the kit on built-in components (every one of them: test_kit_on_builtins.py) ------------

def test_check_plugin_checks_everything_a_plugin_registers(kdbench_registry):
    checked = check_plugin("standard", {"latency": {"utterances": 2, "warmup": 1, "runs": 4, "min_seconds": 0},
                                        "cold-start": {"repeats": 1}, "flops": {"utterances": 2, "runs": 2, "min_seconds": 0}},
                           registry=kdbench_registry)
    assert checked == [("compressions", "prune"), ("compressions", "qat"), ("metrics", "cold-start"),
                       ("metrics", "flops"), ("metrics", "latency"), ("metrics", "params"),
                       ("metrics", "size"), ("targets", "cpu"), ("targets", "cpu-1thread"), ("targets", "cpu-int8"),
                       ("targets", "cuda"), ("targets", "onnxruntime"), ("targets", "onnxruntime-int8")]


def test_unknown_component_names_what_is_loaded_and_how_to_fix_it(kdbench_bench):
    with pytest.raises(ConformanceError, match=r"unknown student 'gru-ctcc'; did you mean 'gru-ctc'\?.*"
                                               r"entry point declared\? \(`kdbench plugins` lists what loaded\)"):
        check_student("gru-ctcc", bench=kdbench_bench)


@pytest.mark.parametrize("plugin, name", [("asr", "hint"), ("enhance", "encoder-hint")])
def test_hint_losses_read_each_layers_own_lengths(plugin, name, kdbench_registry):
    """A layer's valid frames are the ones its model gives in ModelOutput.hidden_lengths, not the
    ones inferred from the output's lengths: frames past them are padding to the loss."""
    bench = tiny_bench(kdbench_registry, plugin=plugin)
    student, teacher = bench.student(), bench.teacher()
    loss = kdbench_registry.get("losses", f"{plugin}:{name}").build(student=student, teacher=teacher, task=bench.task)
    feats = bench.features()
    with torch.no_grad():
        s, t = student(feats.features, feats.lengths), teacher(feats.features, feats.lengths)
        own = layer_lengths(s, "encoder") - 1  # the model says: one frame fewer than inferred
        moved = s.hidden["encoder"].clone()
        for i, n in enumerate(own.tolist()):
            moved[i, n] += 100.0  # the frame only the inferred lengths count

        def value(hidden, lengths):
            return float(loss(ModelOutput(s.output, s.lengths, {"encoder": hidden}, lengths), feats.batch, t))

        assert value(moved, {"encoder": own}) == value(s.hidden["encoder"], {"encoder": own})
        assert value(moved, {}) != value(s.hidden["encoder"], {})  # inferred: that frame counts


def test_the_documented_model_scope_metric_conforms(kdbench_bench):
    """docs/plugins.md, 'Measuring time': the worked example times with kdbench.measurement."""
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text[text.index("#### Measuring time"):]
    source = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    module = types.ModuleType("docs_measuring_time")
    exec(compile(source, "docs/plugins.md (Measuring time)", "exec"), module.__dict__)
    registry = build_registry(extra_plugins=[module])
    metric = check_metric("rtf-by-length", {"utterances": 4, "runs": 6}, bench=replace(kdbench_bench, registry=registry),
                          plugin="docs_measuring_time")
    assert metric.scope == "model"


# ---- the kit on a deliberately broken plugin ------------------------------------------------

class WrongWidth(TinyCtcModel):
    def __init__(self, options, model_spec, **context):
        super().__init__(replace(model_spec, output_dim=model_spec.output_dim + 1))


class LengthsPastTheEnd(TinyCtcModel):
    def __init__(self, options, model_spec, **context):
        super().__init__(model_spec)

    def forward(self, features, lengths):
        out = super().forward(features, lengths)
        return ModelOutput(out.output, torch.full_like(out.lengths, out.output.shape[1] + 1), out.hidden)


class NoContext(TinyCtcModel):
    def __init__(self, options, model_spec):
        super().__init__(model_spec)


class BatchNormalisedTeacher(TinyCtcModel):
    """Normalises by the whole padded batch, so an utterance's outputs depend on its batch-mates."""

    def __init__(self, options, model_spec, **context):
        super().__init__(model_spec)

    def forward(self, features, lengths):
        return super().forward(features / features.abs().mean(dim=(0, 1), keepdim=True), lengths)


class PerUtteranceLoss(CtcLoss):
    def forward(self, student, batch, teacher=None):
        log_probs = student.output.log_softmax(-1).transpose(0, 1)
        return torch.nn.functional.ctc_loss(log_probs, batch.targets, student.lengths, batch.target_lengths,
                                            reduction="none", zero_infinity=True)


class DetachedLoss(CtcLoss):
    def forward(self, student, batch, teacher=None):
        return ctc(student, batch.targets, batch.target_lengths).detach()


class TeacherOnlyOnInstance(Loss):
    def __init__(self, options, **context):
        super().__init__()
        self.requires_teacher = True  # the planner reads the class, which says False

    def forward(self, student, batch, teacher):
        return ctc(student, batch.targets, batch.target_lengths)


class NoUnit(Metric):
    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        return [Measurement("hyp_count", float(len(ev.predictions)))]


class RaisesOnEmpty(Metric):
    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        wrong = sum(p != r for p, r in zip(ev.predictions, ev.references))
        return [Measurement("ser", 100 * wrong / len(ev.predictions), "%", False)]


class ZeroOnEmpty(Metric):
    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        n = len(ev.predictions)
        wrong = sum(p != r for p, r in zip(ev.predictions, ev.references))
        return [Measurement("ser", 100 * wrong / max(n, 1), "%", False, coverage=(n, n))]


class AvailableWithoutReason(Target):
    def __init__(self, options, **context):
        pass

    def available(self):
        return True

    def prepare(self, model):
        return model.eval()


class GlobalRngGain:
    stage = "input"

    def __init__(self, options, **context):
        pass

    def __call__(self, x, generator):
        return x * torch.rand(1)  # ignores `generator`: cannot be replayed


class BatchNormalisedFrontend(Frontend):
    def __init__(self, options, corpus_info, **context):
        super().__init__()
        self.output_dim = 80

    def forward(self, waves, lengths):
        frames = torch.div(lengths, 80, rounding_mode="floor")
        x = waves[:, :int(frames.max()) * 80].reshape(len(waves), -1, 80)
        return x - x.mean(), frames


class DuplicateIds:
    def __init__(self, options, cache_dir, **context):
        pass

    def load(self):
        corpus = tiny_corpus()
        return Corpus("dup", corpus.train, {"test": corpus.train[:2]}, corpus.info, corpus.fingerprint)


class Broken:
    __name__ = "broken"

    @hookimpl
    def register_students(self, register):
        register("wrong-width", WrongWidth)
        register("lengths-past-the-end", LengthsPastTheEnd)
        register("no-context", NoContext)

    @hookimpl
    def register_teachers(self, register):
        register("batch-normalised", BatchNormalisedTeacher)

    @hookimpl
    def register_losses(self, register):
        register("per-utterance", PerUtteranceLoss)
        register("detached", DetachedLoss)
        register("teacher-on-instance", TeacherOnlyOnInstance)

    @hookimpl
    def register_metrics(self, register):
        register("no-unit", NoUnit)
        register("raises-on-empty", RaisesOnEmpty)
        register("zero-on-empty", ZeroOnEmpty)

    @hookimpl
    def register_targets(self, register):
        register("no-reason", AvailableWithoutReason)

    @hookimpl
    def register_augmentations(self, register):
        register("global-rng", GlobalRngGain)

    @hookimpl
    def register_frontends(self, register):
        register("batch-normalised", BatchNormalisedFrontend)

    @hookimpl
    def register_datasets(self, register):
        register("duplicate-ids", DuplicateIds)


@pytest.fixture(scope="module")
def broken_bench():
    return tiny_bench(build_registry(extra_plugins=[Broken()]))


BROKEN = [
    (check_student, "wrong-width", r"output has shape \(4, \d+, 17\); expected \(batch=4, time, output_dim=16\): "
                                   r"the last dimension must be ModelSpec.output_dim"),
    (check_student, "lengths-past-the-end", r"lengths \[(\d+, ){3}\d+\] must lie in 1\.\.\d+ \(the output's time"),
    (check_student, "no-context", r"its factory does not accept \*\*context"),
    (check_teacher, "batch-normalised", r"utterance \d's outputs change when it is batched with longer ones"),
    (check_loss, "per-utterance", r"it returned a tensor of shape \(4,\); it must return a scalar \(0-dim\) tensor"),
    (check_loss, "detached", r"it returned a tensor without gradient \(detached, \.item\(\), or computed under "),
    (check_loss, "teacher-on-instance", r"the built loss says requires_teacher=True but its factory says False"),
    (check_metric, "no-unit", r"measurement 'hyp_count' on a test set has no unit: set Measurement.unit"),
    (check_metric, "raises-on-empty", r"compute\(\) on an empty test set raised ZeroDivisionError: division by zero "
                                      r"\(return NaN with coverage=\(0, 0\) instead\)"),
    (check_metric, "zero-on-empty", r"on an empty test set, measurement 'ser' is 0\.0 with coverage \(0, 0\): a "
                                    r"metric that scored nothing must return NaN"),
    (check_target, "no-reason", r"available\(\) returned True; it must return \(bool, str\)"),
    (check_augmentation, "global-rng", r"its factory returned GlobalRngGain; it must return a "
                                       r"kdbench.interfaces.Augmentation"),
    (check_frontend, "batch-normalised", r"utterance \d's features change when it is batched with longer ones"),
]


@pytest.mark.parametrize("check, name, message", BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_plugin_fails_with_a_useful_message(check, name, message, broken_bench):
    kind = check.__name__.removeprefix("check_")
    with pytest.raises(ConformanceError) as failure:
        check(name, bench=broken_bench)
    text = str(failure.value)
    assert text.startswith(f"{kind} {name!r} (plugin 'broken'): "), text
    assert re.search(message, text), text


def test_augmentation_drawing_from_the_global_rng_is_caught(broken_bench):
    from kdbench.interfaces import Augmentation

    class GlobalRng(GlobalRngGain, Augmentation):
        pass

    with pytest.raises(ConformanceError, match=r"augmentation 'GlobalRng' \(plugin '<not registered>'\): two calls "
                                               r"with identically seeded generators differ: draw all randomness"):
        check_augmentation(GlobalRng, bench=broken_bench)  # a bare factory, before registering it


def test_dataset_with_duplicate_ids(broken_bench):
    with pytest.raises(ConformanceError, match=r"dataset 'duplicate-ids' \(plugin 'broken'\): example id "
                                               r"'kit-train-0' occurs twice"):
        check_dataset("duplicate-ids", registry=broken_bench.registry)


# ---- which plugin a check checks (issue 12: check_loss("rkd") checked another plugin's class) --

#: two installed plugins registering one loss name: A's conforms, B's returns a detached value,
#: so whether a check passes shows whose class it ran
RKD_A = """
    from kdbench.hookspecs import hookimpl
    from kdbench_asr.losses import CtcLoss

    class Rkd(CtcLoss):
        pass

    @hookimpl
    def register_losses(register):
        register("rkd", Rkd)
"""
RKD_B = RKD_A.replace("""
        pass
""", """
        def forward(self, student, batch, teacher=None):
            return super().forward(student, batch, teacher).detach()
""")


@pytest.fixture
def clashing(tmp_path, monkeypatch, kdbench_bench):
    """The built-ins' kit inputs, on a registry with both plugins loaded (and a third, rkd_c,
    that fails to import)."""
    make_distribution(tmp_path, monkeypatch, "kdbench-rkd-a", {"kdbench_rkd_a": RKD_A}, {"rkd_a": "kdbench_rkd_a"},
                      load=False)
    make_distribution(tmp_path, monkeypatch, "kdbench-rkd-b", {"kdbench_rkd_b": RKD_B}, {"rkd_b": "kdbench_rkd_b"},
                      load=False)
    make_distribution(tmp_path, monkeypatch, "kdbench-rkd-c", {"kdbench_rkd_c": "import not_a_module_xyz\n"},
                      {"rkd_c": "kdbench_rkd_c"}, load=False)
    load_plugins(monkeypatch, "rkd_a", "rkd_b", "rkd_c")
    registry = build_registry()
    assert {"rkd_a:rkd", "rkd_b:rkd"} <= set(registry.qualified["losses"])
    return replace(kdbench_bench, registry=registry)


def test_a_check_given_a_plugin_checks_that_plugins_class(clashing):
    assert type(check_loss("rkd", plugin="rkd_a", bench=clashing)).__module__ == "kdbench_rkd_a"
    with pytest.raises(ConformanceError) as failure:
        check_component("losses", "rkd", plugin="rkd_b", bench=clashing)
    # the prefix names the provider, so a failure cannot be blamed on the wrong package
    assert str(failure.value).startswith("loss 'rkd' (plugin 'rkd_b', kdbench-rkd-b 1.2.3): it returned a tensor "
                                         "without gradient"), failure.value


def test_a_bare_name_two_plugins_register_names_both_and_how_to_choose(clashing):
    with pytest.raises(ConformanceError) as failure:
        check_loss("rkd", bench=clashing)
    assert str(failure.value) == (
        "loss 'rkd' is registered by both 'rkd_a' (kdbench-rkd-a 1.2.3) and 'rkd_b' (kdbench-rkd-b 1.2.3), so the "
        "check cannot tell whose to check: pass plugin='rkd_a' or plugin='rkd_b' to the check, or name it as "
        "'rkd_a:rkd' or 'rkd_b:rkd'")
    assert type(check_loss("rkd_a:rkd", bench=clashing)).__module__ == "kdbench_rkd_a"


def test_a_name_resolving_to_another_plugins_component_fails(clashing):
    with pytest.raises(ConformanceError) as failure:
        check_loss("rkd_a:rkd", plugin="rkd_b", bench=clashing)
    assert str(failure.value) == (
        "loss 'rkd' is provided by plugin 'rkd_a' (kdbench-rkd-a 1.2.3 (rkd_a, kdbench_rkd_a:Rkd)), not by plugin "
        "'rkd_b': checking it would check another plugin's code. plugin 'rkd_b' registers its own: name it 'rkd' "
        "or 'rkd_b:rkd'")
    # a name only another plugin registers: the author's own registration is missing
    with pytest.raises(ConformanceError, match=r"^loss 'ctc' is provided by plugin 'asr' \(kdbench \S+ \(asr, "
                                               r"kdbench_asr\.losses:CtcLoss\)\), not by plugin 'rkd_a': .* plugin "
                                               r"'rkd_a' registers no loss 'ctc' \(its losses: rkd\)$"):
        check_loss("ctc", plugin="rkd_a", bench=clashing)
    # the author's plugin did not load at all: the import error says why
    with pytest.raises(ConformanceError, match=r"^loss 'rkd' is provided by plugin 'rkd_a' .* and plugin 'rkd_b' "
                                               r".*, not by plugin 'rkd_c': .* plugin 'rkd_c' is not loaded "
                                               r"\(loaded: .*\n  plugin 'rkd_c' .* failed to load: ModuleNotFoundError"):
        check_loss("rkd", plugin="rkd_c", bench=clashing)



# ---- `kdbench plugin new` and the example plugin, installed with pip ----------------------

def _kdbench() -> list[str]:
    script = Path(sys.executable).with_name("kdbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kdbench.cli"]


def _run(args, cwd, site=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("KDBENCH_LOAD_PLUGINS", "KDBENCH_TRACE_HOOKS")}
    env.update(OMP_WAIT_POLICY="PASSIVE", COLUMNS="200")  # COLUMNS: rich tables unwrapped in the output
    if site:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _install_metadata_only(package: Path, site: Path) -> None:
    """What pip would install for a generated single-module package, without the isolated
    setuptools build (~4 s each): its module plus dist-info read from its pyproject.toml.
    The real pip path is proven by the two packages installed with pip below."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((package / "pyproject.toml").read_text())
    meta, layout = project["project"], project["tool"]["setuptools"]
    for module in layout.get("py-modules", []):
        shutil.copy(package / f"{module}.py", site)
    for module in layout.get("packages", []):
        shutil.copytree(package / module, site / module)
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in meta["entry-points"]["kdbench"].items())
    (info / "entry_points.txt").write_text(f"[kdbench]\n{eps}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh package from `kdbench plugin new` and the example plugin, pip-installed (a real
    wheel build; --no-deps keeps it fast) into a directory used as PYTHONPATH, plus a package
    of every other kind from the template."""
    work = tmp_path_factory.mktemp("plugin-kit")
    created = CliRunner().invoke(main, ["plugin", "new", "whisper", "--kind", "student", "--dir", str(work / "gen")],
                                 catch_exceptions=False)
    assert created.exit_code == 0, created.output
    for kind in KINDS:
        if kind != "student":
            new_plugin(f"demo-{kind}", kind, work / "gen")
    several = CliRunner().invoke(main, ["plugin", "new", "trio", "--kind", "loss", "--kind", "metric", "--kind",
                                        "student", "--dir", str(work / "gen")], catch_exceptions=False)
    assert several.exit_code == 0, several.output
    # a copy, so the build leaves no build/ or *.egg-info in the repository
    example = shutil.copytree(EXAMPLE, work / EXAMPLE.name, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    site = work / "site"
    pip = _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                "--target", str(site), str(work / "gen" / "kdbench-whisper"), str(example)], cwd=work)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    for kind in KINDS:
        if kind != "student":
            _install_metadata_only(work / "gen" / f"kdbench-demo-{kind}", site)
    _install_metadata_only(work / "gen" / "kdbench-trio", site)
    return work, site, example, created.output + several.output


def test_plugin_new_writes_a_package(installed):
    work, site, _, output = installed
    root = work / "gen" / "kdbench-whisper"
    assert f"created {root}/ with the student 'whisper-student'" in output
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} >= {
        "pyproject.toml", "README.md", "kdbench_whisper.py", "tests/test_kdbench_whisper.py"}
    assert '[project.entry-points.kdbench]\nwhisper = "kdbench_whisper"' in (root / "pyproject.toml").read_text()
    assert (site / "kdbench_whisper-0.1.0.dist-info" / "entry_points.txt").is_file()  # pip built and installed it


def test_plugin_new_writes_several_kinds_into_one_package(installed):
    work, _, _, output = installed
    root = work / "gen" / "kdbench-trio"
    assert f"created {root}/ with the loss 'trio-loss', the metric 'trio-metric', the student 'trio-student'" in output
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "kdbench_trio/__init__.py", "kdbench_trio/loss.py", "kdbench_trio/metric.py",
        "kdbench_trio/student.py", "tests/test_kdbench_trio.py"}
    hooks = (root / "kdbench_trio" / "__init__.py").read_text()
    assert hooks.count("@hookimpl") == 3 and 'register("trio-metric", TrioMetric' in hooks
    assert 'packages = ["kdbench_trio"]' in (root / "pyproject.toml").read_text()
    tests = (root / "tests" / "test_kdbench_trio.py").read_text()
    assert 'check_loss("trio-loss", plugin="trio")' in tests and 'check_student("trio-student", plugin="trio")' in tests


def test_plugin_new_refuses_bad_names_and_existing_packages(tmp_path):
    bad = CliRunner().invoke(main, ["plugin", "new", "Bad_Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 1 and "plugin name 'Bad_Name': use lower-case letters" in bad.output
    CliRunner().invoke(main, ["plugin", "new", "twice", "--dir", str(tmp_path)], catch_exceptions=False)
    again = CliRunner().invoke(main, ["plugin", "new", "twice", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "kdbench-twice already exists" in again.output


def test_generated_and_example_tests_pass_once_installed(installed):
    work, site, example, _ = installed
    test_dirs = sorted(str(p) for p in (work / "gen").glob("kdbench-*/tests")) + [str(example / "tests")]
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *test_dirs], cwd=work, site=site)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{2 * len(KINDS) + 4 + 4} passed" in result.stdout  # the trio: loading and its three components


def test_kdbench_plugins_lists_installed_plugins_with_versions_and_hooks(installed):
    work, site, _, _ = installed
    result = _run(_kdbench() + ["plugins", "--no-components"], cwd=work, site=site)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in result.stdout.splitlines() if line.count("│") == 5}
    assert rows["whisper"] == ["kdbench-whisper", "0.1.0", "register_students"]
    assert rows["example"] == ["kdbench-example-plugin", "0.1.0", "register_students, register_metrics"]
    for kind in KINDS:
        if kind != "student":
            assert rows[f"demo_{kind}"][:2] == [f"kdbench-demo-{kind}", "0.1.0"], kind
    assert rows["trio"] == ["kdbench-trio", "0.1.0", "register_students, register_losses, register_metrics"]


def test_example_suite_runs_end_to_end(installed, fsdd_root, shared_cache):
    work, site, example, _ = installed
    result = _run(_kdbench() + ["run", str(example / "suites" / "example.yaml"), "--no-tracking",
                                "--cache-dir", str(shared_cache), "--results-dir", str(work / "results")],
                  cwd=work, site=site)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    board = pd.read_csv(work / "results" / "example" / "leaderboard.csv")
    dsconv = board[board["model"] == "dsconv-ctc"]
    assert sorted(dsconv["loss"]) == ["ctc", "ctc-kd"]
    assert board["test-unseen/ser"].notna().all() and board["test-seen/ser"].between(0, 100).all()


# ---- what a plugin author is told ----------------------------------------------------------

def test_trace_hooks_prints_every_hook_call(monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_TRACE_HOOKS", "1")
    build_registry()
    err = capsys.readouterr().err
    assert "kdbench hook register_students -> asr" in err
    assert "kdbench hook register_metrics -> standard" in err and "kdbench hook register_metrics -> asr" in err
    assert "kdbench hook register_executors -> standard" in err
    monkeypatch.delenv("KDBENCH_TRACE_HOOKS")
    build_registry()
    assert "kdbench hook" not in capsys.readouterr().err


def test_entry_point_with_an_argument_the_spec_lacks_is_reported_and_the_rest_load(tmp_path, monkeypatch):
    extra = GOOD_PLUGIN.replace("def register_metrics(register):", "def register_metrics(register, suite):")
    make_distribution(tmp_path, monkeypatch, "kdbench-extra", {"kdbench_extra": extra}, {"extra": "kdbench_extra"})
    registry = build_registry()
    (problem,) = registry.problems
    assert problem.startswith("plugin 'extra' (entry point 'kdbench_extra', kdbench-extra 1.2.3) failed to load: PluginValidationError")
    assert "{'suite'} are declared in the hookimpl but can not be found in the hookspec" in problem
    assert "words" not in registry.names("metrics") and "wer" in registry.names("metrics")


def test_entry_point_with_a_misspelt_hook_is_refused_and_the_rest_load(tmp_path, monkeypatch):
    typo = GOOD_PLUGIN.replace("def register_metrics(", "def register_metric(")
    make_distribution(tmp_path, monkeypatch, "kdbench-typo", {"kdbench_typo": typo}, {"typo": "kdbench_typo"})
    registry = build_registry()
    (problem,) = registry.problems
    assert problem.startswith("plugin 'typo' (entry point 'kdbench_typo', kdbench-typo 1.2.3) was not loaded: "
                              "unknown hook 'register_metric'; did you mean 'register_metrics'")
    assert "typo" not in {p.name for p in registry.plugins} and "wer" in registry.names("metrics")
