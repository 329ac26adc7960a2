"""Components check their options against the rest of the suite (``check_suite``) when the
suite is resolved, so ``kdbench validate`` reports what would otherwise fail only after a
teacher has trained: one line, naming the file, the option's key path and the problem."""

import pytest
from click.testing import CliRunner

from kdbench.cli import main
from kdbench.errors import PluginError, SuiteError
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Model
from kdbench.options import Options
from kdbench.plugins import build_registry
from kdbench.suite import Suite, resolve_suite

from conftest import REPO, tiny_suite, write_suite


def validate(path):
    result = CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def hint_suite(fsdd_root, **hint_options):
    suite = tiny_suite(fsdd_root, losses=["ctc", {"name": "hint", "options": hint_options}])
    suite["teachers"][0]["label"] = "conformer-700k"  # tiny_suite's teacher: a one-layer conformer
    return suite


def test_wrong_teacher_layer_fails_validate_in_one_line(tmp_path, fsdd_root):
    path = write_suite(tmp_path / "x.yaml", hint_suite(fsdd_root, teacher_layer="enc9"))
    code, lines = validate(path)
    assert code == 2
    assert lines == [f"error: {path}: losses[1].options.teacher_layer: no layer 'enc9' in teacher 'conformer-700k' "
                     f"(has: encoder, layer1)"]


def test_wrong_student_layer_names_the_student(tmp_path, fsdd_root):
    path = write_suite(tmp_path / "x.yaml", hint_suite(fsdd_root, student_layer="layer2"))
    code, lines = validate(path)
    assert code == 2
    assert lines[-1] == (f"error: {path}: losses[1].options.student_layer: no layer 'layer2' in student 'gru-ctc' "
                         f"(has: encoder, layer1)")


def test_right_layers_pass_validate(tmp_path, fsdd_root):
    path = write_suite(tmp_path / "x.yaml", hint_suite(fsdd_root, teacher_layer="layer1", student_layer="encoder"))
    code, lines = validate(path)
    assert code == 0, lines
    # rich wraps the ok line at the terminal's width
    assert " ".join(" ".join(lines).split()).startswith(f"ok {path}: 1 teacher(s), 2 student run(s)")


def test_every_teacher_is_checked(tmp_path, fsdd_root):
    suite = hint_suite(fsdd_root, teacher_layer="layer3")
    suite["teachers"].append({"name": "conformer-ctc", "label": "deep", "options": {"d_model": 32, "layers": 3}})
    suite["teachers"][0]["options"]["layers"] = 3
    suite["teachers"].append({"name": "deepspeech-ctc", "options": {"hidden": 16}})
    code, lines = validate(write_suite(tmp_path / "x.yaml", suite))
    assert code == 2
    assert lines[-1].endswith("losses[1].options.teacher_layer: no layer 'layer3' in teacher 'deepspeech-ctc' "
                              "(has: encoder)")


# ---- the mechanism, on a throwaway plugin ---------------------------------------------------------
class Declared(Model):
    """Declares its layers, so a check never builds it (a hub teacher would download)."""

    class Options(Options):
        depth: int = 2

    @classmethod
    def hidden_layers_for(cls, options):
        return tuple(f"block{i + 1}" for i in range(options.depth))

    def __init__(self, options, model_spec, **context):
        raise AssertionError("a suite check must not build a model that declares its layers")


class Picky:
    """A metric whose ``check_suite`` refuses suites with more than ``max_students`` students."""

    class Options(Options):
        max_students: int = 1
        fail: str = ""  # "bug": the check itself is broken

    def __init__(self, options, **context):
        pass

    @classmethod
    def check_suite(cls, options, suite):
        if options.fail == "bug":
            return suite.no_such_attribute
        if len(suite.students) > options.max_students:
            raise ValueError(f"scores at most {options.max_students} student(s); the suite has {len(suite.students)}")


class Checks:
    __name__ = "checks"

    @hookimpl
    def register_teachers(self, register):
        register("declared", Declared)

    @hookimpl
    def register_metrics(self, register):
        register("picky", Picky)


@pytest.fixture(scope="module")
def registry():
    return build_registry(extra_plugins=[Checks()])


def resolve(registry, fsdd_root, **overrides):
    return resolve_suite(Suite.model_validate(tiny_suite(fsdd_root, **overrides)), registry, "s.yaml")


def test_a_plain_value_error_points_at_the_options(registry, fsdd_root):
    with pytest.raises(SuiteError) as exc:
        resolve(registry, fsdd_root, students=["gru-ctc", "deepspeech-ctc"], metrics=["wer", "picky"])
    assert str(exc.value) == "s.yaml: metrics[1].options: scores at most 1 student(s); the suite has 2"
    resolve(registry, fsdd_root, students=["gru-ctc"], metrics=["wer", "picky"])  # one student fits


def test_a_broken_check_is_the_plugins_error(registry, fsdd_root):
    with pytest.raises(PluginError) as exc:
        resolve(registry, fsdd_root, metrics=[{"name": "picky", "options": {"fail": "bug"}}])
    message = str(exc.value)
    assert message.startswith("s.yaml: metrics[0]: plugin 'checks' failed checking 'picky' against the suite: "
                              "AttributeError: ")
    assert "\n" not in message


def test_declared_layers_are_used_without_building_the_model(registry, fsdd_root):
    teachers = [{"name": "declared", "options": {"depth": 3}}]
    resolve(registry, fsdd_root, teachers=teachers, losses=[{"name": "hint", "options": {"teacher_layer": "block3"}}])
    with pytest.raises(SuiteError, match=r"losses\[0\]\.options\.teacher_layer: no layer 'block4' in teacher "
                                         r"'declared' \(has: block1, block2, block3\)$"):
        resolve(registry, fsdd_root, teachers=teachers,
                losses=[{"name": "hint", "options": {"teacher_layer": "block4"}}])


def test_the_enhancement_hint_is_checked_too(tmp_path):
    """The enhancement plugin's encoder-hint uses the same check (kdbench.layers)."""
    import yaml

    suite = yaml.safe_load((REPO / "suites" / "enhancement.yaml").read_text())
    suite["losses"] = ["si-sdr", {"name": "encoder-hint", "options": {"teacher_layer": "decoder"}}]
    path = write_suite(tmp_path / "enh.yaml", suite)
    code, lines = validate(path)
    assert code == 2
    assert lines[-1].startswith(f"error: {path}: losses[1].options.teacher_layer: no layer 'decoder' in teacher "
                                f"'bigru-teacher' (has: ")
    suite["losses"][1]["options"]["teacher_layer"] = "encoder"
    assert validate(write_suite(tmp_path / "enh.yaml", suite))[0] == 0
