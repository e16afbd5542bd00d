"""Tuning sweeps for the GPU kernels, for one device-tool call: each variant timed with CUDA
events (triton.testing.do_bench, median) against the baseline in the same run. Not part of
the benchmark suite (``fastlearn bench`` times the chosen configurations); this script is how
they were chosen.  Usage: python3 bench/gpu/sweep.py [softmax] [estep] [estep_precision] [estep_programs]
       [estep_split] [kmeans]
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


def _estep_problem(cov, N, D, K, seed=0, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    centers = torch.randn(K, D, generator=g, device=device) * 4.0
    X = centers[torch.randint(0, K, (N,), generator=g, device=device)] + torch.randn(N, D, generator=g, device=device)
    means = centers + 0.5
    if cov == "full":
        A = torch.randn(K, D, D, generator=g, device=device, dtype=torch.float64) * 0.1
        cov_m = torch.eye(D, device=device, dtype=torch.float64) + A @ A.transpose(1, 2)
        P = torch.linalg.cholesky(torch.linalg.inv(cov_m)).transpose(1, 2).contiguous()  # upper, as sklearn's
        P = P.float()
    else:
        P = torch.ones(K, D, device=device)
    log_w = torch.full((K,), -float(torch.log(torch.tensor(float(K)))), device=device)
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


def sweep_estep_split(N=1_000_000, device="cuda", ms=None):
    """Full covariance, N=1M, K=16, D=32 and 64, float32: the fused kernel (the default), the
    fused kernel with all components' log-density products in slabs (ESTEP_FULL_OPTIONS
    'ALLK_J'), and the split statistics ('SPLIT'): a first launch without statistics that
    writes log_norm, then _gaussian_full_stats_kernel over (component, chunk) programs. Each
    launch's configuration is swept on its own (the first over the point block, warps,
    programs a multiprocessor, BLOCK_J and ALLK_J; the second over the point block, warps,
    programs a multiprocessor and the scatter's precision), then the best pair is timed whole,
    with its accuracy against float64. (Written in session 11 without a GPU: not yet run. Compiled for
    sm_90 the second launch at D=32 takes 146 registers and no local memory at 64 points over
    4 warps, where the fused kernel takes 255 and spills.)"""
    from fastlearn.kernels.triton import gaussian_estep as tk
    from fastlearn.kernels.triton._host import cdiv
    from fastlearn.mixture import _gpu

    ms = ms or _ms  # (N, device and ms: a dry run of this code under the interpreter)
    a = torch.randn(8192, 8192, device=device) if device == "cuda" else torch.randn(64, 64)
    peak = 2 * a.shape[0] ** 3 / (ms(lambda: a @ a) * 1e-3)
    real_config, real_split, default_options = tk.launch_config, tk.split_stats_config, dict(_gpu.ESTEP_FULL_OPTIONS)
    K = 16

    def first(bn, warps, per_sm, bj):
        def cfg(n, d, k, f64, n_sm=None, slot_budget_bytes=256 << 20, cov=0):
            meta, _ = real_config(n, d, k, f64, n_sm=n_sm, slot_budget_bytes=slot_budget_bytes, cov=cov)
            return dict(meta, BLOCK_N=bn, num_warps=warps, BLOCK_J=min(bj, meta["BLOCK_D"])), \
                max(1, min(per_sm * (n_sm or 1), cdiv(n, bn)))
        return cfg

    def second(bn, warps, per_sm, maxnreg=None):
        def cfg(n, d, k, f64, n_sm=None, slot_budget_bytes=256 << 20):
            meta, _ = real_split(n, d, k, f64, n_sm=n_sm, slot_budget_bytes=slot_budget_bytes)
            meta = dict(meta, BLOCK_N=bn, num_warps=warps, **({"maxnreg": maxnreg} if maxnreg else {}))
            return meta, max(1, min(cdiv(per_sm * (n_sm or 1), k), cdiv(n, bn)))
        return cfg

    def timed(label, fn, flops):
        try:
            t = ms(fn)
            print(f"  {label}: {t * 1e3:.0f} us = {flops / t / 1e9 / (peak / 1e12):.0%} of peak")
            return t
        except Exception as e:  # noqa: BLE001  (a configuration that does not fit)
            print(f"  {label}: {type(e).__name__}: {str(e)[:120]}")
            return float("inf")

    try:
        for D in (32, 64):
            X, means, P, log_w = _estep_problem("full", N, D, K, device=device)
            flops = 2.0 * N * K * D * (D + 1)
            ref = _gpu.estep(X.double(), means.double(), P.double(), log_w.double(), "full", stats=True)
            print(f"estep full N={N} D={D} K={K} float32, fp32 peak {peak / 1e12:.1f} TFLOP/s; "
                  f"percentages: counted FLOPs 2NKD(D+1) over the time")
            _gpu.ESTEP_FULL_OPTIONS = dict(default_options, SPLIT=False)
            t_fused = timed("fused (default)", lambda: _gpu.estep(X, means, P, log_w, "full", stats=True), flops)
            # (bn, warps, programs/SM, BLOCK_J, ALLK_J). Compiled for sm_90 (Triton 3.6, D=32), no
            # statistics: 64 points over 2 warps, BLOCK_J 32: 246 registers; BLOCK_J 16: 164; 32
            # over 2 warps, 16: 128; 64 over 4 warps, 16: 90; ALLK_J 32 at 64 over 4 warps: 110,
            # ALLK_J 64 there: 146; 128 over 8 warps, ALLK_J 64: 140; none of these spills. With
            # statistics, ALLK_J 32 at 64 points over 4 warps 197 and 128 over 8 warps 220, no
            # local memory (the default spills ~200 B).
            def fastest(configs, **kw):  # (bn, warps, programs/SM, BLOCK_J, ALLK_J): the fused kernel
                best = (float("inf"), None)
                for c in configs:
                    tk.launch_config = first(*c[:4])
                    _gpu.ESTEP_FULL_OPTIONS = dict(default_options, SPLIT=False, ALLK_J=c[4])
                    t = timed(f"BLOCK_N {c[0]} warps {c[1]} programs {c[2]}/SM BLOCK_J {c[3]} ALLK_J {c[4]}",
                              lambda: _gpu.estep(X, means, P, log_w, "full", **kw), flops)
                    best = (t, c) if t < best[0] else best
                return best

            print("  fused with all components' products (ALLK_J):")
            best_f = fastest([(64, 4, 4, 32, 32), (64, 4, 5, 32, 32), (64, 4, 4, 32, 64), (128, 8, 2, 32, 32),
                              (128, 8, 2, 32, 64), (128, 8, 3, 32, 64), (32, 2, 8, 32, 32), (64, 2, 8, 32, 32)],
                             stats=True)
            print("  first launch alone (no statistics, log_norm written):")
            best1 = fastest([(64, 2, 8, 32, 0), (64, 2, 8, 16, 0), (32, 1, 8, 16, 0), (32, 2, 8, 16, 0),
                             (32, 2, 12, 16, 0), (32, 1, 16, 16, 0), (64, 4, 4, 16, 0), (64, 4, 5, 16, 0),
                             (128, 4, 4, 32, 0), (128, 4, 4, 16, 0), (128, 8, 2, 32, 0), (64, 4, 4, 32, 32),
                             (64, 4, 5, 32, 32), (64, 4, 4, 32, 64), (128, 8, 2, 32, 64), (128, 8, 3, 32, 64),
                             (128, 8, 2, 32, 128), (32, 2, 8, 32, 32)], log_norm=True)
            tk.launch_config = first(*best1[1][:4])
            t1 = best1[0]
            _gpu.ESTEP_FULL_OPTIONS = dict(default_options, SPLIT=True, ALLK_J=best1[1][4])
            print(f"  split, first launch {best1[1]}; second launch (time = whole minus the first's {t1 * 1e3:.0f} us):")
            best2 = (float("inf"), None)
            for prec in ("ieee", "tf32x3"):
                _gpu.ESTEP_FULL_OPTIONS["PRECISION_S"] = prec
                # (sm_90, Triton 3.6, D=32, 'ieee': 64 points over 4 warps 150 registers, 8 warps
                # 161, 128 over 8 warps 143, 32 over 4 warps 186; no local memory)
                for c in [(64, 4, 3), (64, 4, 4, 128), (64, 4, 8), (64, 4, 16), (64, 8, 4), (32, 4, 4),
                          (32, 2, 8), (32, 2, 16), (32, 1, 16), (128, 4, 4), (128, 8, 4), (64, 2, 8)]:
                    tk.split_stats_config = second(*c)
                    t = timed(f"{prec} BLOCK_N {c[0]} warps {c[1]} programs {c[2]}/SM"
                              + (f" maxnreg {c[3]}" if len(c) > 3 else ""),
                              lambda: _gpu.estep(X, means, P, log_w, "full", stats=True), flops)
                    print(f"    second launch ~{(t - t1) * 1e3:.0f} us")
                    best2 = (t, (prec, c)) if t < best2[0] else best2
            prec, c = best2[1]
            _gpu.ESTEP_FULL_OPTIONS["PRECISION_S"] = prec
            tk.split_stats_config = second(*c)

            def accuracy():
                out = _gpu.estep(X, means, P, log_w, "full", stats=True)
                e_ll = abs(float(out["loglik"] - ref["loglik"]) / float(ref["loglik"]))
                scale = ref["s2"].diagonal(dim1=1, dim2=2).amax(1)
                e_s2 = float(((out["s2"] - ref["s2"]).abs().amax((1, 2)) / scale).max())
                e_s1 = float((out["s1"] - ref["s1"]).abs().max() / scale.sqrt().max())
                return f"loglik rel {e_ll:.1e}, s1 {e_s1:.1e}, s2 rel {e_s2:.1e}"

            print(f"  best split: first {best1[1]}, second {best2[1]}: {best2[0] * 1e3:.0f} us = "
                  f"{flops / best2[0] / 1e9 / (peak / 1e12):.0%} of peak (fused {t_fused * 1e3:.0f} us); {accuracy()}")
            if best_f[0] < t_fused:
                tk.launch_config = first(*best_f[1][:4])
                _gpu.ESTEP_FULL_OPTIONS = dict(default_options, SPLIT=False, ALLK_J=best_f[1][4])
                print(f"  best fused with ALLK_J: {best_f[1]}: {best_f[0] * 1e3:.0f} us = "
                      f"{flops / best_f[0] / 1e9 / (peak / 1e12):.0%} of peak; {accuracy()}")
            tk.launch_config, tk.split_stats_config = real_config, real_split
    finally:
        tk.launch_config, tk.split_stats_config = real_config, real_split
        _gpu.ESTEP_FULL_OPTIONS = default_options


def sweep_kmeans(N=1_000_000, D=32, K=64, device="cuda", ms=None):
    """KMeans assignment with the centre sums (one Lloyd step's launch) at the GPU bench's
    shape, N=1M, D=32, K=64, float32: point block, centre tile, warps and programs a
    multiprocessor. Compiled for sm_90 (bench/gpu/compile_report.py), the default 128 points x
    64 centres over 4 warps spills 336-400 B a thread (Triton 3.9 / 3.6); over 8 warps 16 / 0 B;
    64 points x 64 centres over 4 warps none. (Written in session 11 without a GPU: not yet
    run.)"""
    from fastlearn.cluster import _gpu as kgpu
    from fastlearn.kernels.triton import kmeans as tk
    from fastlearn.kernels.triton._host import cdiv

    ms = ms or _ms
    g = torch.Generator(device=device).manual_seed(0)
    centers = torch.randn(K, D, generator=g, device=device) * 3.0
    X = centers[torch.randint(0, K, (N,), generator=g, device=device)] + torch.randn(N, D, generator=g, device=device)
    c0, w = X[:K].clone(), torch.ones(N, device=device)
    real = tk.launch_config
    ref = kgpu.assign(X.double(), c0.double(), w.double(), stats=True)
    print(f"kmeans assign + sums N={N} D={D} K={K} float32 (default {real(N, D, K, False, 132)})")
    try:
        for bn, bk, warps, per_sm in [(None, None, None, None), (128, 64, 8, 4), (128, 64, 8, 2), (64, 64, 4, 4),
                                      (64, 64, 4, 8), (64, 32, 4, 8), (128, 32, 4, 4), (128, 16, 4, 4),
                                      (256, 64, 8, 2), (128, 64, 4, 2)]:
            tk.launch_config = real if bn is None else (
                lambda n, d, k, f64, n_sm=None, bn=bn, bk=bk, warps=warps, per_sm=per_sm:
                (dict(real(n, d, k, f64, n_sm)[0], BLOCK_N=bn, BLOCK_K=bk, num_warps=warps),
                 max(1, min(per_sm * (n_sm or 1), cdiv(n, bn)))))
            label = f"BLOCK_N {bn} BLOCK_K {bk} warps {warps} programs {per_sm}/SM"
            try:
                t = ms(lambda: kgpu.assign(X, c0, w, stats=True))
                out = kgpu.assign(X, c0, w, stats=True)
                agree = float((out["labels"] == ref["labels"]).double().mean())
                e_in = abs(float(out["inertia"] / ref["inertia"]) - 1)
                print(f"  {label}: {t * 1e3:.0f} us; labels agree {agree:.6f}, inertia rel {e_in:.1e}")
            except Exception as e:  # noqa: BLE001  (a configuration that does not fit)
                print(f"  {label}: {type(e).__name__}")
    finally:
        tk.launch_config = real


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
    if "estep_split" in which:
        sweep_estep_split()
    if "kmeans" in which:
        sweep_kmeans()
