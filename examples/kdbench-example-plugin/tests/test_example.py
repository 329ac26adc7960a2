"""The example plugin conforms: run `pytest` after `pip install examples/kdbench-example-plugin`."""

import math

from kdbench.interfaces import Evaluation
from kdbench.testing import check_loaded, check_metric, check_student, check_teacher

SMALL = {"channels": 16, "blocks": 2, "kernel": 5}


def test_loads_through_its_entry_point():
    plugin = check_loaded("example")
    assert (plugin.distribution, plugin.version) == ("kdbench-example-plugin", "0.1.0")
    assert sorted(plugin.hooks) == ["register_metrics", "register_students"]


def test_dsconv_student_conforms():
    check_student("dsconv-ctc", SMALL)
    check_student("dsconv-ctc", {**SMALL, "subsampling": 1})


def test_dsconv_outputs_do_not_depend_on_batch_mates():
    # what a teacher must guarantee; this student does too, so it could serve as one
    from kdbench.plugins import build_registry
    from kdbench.testing import tiny_bench

    registry = build_registry()
    component = registry.get("students", "dsconv-ctc")
    check_teacher(component, SMALL, bench=tiny_bench(registry))


def test_ser_conforms_and_counts_utterances():
    metric = check_metric("ser")
    ev = Evaluation("test", [], ["one two", "Three", ""], ["one two", "three", "four"], None, None, None)
    (m,) = metric.compute(ev)
    assert math.isclose(m.value, 100 / 3) and (m.unit, m.higher_is_better, m.coverage) == ("%", False, (3, 3))
