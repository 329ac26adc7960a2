"""Meta-tests in the style of datasette's: every hook spec has a section in docs/plugins.md
giving its exact signature and a test named ``test_<hook>`` somewhere in tests/, so adding a
hook without both fails here. The example module in each hook's section runs through the
conformance kit, so the documentation cannot drift from what works."""

import ast
import inspect
import re
import types
import warnings
from pathlib import Path

import pluggy
import pytest

from kdbench import hookspecs
from kdbench.plugins import KINDS, build_registry
from kdbench.testing import CHECKS, tiny_bench

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "plugins.md"
HOOKS = {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, "kdbench_spec")}
KIND_OF = {hook: kind for kind, hook in KINDS.items()}


def signature(name: str) -> str:
    return f"{name}{inspect.signature(HOOKS[name])}"


def test_found_the_hooks():
    assert len(HOOKS) >= 11 and "register_students" in HOOKS


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_exact_signature(hook):
    assert f"### `{signature(hook)}`" in DOCS.read_text(), \
        f"docs/plugins.md needs a section headed: ### `{signature(hook)}`"


def test_docs_document_no_hook_that_does_not_exist():
    documented = re.findall(r"^### `(\w+)\(", DOCS.read_text(), flags=re.M)
    assert sorted(documented) == sorted(HOOKS)


def _test_function_names() -> set[str]:
    names = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_has_a_test(hook):
    assert f"test_{hook}" in _test_function_names(), f"write a test named test_{hook} (see tests/test_hooks.py)"


def test_every_hook_registers_a_kind():
    assert sorted(HOOKS) == sorted(KINDS.values())


def test_compatibility_policy_is_documented_and_supported():
    text = DOCS.read_text()
    assert "warn_on_impl_args" in text and "warn_on_impl=" in text
    # the installed pluggy supports the documented deprecation path
    spec, impl = pluggy.HookspecMarker("demo"), pluggy.HookimplMarker("demo")

    class Specs:
        @spec(warn_on_impl_args={"old": DeprecationWarning("'old' is retired")})
        def hook(self, register, old): ...

    class Plugin:
        @impl
        def hook(self, register, old): ...

    pm = pluggy.PluginManager("demo")
    pm.add_hookspecs(Specs)
    with pytest.warns(DeprecationWarning, match="'old' is retired"):
        pm.register(Plugin())


def _documented_examples() -> dict[str, str]:
    """hook -> the first python block of its section."""
    sections = re.split(r"^### `", DOCS.read_text(), flags=re.M)[1:]
    examples = {}
    for section in sections:
        hook = section.split("(", 1)[0]
        block = re.search(r"```python\n(.*?)```", section, flags=re.S)
        if block:
            examples[hook] = block.group(1)
    return examples


EXAMPLES = _documented_examples()


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_documented_example_registers_and_conforms(hook, tmp_path):
    assert hook in EXAMPLES, f"the {hook} section of docs/plugins.md has no python example"
    module = types.ModuleType(f"docs_{hook}")
    exec(compile(EXAMPLES[hook], f"docs/plugins.md ({hook})", "exec"), module.__dict__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a pluggy deprecation warning
        registry = build_registry(extra_plugins=[module])
    kind = KIND_OF[hook]
    (name,) = [n for n, c in registry.components[kind].items() if c.plugin == module.__name__]
    component = registry.get(kind, name)
    if kind in CHECKS:
        CHECKS[kind](component, registry=registry)
    elif kind == "tasks":  # a model trains and is evaluated on its batches
        from kdbench.testing import check_metric, check_student

        bench = tiny_bench(registry, task=name)
        check_student("gru-ctc", {"hidden": 8, "layers": 1}, bench=bench)
        check_metric("params", bench=bench)
    elif kind == "reporters":
        from kdbench.runner import Row, SuiteResult

        rows = [Row("student", "m", "", "ctc", 0, "cpu", "ok", "k", measurements={"test/wer": 50.0})]
        paths = component.build().report(SuiteResult("s", rows, {"test/wer": ("%", False)}, tmp_path), tmp_path, "s")
        assert paths and all(Path(p).is_file() for p in paths)
    elif kind == "executors":
        assert component.build().map(lambda job: job * 2, [1, 2, 3]) == [2, 4, 6]
    else:  # pragma: no cover
        pytest.fail(f"no way to exercise a {kind} example")
