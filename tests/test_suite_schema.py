"""Suite files: plain YAML, schema errors naming file and key path, did-you-mean for names."""

import pytest
import yaml

from kdbench.errors import SuiteError, UnknownComponentError
from kdbench.plugins import get_registry
from kdbench.suite import load_suite, read_suite

from conftest import REPO, tiny_suite, write_suite


@pytest.fixture
def suite_dict(tmp_path):
    return tiny_suite(tmp_path / "fsdd")


def test_shipped_suites_validate():
    registry = get_registry()
    for path in sorted((REPO / "suites").rglob("*.yaml")):
        rs = load_suite(path, registry)
        assert rs.students and rs.losses and rs.metrics, path


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstudents: [gru-ctc\nlosses: ctc\n")
    with pytest.raises(SuiteError) as exc:
        read_suite(path)
    message = str(exc.value)
    assert message.startswith(f"{path}:") and "line" in message and "malformed YAML" in message
    assert "\n" not in message


def test_yaml_tags_that_run_code_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SuiteError, match="malformed YAML"):
        read_suite(path)


def test_option_out_of_range_names_key_path(tmp_path, suite_dict):
    suite_dict["losses"] = ["ctc", {"name": "ctc-kd", "options": {"alpha": 1.5}}]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError) as exc:
        load_suite(path, get_registry())
    assert str(exc.value).startswith(f"{path}: losses[1].options.alpha: ")
    assert "less than or equal to 1" in str(exc.value)


def test_wrong_option_type(tmp_path, suite_dict):
    suite_dict["students"] = [{"name": "gru-ctc", "options": {"hidden": "wide"}}]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError, match=r"students\[0\]\.options\.hidden: Input should be a valid integer"):
        load_suite(path, get_registry())


def test_unknown_option_key_is_rejected(tmp_path, suite_dict):
    suite_dict["losses"] = [{"name": "ctc-kd", "options": {"temprature": 2}}]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError, match=r"losses\[0\]\.options\.temprature: unknown key"):
        load_suite(path, get_registry())


def test_unknown_top_level_key(tmp_path, suite_dict):
    suite_dict["studnets"] = []
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError, match="studnets: unknown key"):
        read_suite(path)


def test_unknown_name_suggests_and_lists(tmp_path, suite_dict):
    suite_dict["students"] = ["gru-ctx"]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(UnknownComponentError) as exc:
        load_suite(path, get_registry())
    message = str(exc.value)
    assert "students[0].name: unknown student 'gru-ctx'" in message
    assert "did you mean 'gru-ctc'" in message
    assert "available: conformer-ctc, convtasnet, deepspeech-ctc, fastspeech, gru-ctc" in message


def test_kd_loss_without_teacher_is_a_suite_error(tmp_path, suite_dict):
    from kdbench.plan import plan_student_runs

    suite_dict["teachers"] = []
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    rs = load_suite(path, get_registry())
    with pytest.raises(SuiteError, match=r"losses\[1\]: 'ctc-kd' distills from a teacher"):
        plan_student_runs(rs)


def test_plan_shares_the_baseline_across_teachers(tmp_path, suite_dict):
    from kdbench.plan import plan_student_runs

    teacher = suite_dict["teachers"][0]
    suite_dict["teachers"] = [teacher, {**teacher, "label": "other"}]
    suite_dict["seeds"] = [0, 1]
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite_dict), get_registry())
    runs = plan_student_runs(rs)
    # ctc: 1 student x 2 seeds (no teacher); ctc-kd: 1 student x 2 teachers x 2 seeds
    assert len(runs) == 2 + 4
    assert {r.teacher for r in runs if r.loss.name == "ctc"} == {None}


def test_duplicate_labels_are_refused(tmp_path, suite_dict):
    suite_dict["students"] = ["gru-ctc", "gru-ctc"]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError, match="'gru-ctc' appears twice"):
        load_suite(path, get_registry())


# ---- defaults come from registrations, never from names the core spells ----------------------------
def test_omitted_targets_reporters_executor_get_the_registered_defaults(tmp_path, suite_dict):
    for key in ("targets", "reporters", "executor"):
        suite_dict.pop(key, None)
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite_dict), get_registry())
    assert [t.name for t in rs.targets] == ["cpu"] and [r.name for r in rs.reporters] == ["leaderboard"]
    assert rs.executor.name == "local"
    assert {rs.targets[0].component.plugin, rs.reporters[0].component.plugin, rs.executor.component.plugin} == {"standard"}
    # the resolved suite records what was used (its MLflow parameters show it)
    assert [t.name for t in rs.suite.targets] == ["cpu"] and rs.suite.executor.name == "local"


def test_named_components_are_not_replaced_by_defaults(tmp_path, suite_dict):
    suite_dict.update(targets=["cpu-1thread"], executor="local")
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite_dict), get_registry())
    assert [t.name for t in rs.targets] == ["cpu-1thread"]


def test_no_default_for_an_omitted_key_is_one_clear_error(tmp_path, suite_dict, monkeypatch):
    from kdbench.plugins import build_registry

    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "asr")  # no plugin that provides targets
    suite_dict.pop("targets", None)
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError) as exc:
        load_suite(path, build_registry())
    assert str(exc.value) == f"{path}: targets: none given, and no loaded plugin registers a default target (available: none)"


def test_two_plugins_claiming_one_default_is_an_error_naming_both(tmp_path, suite_dict):
    from kdbench.errors import AmbiguousComponentError
    from kdbench.hookspecs import hookimpl
    from kdbench.plugins import build_registry
    from kdbench_standard.executors import LocalExecutor

    class Rival:
        __name__ = "rival"

        @hookimpl
        def register_executors(self, register):
            register("elsewhere", LocalExecutor, default=True)

    registry = build_registry(extra_plugins=[Rival()])
    assert any("executors: standard:local and rival:elsewhere are both registered as the default executor" in p
               for p in registry.problems)
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(AmbiguousComponentError) as exc:
        load_suite(path, registry)
    assert str(exc.value) == (f"{path}: executor: none given, and plugins 'standard' and 'rival' both register a "
                              f"default executor (standard:local, rival:elsewhere): name the one you mean")
    suite_dict["executor"] = "elsewhere"  # naming one settles it
    assert load_suite(write_suite(path, suite_dict), registry).executor.component.plugin == "rival"


def test_default_must_be_a_bool():
    from kdbench.errors import PluginError
    from kdbench.hookspecs import hookimpl
    from kdbench.plugins import build_registry
    from kdbench_standard.executors import LocalExecutor

    class Sloppy:
        @hookimpl
        def register_executors(self, register):
            register("maybe", LocalExecutor, default="yes")

    with pytest.raises(PluginError, match="executors 'maybe' default must be True or False, got 'yes'"):
        build_registry(extra_plugins=[Sloppy()])


def test_a_teachers_training_loss_and_its_options_are_part_of_its_key(tmp_path):
    from kdbench import records

    suite = yaml.safe_load((REPO / "suites" / "tts.yaml").read_text())
    teacher = {k: v for k, v in suite["teachers"][0].items() if k != "loss"}

    def teacher_key(entry):
        rs = load_suite(write_suite(tmp_path / "s.yaml", {**suite, "teachers": [entry]}), get_registry())
        loss = rs.teacher_losses[0]
        return loss.name, records.trained_teacher_key(rs.teachers[0].config(), {}, {}, loss.config())

    default = teacher_key(teacher)
    assert default[0] == "mel"  # the task's default_loss when the suite names none
    assert teacher_key({**teacher, "loss": "mel"}) == default
    unguided = teacher_key({**teacher, "loss": {"name": "mel", "options": {"guided_attention": 0}}})
    assert unguided[0] == "mel" and unguided[1] != default[1]


def test_a_distillation_loss_cannot_train_a_teacher(tmp_path, suite_dict):
    suite_dict["teachers"] = [{**suite_dict["teachers"][0], "loss": "ctc-kd"}]
    with pytest.raises(SuiteError, match=r"teachers\[0\]\.loss: 'ctc-kd' distills from a teacher; a teacher trains"):
        load_suite(write_suite(tmp_path / "s.yaml", suite_dict), get_registry())


def test_a_sweep_is_one_entry_per_value_labelled_by_it(tmp_path, suite_dict):
    suite_dict["losses"] = ["ctc", {"name": "ctc-kd", "options": {"alpha": 0.5},
                                    "sweep": {"temperature": [1, 2, 4, 8]}}]
    suite_dict["students"] = [{"name": "gru-ctc", "label": "gru", "sweep": {"hidden": [16, 32], "layers": [1, 2]}}]
    rs = load_suite(write_suite(tmp_path / "s.yaml", suite_dict), get_registry())
    kd = [loss for loss in rs.losses if loss.name == "ctc-kd"]
    assert [loss.label for loss in kd] == [f"ctc-kd temperature={t}" for t in (1, 2, 4, 8)]
    assert [(loss.options.temperature, loss.options.alpha) for loss in kd] == [(t, 0.5) for t in (1, 2, 4, 8)]
    assert [s.label for s in rs.students] == ["gru hidden=16,layers=1", "gru hidden=16,layers=2",
                                              "gru hidden=32,layers=1", "gru hidden=32,layers=2"]
    assert len({s.fingerprint() for s in rs.students}) == 4


@pytest.mark.parametrize("sweep, expected", [
    ({"temperature": 2}, "losses[1].sweep.temperature: a non-empty list of values, got 2"),
    ({"temperature": []}, "losses[1].sweep.temperature: a non-empty list of values"),
    ([1, 2], "losses[1].sweep: map each option to sweep to a list of its values"),
    ({"alpha": [0.1, 0.9]}, "losses[1].sweep.alpha: also set in options; give it in one place"),
    ({"temprature": [1, 2]}, "losses[1].options.temprature: unknown key"),
    ({"temperature": [1, -2]}, "losses[2].options.temperature: Input should be greater than 0"),
])
def test_a_bad_sweep_is_one_line_naming_its_key(tmp_path, suite_dict, sweep, expected):
    suite_dict["losses"] = ["ctc", {"name": "ctc-kd", "options": {"alpha": 0.5}, "sweep": sweep}]
    path = write_suite(tmp_path / "s.yaml", suite_dict)
    with pytest.raises(SuiteError) as exc:
        load_suite(path, get_registry())
    assert str(exc.value).startswith(f"{path}: ") and expected in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)
