"""How kdbench times, sizes and loads a model on a target. The harness owns this method;
targets only prepare the model, so every target and plugin is measured the same way.

Timer boundaries: inside the timed region is everything from a collated input batch (raw
samples already in memory) to the model output: the front end (feature extraction), the model,
and a device's transfers and synchronisation. Outside it: reading and decoding files, collation,
and turning outputs into predictions (decoding text, writing audio).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

# MLPerf LoadGen requires at least 64 queries for a p90 (mlcommons/inference #1629): that is
# 6.4 samples expected above the percentile. The same rule gives every percentile its minimum.
SAMPLES_ABOVE_PERCENTILE = 6.4
# Other processes using more than this many cores while we time flag the row as contended.
CONTENTION_CORES = 0.25
MIN_WINDOW = 0.5  # seconds of machine load observed per measurement, at least

def min_samples(q: float) -> int:
    """Fewest timed runs that support the ``q`` quantile (0.9 -> 64, 0.99 -> 640)."""
    return math.ceil(SAMPLES_ABOVE_PERCENTILE / (1.0 - q) - 1e-9)


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# ---- machine load ------------------------------------------------------------------------------
def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class LoadMonitor:
    """CPU time used by *other* processes while a block runs, in cores: the machine's busy time
    minus this process's own. A busy neighbour on a small machine distorts latency (and with
    OpenMP's spin-wait, by 10-20x), so every timing records it."""

    def __enter__(self) -> "LoadMonitor":
        self._start = time.perf_counter()
        self._machine = _busy_jiffies()
        self._own = sum(os.times()[:2])
        self.loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        return self

    def __exit__(self, *exc) -> None:
        # /proc/stat counts in 10 ms ticks: watch at least MIN_WINDOW, idling after a short block
        # (the load just after it stands in for the load during it)
        idle = MIN_WINDOW - (time.perf_counter() - self._start)
        if idle > 0:
            time.sleep(idle)
        wall = time.perf_counter() - self._start
        own = sum(os.times()[:2]) - self._own
        end = _busy_jiffies()
        self.other_cores = math.nan
        if self._machine and end and wall > 0:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy = (end[0] - self._machine[0]) / hz
            self.other_cores = min(float(os.cpu_count() or 1), max(0.0, (busy - own) / wall))

    @property
    def contended(self) -> bool:
        return not math.isnan(self.other_cores) and self.other_cores > CONTENTION_CORES


# ---- latency -----------------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per timed run and the audio seconds (or other input size) each run processed."""

    seconds: list[float]
    sizes: list[float]
    example_ids: list[str]
    other_cores: float = math.nan
    loadavg: float = math.nan
    threads: int = 0

    @property
    def contended(self) -> bool:
        return not math.isnan(self.other_cores) and self.other_cores > CONTENTION_CORES

    def quantile(self, q: float, planned: int | None = None) -> float | None:
        """None when there are too few runs to support the quantile. With ``planned`` (the runs
        asked for), that decides, not how many a time budget happened to add: the same suite
        then reports the same metrics on every machine and every night."""
        if q > 0.5 and min(len(self.seconds), planned or len(self.seconds)) < min_samples(q):
            return None
        return percentile(self.seconds, q)

    def by_size(self, buckets: int = 3) -> list[tuple[str, float, float, float]]:
        """Median latency per input-size bucket (terciles by default): (name, lo, hi, p50 seconds)."""
        order = sorted(set(self.sizes))
        if len(order) < buckets:
            return []
        names = ["short", "medium", "long"] if buckets == 3 else [f"b{i}" for i in range(buckets)]
        edges = [order[round(i * (len(order) - 1) / buckets)] for i in range(buckets)] + [order[-1]]
        out = []
        for i, name in enumerate(names):
            lo, hi = edges[i], edges[i + 1]
            picked = [s for s, size in zip(self.seconds, self.sizes)
                      if (lo <= size < hi) or (i == buckets - 1 and size == hi)]
            if picked:
                out.append((name, lo, hi, statistics.median(picked)))
        return out


def time_runs(forward: Callable[[Any], Any], inputs: Sequence[tuple[str, Any, float]], *, warmup: int,
              runs: int, min_seconds: float = 0.0) -> Timing:
    """Warm up, then time at least ``runs`` calls, cycling over ``inputs`` (id, prepared input,
    size) until ``min_seconds`` have passed too.

    Inputs are prepared before timing (see the module docstring for what is inside the timed
    region); each call is timed alone with ``perf_counter``. A shared or virtual machine's speed
    drifts over seconds; timing for long enough (MLPerf Tiny: at least 10 s) keeps one slow
    spell from deciding the median.
    """
    if not inputs:
        raise ValueError("nothing to time: no inputs")
    for i in range(warmup):
        forward(inputs[i % len(inputs)][1])
    seconds, sizes, ids = [], [], []
    with LoadMonitor() as load:
        began = time.perf_counter()
        i = 0
        while i < runs or time.perf_counter() - began < min_seconds:
            ident, x, size = inputs[i % len(inputs)]
            start = time.perf_counter()
            forward(x)
            seconds.append(time.perf_counter() - start)
            sizes.append(size)
            ids.append(ident)
            i += 1
    import torch  # here, not at the top: leaderboards read this module without loading torch

    return Timing(seconds, sizes, ids, load.other_cores, load.loadavg, torch.get_num_threads())


def cold_start(load: Callable[[], Callable[[Any], Any]], first_input: Any) -> float:
    """Seconds from loading the deployed artifact to the first result."""
    start = time.perf_counter()
    deployed = load()
    deployed(first_input)
    return time.perf_counter() - start


# ---- memory ------------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux resets VmHWM (peak RSS) to the current RSS when 5 is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(block: Callable[[], Any]) -> float | None:
    """Peak resident memory (MB) that ``block`` adds to the process, over its RSS before.

    None where the kernel cannot reset the peak (not Linux)."""
    before = _status_kb("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    block()
    peak = _status_kb("VmHWM")
    return None if peak is None else max(0.0, (peak - before) / 1024)


# ---- compute -----------------------------------------------------------------------------------
def count_flops(module: Callable, *args) -> int:
    """Floating-point operations of one call, as torch.utils.flop_counter counts them (a
    multiply-add is 2 FLOPs; matrix products and convolutions only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*args)
    return int(counter.get_total_flops())


_PEAK: dict[int, float] = {}


def matmul_peak_gflops(threads: int | None = None, n: int = 1024, seconds: float = 0.3,
                       record: Path | None = None) -> float:
    """The machine's fp32 matrix-multiply rate (GFLOP/s) at ``threads``: the ceiling a model's
    achieved GFLOP/s is read against. Measured once per process and thread count, and read
    against the best rate this machine has shown before (kept in ``record``, by default in the
    kdbench cache): on a shared VM one 0.3 s reading of 2 threads ranged from 107 to 184
    GFLOP/s, and a ceiling that moves with it would move every "% of peak" with it."""
    import torch

    threads = threads or torch.get_num_threads()
    if threads not in _PEAK:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            best = 0.0
            for _ in range(3):
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 3:
                    torch.mm(a, b)
                    count += 1
                best = max(best, 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9)
        finally:
            torch.set_num_threads(previous)
        from kdbench.provenance import host_cpu

        _PEAK[threads] = _best_seen(record, f"{host_cpu()} | {threads} threads | torch {torch.__version__} | n {n}", best)
    return _PEAK[threads]


def _best_seen(record: Path | None, key: str, value: float) -> float:
    """``value`` or the best value stored under ``key``, whichever is higher; stores the higher."""
    import json

    from kdbench.cache import atomic_write_bytes, default_cache_dir

    path = Path(record) if record else default_cache_dir() / "machine" / "matmul-peak.json"
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        seen = {}
    best = max(value, float(seen.get(key, 0.0)))
    if best > seen.get(key, 0.0):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps({**seen, key: best}, indent=1).encode())
        except OSError:  # a read-only cache: this process still uses the best it knows
            pass
    return best


@dataclass
class Summary:
    """Latency statistics of a Timing, in milliseconds, with what a reader needs to trust them."""

    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def summarize(timing: Timing, percentiles: Sequence[float] = (0.5, 0.9, 0.99), planned: int | None = None) -> Summary:
    out = Summary()
    for q in percentiles:
        value = timing.quantile(q, planned)
        name = f"latency_p{round(q * 100)}_ms"
        if value is None:
            out.notes.append(f"{name} not reported: {min(len(timing.seconds), planned or len(timing.seconds))} "
                             f"timed runs, {min_samples(q)} needed")
        else:
            out.values[name] = 1000 * value
    out.values["latency_mean_ms"] = 1000 * statistics.fmean(timing.seconds)
    total = sum(timing.sizes)
    if total > 0:
        out.values["rtf"] = sum(timing.seconds) / total
    for name, _lo, _hi, p50 in timing.by_size():
        out.values[f"latency_{name}_p50_ms"] = 1000 * p50
    return out
