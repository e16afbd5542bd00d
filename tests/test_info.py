"""fastlearn.info(), the thread knob and the `fastlearn` command."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastlearn
from fastlearn import _C
from fastlearn.cli import format_table, main


def test_info_reports_build_and_runtime():
    d = fastlearn.info()
    assert d["version"] == fastlearn.__version__
    assert isinstance(d["build"]["cuda_built"], bool)
    assert d["build"]["cpu_simd"] in ("avx512", "avx2", "sse2", "generic")
    assert d["runtime"]["gpu_present"] == torch.cuda.is_available()
    assert d["threads"]["fastlearn"] >= 1
    if d["build"]["cuda_built"]:
        assert "90" in d["build"]["cuda_archs"]


def test_set_num_threads_sets_both_pools():
    before = fastlearn.get_num_threads(), torch.get_num_threads()
    try:
        fastlearn.set_num_threads(1)
        assert fastlearn.get_num_threads() == 1 and torch.get_num_threads() == 1
        assert _C.get_num_threads() == 1
    finally:
        fastlearn.set_num_threads(before[0])
        torch.set_num_threads(before[1])
    with pytest.raises(ValueError, match="'n' must be >= 1"):
        fastlearn.set_num_threads(0)
    with pytest.raises(TypeError, match="int"):
        fastlearn.set_num_threads(1.5)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_one_blas_thread_limits_numpy_and_scipy_blas_then_restores():
    import scipy.linalg  # noqa: F401  (SciPy's BLAS loaded, as in the estimators)

    from fastlearn._info import one_blas_thread

    with one_blas_thread():  # once to build the controller: a fresh process has none yet
        pass
    before = _blas_threads()
    assert before, "no BLAS library found by threadpoolctl"
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_bayesian_regression_solves_on_one_blas_thread_up_to_512_basis_functions(monkeypatch):
    from fastlearn.linear_model import BayesianLinearRegression as BLR

    seen = []
    solve = BLR._solve
    monkeypatch.setattr(BLR, "_solve", lambda self: (seen.append(_blas_threads()), solve(self))[1])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=200)
    BLR().fit(X, y)
    assert seen and all(n == 1 for n in seen[0])
    monkeypatch.setattr("fastlearn.linear_model._bayesian._ONE_THREAD_MAX_BASIS", 4)
    BLR().fit(X, y)
    assert seen[1] == _blas_threads()  # 5 basis functions > 4: the pools as they were


def test_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError, match="no_such_domain"):
        fastlearn.no_such_domain  # noqa: B018


def test_cli_info_json(capsys):
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["version"] == fastlearn.__version__


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fastlearn.cli", "info"], capture_output=True, text=True, check=True)
    assert "fastlearn" in out.stdout and "CUDA" in out.stdout


def test_bench_cli_runs_a_case_and_writes_json_and_plot(tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["bench", "--quick", "--filter", "softmax fwd (new output) 32x1000", "--json", str(js), "--plot", str(png),
                 "--min-time", "0.01", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "softmax fwd" in out and "torch.softmax" in out
    rows = json.loads(js.read_text())["results"]
    assert len(rows) == 1 and rows[0]["fastlearn_s"] > 0 and rows[0]["speedup"] > 0
    assert png.stat().st_size > 1000


def test_bench_filter_without_match_fails(capsys):
    assert main(["bench", "--filter", "no-such-case-xyz", "--no-progress"]) == 2


def test_format_table_aligns():
    rows = [{"group": "g", "name": "n", "shape": "s", "fastlearn_s": 1e-3, "baseline": "b", "baseline_s": 2e-3,
             "speedup": 2.0, "fraction_of_peak": 0.5, "bound": "memory", "fraction_of_copy": 0.74}]
    table = format_table(rows)
    assert "2.00x" in table and "50% mem" in table and "1 ms" in table and "74%" in table and "of copy" in table


def test_measure_interleaved_alternates_the_order_every_round():
    from fastlearn.bench.core import measure_interleaved

    calls = []
    fns = [lambda _, n=n: calls.append(n) for n in "abc"]
    samples = measure_interleaved(fns, None, min_time=0.0, repeats=4)
    assert [len(s) for s in samples] == [4, 4, 4]
    assert all(t >= 0 for s in samples for t in s)
    # two warm-up calls each, then rounds a b c / c b a / a b c / c b a (one call a batch)
    assert "".join(calls) == "aabbcc" + "abc" + "cba" + "abc" + "cba"


def test_run_case_takes_the_median_of_per_round_ratios(monkeypatch):
    from fastlearn.bench import core

    # Rounds in which the machine slows down for both: the per-round ratio stays 2, the ratio
    # of the medians would not.
    fake = [[1.0, 1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 6.0, 6.0, 6.0], [0.8, 0.8, 2.4, 2.4, 2.4]]
    monkeypatch.setattr(core, "measure_interleaved", lambda fns, *a, **k: fake[:len(fns)])
    monkeypatch.setattr(core, "COPY_REFERENCE_BYTES", 1 << 10)
    case = core.Case(name="n", shape="s", setup=lambda: None, fastlearn=lambda _: None, baseline=lambda _: None,
                     baseline_name="b", bytes=1 << 12, bound="memory")
    r = core.run_case(case)
    assert r["speedup"] == 2.0 and r["fastlearn_s"] == 3.0 and r["baseline_s"] == 6.0
    assert r["fraction_of_copy"] == pytest.approx(0.8) and r["copy_s"] == 2.4
    monkeypatch.setattr(core, "COPY_REFERENCE_MAX", 1 << 11)  # copies half the case's bytes: time x 2
    r = core.run_case(case)
    assert r["fraction_of_copy"] == pytest.approx(1.6) and r["copy_s"] == pytest.approx(4.8)
    fake[1] = [2.0, 2.0, 2.0, 2.0, 2.0]
    assert core.run_case(case)["speedup"] == pytest.approx(2 / 3)
    small = core.Case(name="n", shape="s", setup=lambda: None, fastlearn=lambda _: None, baseline=None,
                      baseline_name="", bytes=1 << 9, bound="memory")
    r = core.run_case(small)
    assert r["speedup"] is None and r["fraction_of_copy"] is None and r["copy_s"] is None


def test_run_case_and_the_cli_take_the_number_of_rounds(monkeypatch, capsys):
    from fastlearn import cli
    from fastlearn.bench import core

    seen = []
    monkeypatch.setattr(core, "measure_interleaved",
                        lambda fns, *a, repeats, **k: seen.append(repeats) or [[1.0] * repeats for _ in fns])
    monkeypatch.setattr(core, "machine_peaks", lambda device="cpu": {"bandwidth": 1e10, "flops_float32": 1e11,
                                                                    "flops_float64": 5e10})
    case = core.Case(name="n", shape="s", setup=lambda: None, fastlearn=lambda _: None, baseline=lambda _: None,
                     baseline_name="b")
    assert core.run_case(case, rounds=3)["rounds"] == 3 and seen == [3]
    with pytest.raises(ValueError, match="rounds"):
        core.run_case(case, rounds=0)
    monkeypatch.setattr(core, "discover", lambda quick=False, pattern=None, device=None: [case])
    seen.clear()
    for argv, rounds in ((["--quick"], core.QUICK_ROUNDS), ([], core.ROUNDS), (["--quick", "--rounds", "5"], 5)):
        assert cli.main(["bench", "--no-progress", *argv]) == 0
        assert seen[-1] == rounds
    assert cli.main(["bench", "--rounds", "0"]) == 2
    assert "--rounds" in capsys.readouterr().err
