"""Benchmark cases: ``fastlearn bench`` and ``pytest bench/`` run them (see core.py)."""

from fastlearn.bench.core import Case, discover, machine_peaks, measure, measure_interleaved, run_case

__all__ = ["Case", "discover", "machine_peaks", "measure", "measure_interleaved", "run_case"]
