"""Tuning sweeps for the GPU kernels, for one device-tool call: each variant timed with CUDA
events (triton.testing.do_bench, median) against the baseline in the same run. Not part of
the benchmark suite (``fastlearn bench`` times the chosen configurations); this script is how
they were chosen.  Usage: python3 bench/gpu/sweep.py [softmax] [estep] [estep_precision] [estep_programs]
"""

import sys

import torch
from triton.testing import do_bench


def _ms(fn):
    return do_bench(fn, warmup=10, rep=60)


def sweep_softmax():
    from fastlearn.kernels.triton import softmax as tk
    from fastlearn.ops import softmax as fl_softmax

    n = 1 << 28
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    copy_bw = 2 * n * 4 / (_ms(lambda: dst.copy_(src)) * 1e-3)
    print(f"copy: {copy_bw / 1e9:.0f} GB/s")
    for cols in (1024, 8192, 65536):
        rows = (256 << 20) // cols
        x = torch.randn(rows, cols, device="cuda")
        y = torch.empty_like(x)
        g = torch.randn_like(x)
        byt = 2 * x.numel() * 4
        t_torch = _ms(lambda: torch.softmax(x, -1))
        t_ours = _ms(lambda: fl_softmax(x, -1))
        ref = torch.softmax(x.double(), -1)
        err = (fl_softmax(x, -1).double() - ref).abs().max().item()
        print(f"softmax fwd {rows}x{cols}: torch {t_torch * 1e3:.0f} us ({byt / t_torch / 1e6 / copy_bw * 1e9:.0%}), "
              f"fastlearn {t_ours * 1e3:.0f} us ({byt / t_ours / 1e6 / copy_bw * 1e9:.0%}), max err {err:.1e}")
        for tile_bytes in (8192, 16384, 32768, 65536):
            for warps in (4, 8, 16, 32):
                meta, grid = tk.rows_launch_config(rows, cols, 4, tile_bytes=tile_bytes, num_warps=warps)
                if cols > tk.MAX_ROW_TILE:  # long rows: tiles of MAX_ROW_TILE, the warps swept
                    if tile_bytes != 8192:
                        continue
                elif meta["BLOCK"] * meta["ROWS"] < warps * 32:
                    continue
                try:
                    t = _ms(lambda: tk._softmax_rows_fwd_kernel[grid](x, y, rows, cols, LOG=False, ACC=tl_f32(),
                                                                      **meta))
                except Exception as e:  # noqa: BLE001  (a configuration that does not compile)
                    print(f"  tile {tile_bytes} warps {warps}: {type(e).__name__}")
                    continue
                print(f"  tile {tile_bytes:6d} B warps {warps:2d} (BLOCK {meta['BLOCK']}, ROWS {meta['ROWS']}): "
                      f"{t * 1e3:.0f} us ({byt / t / 1e6 / copy_bw * 1e9:.0%})")
        byt_b = 3 * x.numel() * 4
        yy = torch.softmax(x, -1)
        t_tb = _ms(lambda: torch._softmax_backward_data(g, yy, -1, torch.float32))
        from fastlearn.ops.softmax import _softmax_backward
        t_ob = _ms(lambda: _softmax_backward(g, yy, 1, False))
        print(f"softmax bwd {rows}x{cols}: torch {t_tb * 1e3:.0f} us ({byt_b / t_tb / 1e6 / copy_bw * 1e9:.0%}), "
              f"fastlearn {t_ob * 1e3:.0f} us ({byt_b / t_ob / 1e6 / copy_bw * 1e9:.0%})")
        torch.cuda.empty_cache()


def tl_f32():
    import triton.language as tl
    return tl.float32


def _estep_problem(cov, N, D, K, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    centers = torch.randn(K, D, generator=g, device="cuda") * 4.0
    X = centers[torch.randint(0, K, (N,), generator=g, device="cuda")] + torch.randn(N, D, generator=g, device="cuda")
    means = centers + 0.5
    if cov == "full":
        A = torch.randn(K, D, D, generator=g, device="cuda", dtype=torch.float64) * 0.1
        cov_m = torch.eye(D, device="cuda", dtype=torch.float64) + A @ A.transpose(1, 2)
        P = torch.linalg.cholesky(torch.linalg.inv(cov_m)).transpose(1, 2).contiguous()  # upper, as sklearn's
        P = P.float()
    else:
        P = torch.ones(K, D, device="cuda")
    log_w = torch.full((K,), -float(torch.log(torch.tensor(float(K)))), device="cuda")
    return X, means, P, log_w


def sweep_estep():
    from fastlearn.kernels.triton import gaussian_estep as tk
    from fastlearn.kernels.triton._host import cdiv
    from fastlearn.mixture import _gpu

    a = torch.randn(8192, 8192, device="cuda")
    peak = 2 * 8192 ** 3 / (_ms(lambda: a @ a) * 1e-3)
    print(f"fp32 matmul peak: {peak / 1e12:.1f} TFLOP/s")
    real_config = tk.launch_config
    default_options = dict(_gpu.ESTEP_FULL_OPTIONS)
    variants = [dict(S1_DOT=False, XT_LOAD=False, PRECISION_S="tf32x3"),
                dict(S1_DOT=True, XT_LOAD=False, PRECISION_S="tf32x3"),
                dict(S1_DOT=True, XT_LOAD=True, PRECISION_S="tf32x3"),
                dict(S1_DOT=False, XT_LOAD=True, PRECISION_S="tf32x3"),
                dict(S1_DOT=True, XT_LOAD=True, PRECISION_S="tf32"),
                dict(S1_DOT=True, XT_LOAD=True, PRECISION_S="ieee")]
    configs = [(None, None, None), (128, 4, 2), (128, 4, 4), (64, 4, 4), (128, 8, 2), (64, 2, 8)]

    def with_config(bn, warps, mult):
        def cfg(n, d, k, f64, n_sm=None, slot_budget_bytes=256 << 20, cov=0):
            meta, progs = real_config(n, d, k, f64, n_sm=n_sm, slot_budget_bytes=slot_budget_bytes, cov=cov)
            if bn is None:
                return meta, progs
            return dict(meta, BLOCK_N=bn, num_warps=warps), max(1, min(mult * (n_sm or 1), cdiv(n, bn)))
        return cfg

    # accuracy of each variant against float64 (N=200k): log-likelihood and scatter
    X, means, P, log_w = _estep_problem("full", 200_000, 32, 16, seed=1)
    ref = _gpu.estep(X.double(), means.double(), P.double(), log_w.double(), "full", stats=True)
    for opt in variants:
        _gpu.ESTEP_FULL_OPTIONS = opt
        out = _gpu.estep(X, means, P, log_w, "full", stats=True)
        e_ll = abs(float(out["loglik"] - ref["loglik"]) / float(ref["loglik"]))
        e_s1 = float((out["s1"] - ref["s1"]).abs().max() / ref["s2"].diagonal(dim1=1, dim2=2).sqrt().max())
        e_s2 = float(((out["s2"] - ref["s2"]).abs().amax((1, 2)) / ref["s2"].diagonal(dim1=1, dim2=2).amax(1)).max())
        print(f"accuracy {opt}: loglik rel {e_ll:.1e}, s1 {e_s1:.1e}, s2 rel {e_s2:.1e}")

    for cov, D, K in (("full", 32, 16), ("full", 64, 16), ("full", 128, 8), ("diag", 32, 16)):
        N = 1_000_000
        X, means, P, log_w = _estep_problem(cov, N, D, K)
        flops = 2.0 * N * K * D * (D + 1) if cov == "full" else 6.0 * N * K * D

        def run(stats=True):
            return _gpu.estep(X, means, P, log_w, cov, stats=stats)

        _gpu.ESTEP_FULL_OPTIONS = default_options
        t = _ms(run)
        print(f"estep {cov} N={N} D={D} K={K}: {t * 1e3:.0f} us = {flops / t / 1e9:.1f} TFLOP/s "
              f"({flops / t / 1e9 / (peak / 1e12):.0%} of fp32 peak); default {real_config(N, D, K, False, 132)}")
        print(f"  no stats: {_ms(lambda: run(stats=False)) * 1e3:.0f} us")
        if cov != "full":
            continue
        for opt in variants:
            _gpu.ESTEP_FULL_OPTIONS = opt
            for bn, warps, mult in configs if D == 32 else configs[:2]:
                tk.launch_config = with_config(bn, warps, mult)
                try:
                    t2 = _ms(run)
                    print(f"  {opt} BLOCK_N {bn} warps {warps} programs {mult}x: {t2 * 1e3:.0f} us = "
                          f"{flops / t2 / 1e9 / (peak / 1e12):.0%} of peak")
                except Exception as e:  # noqa: BLE001  (a configuration that does not fit)
                    print(f"  {opt} BLOCK_N {bn} warps {warps} programs {mult}x: {type(e).__name__}")
                finally:
                    tk.launch_config = real_config
        _gpu.ESTEP_FULL_OPTIONS = default_options


def sweep_estep_programs():
    """Full covariance, D=32, K=16, N=1M, default options: point-block size, warps and programs
    a multiprocessor. Each program read-modify-writes its own float64 slot of K x D x D
    statistics once a block: at the default (64 points, 8 programs a multiprocessor) the slots
    take more than the L2, so a pass could move ~4 GB through HBM (about 1.2 ms of the 2.9 ms
    measured in session 5). Fewer programs keep the slots in L2 but hide less latency; larger
    blocks halve the slot traffic a point. (Written in session 9 without a GPU: not yet run.)"""
    from fastlearn.kernels.triton import gaussian_estep as tk
    from fastlearn.kernels.triton._host import cdiv
    from fastlearn.mixture import _gpu

    a = torch.randn(8192, 8192, device="cuda")
    peak = 2 * 8192 ** 3 / (_ms(lambda: a @ a) * 1e-3)
    props = torch.cuda.get_device_properties(0)
    n_sm, l2 = props.multi_processor_count, getattr(props, "L2_cache_size", 0)
    N, D, K = 1_000_000, 32, 16
    X, means, P, log_w = _estep_problem("full", N, D, K)
    flops = 2.0 * N * K * D * (D + 1)
    slot = 8 * K * (1 + D + D * D)
    print(f"fp32 peak {peak / 1e12:.1f} TFLOP/s, {n_sm} SMs, L2 {l2 / 2**20:.0f} MiB, slot {slot / 2**10:.0f} KiB")
    real_config = tk.launch_config
    # 32-column slabs everywhere, then 16-column slabs of P for a few of the configurations:
    # compiled for sm_90 without a GPU (bench/gpu/compile_report.py, Triton 3.6) they hold fewer
    # registers (log-densities alone at 32 points over 2 warps: 128 registers against 246 for the
    # default), but the statistics part still takes 255 at every size.
    grid = [(bn, warps, per_sm, 32) for bn in (32, 64, 128) for warps in (1, 2, 4) for per_sm in (2, 3, 4, 6, 8)]
    grid += [(64, 2, 8, 16), (64, 2, 4, 16), (32, 2, 8, 16), (32, 1, 8, 16), (64, 4, 4, 16), (64, 4, 8, 16)]
    try:
        for bn, warps, per_sm, bj in grid:
            def cfg(n, d, k, f64, n_sm=None, slot_budget_bytes=256 << 20, cov=0, bn=bn, warps=warps,
                    per_sm=per_sm, bj=bj):
                meta, _ = real_config(n, d, k, f64, n_sm=n_sm, slot_budget_bytes=slot_budget_bytes, cov=cov)
                return (dict(meta, BLOCK_N=bn, num_warps=warps, BLOCK_J=bj),
                        max(1, min(per_sm * (n_sm or 1), cdiv(n, bn))))
            tk.launch_config = cfg
            progs = per_sm * n_sm
            label = (f"BLOCK_N {bn:3d} warps {warps} programs {per_sm}/SM BLOCK_J {bj} "
                     f"(slots {progs * slot / 2**20:5.0f} MiB, slot traffic {2 * slot * cdiv(N, bn) / 1e9:.1f} GB)")
            try:
                t = _ms(lambda: _gpu.estep(X, means, P, log_w, "full", stats=True))
                print(f"  {label}: {t * 1e3:.0f} us = {flops / t / 1e9 / (peak / 1e12):.0%} of peak")
            except Exception as e:  # noqa: BLE001  (a configuration that does not fit)
                print(f"  {label}: {type(e).__name__}")
    finally:
        tk.launch_config = real_config


def sweep_estep_precision():
    """The log-densities' tl.dot precision (tf32x3 or ieee) with the current defaults."""
    from fastlearn.mixture import _gpu

    for D in (32, 64):
        X, means, P, log_w = _estep_problem("full", 1_000_000, D, 16)
        ref = _gpu.estep(X.double(), means.double(), P.double(), log_w.double(), "full", stats=True)
        for prec in ("tf32x3", "ieee"):
            _gpu.precision_for_kernel = lambda p=prec: p
            out = _gpu.estep(X, means, P, log_w, "full", stats=True)
            e_ll = abs(float(out["loglik"] - ref["loglik"]) / float(ref["loglik"]))
            t = _ms(lambda: _gpu.estep(X, means, P, log_w, "full", stats=True))
            print(f"estep full D={D} E-part {prec}: {t * 1e3:.0f} us, loglik rel err {e_ll:.1e}")
        _gpu.precision_for_kernel = lambda: "tf32x3"


if __name__ == "__main__":
    which = sys.argv[1:] or ["softmax", "estep"]
    print(torch.cuda.get_device_name(0))
    if "softmax" in which:
        sweep_softmax()
    if "estep" in which:
        sweep_estep()
    if "estep_precision" in which:
        sweep_estep_precision()
    if "estep_programs" in which:
        sweep_estep_programs()
