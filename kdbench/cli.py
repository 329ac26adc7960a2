"""The ``kdbench`` command. The only place that turns KdbenchError into messages and exit codes."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kdbench import __version__
from kdbench.errors import KdbenchError, RunFailed

console = Console()
err_console = Console(stderr=True)


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdbenchError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)

    return wrapper


class RichProgress:
    """Draws the runner's progress as rich progress bars; in logs (no terminal) it prints a
    line when a task starts and when it ends instead, so nightly logs show where time went."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.live = console.is_terminal
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not self.live)
        self._started: dict = {}

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def stage(self, text):
        self.console.print(f"[dim]{text}[/]")

    def start(self, description, total):
        handle = self.bars.add_task(description, total=total)
        self._started[handle] = (description, time.perf_counter())
        if not self.live:
            self.console.print(f"[dim]start[/] {description}", highlight=False)
        return handle

    def update(self, handle, completed):
        self.bars.update(handle, completed=completed)

    def stop(self, handle):
        task = self.bars.tasks[handle] if handle < len(self.bars.tasks) else None
        if task is not None and task.total is not None:
            self.bars.update(handle, completed=task.total)
        if not self.live and handle in self._started:
            description, began = self._started.pop(handle)
            self.console.print(f"[dim]done[/]  {description} ({time.perf_counter() - began:.1f} s)", highlight=False)


def _registry():
    from kdbench.plugins import get_registry

    return get_registry()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdbench")
def main():
    """Benchmark knowledge distillation of speech models.

    A suite (YAML) declares teachers, students, KD losses, metrics and hardware targets;
    kdbench distills every teacher/student/loss/seed combination, evaluates every model on
    every target, logs to MLflow and prints a leaderboard.

    \b
    Start with:  kdbench run suites/asr.yaml
    Check a suite without running it:  kdbench validate suites/asr.yaml
    See what plugins provide:  kdbench plugins
    """


@main.command()
@click.argument("suite", type=click.Path(path_type=Path))
@click.option("--tracking-uri", help="MLflow tracking URI (overrides MLFLOW_TRACKING_URI and the suite; "
                                     "default sqlite:///results/mlflow.db).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Where leaderboards and finished runs are written (results/<suite>/).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Cache of datasets, teachers and teacher outputs (default $KDBENCH_CACHE_DIR or ~/.cache/kdbench).")
@click.option("--force", is_flag=True, help="Redo finished student runs and evaluations (keeps cached teachers).")
@click.option("--force-teachers", is_flag=True, help="Also retrain teachers and recompute their outputs.")
@click.option("--reevaluate", is_flag=True, help="Keep trained models, redo every evaluation (e.g. on a quieter machine).")
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow (results are still written to disk).")
@_handle_errors
def run(suite, tracking_uri, results_dir, cache_dir, force, force_teachers, reevaluate, no_tracking):
    """Distill, evaluate and rank everything SUITE declares.

    Finished work is reused on a second run; --force redoes it. A failing run is recorded
    with its error and the rest go on; the exit code is then 5.
    """
    from kdbench.cache import Cache
    from kdbench.leaderboard import display_frame, leaderboard_frame
    from kdbench.runner import Runner
    from kdbench.suite import load_suite
    from kdbench.tracking import Tracker, resolve_tracking_uri

    registry = _registry()
    _warn_problems(registry)
    rs = load_suite(suite, registry)
    tracker = None
    if not no_tracking:
        uri = resolve_tracking_uri(tracking_uri, rs.suite.tracking.uri)
        tracker = Tracker(uri, rs.suite.tracking.experiment or f"kdbench-{rs.name}")
        console.print(f"[dim]tracking to {uri} (experiment {rs.suite.tracking.experiment or 'kdbench-' + rs.name})[/]")
    with RichProgress(console) as progress:
        runner = Runner(rs, registry, cache=Cache(cache_dir), results_root=results_dir, tracker=tracker,
                        force=force, force_teachers=force_teachers, reevaluate=reevaluate, progress=progress)
        result = runner.run()
    _print_frame(display_frame(leaderboard_frame(result), result.columns), f"leaderboard: {rs.name}")
    for path in result.reports:
        console.print(f"wrote {path}")
    stats = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.stats.items())
    console.print(f"[dim]{stats}[/]")
    if result.failures:
        for row in result.failures:
            err_console.print(f"[red]failed[/] {row.model} · {row.loss} · seed {row.seed} @ {row.target}: {row.error}",
                              highlight=False)
        raise RunFailed(f"{len(result.failures)} of {len(result.rows)} rows failed; the others are in the leaderboard")


@main.command()
@click.argument("suites", nargs=-1, required=True, type=click.Path(path_type=Path))
@_handle_errors
def validate(suites):
    """Check SUITES without running them: YAML, schema, every plugin name and every option."""
    from kdbench.plan import plan_student_runs
    from kdbench.suite import load_suite

    registry = _registry()
    _warn_problems(registry)
    for path in suites:
        rs = load_suite(path, registry)
        runs = plan_student_runs(rs)
        console.print(f"[green]ok[/] {path}: {len(rs.teachers)} teacher(s), {len(runs)} student run(s), "
                      f"{len(rs.targets)} target(s), {len(rs.metrics)} metric(s)")


@main.command()
@click.option("--components/--no-components", default=True, help="Also list every registered component.")
@_handle_errors
def plugins(components):
    """List loaded plugins, their versions and hooks (KDBENCH_LOAD_PLUGINS selects which load)."""
    registry = _registry()
    table = Table(title="plugins")
    for col in ("plugin", "distribution", "version", "hooks"):
        table.add_column(col)
    for p in registry.plugins:
        table.add_row(p.name, p.distribution or "–", p.version or "–", ", ".join(p.hooks))
    console.print(table)
    if components:
        table = Table(title="components")
        for col in ("kind", "name", "plugin", "summary"):
            table.add_column(col)
        for kind, comps in registry.components.items():
            for name in sorted(comps):
                c = comps[name]
                table.add_row(kind, name, c.plugin, c.summary)
        console.print(table)
    _warn_problems(registry)


def _warn_problems(registry):
    for problem in registry.problems:
        err_console.print(f"[yellow]warning:[/] {problem}", highlight=False)


def _print_frame(frame, title):
    if not console.is_terminal:  # logs and CI: a Markdown table does not wrap into columns of letters
        from kdbench.leaderboard import to_markdown

        console.print(f"{title}\n\n{to_markdown(frame)}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)


@main.group()
def plugin():
    """Write third-party plugin packages (docs/plugins.md)."""


def _plugin_kinds():
    from kdbench.scaffold import KINDS  # imports no torch: `kdbench --help` stays fast

    return KINDS


@plugin.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(_plugin_kinds()), default="student", show_default=True,
              help="The component the package registers.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where to create kdbench-NAME/.")
@_handle_errors
def new(name, kind, directory):
    """Create kdbench-NAME/: pyproject.toml declaring the `kdbench` entry point, one module
    registering a working KIND through its hook, a README and a conformance test."""
    from kdbench.scaffold import new_plugin

    root = new_plugin(name, kind, directory)
    # markup=False: paths and pip's '[test]' are not rich markup
    console.print(f"created {root}/ with the {kind} '{root.name.removeprefix('kdbench-')}-{kind}'",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"next:\n  pip install -e '{root}[test]'\n  pytest {root}\n  kdbench plugins",
                  markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
