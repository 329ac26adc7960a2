"""The plugin API in ``kdbench/__init__.py``: every name in ``__all__`` resolves to the class a
plugin subclasses, and ``import kdbench`` stays cheap (no torch) so that the OpenMP settings it
makes come before torch loads, and ``kdbench --help`` answers at once."""

import importlib
import inspect
import os
import subprocess
import sys
import textwrap

import pytest

import kdbench
from kdbench import errors, interfaces


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, without the OpenMP variables kdbench sets, warnings as errors."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_kdbench_does_not_import_torch_and_sets_openmp_first():
    done = _python("""
        import os, sys
        import kdbench
        assert "torch" not in sys.modules, "import kdbench imported torch"
        assert "kdbench.interfaces" not in sys.modules
        assert (os.environ["OMP_WAIT_POLICY"], os.environ["GOMP_SPINCOUNT"]) == ("PASSIVE", "2000")
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_torch_loaded_through_the_api_sees_the_openmp_settings():
    # record the environment at the moment torch is first imported, which is when OpenMP reads it
    done = _python("""
        import importlib.abc, os, sys

        seen = []

        class Watch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" and not seen:
                    seen.append((os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")))
                return None

        sys.meta_path.insert(0, Watch())
        import kdbench
        assert "torch" not in sys.modules
        kdbench.Target  # the first use of an interface loads torch
        assert "torch" in sys.modules and seen == [("PASSIVE", "2000")], seen
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_kdbench_help_does_not_import_torch():
    done = _python("""
        import sys
        from click.testing import CliRunner
        from kdbench.cli import main
        result = CliRunner().invoke(main, ["--help"])
        assert result.exit_code == 0 and "Usage" in result.output, result.output
        assert "torch" not in sys.modules, "kdbench --help imported torch"
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("name", kdbench.__all__)
def test_every_name_in_all_resolves_to_its_definition(name):
    value = getattr(kdbench, name)
    if name != "__version__":
        module = importlib.import_module(kdbench._API[name])
        assert value is getattr(module, name)
        assert name in dir(kdbench)


def test_star_import_gives_the_api():
    namespace = {}
    exec("from kdbench import *", namespace)
    assert {"hookimpl", "Options", "Target", "TargetError"} <= set(namespace)
    assert namespace["Target"] is interfaces.Target


def test_the_api_covers_every_interface_and_error():
    """A class added to kdbench.interfaces or kdbench.errors is part of what plugins use: export it."""
    defined = {name for module in (interfaces, errors) for name, obj in vars(module).items()
               if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")}
    assert defined - set(kdbench.__all__) == set()


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import():
    with pytest.raises(AttributeError, match="no attribute 'Trget'"):
        kdbench.Trget
    from kdbench import hashing  # falls back to the submodule because the lookup raised AttributeError

    assert hashing.__name__ == "kdbench.hashing"
