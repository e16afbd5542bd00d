"""pytest-benchmark front end of fastlearn.bench: every case, fastlearn and its baseline, as
two benchmarks in one group. Run with `pytest bench/` (add `--quick` for the quick subset)."""

import pytest

from fastlearn.bench.core import discover


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        quick = metafunc.config.getoption("quick")
        cases = discover(quick=quick)
        metafunc.parametrize("case", cases, ids=[f"{c.group}:{c.name}:{c.shape}" for c in cases])


@pytest.mark.parametrize("impl", ["fastlearn", "baseline"])
def test_case(benchmark, case, impl):
    fn = case.fastlearn if impl == "fastlearn" else case.baseline
    if fn is None:
        pytest.skip("no baseline for this case")
    benchmark.group = f"{case.group}: {case.name} {case.shape}"
    benchmark.extra_info.update(baseline=case.baseline_name, flops=case.flops, bytes=case.bytes)
    inputs = case.setup()
    benchmark(fn, inputs)
