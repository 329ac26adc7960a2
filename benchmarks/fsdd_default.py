"""Where the benchmarks read FSDD by default: $KDBENCH_FSDD_ROOT (a full checkout, for figures
worth quoting) or else the 250-recording subset committed with the tests (runs anywhere)."""

from pathlib import Path

FSDD_FIXTURE = str(Path(__file__).resolve().parent.parent / "tests" / "data" / "fsdd")
