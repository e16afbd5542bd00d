"""Tuning sweeps for the GPU kernels, for one device-tool call: each variant timed with CUDA
events (triton.testing.do_bench, median) against the baseline in the same run. Not part of
the benchmark suite (``fastlearn bench`` times the chosen configurations); this script is how
they were chosen.  Usage: python3 bench/gpu/sweep.py [softmax] [estep]
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


def sweep_estep():
    from fastlearn.kernels.triton import gaussian_estep as tk
    from fastlearn.mixture import _gpu

    a = torch.randn(8192, 8192, device="cuda")
    peak = 2 * 8192 ** 3 / (_ms(lambda: a @ a) * 1e-3)
    print(f"fp32 matmul peak: {peak / 1e12:.1f} TFLOP/s")
    real_config = tk.launch_config
    for cov, D, K in (("full", 32, 16), ("full", 64, 16), ("diag", 32, 16)):
        N = 1_000_000
        g = torch.Generator(device="cuda").manual_seed(0)
        centers = torch.randn(K, D, generator=g, device="cuda") * 4.0
        X = centers[torch.randint(0, K, (N,), generator=g, device="cuda")] + torch.randn(N, D, generator=g,
                                                                                         device="cuda")
        means = centers + 0.5
        P = torch.eye(D, device="cuda").expand(K, D, D).contiguous() if cov == "full" else torch.ones(K, D,
                                                                                                     device="cuda")
        log_w = torch.full((K,), -float(torch.log(torch.tensor(float(K)))), device="cuda")
        flops = 2.0 * N * K * D * (D + 1) if cov == "full" else 6.0 * N * K * D

        def run(stats=True, programs=None):
            return _gpu.estep(X, means, P, log_w, cov, stats=stats, programs=programs)

        t = _ms(run)
        print(f"estep {cov} N={N} D={D} K={K}: {t * 1e3:.0f} us = {flops / t / 1e9:.1f} TFLOP/s "
              f"({flops / t / 1e9 / (peak / 1e12):.0%} of fp32 peak); default {real_config(N, D, K, False, 132)}")
        print(f"  no stats: {_ms(lambda: run(stats=False)) * 1e3:.0f} us")
        if (cov, D) != ("full", 32):
            continue
        for prec in ("tf32", "ieee"):
            _gpu.precision_for_kernel = lambda p=prec: p
            print(f"  precision {prec}: {_ms(run) * 1e3:.0f} us")
        _gpu.precision_for_kernel = lambda: "tf32x3"
        for block_n in (128, 256, 512):
            for warps in (4, 8):
                for mult in (1, 2, 4):
                    def cfg(n, d, k, f64, n_sm=None, slot_budget_bytes=256 << 20, cov=0, bn=block_n, w=warps,
                            m=mult):
                        meta, progs = real_config(n, d, k, f64, n_sm=n_sm, cov=cov)
                        meta = dict(meta, BLOCK_N=bn, num_warps=w)
                        return meta, max(1, min(m * (n_sm or 1), triton_cdiv(n, bn)))
                    tk.launch_config = cfg
                    try:
                        t2 = _ms(run)
                        print(f"  BLOCK_N {block_n:3d} warps {warps} programs {mult}x SMs: {t2 * 1e3:.0f} us")
                    except Exception as e:  # noqa: BLE001
                        print(f"  BLOCK_N {block_n:3d} warps {warps} programs {mult}x SMs: {type(e).__name__}")
                    finally:
                        tk.launch_config = real_config
        torch.cuda.empty_cache()


def triton_cdiv(a, b):
    return -(-a // b)


if __name__ == "__main__":
    which = sys.argv[1:] or ["softmax", "estep"]
    print(torch.cuda.get_device_name(0))
    if "softmax" in which:
        sweep_softmax()
    if "estep" in which:
        sweep_estep()
