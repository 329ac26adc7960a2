"""Every error kdbench raises on purpose. Only the CLI turns them into messages and exit codes."""


class KdbenchError(Exception):
    """Base class: a problem the user can act on, with a one-line message."""

    exit_code = 1


class SuiteError(KdbenchError):
    """A suite file is malformed or names something that does not validate."""

    exit_code = 2


class UnknownComponentError(SuiteError):
    """A suite names a component no loaded plugin registers."""


class AmbiguousComponentError(UnknownComponentError):
    """A suite names a component that several plugins register, without saying whose."""


class PluginError(KdbenchError):
    """A plugin failed to load or registered something inconsistent."""

    exit_code = 3


class DataError(KdbenchError):
    """Input data is missing or unusable (missing audio file, empty transcript, ...)."""

    exit_code = 4


class CheckpointError(KdbenchError):
    """A model checkpoint cannot be loaded into the declared architecture."""

    exit_code = 4


class TargetError(KdbenchError):
    """A model cannot be prepared for a hardware target (export, quantization, a runtime).
    Only that model's row on that target fails; the rest of the suite runs."""

    exit_code = 5


class TrackingError(KdbenchError):
    """The MLflow tracking store cannot be used."""

    exit_code = 6


class TrackingUnreachable(TrackingError):
    """The MLflow tracking server does not answer (results can be spooled and synced later)."""


class BaselineError(KdbenchError):
    """A regression baseline file is missing, malformed, or from another schema."""

    exit_code = 2


class RegressionFound(KdbenchError):
    """A compared metric is worse than its baseline beyond tolerance (the nightly gate)."""

    exit_code = 7


class StorageError(KdbenchError):
    """A folder kdbench writes to (results, cache, tracking store, spool) cannot be written:
    read-only, full, or a file where a folder should be. Checked before anything trains."""

    exit_code = 8


class ExecutorError(KdbenchError):
    """The executor cannot run a suite's jobs: its engine is not installed or not reachable, or
    a machine of the cluster cannot see the folders every job shares."""

    exit_code = 9


class RunFailed(KdbenchError):
    """One or more runs of a suite failed; the others finished and were recorded."""

    exit_code = 5
