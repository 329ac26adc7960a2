"""The conformance kit against deliberately broken components, so it cannot regress.

A third-party author's three components (a relational-KD loss, a model-scope real-time-factor
metric, a depthwise-separable CNN student) pass the kit as written here; each mutant changes
one thing in one of them, as an author could by mistake, and the kit must reject it with a
message that says what to fix. The first mutants are the mistakes an author's trial found the
kit letting through, each of which makes distillation or a measurement silently wrong.
"""

import math
import re
import time
from time import perf_counter

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from kdbench import measurement
from kdbench.alignment import frame_mask, layer_lengths
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Loss, Measurement, Metric, Model, ModelOutput
from kdbench.options import Options
from kdbench.plugins import build_registry
from kdbench.testing import ConformanceError, check_loss, check_metric, check_student, tiny_bench
from kdbench_asr.losses import ctc


# ---- the author's components, as they should be ------------------------------------------------

def _mask(lengths, frames):
    return frame_mask(lengths, frames).unsqueeze(1)  # (batch, 1, frames)


class DwsCnn(Model):
    """A stride-2 stem, residual depthwise-separable blocks with LayerNorm, a CTC head."""

    class Options(Options):
        channels: int = Field(16, ge=4)
        blocks: int = Field(2, ge=1)
        kernel_size: int = Field(5, ge=1)

        @field_validator("kernel_size")
        @classmethod
        def odd(cls, value):
            if value % 2 == 0:
                raise ValueError("kernel_size must be odd (so that 'same' padding keeps the length)")
            return value

    def __init__(self, options, model_spec, **context):
        super().__init__()
        c, k = options.channels, options.kernel_size
        self.stem = nn.Conv1d(model_spec.input_dim, c, 3, stride=2, padding=1)
        self.depthwise = nn.ModuleList(nn.Conv1d(c, c, k, padding=k // 2, groups=c) for _ in range(options.blocks))
        self.pointwise = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in range(options.blocks))
        self.norms = nn.ModuleList(self.norm(c) for _ in range(options.blocks))
        self.head = nn.Linear(c, model_spec.output_dim)
        self.hidden_dims = {"encoder": c}

    def norm(self, channels):
        return nn.LayerNorm(channels)

    def normalise(self, norm, y, keep):  # y: (batch, channels, frames)
        return norm(y.transpose(1, 2)).transpose(1, 2)

    def subsampled(self, lengths):
        return torch.div(lengths - 1, 2, rounding_mode="floor") + 1

    def encode(self, features, lengths):
        x = self.stem((features * _mask(lengths, features.shape[1]).transpose(1, 2)).transpose(1, 2))
        lengths = self.subsampled(lengths)
        keep = _mask(lengths, x.shape[2])
        x = x * keep
        for dw, pw, norm in zip(self.depthwise, self.pointwise, self.norms):
            x = (x + self.normalise(norm, pw(F.gelu(dw(self.masked(x, keep)))), keep)) * keep
        return x.transpose(1, 2), lengths

    def masked(self, x, keep):
        return x * keep

    def forward(self, features, lengths):
        h, lengths = self.encode(features, lengths)
        return ModelOutput(self.head(h), lengths, {"encoder": h})


class Rkd(Loss):
    """(1 - alpha) CTC + alpha * weight * distance-wise relational KD (Park et al., 2019): each
    utterance's layer mean-pooled over its valid frames, pairwise distances over their mean,
    the student's fitted to the teacher's with smooth L1."""

    requires_teacher = True

    class Options(Options):
        alpha: float = Field(0.5, ge=0, lt=1)
        weight: float = Field(25.0, gt=0, le=1000)
        student_layer: str = "encoder"
        teacher_layer: str = "encoder"

    @classmethod
    def teacher_layers_for(cls, options):
        return (options.teacher_layer,)

    def __init__(self, options, student, teacher, **context):
        super().__init__()
        self.o = options

    def pooled(self, out, layer, lengths):
        h = out.hidden[layer]
        mask = frame_mask(lengths, h.shape[1]).unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / lengths.clamp(min=1)[:, None].to(h.dtype)

    def student_vectors(self, student, teacher):
        return self.pooled(student, self.o.student_layer, layer_lengths(student, self.o.student_layer))

    def teacher_vectors(self, teacher):
        return self.pooled(teacher, self.o.teacher_layer, layer_lengths(teacher, self.o.teacher_layer))

    @staticmethod
    def distances(z):
        d = ((z[:, None] - z[None]) ** 2).sum(-1).add(1e-12).sqrt()
        off = ~torch.eye(len(z), dtype=torch.bool)
        return d[off] / d[off].mean()

    def relational(self, student, teacher, batch):
        if len(batch.ids) < 2:  # no pairs in a batch of one
            return student.output.new_zeros(())
        s, t = self.student_vectors(student, teacher), self.teacher_vectors(teacher)
        return F.smooth_l1_loss(self.distances(s), self.distances(t))

    def hard(self, student, batch):
        return ctc(student, batch.targets, batch.target_lengths)

    def forward(self, student, batch, teacher):
        return ((1 - self.o.alpha) * self.hard(student, batch)
                + self.o.alpha * self.o.weight * self.relational(student, teacher, batch))


class RtfByLength(Metric):
    """Real-time factor per equal-count utterance-length bucket, timed by kdbench.measurement,
    and the machine's load while timing (unit ``cores``: the row's load note)."""

    scope = "model"

    class Options(Options):
        utterances: int = Field(4, ge=3)
        runs: int = Field(6, ge=1)

    def __init__(self, options, **context):
        self.o = options

    def timed(self, ev, inputs):
        return measurement.time_runs(ev.forward, inputs, warmup=1, runs=self.o.runs)

    def measure(self, name, value):
        return Measurement(name, value, "x", False, kind="cost")

    def compute(self, ev):
        inputs = [(e.id, ev.prepare_input(e), ev.seconds(e)) for e in ev.examples[:self.o.utterances]]
        timing = self.timed(ev, inputs)
        sizes = sorted(set(timing.sizes))
        results = []
        for i, bucket in enumerate(("short", "medium", "long")):
            chosen = set(sizes[i * len(sizes) // 3:(i + 1) * len(sizes) // 3])
            runs = [(s, size) for s, size in zip(timing.seconds, timing.sizes) if size in chosen]
            results.append(self.measure(f"rtf_{bucket}", sum(s for s, _ in runs) / sum(z for _, z in runs)))
        if not math.isnan(timing.other_cores):
            results.append(Measurement("rtf_other_cores", timing.other_cores, "cores", False, kind="condition",
                                       gated=False, warn_above=measurement.CONTENTION_CORES))
        return results


# ---- the mutants -------------------------------------------------------------------------------

class StudentIgnoresPadding(DwsCnn):
    """Masks nothing: its depthwise convolutions read the padding of longer batch-mates."""

    def masked(self, x, keep):
        return x

    def forward(self, features, lengths):
        x = self.stem(features.transpose(1, 2))
        lengths = self.subsampled(lengths)
        for dw, pw, norm in zip(self.depthwise, self.pointwise, self.norms):
            x = x + self.normalise(norm, pw(F.gelu(dw(x))), None)
        h = x.transpose(1, 2)
        return ModelOutput(self.head(h), lengths, {"encoder": h})


class BatchNormOverPadding(DwsCnn):
    """BatchNorm1d instead of LayerNorm, its statistics over every frame of the padded batch."""

    def norm(self, channels):
        return nn.BatchNorm1d(channels)

    def normalise(self, norm, y, keep):
        return norm(y)


class ContextLayerWithoutLengths(DwsCnn):
    """Also exposes a layer of 3-frame context windows without padding (two frames fewer than
    the input), whose valid frames are no fixed multiple of the output's, without giving them
    in hidden_lengths: kdbench's inference from the output's lengths is then wrong."""

    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.hidden_dims = {**self.hidden_dims, "context": model_spec.input_dim}

    def forward(self, features, lengths):
        out = super().forward(features, lengths)
        context = F.avg_pool1d(features.transpose(1, 2), 3, stride=1).transpose(1, 2)
        return ModelOutput(out.output, out.lengths, {**out.hidden, "context": context})


class NanOnOneInTraining(DwsCnn):
    """Standardises over the batch while training: one utterance has no spread (NaN)."""

    def forward(self, features, lengths):
        if self.training:
            centred = features - features.mean(0)
            features = centred / (centred ** 2).sum(0).div(len(features) - 1).sqrt()
        return super().forward(features, lengths)


class WrongWidth(DwsCnn):
    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.head = nn.Linear(options.channels, model_spec.output_dim + 1)


class LengthsNotSubsampled(DwsCnn):
    def subsampled(self, lengths):
        return lengths


class WrongHiddenWidth(DwsCnn):
    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.hidden_dims = {"encoder": 999}


class MissingHiddenLayer(DwsCnn):
    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.hidden_dims = {"encoder": options.channels, "block9": options.channels}


class FloatLengths(DwsCnn):
    def subsampled(self, lengths):
        return (lengths.float() + 1) / 2


class UnusedLayer(DwsCnn):
    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.unused = nn.Linear(options.channels, options.channels)


class UnregisteredState(DwsCnn):
    """A fixed random projection kept as a plain attribute: not in the state_dict."""

    def __init__(self, options, model_spec, **context):
        super().__init__(options, model_spec)
        self.rotation = torch.randn(model_spec.input_dim, model_spec.input_dim)

    def forward(self, features, lengths):
        return super().forward(features @ self.rotation, lengths)


class NoContext(DwsCnn):
    def __init__(self, options, model_spec):
        super().__init__(options, model_spec)


class DropoutInEval(DwsCnn):
    def forward(self, features, lengths):
        return super().forward(F.dropout(features, 0.5, training=True), lengths)


class KdOnDetachedStudent(Rkd):
    """The relational term on detached student features: a constant to the student."""

    def student_vectors(self, student, teacher):
        return super().student_vectors(student, teacher).detach()


class PoolsStudentWithTeacherLengths(Rkd):
    """Pools the student's layer over the teacher's valid frames: at another frame rate, these
    run past the student's own into its padding."""

    def student_vectors(self, student, teacher):
        return self.pooled(student, self.o.student_layer, layer_lengths(teacher, self.o.teacher_layer))


class PoolsTeacherOverPadding(Rkd):
    """Averages the teacher's layer over every padded frame."""

    def teacher_vectors(self, teacher):
        h = teacher.hidden[self.o.teacher_layer]
        return h.mean(1)


class NanOnBatchOfOne(Rkd):
    """No guard for a batch of one: the mean of no pairwise distances is NaN."""

    def relational(self, student, teacher, batch):
        s, t = self.student_vectors(student, teacher), self.teacher_vectors(teacher)
        return F.smooth_l1_loss(self.distances(s), self.distances(t))


class KdOnlyLeavesHeadUntrained(Rkd):
    """The relational term alone, on a hidden layer: nothing trains the CTC head."""

    def forward(self, student, batch, teacher):
        return self.o.weight * self.relational(student, teacher, batch)


class PerUtterance(Rkd):
    def hard(self, student, batch):
        log_probs = student.output.log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(log_probs, batch.targets, student.lengths, batch.target_lengths, reduction="none",
                          zero_infinity=True)


class ReturnsDetached(Rkd):
    def forward(self, student, batch, teacher):
        return super().forward(student, batch, teacher).detach()


class TeacherOnlyOnInstance(Rkd):
    requires_teacher = False

    def __init__(self, options, student, teacher, **context):
        super().__init__(options, student, teacher)
        self.requires_teacher = True


class UndeclaredTeacherLayer(Rkd):
    @classmethod
    def teacher_layers_for(cls, options):
        return ()


class Infinite(Rkd):
    def forward(self, student, batch, teacher):
        return super().forward(student, batch, teacher) - torch.log(student.output.new_zeros(()))


class UnusedLossParameter(Rkd):
    def __init__(self, options, student, teacher, **context):
        super().__init__(options, student, teacher)
        self.temperature = nn.Parameter(torch.ones(()))


class TimesWithItsOwnClock(RtfByLength):
    """time.time() around each call instead of kdbench.measurement."""

    def timed(self, ev, inputs):
        seconds, sizes, ids = [], [], []
        for ident, x, size in inputs * self.o.runs:
            start = time.time()
            ev.forward(x)
            seconds.append(time.time() - start)
            sizes.append(size)
            ids.append(ident)
        return measurement.Timing(seconds, sizes, ids)


class TimesWithPerfCounterImportedByName(TimesWithItsOwnClock):
    def timed(self, ev, inputs):
        timing = measurement.Timing([], [], [])
        for ident, x, size in inputs * self.o.runs:
            start = perf_counter()
            ev.forward(x)
            timing.seconds.append(perf_counter() - start)
            timing.sizes.append(size)
            timing.example_ids.append(ident)
        return timing


class NoUnit(RtfByLength):
    def measure(self, name, value):
        return Measurement(name, value, "", False, kind="cost")


class DirectionNotABool(RtfByLength):
    def measure(self, name, value):
        return Measurement(name, value, "x", "lower", kind="cost")


class ScopeTypo(RtfByLength):
    scope = "models"


class NanWithoutCoverage(RtfByLength):
    def measure(self, name, value):
        return Measurement(name, math.nan, "x", False, kind="cost")


class TensorValue(RtfByLength):
    def measure(self, name, value):
        return Measurement(name, torch.tensor(value), "x", False, kind="cost")


class SlashInName(RtfByLength):
    def measure(self, name, value):
        return Measurement(f"rtf/{name}", value, "x", False, kind="cost")


COMPONENTS = {
    "students": {"dws-cnn": DwsCnn, "dws-ignores-padding": StudentIgnoresPadding,
                 "dws-batchnorm-over-padding": BatchNormOverPadding,
                 "dws-context-without-lengths": ContextLayerWithoutLengths,
                 "dws-nan-on-one": NanOnOneInTraining, "dws-wrong-width": WrongWidth,
                 "dws-lengths-not-subsampled": LengthsNotSubsampled, "dws-wrong-hidden-width": WrongHiddenWidth,
                 "dws-missing-hidden-layer": MissingHiddenLayer, "dws-float-lengths": FloatLengths,
                 "dws-unused-layer": UnusedLayer, "dws-unregistered-state": UnregisteredState,
                 "dws-no-context": NoContext, "dws-dropout-in-eval": DropoutInEval},
    "losses": {"rkd": Rkd, "rkd-detached-student": KdOnDetachedStudent,
               "rkd-teacher-lengths": PoolsStudentWithTeacherLengths, "rkd-teacher-padding": PoolsTeacherOverPadding,
               "rkd-nan-on-one": NanOnBatchOfOne, "rkd-only": KdOnlyLeavesHeadUntrained,
               "rkd-per-utterance": PerUtterance, "rkd-detached": ReturnsDetached,
               "rkd-teacher-on-instance": TeacherOnlyOnInstance, "rkd-undeclared-layer": UndeclaredTeacherLayer,
               "rkd-infinite": Infinite, "rkd-unused-parameter": UnusedLossParameter},
    "metrics": {"rtf-by-length": RtfByLength, "rtf-own-clock": TimesWithItsOwnClock,
                "rtf-perf-counter": TimesWithPerfCounterImportedByName, "rtf-no-unit": NoUnit,
                "rtf-direction": DirectionNotABool, "rtf-scope": ScopeTypo, "rtf-nan": NanWithoutCoverage,
                "rtf-tensor": TensorValue, "rtf-slash": SlashInName},
}


class Trial:
    """The author's plugin, mutants included."""

    __name__ = "trial"

    @hookimpl
    def register_students(self, register):
        for name, factory in COMPONENTS["students"].items():
            register(name, factory)

    @hookimpl
    def register_losses(self, register):
        for name, factory in COMPONENTS["losses"].items():
            register(name, factory)

    @hookimpl
    def register_metrics(self, register):
        for name, factory in COMPONENTS["metrics"].items():
            register(name, factory)


#: (check, mutant, what the kit must say): the first seven are the mistakes the kit let through
MUTANTS = [
    (check_student, "dws-ignores-padding",
     r"utterance \d's outputs change when it is batched with longer ones \(max difference .*\): mask padded frames "
     r".*kdbench evaluates in batches"),
    (check_student, "dws-batchnorm-over-padding",
     r"in training mode its outputs change when the batch carries more padding: normalisation layers \(norms\.0, "
     r"norms\.1\) take statistics over padded frames.*normalise over valid frames only"),
    (check_loss, "rkd-detached-student",
     r"other teacher outputs change its value \(.* -> .*\) but not the gradient the student gets: its distillation "
     r"term never reaches the student"),
    (check_loss, "rkd-teacher-lengths",
     r"its value changes \(.* -> .*\) with noise in the padded frames of the student's hidden\['encoder'\] \(beyond "
     r"layer_lengths\(student, 'encoder'\)\).*kdbench\.alignment\.layer_lengths\(output, layer\)"),
    (check_loss, "rkd-nan-on-one",
     r"on a batch of one utterance it gives nan \(or NaN/inf gradients\): the last batch of an epoch can hold a single "
     r"utterance"),
    (check_loss, "rkd-only",
     r"no gradient reaches the student's output \(ModelOutput\.output\), only hidden layers: the output head would "
     r"never train"),
    (check_metric, "rtf-own-clock",
     r"compute\(\) reads the clock itself \(time\.time at test_kit_mutants\.py:\d+; time\.time at "
     r"test_kit_mutants\.py:\d+\): time the model with kdbench\.measurement"),
    # more of the same kind, and the mistakes the kit already caught
    (check_metric, "rtf-perf-counter", r"compute\(\) reads the clock itself \(time\.perf_counter at "
                                       r"test_kit_mutants\.py:\d+;"),
    (check_student, "dws-context-without-lengths",
     r"hidden\['context'\] of utterance \d has \d+ valid frames alone but \d+ when batched with longer ones: .* gives "
     r"its own lengths in ModelOutput\.hidden_lengths\['context'\]"),
    (check_student, "dws-nan-on-one", r"on a batch of one utterance in training mode it gives NaN or inf"),
    (check_loss, "rkd-teacher-padding", r"with noise in the padded frames of the teacher's hidden\['encoder'\]"),
    (check_student, "dws-wrong-width", r"output has shape \(4, \d+, 17\); expected \(batch=4, time, output_dim=16\)"),
    (check_student, "dws-lengths-not-subsampled", r"lengths \[(\d+, ){3}\d+\] must lie in 1\.\.\d+"),
    (check_student, "dws-wrong-hidden-width", r"hidden\['encoder'\] has shape \(4, \d+, 16\); expected \(batch=4, "
                                              r"time, 999\)"),
    (check_student, "dws-missing-hidden-layer", r"hidden_dims declares 'block9', but ModelOutput\.hidden has no such"),
    (check_student, "dws-float-lengths", r"lengths must be an integer tensor of shape \(4,\)"),
    (check_student, "dws-unused-layer", r"parameters \['unused\.weight', 'unused\.bias'\] got no gradient in a "
                                        r"training step: unused layers never train and inflate the params metric"),
    (check_student, "dws-unregistered-state", r"a freshly built model loaded with its state_dict gives other outputs"),
    (check_student, "dws-no-context", r"its factory does not accept \*\*context"),
    (check_student, "dws-dropout-in-eval", r"two forward passes in eval mode differ"),
    (check_loss, "rkd-per-utterance", r"it returned a tensor of shape \(4,\); it must return a scalar \(0-dim\)"),
    (check_loss, "rkd-detached", r"it returned a tensor without gradient"),
    (check_loss, "rkd-teacher-on-instance", r"the built loss says requires_teacher=True but its factory says False"),
    (check_loss, "rkd-undeclared-layer", r"a KD loss sees only the teacher layers its teacher_layers_for "
                                         r"declares: \[\]"),
    (check_loss, "rkd-infinite", r"it returned inf; the loss must be finite"),
    (check_loss, "rkd-unused-parameter", r"its own parameters \['temperature'\] got no gradient in a training step"),
    (check_metric, "rtf-no-unit", r"measurement 'rtf_short' on a model has no unit"),
    (check_metric, "rtf-direction", r"higher_is_better must be a bool, got 'lower'"),
    (check_metric, "rtf-scope", r"scope is 'models'; it must be 'split' or 'model'"),
    (check_metric, "rtf-nan", r"measurement 'rtf_short' on a model is NaN without coverage"),
    (check_metric, "rtf-tensor", r"value tensor\(.*\) \(Tensor\) must be a Python float"),
    (check_metric, "rtf-slash", r"the name must be a non-empty string without '/'"),
]


@pytest.fixture(scope="module")
def bench():
    return tiny_bench(build_registry(extra_plugins=[Trial()]))


def test_every_mutant_is_in_the_table():
    registered = {name for names in COMPONENTS.values() for name in names}
    assert {name for _, name, _ in MUTANTS} == registered - {"dws-cnn", "rkd", "rtf-by-length"}


@pytest.mark.parametrize("check, name", [(check_student, "dws-cnn"), (check_loss, "rkd"),
                                         (check_metric, "rtf-by-length")])
def test_the_authors_components_pass(check, name, bench):
    """So each mutant fails for the one thing it changes."""
    check(name, bench=bench, plugin="trial")


@pytest.mark.parametrize("check, name, message", MUTANTS, ids=[m[1] for m in MUTANTS])
def test_the_kit_rejects_the_mutant_saying_what_to_fix(check, name, message, bench):
    kind = check.__name__.removeprefix("check_")
    with pytest.raises(ConformanceError) as failure:
        check(name, bench=bench, plugin="trial")
    text = str(failure.value)
    assert text.startswith(f"{kind} {name!r} (plugin 'trial'): "), text
    assert re.search(message, text), text
