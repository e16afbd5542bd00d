"""Triton one_hot: out[n, k] = (labels[n] == k) for a (N,) label vector and an (N, C) int64
output, one program per tile of BLOCK_N labels x BLOCK_C classes (range checks are done by
the caller without a host synchronisation)."""

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2


@triton.jit
def _one_hot_kernel(LABELS, OUT, N, C, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    labels = tl.load(LABELS + offs_n, mask=offs_n < N, other=-1).to(tl.int64)
    hot = (labels[:, None] == offs_c[None, :]).to(tl.int64)
    mask = (offs_n[:, None] < N) & (offs_c[None, :] < C)
    tl.store(OUT + offs_n[:, None].to(tl.int64) * C + offs_c[None, :], hot, mask=mask)


def launch_config(n, c):
    """(meta, grid) for N labels and C classes: tiles of 64 x up-to-128 int64 (64 KiB)."""
    block_c = min(next_power_of_2(max(c, 1)), 128)
    block_n = 64
    return dict(BLOCK_N=block_n, BLOCK_C=block_c, num_warps=4), (cdiv(n, block_n), cdiv(c, block_c))
