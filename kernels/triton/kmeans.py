"""Triton k-means assignment fused with the centre update's sums: per block of points, the
nearest centre (no N x K distance matrix), its exact squared distance, the weighted inertia,
and the per-cluster weighted sums and counts of the next Lloyd step.

||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: the argmin needs only ||c||^2 - 2 x.c, a tl.dot per
tile of BLOCK_K centres with a running minimum (first index wins ties, as the CPU kernel);
the winner's distance is then recomputed directly as ||x - c||^2 so the inertia does not
suffer the expansion's cancellation. Persistent programs: program g walks blocks g, g + G,
... and adds its sums into its own float64 slot (G x K x D; summed by the launcher), so the
result is deterministic and memory does not grow with N.
"""

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2


@triton.jit
def _kmeans_assign_kernel(X, C, C_SQ, SW,                        # N x D, K x D, K, N sample weights
                          LABELS, MIN_DIST,                     # N int64, N (written when asked)
                          PART_INERTIA, PART_SUMS, PART_COUNTS,  # G, G x K x D, G x K (float64)
                          N, D, K, stride_x_n,
                          WRITE_MIN_DIST: tl.constexpr, STATS: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    n_blocks = tl.cdiv(N, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    inertia = tl.zeros([BLOCK_N], dtype=tl.float64)
    for blk in range(pid, n_blocks, n_progs):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        x_ptrs = X + offs_n[:, None].to(tl.int64) * stride_x_n + offs_d[None, :]
        x = tl.load(x_ptrs, mask=mask_n[:, None] & mask_d[None, :], other=0.0)    # BLOCK_N x BLOCK_D
        best = tl.full([BLOCK_N], float("inf"), dtype=x.dtype)
        arg = tl.zeros([BLOCK_N], dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            c = tl.load(C + offs_k[:, None] * D + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :],
                        other=0.0)                                            # BLOCK_K x BLOCK_D
            c_sq = tl.load(C_SQ + offs_k, mask=mask_k, other=0.0)
            dist = c_sq[None, :] - 2.0 * tl.dot(x, tl.trans(c), input_precision=PRECISION)
            dist = tl.where(mask_k[None, :], dist, float("inf"))
            tile_min = tl.min(dist, axis=1)
            tile_arg = tl.argmin(dist, axis=1).to(tl.int32) + k0
            better = tile_min < best
            best = tl.where(better, tile_min, best)
            arg = tl.where(better, tile_arg, arg)
        cw = tl.load(C + arg[:, None] * D + offs_d[None, :], mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        diff = tl.where(mask_d[None, :], x - cw, 0.0)
        d2 = tl.sum(diff * diff, axis=1)
        w = tl.load(SW + offs_n, mask=mask_n, other=0.0)
        inertia += tl.where(mask_n, w.to(tl.float64) * d2.to(tl.float64), 0.0)
        tl.store(LABELS + offs_n, arg.to(tl.int64), mask=mask_n)
        if WRITE_MIN_DIST:
            tl.store(MIN_DIST + offs_n, d2, mask=mask_n)
        if STATS:
            for k0 in range(0, K, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < K
                onehot = tl.where((arg[:, None] == offs_k[None, :]) & mask_n[:, None], w[:, None], 0.0)
                sums = tl.dot(tl.trans(onehot.to(x.dtype)), x, input_precision=PRECISION)  # BLOCK_K x BLOCK_D
                s_ptrs = PART_SUMS + (pid * K + offs_k[:, None]).to(tl.int64) * D + offs_d[None, :]
                mask_2 = mask_k[:, None] & mask_d[None, :]
                tl.store(s_ptrs, tl.load(s_ptrs, mask=mask_2, other=0.0) + sums.to(tl.float64), mask=mask_2)
                c_ptrs = PART_COUNTS + pid * K + offs_k
                counts = tl.sum(onehot.to(tl.float64), axis=0)
                tl.store(c_ptrs, tl.load(c_ptrs, mask=mask_k, other=0.0) + counts, mask=mask_k)
    tl.store(PART_INERTIA + pid, tl.sum(inertia, axis=0))


def launch_config(n, d, k, dtype_is_fp64, n_sm=None):
    """BLOCK_D = D rounded up to a power of two (>= 16), centres in tiles of BLOCK_K <= 64,
    BLOCK_N = 128 points (64 for fp64 or D > 64); programs: 4 a multiprocessor, at most the
    number of blocks (4 under the interpreter)."""
    block_d = max(16, next_power_of_2(max(d, 1)))
    block_k = min(64, max(16, next_power_of_2(max(k, 1))))
    block_n = 64 if (dtype_is_fp64 or block_d > 64) else 128
    if block_d > 256:
        block_n = 32
    num_warps = 4 if block_n * block_d <= 8192 else 8
    programs = max(1, min(4 * (n_sm or 1), cdiv(max(n, 1), block_n)))
    return dict(BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_K=block_k, num_warps=num_warps), programs
