"""Triton kernels of fastlearn.ops.diffusion_step: the fused sampler step, its noise, and the
per-sample statistics of guidance rescale.

Noise layout (the same as csrc/include/fastlearn/philox.h): element i drawn at ``offset`` has
counter c = offset + i; tile t = c // NOISE_TILE holds NOISE_TILE / 4 Philox groups, and lane
k of ``tl.randn4x(seed, t * GROUPS + j)`` is counter t * NOISE_TILE + k * GROUPS + j. One
program owns one tile: one Philox call per group feeds four contiguous runs of GROUPS
elements, so every load and store is contiguous. ``offset`` arrives split as
(OFFSET_TILES, OFFSET_REM); with OFFSET_REM == 0 (``ALIGNED``) the tiles start on element
boundaries that are multiples of NOISE_TILE and the loads vectorise fully.

Coefficients are read from the device table (row STEP, or the row held at STEP_PTR), the
seed from SEED_PTR or an int: nothing here needs the host, so a step can be captured in a
CUDA graph and replayed with new seeds.
"""

import triton
import triton.language as tl

NOISE_TILE = 2048  # kNoiseTile in csrc/include/fastlearn/philox.h
STATS_BLOCK = 2048  # elements of one sample reduced by one program of the rescale statistics
FACTOR_BLOCK = 128  # partial statistics merged per iteration by the factor kernel


@triton.jit
def _step_run(X, M, U, FACTOR, PREV, X0, offs, z, N, PER_SAMPLE, w, clip, ax, am, ex, em, e0, p0, px, pe,
              sigma, HAS_UNCOND: tl.constexpr, RESCALE: tl.constexpr, CLIP: tl.constexpr,
              ALIGNED: tl.constexpr, IDX32: tl.constexpr, ACC: tl.constexpr):
    # One contiguous run of the tile (one Philox lane): x, m, u read once, prev and x0 written once.
    if ALIGNED:
        mask = offs < N
    else:
        mask = (offs >= 0) & (offs < N)
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(M + offs, mask=mask, other=0.0).to(ACC)
    if HAS_UNCOND:
        u = tl.load(U + offs, mask=mask, other=0.0).to(ACC)
        g = u + w * (g - u)
    if RESCALE:  # the sample's factor; int32 division when the indices fit (int64 division is slow)
        if IDX32:
            b = offs.to(tl.int32) // PER_SAMPLE
        else:
            b = offs // PER_SAMPLE
        g = g * tl.load(FACTOR + b, mask=mask, other=1.0)
    x0 = ax * x + am * g
    if CLIP:
        x0 = tl.where(x0 < -clip, -clip, tl.where(x0 > clip, clip, x0))  # NaN passes, as torch.clamp
    eps = ex * x + em * g + e0 * x0
    prev = p0 * x0 + px * x + pe * eps + sigma * z.to(ACC)
    tl.store(PREV + offs, prev.to(PREV.dtype.element_ty), mask=mask)
    tl.store(X0 + offs, x0.to(X0.dtype.element_ty), mask=mask)


@triton.jit
def _diffusion_step_kernel(X, M, U, COEFFS, STEP_PTR, STEP, NUM_STEPS, SEED_PTR, SEED, OFFSET_TILES, OFFSET_REM,
                           FACTOR, PREV, X0, N, PER_SAMPLE, w, clip,
                           HAS_UNCOND: tl.constexpr, RESCALE: tl.constexpr, CLIP: tl.constexpr,
                           STEP_FROM_PTR: tl.constexpr, SEED_FROM_PTR: tl.constexpr, ALIGNED: tl.constexpr,
                           IDX32: tl.constexpr, ACC: tl.constexpr, TILE: tl.constexpr):
    # X, M, U, PREV, X0: N contiguous elements (batch x PER_SAMPLE); COEFFS: NUM_STEPS x 9.
    GROUPS: tl.constexpr = TILE // 4
    pid = tl.program_id(0).to(tl.int64)
    if STEP_FROM_PTR:
        row = tl.load(STEP_PTR).to(tl.int64)
    else:
        row = pid * 0 + STEP
    # A step tensor out of range cannot raise without a host sync: its outputs become NaN.
    ok = (row >= 0) & (row < NUM_STEPS)
    C = COEFFS + tl.where(ok, row, 0) * 9
    nan = float("nan")
    ax = tl.load(C + 0, mask=ok, other=nan).to(ACC)
    am = tl.load(C + 1, mask=ok, other=nan).to(ACC)
    ex = tl.load(C + 2, mask=ok, other=nan).to(ACC)
    em = tl.load(C + 3, mask=ok, other=nan).to(ACC)
    e0 = tl.load(C + 4, mask=ok, other=nan).to(ACC)
    p0 = tl.load(C + 5, mask=ok, other=nan).to(ACC)
    px = tl.load(C + 6, mask=ok, other=nan).to(ACC)
    pe = tl.load(C + 7, mask=ok, other=nan).to(ACC)
    sigma = tl.load(C + 8, mask=ok, other=nan).to(ACC)
    if SEED_FROM_PTR:
        seed = tl.load(SEED_PTR)
    else:
        seed = pid * 0 + SEED
    tile = OFFSET_TILES + pid
    if ALIGNED:  # element of the tile's first counter (a multiple of TILE: vector loads)
        start = pid * TILE
    else:
        start = pid * TILE - OFFSET_REM
    j = tl.arange(0, GROUPS)
    if sigma != 0.0:
        z0, z1, z2, z3 = tl.randn4x(seed, tile * GROUPS + j)
    else:
        z0 = tl.zeros([GROUPS], tl.float32)
        z1 = tl.zeros([GROUPS], tl.float32)
        z2 = tl.zeros([GROUPS], tl.float32)
        z3 = tl.zeros([GROUPS], tl.float32)
    _step_run(X, M, U, FACTOR, PREV, X0, start + j, z0, N, PER_SAMPLE, w, clip, ax, am, ex, em, e0, p0, px, pe,
              sigma, HAS_UNCOND, RESCALE, CLIP, ALIGNED, IDX32, ACC)
    _step_run(X, M, U, FACTOR, PREV, X0, start + GROUPS + j, z1, N, PER_SAMPLE, w, clip, ax, am, ex, em, e0, p0,
              px, pe, sigma, HAS_UNCOND, RESCALE, CLIP, ALIGNED, IDX32, ACC)
    _step_run(X, M, U, FACTOR, PREV, X0, start + 2 * GROUPS + j, z2, N, PER_SAMPLE, w, clip, ax, am, ex, em, e0,
              p0, px, pe, sigma, HAS_UNCOND, RESCALE, CLIP, ALIGNED, IDX32, ACC)
    _step_run(X, M, U, FACTOR, PREV, X0, start + 3 * GROUPS + j, z3, N, PER_SAMPLE, w, clip, ax, am, ex, em, e0,
              p0, px, pe, sigma, HAS_UNCOND, RESCALE, CLIP, ALIGNED, IDX32, ACC)


@triton.jit
def _store_noise(OUT, offs, z, N, ALIGNED: tl.constexpr):
    if ALIGNED:
        mask = offs < N
    else:
        mask = (offs >= 0) & (offs < N)
    tl.store(OUT + offs, z.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _philox_normal_kernel(OUT, SEED_PTR, SEED, OFFSET_TILES, OFFSET_REM, N, SEED_FROM_PTR: tl.constexpr,
                          ALIGNED: tl.constexpr, TILE: tl.constexpr):
    # OUT[i] = N(seed, offset + i): the noise the step kernel adds, on its own.
    GROUPS: tl.constexpr = TILE // 4
    pid = tl.program_id(0).to(tl.int64)
    if SEED_FROM_PTR:
        seed = tl.load(SEED_PTR)
    else:
        seed = pid * 0 + SEED
    if ALIGNED:
        start = pid * TILE
    else:
        start = pid * TILE - OFFSET_REM
    j = tl.arange(0, GROUPS)
    z0, z1, z2, z3 = tl.randn4x(seed, (OFFSET_TILES + pid) * GROUPS + j)
    _store_noise(OUT, start + j, z0, N, ALIGNED)
    _store_noise(OUT, start + GROUPS + j, z1, N, ALIGNED)
    _store_noise(OUT, start + 2 * GROUPS + j, z2, N, ALIGNED)
    _store_noise(OUT, start + 3 * GROUPS + j, z3, N, ALIGNED)


@triton.jit
def _rescale_partial_kernel(M, U, PART, PER_SAMPLE, CHUNKS, w, ACC: tl.constexpr, BLOCK: tl.constexpr):
    # Program (b, p): mean and M2 of the conditional c and the guided g = u + w (c - u) over
    # elements [p * BLOCK, (p + 1) * BLOCK) of sample b, into PART[b, p, 0:4].
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    offs = p * BLOCK + tl.arange(0, BLOCK)
    mask = offs < PER_SAMPLE
    base = b * PER_SAMPLE
    c = tl.load(M + base + offs, mask=mask, other=0.0).to(ACC)
    u = tl.load(U + base + offs, mask=mask, other=0.0).to(ACC)
    g = u + w * (c - u)
    count = tl.minimum(PER_SAMPLE - p * BLOCK, BLOCK).to(ACC)
    mean_c = tl.sum(c, axis=0) / count
    mean_g = tl.sum(tl.where(mask, g, 0.0), axis=0) / count
    dc = tl.where(mask, c - mean_c, 0.0)
    dg = tl.where(mask, g - mean_g, 0.0)
    out = PART + (b * CHUNKS + p) * 4
    tl.store(out + 0, mean_c)
    tl.store(out + 1, tl.sum(dc * dc, axis=0))
    tl.store(out + 2, mean_g)
    tl.store(out + 3, tl.sum(dg * dg, axis=0))


@triton.jit
def _rescale_factor_kernel(PART, FACTOR, PER_SAMPLE, CHUNKS, r, ACC: tl.constexpr, CHUNK: tl.constexpr,
                           BLOCK_P: tl.constexpr):
    # Merge sample b's partial (mean, M2) (Chan et al.): FACTOR[b] = r std(c) / std(g) + 1 - r
    # with unbiased standard deviations, as diffusers' rescale_noise_cfg; 1 where std(g) == 0.
    b = tl.program_id(0).to(tl.int64)
    base = PART + b * CHUNKS * 4
    sum_c = tl.zeros([BLOCK_P], ACC)
    sum_g = tl.zeros([BLOCK_P], ACC)
    for start in range(0, CHUNKS, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        mask = p < CHUNKS
        count = tl.where(mask, tl.minimum(PER_SAMPLE - p * CHUNK, CHUNK), 0).to(ACC)
        sum_c += count * tl.load(base + p * 4 + 0, mask=mask, other=0.0)
        sum_g += count * tl.load(base + p * 4 + 2, mask=mask, other=0.0)
    mean_c = tl.sum(sum_c, axis=0) / PER_SAMPLE
    mean_g = tl.sum(sum_g, axis=0) / PER_SAMPLE
    m2_c = tl.zeros([BLOCK_P], ACC)
    m2_g = tl.zeros([BLOCK_P], ACC)
    for start in range(0, CHUNKS, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        mask = p < CHUNKS
        count = tl.where(mask, tl.minimum(PER_SAMPLE - p * CHUNK, CHUNK), 0).to(ACC)
        dc = tl.load(base + p * 4 + 0, mask=mask, other=0.0) - mean_c
        dg = tl.load(base + p * 4 + 2, mask=mask, other=0.0) - mean_g
        m2_c += tl.load(base + p * 4 + 1, mask=mask, other=0.0) + count * dc * dc
        m2_g += tl.load(base + p * 4 + 3, mask=mask, other=0.0) + count * dg * dg
    std_c = tl.sqrt(tl.sum(m2_c, axis=0) / (PER_SAMPLE - 1))
    std_g = tl.sqrt(tl.sum(m2_g, axis=0) / (PER_SAMPLE - 1))
    safe_g = tl.where(std_g == 0.0, 1.0, std_g)
    factor = tl.where(std_g == 0.0, 1.0, r * (std_c / safe_g) + (1.0 - r))
    tl.store(FACTOR + b, factor.to(FACTOR.dtype.element_ty))
