"""The E-step and k-means Triton kernels compile for an H100 (sm_90) at the launch
configurations the package makes for the GPU bench's shapes, and fit its shared memory.

The other Triton tests run the kernels under the interpreter here, which checks their
arithmetic but not that they compile for a real GPU (a tile too big for shared memory only
fails on the GPU). This compiles them with Triton's own compiler and the CUDA tools in the
Triton wheel; no GPU is needed (bench/gpu/compile_report.py, whose machinery this uses)."""

import importlib
import importlib.util
import os

import pytest
import torch

from fastlearn._info import triton_interpret

pytestmark = pytest.mark.triton

_REPORT = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "gpu", "compile_report.py")


def _report_module():
    if torch.cuda.is_available() or not triton_interpret():
        pytest.skip("records launches under Triton's interpreter; on a GPU the triton tests compile for real")
    try:
        importlib.import_module("triton.backends.nvidia.compiler")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Triton's CUDA backend is not importable: {e}")
    spec = importlib.util.spec_from_file_location("compile_report", _REPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def compiled():
    cr = _report_module()
    # the passes with statistics hold the most registers and shared memory; the others are subsets
    launches = [d for d in cr.bench_launches() if d["const"].get("STATS", True)]
    return cr, cr.compile_launches(launches)


def test_bench_configurations_compile_for_sm90(compiled):
    cr, results = compiled
    names = {r["name"] for r in results}
    assert names == {"_gaussian_estep_kernel", "_gaussian_full_stats_kernel", "_kmeans_assign_kernel"}
    assert {r["const"]["COV"] for r in results if r["name"] == "_gaussian_estep_kernel"} == {0, 1, 2}
    failed = [f"{cr._summary(r)}: {r['error']}" for r in results if not r["ok"]]
    assert not failed, "\n".join(failed)
    for r in results:
        assert r["shared"] <= cr.H100_SHARED_BYTES, f"{cr._summary(r)}: {r['shared']} B of shared memory"


def test_float64_wide_tiles_do_not_spill(compiled):
    """float64 at D >= 128 takes 32-column slabs of P and 8 warps: with the 64-column slabs and
    4 warps of the other configurations, the tied pass spilled ~1 KiB a thread (Triton 3.6)."""
    cr, results = compiled
    wide = [r for r in results if r["name"] == "_gaussian_estep_kernel" and r["types"]["X"] == "*fp64"
            and r["const"]["BLOCK_D"] >= 128]
    assert wide and all(r["const"]["BLOCK_J"] == 32 and r["num_warps"] == 8 for r in wide)
    tied = [r for r in wide if r["const"]["COV"] == 1]
    assert tied and all(r["stack"] == 0 for r in tied), [(cr._summary(r), r["stack"]) for r in tied]


def test_split_statistics_do_not_spill_at_32_features(compiled):
    """The split statistics' second launch (one component's product and scatter a program) in
    float32 at D=32 holds its state in registers: no local memory (146 registers, Triton 3.6
    and 3.9), where the fused kernel with all K components' statistics takes 255 and spills."""
    cr, results = compiled
    split = [r for r in results if r["name"] == "_gaussian_full_stats_kernel" and r["types"]["X"] == "*fp32"
             and r["const"]["BLOCK_D"] == 32]
    assert split and all(r["stack"] == 0 for r in split), [(cr._summary(r), r["stack"]) for r in split]
