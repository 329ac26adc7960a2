"""Executors decide where runs execute; the local one runs them in order in this process."""

from kdbench.interfaces import Executor


class LocalExecutor(Executor):
    def __init__(self, options, **context):
        pass

    def map(self, fn, jobs):
        return [fn(job) for job in jobs]
