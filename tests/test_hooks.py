"""One test per hook, named ``test_<hook>`` (tests/test_hooks_documented.py requires it).

A throwaway plugin registers one component through every hook; one tiny suite made only of
those components runs through the real runner (about a second: synthesized corpus, two
training steps per model), and each test checks that its component was registered under the
plugin's name and actually used for what its kind is for.
"""

from collections import Counter
from pathlib import Path

import pytest

from kdbench.cache import Cache
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Augmentation, Compression, Executor, Frontend, Measurement, Metric, Reporter, Target
from kdbench.plugins import build_registry
from kdbench.runner import Runner
from kdbench.suite import Suite, resolve_suite
from kdbench_asr.losses import CtcKd
from kdbench_asr.task import CtcAsr
from kdbench_asr.testing import TinyCtcModel, tiny_corpus

import torch  # after kdbench, which sets OpenMP's wait policy before torch loads

USED: Counter = Counter()


class TwDataset:
    def __init__(self, options, cache_dir, **context):
        pass

    def load(self):
        USED["datasets"] += 1
        return tiny_corpus()


class TwTask(CtcAsr):
    def setup(self, corpus):
        USED["tasks"] += 1
        super().setup(corpus)


class TwFrontend(Frontend):
    """10 ms frames of raw samples, log-compressed: frame-wise, so batch-independent."""

    def __init__(self, options, corpus_info, **context):
        super().__init__()
        self.output_dim = self.hop = corpus_info["sample_rate"] // 100

    def forward(self, waves, lengths):
        USED["frontends"] += 1
        frames = torch.div(lengths, self.hop, rounding_mode="floor").clamp(min=1)
        x = waves[:, :int(frames.max()) * self.hop].reshape(len(waves), -1, self.hop)
        return torch.log1p(100 * x.abs()), frames


class TwAugmentation(Augmentation):
    stage = "input"

    def __init__(self, options, **context):
        pass

    def __call__(self, x, generator):
        USED["augmentations"] += 1
        return x * (0.5 + float(torch.rand(1, generator=generator)))


class TwCompression(Compression):
    """Halves the student's weights before training and records the schedule it was stepped through."""

    def __init__(self, options, model_spec, **context):
        self.progress: list[float] = []

    def prepare(self, model):
        USED["compressions"] += 1
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        return model

    def step(self, model, progress):
        self.progress.append(progress)
        USED["compression_steps"] += 1

    def finish(self, model):
        USED["compression_finished"] += 1
        return model


class TwTeacher(TinyCtcModel):
    def __init__(self, options, model_spec, **context):
        super().__init__(model_spec, hidden=24)
        USED["teachers"] += 1


class TwStudent(TinyCtcModel):
    def __init__(self, options, model_spec, **context):
        super().__init__(model_spec, hidden=8, stride=2)
        USED["students"] += 1


class TwLoss(CtcKd):
    def forward(self, student, batch, teacher):
        USED["losses"] += 1
        return super().forward(student, batch, teacher)


class TwMetric(Metric):
    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        USED["metrics"] += 1
        n = len(ev.predictions)
        return [Measurement("tw_chars", sum(map(len, ev.predictions)) / n if n else float("nan"), "chars", False,
                            coverage=(n, n))]


class TwTarget(Target):
    def __init__(self, options, **context):
        pass

    def prepare(self, model):
        USED["targets"] += 1
        return model.eval()


class TwReporter(Reporter):
    def __init__(self, options, **context):
        pass

    def report(self, result, out_dir, suite_name):
        path = Path(out_dir) / "tw-report.txt"
        path.write_text(f"{suite_name}: {len(result.rows)} rows\n")
        return [path]


class TwExecutor(Executor):
    def __init__(self, options, **context):
        pass

    def map(self, fn, jobs):
        USED["executors"] += len(jobs)
        USED["exclusive"] = USED.get("exclusive", 0) + len(jobs) * bool(getattr(fn, "exclusive", False))
        return [fn(job) for job in jobs]


class Throwaway:
    __name__ = "throwaway"  # the plugin name components are attributed to

    @hookimpl
    def register_datasets(self, register):
        register("tw-dataset", TwDataset)

    @hookimpl
    def register_tasks(self, register):
        register("tw-task", TwTask)

    @hookimpl
    def register_frontends(self, register):
        register("tw-frontend", TwFrontend)

    @hookimpl
    def register_augmentations(self, register):
        register("tw-augmentation", TwAugmentation)

    @hookimpl
    def register_compressions(self, register):
        register("tw-compression", TwCompression)

    @hookimpl
    def register_teachers(self, register):
        register("tw-teacher", TwTeacher)

    @hookimpl
    def register_students(self, register):
        register("tw-student", TwStudent)

    @hookimpl
    def register_losses(self, register):
        register("tw-loss", TwLoss)

    @hookimpl
    def register_metrics(self, register):
        register("tw-metric", TwMetric)

    @hookimpl
    def register_targets(self, register):
        register("tw-target", TwTarget)

    @hookimpl
    def register_reporters(self, register):
        register("tw-reporter", TwReporter)

    @hookimpl
    def register_executors(self, register):
        register("tw-executor", TwExecutor)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    USED.clear()
    registry = build_registry(extra_plugins=[Throwaway()])
    work = tmp_path_factory.mktemp("hooks")
    suite = Suite.model_validate({
        "name": "hooks", "task": "tw-task", "dataset": "tw-dataset", "frontend": "tw-frontend",
        "augmentations": ["tw-augmentation"],
        "teachers": [{"name": "tw-teacher", "training": {"steps": 2, "batch_size": 4, "warmup_steps": 0}}],
        "students": ["tw-student"], "losses": ["tw-loss"], "compressions": ["tw-compression"], "seeds": [0],
        "training": {"steps": 2, "batch_size": 4, "warmup_steps": 0},
        "metrics": ["tw-metric"], "targets": ["tw-target"], "reporters": ["tw-reporter"], "executor": "tw-executor",
    })
    rs = resolve_suite(suite, registry)
    result = Runner(rs, registry, cache=Cache(work / "cache"), results_root=work / "results", tracker=None).run()
    assert [(r.role, r.model, r.status) for r in result.rows] == [
        ("teacher", "tw-teacher", "ok"), ("student", "tw-student", "ok"),
        ("student", "tw-student+tw-compression", "ok")], [r.error for r in result.rows]
    return registry, result


def registered_by_throwaway(registry, kind, name):
    return registry.get(kind, name).plugin == "throwaway"


def test_register_datasets(run):
    registry, result = run
    assert registered_by_throwaway(registry, "datasets", "tw-dataset")
    assert USED["datasets"] == 1
    assert all("test/tw_chars" in r.measurements for r in result.rows)  # its one test set was evaluated


def test_register_tasks(run):
    registry, _ = run
    assert registered_by_throwaway(registry, "tasks", "tw-task")
    assert USED["tasks"] == 1


def test_register_frontends(run):
    registry, _ = run
    assert registered_by_throwaway(registry, "frontends", "tw-frontend")
    assert USED["frontends"] >= 4  # teacher and student training, teacher outputs, evaluation


def test_register_augmentations(run):
    registry, _ = run
    assert registered_by_throwaway(registry, "augmentations", "tw-augmentation")
    assert USED["augmentations"] >= 8  # training batches of 4 examples


def test_register_compressions(run):
    registry, result = run
    assert registered_by_throwaway(registry, "compressions", "tw-compression")
    # once checked on the student before anything trained (prepared and finished), once on the run
    assert USED["compressions"] == 2 and USED["compression_finished"] == 2
    assert USED["compression_steps"] == 2  # after each of the run's 2 steps
    dense, compressed = result.rows[1], result.rows[2]
    assert dense.run_key != compressed.run_key and dense.params == compressed.params


def test_register_teachers(run):
    registry, result = run
    assert registered_by_throwaway(registry, "teachers", "tw-teacher")
    teacher = result.rows[0]
    assert (teacher.role, teacher.model) == ("teacher", "tw-teacher")
    assert result.stats["teachers_trained"] == 1 and result.stats["teacher_forward_passes"] == 1


def test_register_students(run):
    registry, result = run
    assert registered_by_throwaway(registry, "students", "tw-student")
    student = result.rows[1]
    assert (student.model, student.teacher) == ("tw-student", "tw-teacher")
    assert student.params < result.rows[0].params


def test_register_losses(run):
    registry, result = run
    assert registered_by_throwaway(registry, "losses", "tw-loss")
    # one call per training step, of the dense and the compressed student
    assert result.rows[1].loss == "tw-loss" and USED["losses"] == 4


def test_register_metrics(run):
    registry, result = run
    assert registered_by_throwaway(registry, "metrics", "tw-metric")
    meta = result.columns["test/tw_chars"]
    assert (meta.unit, meta.higher_is_better, meta.kind) == ("chars", False, "quality")


def test_register_targets(run):
    registry, result = run
    assert registered_by_throwaway(registry, "targets", "tw-target")
    assert {r.target for r in result.rows} == {"tw-target"} and USED["targets"] == 3  # one per model


def test_register_reporters(run):
    registry, result = run
    assert registered_by_throwaway(registry, "reporters", "tw-reporter")
    (path,) = result.reports
    assert path.name == "tw-report.txt" and path.read_text() == "hooks: 3 rows\n"


def test_register_executors(run):
    registry, _ = run
    assert registered_by_throwaway(registry, "executors", "tw-executor")
    # the two planned student runs (dense, compressed) went through it twice each: trained, then
    # evaluated with a machine to itself
    assert USED["executors"] == 4 and USED["exclusive"] == 2
