"""Expand a suite into runs: teacher x student x compression x loss x seed (targets are evaluated
per run; every student also runs without compression).

A loss that needs no teacher (the no-KD baseline) gives one run per student and seed,
shared by all teachers, so a suite with two teachers does not train the baseline twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbench.errors import SuiteError
from kdbench.records import student_run_key
from kdbench.suite import Resolved, ResolvedSuite


def requires_teacher(loss: Resolved) -> bool:
    return bool(getattr(loss.component.factory, "requires_teacher", False))


def teacher_forcing(loss: Resolved) -> bool:
    """Whether the loss distils from the teacher's teacher-forced outputs (``Loss.teacher_forcing``)."""
    return bool(getattr(loss.component.factory, "teacher_forcing", False))


def teacher_layers(loss: Resolved) -> tuple[str, ...]:
    """Teacher hidden layers a loss will read, known before any run so one pass caches them all."""
    declare = getattr(loss.component.factory, "teacher_layers_for", None)
    return tuple(declare(loss.options)) if declare else ()


@dataclass(frozen=True)
class StudentRun:
    student: Resolved
    loss: Resolved
    teacher: int | None  # index into the suite's teachers
    seed: int
    compression: Resolved | None = None

    @property
    def label(self) -> str:
        """The student's row name: a compressed student is another model (``conformer+qat``), so
        its KD and no-KD runs pair with each other, not with the dense student's."""
        return f"{self.student.label}+{self.compression.label}" if self.compression else self.student.label

    def student_config(self) -> dict[str, Any]:
        """What builds and shapes the student: its own configuration and its compression's."""
        config = self.student.config()
        return {**config, "compression": self.compression.config()} if self.compression else config

    def key(self, base: dict[str, Any], teacher_keys: dict[int, str], training: dict[str, Any]) -> str:
        return student_run_key(base, self.student_config(), self.loss.config(),
                               teacher_keys.get(self.teacher) if self.teacher is not None else None,
                               self.seed, training)


def plan_student_runs(rs: ResolvedSuite) -> list[StudentRun]:
    runs: list[StudentRun] = []
    for li, loss in enumerate(rs.losses):
        if requires_teacher(loss) and not rs.teachers:
            raise SuiteError(f"{rs.path}: losses[{li}]: {loss.name!r} distills from a teacher, but the suite lists no teachers")
    for student in rs.students:
        for compression in [None, *(rs.compressions if student.ref.compress else [])]:
            for loss in rs.losses:
                teachers = range(len(rs.teachers)) if requires_teacher(loss) else [None]
                for t in teachers:
                    for seed in rs.suite.seeds:
                        runs.append(StudentRun(student, loss, t, seed, compression))
    return runs
