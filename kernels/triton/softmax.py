"""Triton softmax / log_softmax over one dimension, forward and backward.

A contiguous tensor is seen as (outer, length, inner) around ``dim``. One program owns one
``outer`` slab and ``BLOCK_I`` contiguous inner columns, and reduces over ``length`` in tiles
of ``BLOCK_L`` rows. Rows of the last dim are the case inner == 1 (Triton specialises an int
argument equal to 1, so those loads are contiguous and vectorised). When the whole length
fits one tile (``SINGLE_TILE``) the data is read once and written once; otherwise an online
max-and-sum (m_i, l_i as in the flash-attention paper) makes one read pass, then a write pass.

Rows of the last dim (inner == 1) have kernels of their own (``_softmax_rows_*``): 1-D row
tiles, ROWS short rows a program, so every load and store is a contiguous vector access
(the (length, 1) tiles of the general kernels are not vectorised by Triton). A row of up to
MAX_ROW_TILE elements is read once and written once; a longer row makes the online pass,
its tiles kept in L2 (evict_last) for the second pass, which then streams (evict_first).
"""

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2

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
    block_i = 1 if inner == 1 else min(next_power_of_2(inner), 64)
    block_l_full = next_power_of_2(max(length, 1))
    single = block_l_full * block_i <= MAX_TILE
    block_l = block_l_full if single else max(MAX_TILE // 2 // block_i, 1)
    tile = block_l * block_i
    num_warps = 16 if tile >= 8192 else 8 if tile >= 2048 else 4 if tile >= 512 else 1
    grid = (outer * cdiv(inner, block_i),)
    return dict(BLOCK_L=block_l, BLOCK_I=block_i, SINGLE_TILE=single, num_warps=num_warps), grid


# Largest row (elements) a rows program holds in registers: 16 KiB of fp32 over 16 warps is
# 32 values a thread.
MAX_ROW_TILE = 16384


@triton.jit
def _row_tile(pid, N_ROWS, LENGTH, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Offsets and mask of the ROWS x BLOCK tile of program ``pid`` (rows pid * ROWS on)."""
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    return rows[:, None].to(tl.int64) * LENGTH + cols[None, :], (rows[:, None] < N_ROWS) & (cols[None, :] < LENGTH)


@triton.jit
def _softmax_rows_fwd_kernel(X, Y, N_ROWS, LENGTH, LOG: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
                             ROWS: tl.constexpr, SINGLE_TILE: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    if SINGLE_TILE:
        offs, mask = _row_tile(pid, N_ROWS, LENGTH, BLOCK, ROWS)
        x = tl.load(X + offs, mask=mask, other=-float("inf"), eviction_policy="evict_first").to(ACC)
        m = tl.max(x, axis=1)
        p = tl.exp(x - m[:, None])
        s = tl.sum(tl.where(mask, p, 0.0), axis=1)
        if LOG:
            y = x - (m + tl.log(s))[:, None]
        else:
            y = p / s[:, None]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask, cache_modifier=".cs")
    else:  # one long row a program (ROWS == 1)
        base = pid.to(tl.int64) * LENGTH
        m_i = tl.full([BLOCK], -float("inf"), ACC)   # per-lane running max and sum, merged at the end
        l_i = tl.zeros([BLOCK], ACC)
        for start in range(0, LENGTH, BLOCK):
            mask = start + cols < LENGTH
            x = tl.load(X + base + start + cols, mask=mask, other=-float("inf"),
                        eviction_policy="evict_last").to(ACC)
            m_new = tl.maximum(m_i, x)
            empty = m_new == -float("inf")  # nothing but -inf so far in this lane: its sum stays 0
            l_i = tl.where(empty, 0.0, l_i * tl.exp(m_i - m_new) + tl.exp(x - m_new))
            m_i = m_new
        m = tl.max(m_i, axis=0)
        s = tl.sum(tl.where(m_i == -float("inf"), 0.0, l_i * tl.exp(m_i - m)), axis=0)
        shift = m + tl.log(s)
        for start in range(0, LENGTH, BLOCK):
            mask = start + cols < LENGTH
            x = tl.load(X + base + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
            if LOG:
                y = x - shift
            else:
                y = tl.exp(x - m) / s
            tl.store(Y + base + start + cols, y.to(Y.dtype.element_ty), mask=mask, cache_modifier=".cs")


@triton.jit
def _softmax_rows_bwd_kernel(G, Y, GX, N_ROWS, LENGTH, LOG: tl.constexpr, ACC: tl.constexpr,
                             BLOCK: tl.constexpr, ROWS: tl.constexpr, SINGLE_TILE: tl.constexpr):
    # softmax: gx = y * (g - sum(g * y)); log_softmax: gx = g - exp(y) * sum(g)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    if SINGLE_TILE:
        offs, mask = _row_tile(pid, N_ROWS, LENGTH, BLOCK, ROWS)
        g = tl.load(G + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
        y = tl.load(Y + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
        if LOG:
            gx = g - tl.exp(y) * tl.sum(g, axis=1)[:, None]
        else:
            gx = y * (g - tl.sum(g * y, axis=1)[:, None])
        tl.store(GX + offs, gx.to(GX.dtype.element_ty), mask=mask, cache_modifier=".cs")
    else:
        base = pid.to(tl.int64) * LENGTH
        r = tl.zeros([BLOCK], ACC)
        for start in range(0, LENGTH, BLOCK):
            mask = start + cols < LENGTH
            g = tl.load(G + base + start + cols, mask=mask, other=0.0, eviction_policy="evict_last").to(ACC)
            if LOG:
                r += g
            else:
                y = tl.load(Y + base + start + cols, mask=mask, other=0.0, eviction_policy="evict_last").to(ACC)
                r += g * y
        total = tl.sum(r, axis=0)
        for start in range(0, LENGTH, BLOCK):
            mask = start + cols < LENGTH
            g = tl.load(G + base + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
            y = tl.load(Y + base + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
            if LOG:
                gx = g - tl.exp(y) * total
            else:
                gx = y * (g - total)
            tl.store(GX + base + start + cols, gx.to(GX.dtype.element_ty), mask=mask, cache_modifier=".cs")


def rows_launch_config(n_rows, length, elem_bytes=4, tile_bytes=None, num_warps=None):
    """Tiles, grid and warps of the rows kernels. Short rows go ROWS to a program, about
    ``tile_bytes`` (16 KiB) of them; a row of up to MAX_ROW_TILE elements is one tile; longer
    rows loop over tiles of MAX_ROW_TILE elements with 32 warps (16 values a thread). On an
    H100 (bench/gpu/sweep.py, 2026-11-22) rows of 65536 fp32 moved 94% of the copy bandwidth
    so, against 65-74% with 2048-8192-element tiles: the bigger tile keeps fewer rows in flight,
    so the second pass finds its row in L2. ``num_warps`` otherwise: one for each 128 elements
    of the tile (4 fp32 a thread, one 16-byte vector), 4 to 16."""
    block_full = next_power_of_2(max(length, 1))
    single = block_full <= MAX_ROW_TILE
    if not single:
        return dict(BLOCK=MAX_ROW_TILE, ROWS=1, SINGLE_TILE=False, num_warps=num_warps or 32), (n_rows,)
    tile_bytes = tile_bytes or 16384
    rows = max(1, min(tile_bytes // elem_bytes // block_full, next_power_of_2(max(n_rows, 1))))
    if num_warps is None:
        num_warps = max(4, min(16, block_full * rows // 128 // max(1, 4 // elem_bytes)))
    return dict(BLOCK=block_full, ROWS=rows, SINGLE_TILE=True, num_warps=num_warps), (cdiv(n_rows, rows),)
