"""Triton batched Gaussian log-density: out[n, k] = OFFSET[k] - ||(x_n - mu_k) P_k||^2 / 2.

One program owns BLOCK_N points and one component k. The centred tile (BLOCK_N x BLOCK_D,
BLOCK_D = D rounded up to a power of two, at least 16) stays in registers; the product with
P_k is taken in column slabs of BLOCK_J (tl.dot, IEEE fp32 so results match the CPU kernel
to fp32 rounding), each slab squared and summed at once, so y = (x - mu) P is never stored.
COV: 0 full (P: K x D x D), 1 tied (P: D x D, shared), 2 diag (P: K x D, elementwise).
"""

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2


@triton.jit
def _gaussian_log_prob_kernel(X, MU, P, OFFSET, OUT, N, D, K, stride_x_n, stride_p_k,
                              COV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                              BLOCK_J: tl.constexpr, PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    mask_d = offs_d < D
    x = tl.load(X + offs_n[:, None].to(tl.int64) * stride_x_n + offs_d[None, :],
                mask=mask_n[:, None] & mask_d[None, :], other=0.0)
    mu = tl.load(MU + k * D + offs_d, mask=mask_d, other=0.0)
    xc = tl.where(mask_d[None, :], x - mu[None, :], 0.0)
    if COV == 2:
        p = tl.load(P + k * D + offs_d, mask=mask_d, other=0.0)
        q = tl.sum(xc * xc * (p * p)[None, :], axis=1)
    else:
        q = tl.zeros([BLOCK_N], dtype=xc.dtype)
        p_base = P + k * stride_p_k
        for j0 in range(0, BLOCK_D, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            p = tl.load(p_base + offs_d[:, None] * D + offs_j[None, :],
                        mask=mask_d[:, None] & (offs_j[None, :] < D), other=0.0)
            y = tl.dot(xc, p, input_precision=PRECISION)
            q += tl.sum(y * y, axis=1)
    off = tl.load(OFFSET + k)
    out = off - 0.5 * q
    tl.store(OUT + offs_n.to(tl.int64) * K + k, out.to(OUT.dtype.element_ty), mask=mask_n)


def launch_config(n, d, k, dtype_is_fp64):
    """Tiles and grid for N points, D features, K components.

    BLOCK_N = 64 points a program (a 64 x BLOCK_D fp32 tile is 8 KiB of registers at D = 32);
    P_k slabs of BLOCK_J = min(BLOCK_D, 64) columns keep the tl.dot operands at most
    BLOCK_D x 64. fp64 uses smaller point tiles (its dot has half the registers to spare).
    """
    block_d = max(16, next_power_of_2(max(d, 1)))
    block_j = min(block_d, 64)
    block_n = 32 if (dtype_is_fp64 or block_d > 128) else 64
    num_warps = 4 if block_d <= 64 else 8
    grid = (cdiv(n, block_n), k)
    return dict(BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_J=block_j, num_warps=num_warps), grid
