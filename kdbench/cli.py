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
        self._last: dict = {}

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
        if not self.live and handle in self._started:  # logs: a line a minute on long tasks
            description, began = self._started[handle]
            now = time.perf_counter()
            if now - self._last.get(handle, began) >= 60:
                self._last[handle] = now
                total = self.bars.tasks[handle].total
                self.console.print(f"[dim]      {description}: {completed}/{total} ({now - began:.0f} s)[/]",
                                   highlight=False)

    def stop(self, handle):
        task = self.bars.tasks[handle] if handle < len(self.bars.tasks) else None
        if task is not None and task.total is not None:
            self.bars.update(handle, completed=task.total)
        if not self.live and handle in self._started:
            description, began = self._started.pop(handle)
            self.console.print(f"[dim]done[/]  {description} ({time.perf_counter() - began:.1f} s)", highlight=False)


def _registry():
    """The registry the caller passed as click's ``obj`` (``main(args, obj=registry)``,
    ``CliRunner().invoke(main, args, obj=registry)``), else the process-wide one: a test or an
    embedding program gives the CLI its own plugin set without replacing kdbench's global."""
    from kdbench.plugins import Registry, get_registry

    ctx = click.get_current_context(silent=True)
    given = ctx.find_object(Registry) if ctx is not None else None
    return given if given is not None else get_registry()


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
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="After the run, compare with this regression baseline (as `kdbench compare`); exit 7 on a regression.")
@click.option("--executor", default=None, help="Where the student runs execute, overriding the suite's "
                                               "(`local`, `ray`: see `kdbench plugins executors`).")
@click.option("--address", default=None, help="For --executor ray: a running cluster ('auto' or HOST:PORT of its "
                                              "head); without it a Ray instance is started on this machine.")
@click.option("--fold", "folds", multiple=True, help="Run this fold of the suite's `folds` (repeatable; `all`: every "
                                                     "fold), instead of those its folds.run names.")
@_handle_errors
def run(suite, tracking_uri, results_dir, cache_dir, force, force_teachers, reevaluate, no_tracking, baseline,
        executor, address, folds):
    """Distill, evaluate and rank everything SUITE declares.

    Finished work is reused on a second run; --force redoes it. A failing run is recorded
    with its error and the rest go on; the exit code is then 5. A suite with folds runs each
    fold as a suite of its own, then writes the mean and spread over the folds.
    """
    from kdbench.cache import Cache
    from kdbench.folds import fold_names, resolve_folds
    from kdbench.suite import read_suite
    from kdbench.tracking import resolve_tracking_uri

    registry = _registry()
    _warn_problems(registry)
    declared = read_suite(suite)
    if executor or address:
        declared = _with_executor(declared, executor, address)
    # every fold is checked before the first trains: a bad fold must not cost the others' hours
    resolved = resolve_folds(Path(suite), declared, registry, fold_names(Path(suite), declared, folds))
    gated = gate = None
    if baseline is not None:
        from kdbench.regression import load as load_baseline

        # a broken baseline, or another suite's, should fail before an hour of training, not after
        meant_for = load_baseline(baseline).get("suite")
        names = [rs.name for _, rs in resolved]
        if meant_for and meant_for not in names:
            from kdbench.errors import BaselineError

            raise BaselineError(f"{baseline}: baseline is for suite {meant_for!r}, not {' or '.join(map(repr, names))}")
        gated = meant_for or names[0]
    from kdbench.preflight import check_writable, sqlite_folder

    cache = Cache(cache_dir)
    uris = {}
    for _, rs in resolved:
        uris[rs.name] = uri = None if no_tracking else resolve_tracking_uri(tracking_uri, rs.suite.tracking.uri)
        _check_concurrent_writers(rs, uri)
        check_writable({"results folder": Path(results_dir) / rs.name, "cache": cache.root,
                        "tracking store's folder": sqlite_folder(uri), "spool folder": Path(results_dir) / "spool"})
    done, failed = [], 0
    for fold, rs in resolved:
        if fold is not None:
            console.print(f"\n[bold]fold {fold}[/] ({rs.name})", highlight=False)
        uri = uris[rs.name]
        result, tracker = _run_suite(rs, registry, cache, uri, results_dir, force, force_teachers, reevaluate)
        done.append((fold, result))
        failed += len(result.failures)
        if rs.name == gated:
            gate = (rs, tracker)
    if len(done) > 1:
        from kdbench import folds as folds_module

        summary = folds_module.summarize(done)
        console.print(f"\nacross folds: {declared.name}\n\n{folds_module.summary_text(summary)}\n",
                      highlight=False, soft_wrap=True, markup=False)
        _print_report_paths(folds_module.write(summary, Path(results_dir) / declared.name,
                                               f"{declared.name}: {len(done)} folds"))
    if gate is not None:  # after every fold ran: a regression in one must not stop the others
        rs, tracker = gate
        if tracker is not None and getattr(tracker, "client", None) is not None:
            _gate(baseline, tracker.client, [tracker.experiment_id], rs.name, report=None, allow_missing=False,
                  target_order=[t.label for t in rs.targets])
        else:
            err_console.print(f"[yellow]warning:[/] not compared with {baseline}: the results are not in a tracking "
                              "store (run `kdbench sync`, then `kdbench compare`)", highlight=False, soft_wrap=True)
    if failed:
        total = sum(len(result.rows) for _, result in done)
        raise RunFailed(f"{failed} of {total} rows failed; the others are in the leaderboard")


def _run_suite(rs, registry, cache, uri, results_dir, force, force_teachers, reevaluate):
    """Run one (resolved) suite, print its board and failures; its result and its tracker (None without)."""
    from kdbench.board import summary_text
    from kdbench.preflight import storage_error
    from kdbench.runner import Runner
    from kdbench.spool import open_tracker

    tracker = None
    if uri is not None:
        experiment = rs.suite.tracking.experiment or f"kdbench-{rs.name}"

        def spooling(exc, session):  # at start or mid-run: the results must not be lost, keep them locally
            err_console.print(f"[yellow]warning:[/] {exc}; tracking to {session} instead "
                              f"(upload later with `kdbench sync --results-dir {results_dir}`)",
                              highlight=False, soft_wrap=True)

        tracker = open_tracker(uri, experiment, Path(results_dir) / "spool", spooling)
        if tracker.client is not None:
            console.print(f"[dim]tracking to {uri} (experiment {experiment})[/]")
    with RichProgress(console) as progress:
        runner = Runner(rs, registry, cache=cache, results_root=results_dir, tracker=tracker,
                        force=force, force_teachers=force_teachers, reevaluate=reevaluate, progress=progress)
        try:
            result = runner.run()
        except OSError as exc:  # the disk filled (or went read-only) during the run: one line
            if storage_error(exc) is None:
                raise
            raise storage_error(exc) from None
    if tracker is not None:
        tracker.close()  # a spool session is complete: `kdbench sync` may upload it now
    # A summary that fits a terminal (as `kdbench leaderboard` prints it); every column is in the
    # files listed under it.
    console.print(f"\nleaderboard: {rs.name}\n\n{summary_text(result.board)}\n",
                  highlight=False, soft_wrap=True, markup=False)
    # a target no model could run (cuda without a GPU) is one line; a model one target cannot run
    # (a peer outside PyTorch on an int8 target) is one line per model and target
    skipped = [row for row in result.rows if row.status == "skipped"]
    whole = {row.target for row in skipped} - {row.target for row in result.rows if row.status != "skipped"}
    for target in dict.fromkeys(row.target for row in skipped if row.target in whole):
        reason = next(row.error for row in skipped if row.target == target)
        console.print(f"skipped target {target}: {reason}", highlight=False, soft_wrap=True)
    for key in dict.fromkeys((row.model, row.target) for row in skipped if row.target not in whole):
        reason = next(row.error for row in skipped if (row.model, row.target) == key)
        console.print(f"skipped {key[0]} @ {key[1]}: {reason}", highlight=False, soft_wrap=True)
    _print_report_paths(result.reports)
    if tracker is not None and getattr(tracker, "client", None) is not None:
        from kdbench.tracking import ui_link

        console.print(f"MLflow runs: {ui_link(tracker.uri, tracker.experiment_id)}", highlight=False, soft_wrap=True)
    stats = ", ".join(f"{k[:-2]} {v} s" if k.endswith("_s") else f"{k.replace('_', ' ')} {v}"
                      for k, v in result.stats.items())
    console.print(f"[dim]{stats}[/]")
    for row in result.failures:
        seed = None if row.seed is None else f"seed {row.seed}"  # a teacher's or a reference's row has none
        what = " · ".join(part for part in (row.model, row.loss, seed) if part)
        err_console.print(f"[red]failed[/] {what} @ {row.target}: {row.error}", highlight=False, soft_wrap=True)
    if runner.write_error is not None:  # the leaderboard files could not be written; the runs are kept
        raise storage_error(runner.write_error)
    return result, tracker


def _with_executor(suite, executor: str | None, address: str | None):
    """The suite with ``--executor`` / ``--address`` in place of its own executor, validated as
    if the file said so (an option the executor lacks is the usual one-line error)."""
    from kdbench.suite import ComponentRef

    ref = suite.executor if executor is None and suite.executor is not None else ComponentRef(name=executor or "local")
    options = {**ref.options, **({"address": address} if address else {})}
    return suite.model_copy(update={"executor": ref.model_copy(update={"options": options})})


def _check_concurrent_writers(rs, uri: str | None) -> None:
    """An executor whose jobs run in other processes has them all write the tracking store:
    MLflow's sqlite store breaks under concurrent writers (experiment creation and migration
    races, "database is locked"), so those jobs need a tracking server."""
    from kdbench.errors import TrackingError

    if uri is None or uri.startswith(("http://", "https://")) or not rs.executor.component.factory.distributed:
        return
    raise TrackingError(
        f"executor {rs.executor.name!r} runs jobs in several processes that would all write {uri}, and an MLflow "
        f"store that is not a server breaks under concurrent writers: serve it (mlflow server --backend-store-uri "
        f"{uri} --artifacts-destination results/mlartifacts --host 127.0.0.1 --port 5000) and pass "
        "--tracking-uri http://127.0.0.1:5000, or run with --no-tracking")


@main.command()
@click.argument("suites", nargs=-1, required=True, type=click.Path(path_type=Path))
@_handle_errors
def validate(suites):
    """Check SUITES without running them: YAML, schema, every plugin name and every option."""
    from kdbench.folds import resolve_folds
    from kdbench.plan import plan_student_runs
    from kdbench.suite import read_suite

    registry = _registry()
    _warn_problems(registry)
    for path in suites:
        suite = read_suite(path)
        # every fold, not only those `run` runs by default: --fold may pick any
        resolved = resolve_folds(Path(path), suite, registry, list(suite.folds.each) if suite.folds else [None])
        rs = resolved[0][1]
        runs = plan_student_runs(rs)
        folds = f", {len(resolved)} folds" if suite.folds else ""
        console.print(f"[green]ok[/] {path}: {len(rs.teachers)} teacher(s), {len(runs)} student run(s), "
                      f"{len(rs.targets)} target(s), {len(rs.metrics)} metric(s){folds}")


@main.command()
@click.option("--components/--no-components", default=True, help="Also list every registered component.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also each component's options (type, default, bounds) and each model's hidden layers.")
@click.option("--strict", is_flag=True, help="Exit 3 if any plugin had a load problem (for CI).")
@click.option("--traceback", "tracebacks", is_flag=True,
              help="Print each load problem's full traceback (any command: KDBENCH_TRACEBACK=1).")
@_handle_errors
def plugins(components, verbose, strict, tracebacks):
    """List loaded plugins, their versions and hooks (KDBENCH_LOAD_PLUGINS selects which load)."""
    from kdbench.errors import PluginError
    from kdbench.plugins import describe

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
    if verbose:
        for kind, comps in registry.components.items():
            for name in sorted(comps):
                console.print(f"\n{describe(comps[name])}", markup=False, highlight=False, soft_wrap=True)
    _warn_problems(registry, tracebacks)
    if strict and registry.problems:
        raise PluginError(f"{len(registry.problems)} plugin load problem(s), listed above (--strict)")


@main.command()
@_handle_errors
def targets():
    """List hardware targets, whether this machine can run each, and why not.

    A suite that names an unavailable target records a skipped row for it and runs the rest."""
    import pandas as pd

    registry = _registry()
    rows = []
    for name, component in sorted(registry.components.get("targets", {}).items()):
        try:
            target = component.build(component.options())
            ok, reason = target.available()
            described = ", ".join(f"{k} {v}" for k, v in target.describe().items()) if ok else ""
        except Exception as exc:  # a broken third-party target is listed with its error
            ok, reason, described = False, f"{type(exc).__name__}: {exc}", ""
        rows.append({"target": name, "plugin": component.plugin, "available": "yes" if ok else f"no: {reason}",
                     "runs as": described, "summary": component.summary})
    _print_frame(pd.DataFrame(rows), "targets")
    _warn_problems(registry)


def _warn_problems(registry, tracebacks=False):
    from kdbench.plugins import show_tracebacks

    for problem in registry.problems:
        err_console.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
        if (tracebacks or show_tracebacks()) and problem in registry.tracebacks:
            err_console.print(registry.tracebacks[problem], markup=False, highlight=False, soft_wrap=True, end="")


def _print_report_paths(paths: list[Path]) -> None:
    """Where the full results are: the tables by folder, the HTML page on a line of its own."""
    pages = [p for p in paths if Path(p).suffix == ".html"]
    tables = [p for p in paths if Path(p).suffix in (".md", ".csv", ".json")]
    by_dir: dict[Path, list[str]] = {}
    for p in tables:
        by_dir.setdefault(Path(p).parent, []).append(Path(p).name)
    for folder, names in by_dir.items():
        console.print(f"full tables: {folder}/ ({', '.join(names)})", highlight=False, soft_wrap=True)
    for page in pages:
        console.print(f"HTML page:   {page}", highlight=False, soft_wrap=True)
    pictures = [p for p in paths if Path(p).suffix == ".png"]
    if pictures:
        console.print(f"plots:       {len(pictures)} Pareto fronts in {Path(pictures[0]).parent}/",
                      highlight=False, soft_wrap=True)


def _print_frame(frame, title):
    if not console.is_terminal:  # logs and CI: a Markdown table does not wrap into columns of letters
        from kdbench.board.render import to_markdown

        console.print(f"{title}\n\n{to_markdown(frame)}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)


# ---- leaderboards, regression gate and sync (read MLflow, not private files) ---------------------
def _suite_ref(suite: str | None, tracking_uri: str | None, experiment: str | None):
    """SUITE may be a suite file (its name, tracking URI and experiment are used) or a bare name."""
    from kdbench.suite import suite_identity
    from kdbench.tracking import resolve_tracking_uri

    suite_uri = None
    if suite and Path(suite).suffix in (".yaml", ".yml") and Path(suite).is_file():
        suite, suite_uri, suite_experiment = suite_identity(suite)
        experiment = experiment or suite_experiment
    return suite, resolve_tracking_uri(tracking_uri, suite_uri), experiment


def _declares_folds(suite_file: str | None) -> bool:
    if suite_file and Path(suite_file).suffix in (".yaml", ".yml") and Path(suite_file).is_file():
        from kdbench.suite import read_suite

        return read_suite(suite_file).folds is not None
    return False


def _target_order(suite_file: str | None) -> list[str]:
    """The targets in the order the suite file lists them (a bare suite name: the store's order)."""
    if suite_file and Path(suite_file).suffix in (".yaml", ".yml") and Path(suite_file).is_file():
        from kdbench.suite import read_suite

        return [t.display for t in read_suite(suite_file).targets]
    return []


_tracking_option = click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the suite's, "
                                                      "else sqlite:///results/mlflow.db).")
_experiment_option = click.option("--experiment", help="MLflow experiment (default kdbench-<suite>).")


@main.command()
@click.argument("suite", required=False)
@click.option("--target", help="Only this target.")
@click.option("--format", "fmt", type=click.Choice(["summary", "table", "md", "csv", "html", "json"]),
              default="summary", show_default=True,
              help="summary: the key columns per target, as `kdbench run` prints them; table: every column.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write leaderboard.{csv,json,md,html} and Pareto PNGs to this directory.")
@click.option("--min-coverage", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="Rows scored on a smaller fraction of the test set are marked and not ranked.")
@click.option("--metric", help="Rank by this metric (default: the suite's primary metric).")
@click.option("--no-bootstrap", is_flag=True, help="Skip the KD-gain confidence intervals (no artifact downloads).")
@click.option("--refresh", is_flag=True, help="Re-read every run instead of only those finished since the last read.")
@_tracking_option
@_experiment_option
@_handle_errors
def leaderboard(suite, target, fmt, out, min_coverage, metric, no_bootstrap, refresh, tracking_uri, experiment):
    """The leaderboard of SUITE (a suite file or name; all experiments if omitted) from MLflow:
    every evaluation run in the tracking store, from this machine or another."""
    from kdbench.board import build, display, render, write_all
    from kdbench.cache import Cache
    from kdbench.errors import StorageError
    from kdbench.preflight import check_writable
    from kdbench.tracking import experiment_for, open_store

    order = _target_order(suite)
    folds = _declares_folds(suite)
    suite, uri, experiment = _suite_ref(suite, tracking_uri, experiment)
    if folds:  # its rows are its folds', <suite>.<fold>, all in the suite's one experiment
        from kdbench.board.fetch import FOLDS

        suite += FOLDS
    client = open_store(uri)
    cache_dir = Cache(None).root / "mlflow-runs"
    try:
        check_writable({"cache": cache_dir})
    except StorageError as exc:  # the local copy only saves time: read everything from the store
        err_console.print(f"[yellow]warning:[/] {exc}; reading every run from the store", highlight=False,
                          soft_wrap=True)
        cache_dir = None
    board = build(client, experiment_for(client, suite, experiment, uri), suite, target=target,
                  min_coverage=min_coverage, metric=metric, bootstrap=not no_bootstrap,
                  cache_dir=cache_dir, refresh=refresh, target_order=order)
    if board.empty:
        on = f" on target {target}" if target else ""
        err_console.print(f"no finished evaluation runs for {suite or 'any suite'}{on} in {uri}", highlight=False)
        return
    if out is not None:
        for path in write_all(board, out, f"Leaderboard: {suite or 'all suites'}"):
            err_console.print(f"wrote {path}", highlight=False)
    title = f"leaderboard: {suite or 'all suites'} ({board.runs} evaluation runs, {uri})"
    if fmt == "table":
        _print_frame(display(board), title)
    elif fmt == "summary":
        console.print(f"{title}\n\n{render(board, fmt)}", highlight=False, soft_wrap=True, markup=False, end="")
    else:
        click.echo(render(board, fmt), nl=False)


def _gate(baseline_path, client, exp_ids, suite, report, allow_missing, target_order=(), require_comparable=False):
    from kdbench.board import build
    from kdbench.errors import BaselineError, RegressionFound
    from kdbench.regression import compare, failure, load

    baseline = load(baseline_path)
    if suite and baseline.get("suite") and baseline["suite"] != suite:
        raise BaselineError(f"{baseline_path}: baseline is for suite {baseline['suite']!r}, not {suite!r}")
    board = build(client, exp_ids, suite or baseline.get("suite"), bootstrap=False, target_order=target_order)
    result = compare(baseline, board)
    text = result.text()
    console.print(text, highlight=False, markup=False, soft_wrap=True, end="")
    if report is not None:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(text)
    verdict = failure(result, baseline_path, allow_missing, require_comparable)
    if verdict:
        raise RegressionFound(verdict)
    console.print(f"[green]ok[/] the gate passes against {baseline_path}", highlight=False)


@main.command()
@click.argument("suite", required=False)
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), required=True,
              help="The committed baseline file (`kdbench baseline update` writes it).")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Also write the comparison here.")
@click.option("--allow-missing", is_flag=True, help="Do not fail on baseline rows or metrics that no longer exist.")
@click.option("--require-comparable", is_flag=True,
              help="Also fail when a row cannot be compared like with like (other data, configuration, component "
                   "versions or machine); the nightly script sets it.")
@_tracking_option
@_experiment_option
@_handle_errors
def compare(suite, baseline_path, report, allow_missing, require_comparable, tracking_uri, experiment):
    """Check the latest results of SUITE (default: the baseline's suite) against a baseline:
    prints regressions, improvements, inconclusive timings (taken under load), rows that are not
    comparable (and why) and missing ones, with counts; exits 7 when the gate fails."""
    from kdbench.regression import load

    from kdbench.tracking import experiment_for, open_store

    data = load(baseline_path)  # a bad baseline is reported before the store is touched
    order = _target_order(suite)
    suite, uri, experiment = _suite_ref(suite, tracking_uri, experiment)
    suite = suite or data.get("suite")
    client = open_store(uri)
    _gate(baseline_path, client, experiment_for(client, suite, experiment, uri), suite, report, allow_missing, order,
          require_comparable)


def _vary(ctx, param, values):
    out = []
    for value in values:
        key, _, pair = value.partition("=")
        pair = pair.split(",")
        if not key or len(pair) != 2 or not all(pair):
            raise click.BadParameter(f"{value!r}: want KEY=A,B, such as model=conformer-62k,conformer-120k+prune50")
        out.append((key, pair[0], pair[1]))
    return out


@main.command()
@click.argument("base")
@click.argument("other", required=False)
@click.option("--fold", "folds", multiple=True, help="Only this fold (repeatable; default: every fold both finished).")
@click.option("--vary", callback=_vary, metavar="KEY=A,B", multiple=True,
              help="BASE's rows whose KEY (role, model, teacher, loss, target) is A against OTHER's whose KEY is B, "
                   "paired on the rest (repeatable: several columns at once); OTHER defaults to BASE.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Where both suites' results are (results/<suite>/ or results/<suite>.<fold>/).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the table here (Markdown).")
@_handle_errors
def contrast(base, other, folds, vary, results_dir, out):
    """How suite OTHER's rows differ from suite BASE's on the same test utterances (another training
    recipe, say), fold by fold and over all folds: the gain on the primary metric with a paired
    bootstrap CI, clustered over speakers across folds. Suites are named as in results/ (or by
    their files). With --vary, two kinds of row, of one suite or two: a pruned student against a
    dense one of its size (--vary model=...), int8 against fp32 (--vary target=cpu,cpu-int8)."""
    from kdbench.folds import contrast as contrast_suites, contrast_markdown

    if other is None and not vary:
        raise click.UsageError("name OTHER, or --vary KEY=A,B to set two kinds of row of BASE against each other")
    names = [_suite_ref(n, None, None)[0] for n in (base, other or base)]  # a suite file, or a bare name
    text = contrast_markdown(contrast_suites(results_dir, *names, folds, vary=vary))
    console.print(text, highlight=False, soft_wrap=True, markup=False)
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")


@main.group()
def baseline():
    """Regression baselines for `kdbench compare`."""


@baseline.command("update")
@click.argument("suite", required=False)
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), required=True,
              help="File to write (tolerances already in it are kept).")
@_tracking_option
@_experiment_option
@_handle_errors
def baseline_update(suite, baseline_path, tracking_uri, experiment):
    """Write the latest results of SUITE as the baseline (commit the file)."""
    from kdbench.errors import BaselineError
    from kdbench.regression import load, machine_text, make, save

    previous = None
    if Path(baseline_path).exists():
        try:
            previous = load(baseline_path)
        except BaselineError as exc:  # an old or broken file is replaced, with its tolerances reset
            err_console.print(f"[yellow]warning:[/] {exc}; replacing it", highlight=False, soft_wrap=True)
    suite, uri, experiment = _suite_ref(suite, tracking_uri, experiment)
    suite = suite or (previous or {}).get("suite")
    if not suite:
        raise BaselineError("name the suite: kdbench baseline update SUITE --baseline FILE")
    from kdbench.board import build
    from kdbench.tracking import experiment_for, open_store

    client = open_store(uri)
    board = build(client, experiment_for(client, suite, experiment, uri), suite, bootstrap=False)
    if board.empty:
        raise BaselineError(f"no finished evaluation runs of suite {suite!r} in {uri}: nothing to baseline")
    data = make(board, previous=previous, suite=suite)
    save(baseline_path, data)
    for section in data["machines"]:
        n_values = sum(len(r["values"]) for r in section["rows"])
        console.print(f"{baseline_path}: {machine_text(section['machine'])}: {len(section['rows'])} row(s), "
                      f"{n_values} value(s)", highlight=False, soft_wrap=True)


@main.command()
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="The --results-dir of the runs whose tracking was spooled (results/spool/).")
@click.option("--tracking-uri", help="Upload to this store instead of the one each session was meant for.")
@_handle_errors
def sync(results_dir, tracking_uri):
    """Upload runs that were tracked locally while the MLflow store was unreachable."""
    from kdbench.errors import TrackingError
    from kdbench.spool import pending, sync_session

    sessions = pending(Path(results_dir) / "spool")
    if not sessions:
        console.print("nothing to sync", highlight=False)
        return
    failed = 0
    for session in sessions:
        try:
            report = sync_session(session, tracking_uri)
        except TrackingError as exc:  # one broken session must not keep the others from uploading
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        for warning in report.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if report.skipped:
            console.print(f"left {session.name} pending: {report.skipped}", highlight=False, soft_wrap=True)
        else:
            console.print(f"synced {session.name}: {report.runs} run(s) to {report.uri}", highlight=False)
    if failed:
        raise TrackingError(f"{failed} of {len(sessions)} spooled session(s) not uploaded; "
                            "rerun `kdbench sync` to resume")


@main.group()
def plugin():
    """Write third-party plugin packages (docs/plugins.md)."""


def _plugin_kinds():
    from kdbench.scaffold import KINDS  # imports no torch: `kdbench --help` stays fast

    return KINDS


@plugin.command("new")
@click.argument("name")
@click.option("--kind", "kinds", type=click.Choice(_plugin_kinds()), multiple=True, show_default=True,
              help="A component the package registers; repeat for several in one package "
                   "(--kind loss --kind metric). Default: student.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where to create kdbench-NAME/.")
@_handle_errors
def new(name, kinds, directory):
    """Create kdbench-NAME/: pyproject.toml declaring the `kdbench` entry point, a module
    registering a working component of each KIND through its hook (a package of one module per
    kind when there are several), a README and a conformance test per component."""
    from kdbench.scaffold import new_plugin

    kinds = list(dict.fromkeys(kinds)) or ["student"]
    root = new_plugin(name, kinds, directory)
    short = root.name.removeprefix("kdbench-")
    made = ", ".join(f"the {kind} '{short}-{kind}'" for kind in kinds)
    # markup=False: paths and pip's '[test]' are not rich markup
    console.print(f"created {root}/ with {made}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"next:\n  pip install -e '{root}[test]'\n  pytest {root}\n  kdbench plugins",
                  markup=False, highlight=False, soft_wrap=True)


@plugin.command("show")
@click.argument("name")
@_handle_errors
def show(name):
    """What a suite can give component NAME (``plugin:name`` when two plugins register it): its
    options with types, defaults and bounds, and for a model its hidden layers and their widths."""
    from kdbench.errors import UnknownComponentError
    from kdbench.plugins import describe
    from kdbench.suggest import unknown_name_message

    registry = _registry()
    found = [c for kind in registry.qualified for key, c in sorted(registry.qualified[kind].items())
             if name in (key, c.name)]
    if not found:
        names = sorted({c.name for kind in registry.qualified for c in registry.qualified[kind].values()})
        raise UnknownComponentError(unknown_name_message("component", name, names))
    console.print("\n\n".join(describe(c) for c in found), markup=False, highlight=False, soft_wrap=True)
    _warn_problems(registry)


if __name__ == "__main__":  # pragma: no cover
    main()
