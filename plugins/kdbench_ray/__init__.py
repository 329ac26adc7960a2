"""Run a suite's jobs on a Ray cluster: ``pip install 'kdbench[ray]'``, then ``executor: ray`` in
the suite or ``kdbench run SUITE --executor ray [--address HOST:PORT]`` (docs/scale-out.md)."""

from kdbench.hookspecs import hookimpl

from kdbench_ray.executor import RayExecutor, RayOptions


@hookimpl
def register_executors(register):
    register("ray", RayExecutor, options=RayOptions,
             summary="runs trainings in parallel on a Ray cluster, evaluations one per machine")
