"""Triton softmax / log_softmax over one dimension, forward and backward.

A contiguous tensor is seen as (outer, length, inner) around ``dim``. One program owns one
``outer`` slab and ``BLOCK_I`` contiguous inner columns, and reduces over ``length`` in tiles
of ``BLOCK_L`` rows. Rows of the last dim are the case inner == 1 (Triton specialises an int
argument equal to 1, so those loads are contiguous and vectorised). When the whole length
fits one tile (``SINGLE_TILE``) the data is read once and written once; otherwise an online
max-and-sum (m_i, l_i as in the flash-attention paper) makes one read pass, then a write pass.
"""

import triton
import triton.language as tl

# Largest tile (elements) one program holds; beyond it the online two-pass loop is used.
MAX_TILE = 8192


@triton.jit
def _softmax_fwd_kernel(X, Y, LENGTH, INNER, LOG: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr,
                        BLOCK_I: tl.constexpr, SINGLE_TILE: tl.constexpr):
    pid = tl.program_id(0)
    n_iblocks = tl.cdiv(INNER, BLOCK_I)
    o = (pid // n_iblocks).to(tl.int64)
    offs_i = (pid % n_iblocks) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < INNER
    base = o * LENGTH * INNER
    offs_l = tl.arange(0, BLOCK_L)
    if SINGLE_TILE:
        offs = base + offs_l[:, None] * INNER + offs_i[None, :]
        mask = (offs_l[:, None] < LENGTH) & mask_i[None, :]
        x = tl.load(X + offs, mask=mask, other=-float("inf")).to(ACC)
        m_i = tl.max(x, axis=0)
        p = tl.exp(x - m_i[None, :])
        l_i = tl.sum(tl.where(mask, p, 0.0), axis=0)
        if LOG:
            y = x - (m_i + tl.log(l_i))[None, :]
        else:
            y = p / l_i[None, :]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    else:
        m_i = tl.full([BLOCK_I], -float("inf"), ACC)
        l_i = tl.zeros([BLOCK_I], ACC)
        for start in range(0, LENGTH, BLOCK_L):
            rows = start + offs_l
            offs = base + rows[:, None].to(tl.int64) * INNER + offs_i[None, :]
            mask = (rows[:, None] < LENGTH) & mask_i[None, :]
            x = tl.load(X + offs, mask=mask, other=-float("inf")).to(ACC)
            m_new = tl.maximum(m_i, tl.max(x, axis=0))
            empty = m_new == -float("inf")  # nothing but -inf so far: keep the sum at 0
            alpha = tl.where(empty, 0.0, tl.exp(m_i - m_new))
            p = tl.where(empty[None, :] | ~mask, 0.0, tl.exp(x - m_new[None, :]))
            l_i = l_i * alpha + tl.sum(p, axis=0)
            m_i = m_new
        shift = m_i + tl.log(l_i)
        for start in range(0, LENGTH, BLOCK_L):
            rows = start + offs_l
            offs = base + rows[:, None].to(tl.int64) * INNER + offs_i[None, :]
            mask = (rows[:, None] < LENGTH) & mask_i[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            if LOG:
                y = x - shift[None, :]
            else:
                y = tl.exp(x - m_i[None, :]) / l_i[None, :]
            tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(G, Y, GX, LENGTH, INNER, LOG: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr,
                        BLOCK_I: tl.constexpr, SINGLE_TILE: tl.constexpr):
    # softmax: gx = y * (g - sum(g * y)); log_softmax: gx = g - exp(y) * sum(g)
    pid = tl.program_id(0)
    n_iblocks = tl.cdiv(INNER, BLOCK_I)
    o = (pid // n_iblocks).to(tl.int64)
    offs_i = (pid % n_iblocks) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < INNER
    base = o * LENGTH * INNER
    offs_l = tl.arange(0, BLOCK_L)
    if SINGLE_TILE:
        offs = base + offs_l[:, None] * INNER + offs_i[None, :]
        mask = (offs_l[:, None] < LENGTH) & mask_i[None, :]
        g = tl.load(G + offs, mask=mask, other=0.0).to(ACC)
        y = tl.load(Y + offs, mask=mask, other=0.0).to(ACC)
        if LOG:
            r = tl.sum(g, axis=0)
            gx = g - tl.exp(y) * r[None, :]
        else:
            r = tl.sum(g * y, axis=0)
            gx = y * (g - r[None, :])
        tl.store(GX + offs, gx.to(GX.dtype.element_ty), mask=mask)
    else:
        r = tl.zeros([BLOCK_I], ACC)
        for start in range(0, LENGTH, BLOCK_L):
            rows = start + offs_l
            offs = base + rows[:, None].to(tl.int64) * INNER + offs_i[None, :]
            mask = (rows[:, None] < LENGTH) & mask_i[None, :]
            g = tl.load(G + offs, mask=mask, other=0.0).to(ACC)
            if LOG:
                r += tl.sum(g, axis=0)
            else:
                y = tl.load(Y + offs, mask=mask, other=0.0).to(ACC)
                r += tl.sum(g * y, axis=0)
        for start in range(0, LENGTH, BLOCK_L):
            rows = start + offs_l
            offs = base + rows[:, None].to(tl.int64) * INNER + offs_i[None, :]
            mask = (rows[:, None] < LENGTH) & mask_i[None, :]
            g = tl.load(G + offs, mask=mask, other=0.0).to(ACC)
            y = tl.load(Y + offs, mask=mask, other=0.0).to(ACC)
            if LOG:
                gx = g - tl.exp(y) * r[None, :]
            else:
                gx = y * (g - r[None, :])
            tl.store(GX + offs, gx.to(GX.dtype.element_ty), mask=mask)


def launch_config(outer, length, inner):
    """Tile sizes, grid and warps for an (outer, length, inner) problem.

    Rows (inner == 1): one program per row; a row of up to MAX_TILE elements is one tile
    (e.g. 4096 fp32 = 16 KiB in registers across 8 warps), longer rows loop over 4096-tiles.
    Columns: up to 64 contiguous columns per program so each tile row is a coalesced load.
    """
    block_i = 1 if inner == 1 else min(triton.next_power_of_2(inner), 64)
    block_l_full = triton.next_power_of_2(max(length, 1))
    single = block_l_full * block_i <= MAX_TILE
    block_l = block_l_full if single else max(MAX_TILE // 2 // block_i, 1)
    tile = block_l * block_i
    num_warps = 16 if tile >= 8192 else 8 if tile >= 2048 else 4 if tile >= 512 else 1
    grid = (outer * triton.cdiv(inner, block_i),)
    return dict(BLOCK_L=block_l, BLOCK_I=block_i, SINGLE_TILE=single, num_warps=num_warps), grid
