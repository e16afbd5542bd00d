"""Triton fused E-step of a Gaussian mixture: one pass over X gives, per point, the weighted
log-density of every component, their log-sum-exp (log_norm) and responsibilities, and the
M-step's sufficient statistics, without an N x K matrix in memory.

Persistent programs: program g walks the point blocks g, g + G, g + 2G, ... and adds each
block's statistics (float32 within the block, as the CPU kernel does) into its own float64
slot of the partial buffers (read-modify-write by one program only: deterministic, no
atomics). The launcher sums the G slots afterwards (the second stage), so memory is
G x K x D x D, independent of N. For a block of BLOCK_N points and component k:
  full: xc = x - mu_k; q = ||xc P_k||^2 as tl.dot over column slabs of P_k (BLOCK_J wide)
        (or, with ALLK_J, q_k = ||(x - c) P_k - (mu_k - c) P_k||^2 for ALLK_J / BLOCK_D
        components a product, as the tied case);
        scatter S_k += (r_k xc)^T xc as tl.dot, about the current mean mu_k (as the CPU
        kernel: no cancellation from large offsets; the M-step moves it to the new mean)
  tied: z = (x - c) P once per block (slabs), q = ||z - (mu_k - c) P||^2 per component, c the
        mean of the means (the difference of two large products would cancel in float32
        for data far from the origin); first moments
  diag: q = sum (x - mu_k)^2 p_k^2 elementwise; first and second moments about mu_k
The K log-densities live in a BLOCK_N x BLOCK_K register tile W (column k set with
tl.where), so the log-sum-exp and the responsibilities need no second pass over P.
_gaussian_full_stats_kernel is the other way to the full-covariance statistics: a second
launch, one program a (component, chunk of points), after this kernel wrote log_norm.
"""

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2


@triton.jit
def _gaussian_estep_kernel(X, MU, P, B, CENTER, OFFSET,        # N x D, K x D, P (see COV), K x D, D, K
                           LOG_NORM, LABELS, RESP,            # N, N (int64), N x K: written when asked
                           PART_LL, PART_NK, PART_S1, PART_S2,  # G; G x K; G x K x D; G x K x D x D | G x K x D
                           N, D, K, stride_x_n, stride_p_k,
                           COV: tl.constexpr, WRITE_LOG_NORM: tl.constexpr, WRITE_LABELS: tl.constexpr,
                           WRITE_RESP: tl.constexpr, STATS: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr,
                           PRECISION: tl.constexpr, PRECISION_S: tl.constexpr = "tf32x3",
                           S1_DOT: tl.constexpr = False, XT_LOAD: tl.constexpr = False,
                           ALLK_J: tl.constexpr = 0):
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    n_blocks = tl.cdiv(N, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    offs_k = tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    off = tl.load(OFFSET + offs_k, mask=mask_k, other=0.0)
    ll = tl.zeros([BLOCK_N], dtype=tl.float64)
    for blk in range(pid, n_blocks, n_progs):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        x = tl.load(X + offs_n[:, None].to(tl.int64) * stride_x_n + offs_d[None, :],
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)      # BLOCK_N x BLOCK_D
        # 1. W[n, k] = log w_k + log N(x_n | mu_k, Sigma_k)  (offset holds log w_k + log det P_k - D/2 log 2 pi)
        W = tl.zeros([BLOCK_N, BLOCK_K], dtype=x.dtype)
        if COV == 1:
            c = tl.load(CENTER + offs_d, mask=mask_d, other=0.0)
            xt = tl.where(mask_d[None, :], x - c[None, :], 0.0)
            for j0 in range(0, BLOCK_D, BLOCK_J):
                offs_j = j0 + tl.arange(0, BLOCK_J)
                mask_j = offs_j < D
                p = tl.load(P + offs_d[:, None] * D + offs_j[None, :], mask=mask_d[:, None] & mask_j[None, :],
                            other=0.0)                                     # BLOCK_D x BLOCK_J
                z = tl.dot(xt, p, input_precision=PRECISION)              # BLOCK_N x BLOCK_J
                for k in range(K):
                    b = tl.load(B + k * D + offs_j, mask=mask_j, other=0.0)
                    diff = tl.where(mask_j[None, :], z - b[None, :], 0.0)
                    q = tl.sum(diff * diff, axis=1)
                    W += tl.where(offs_k[None, :] == k, q[:, None], 0.0)
        elif COV == 0 and ALLK_J > 0:
            # all components' products at once, ALLK_J columns (ALLK_J / BLOCK_D components) a
            # slab: (x - c) [P_k0 | P_k0+1 | ...] - [b_k0 | ...], b_k = (mu_k - c) P_k, as the tied
            # case; the squares summed per component and put in W's columns
            KS: tl.constexpr = ALLK_J // BLOCK_D
            c = tl.load(CENTER + offs_d, mask=mask_d, other=0.0)
            xt = tl.where(mask_d[None, :], x - c[None, :], 0.0)
            offs_s = tl.arange(0, ALLK_J)
            for k0 in range(0, K, KS):
                ks = k0 + offs_s // BLOCK_D                                    # component of each column
                js = offs_s % BLOCK_D
                mask_s = (ks < K) & (js < D)
                p = tl.load(P + ks[None, :].to(tl.int64) * stride_p_k + offs_d[:, None] * D + js[None, :],
                            mask=mask_d[:, None] & mask_s[None, :], other=0.0)  # BLOCK_D x ALLK_J
                b = tl.load(B + ks * D + js, mask=mask_s, other=0.0)
                z = tl.dot(xt, p, input_precision=PRECISION) - b[None, :]     # BLOCK_N x ALLK_J
                q = tl.sum(tl.reshape(z * z, (BLOCK_N, KS, BLOCK_D)), axis=2)  # BLOCK_N x KS
                hit = (k0 + tl.arange(0, KS))[None, :, None] == offs_k[None, None, :]
                W += tl.sum(tl.where(hit, q[:, :, None], 0.0), axis=1)
        else:
            for k in range(K):
                mu = tl.load(MU + k * D + offs_d, mask=mask_d, other=0.0)
                xc = tl.where(mask_d[None, :], x - mu[None, :], 0.0)
                if COV == 2:
                    p = tl.load(P + k * D + offs_d, mask=mask_d, other=0.0)
                    q = tl.sum(xc * xc * (p * p)[None, :], axis=1)
                else:
                    q = tl.zeros([BLOCK_N], dtype=x.dtype)
                    for j0 in range(0, BLOCK_D, BLOCK_J):
                        offs_j = j0 + tl.arange(0, BLOCK_J)
                        p = tl.load(P + k * stride_p_k + offs_d[:, None] * D + offs_j[None, :],
                                    mask=mask_d[:, None] & (offs_j[None, :] < D), other=0.0)
                        y = tl.dot(xc, p, input_precision=PRECISION)      # BLOCK_N x BLOCK_J
                        q += tl.sum(y * y, axis=1)
                W += tl.where(offs_k[None, :] == k, q[:, None], 0.0)
        W = off[None, :] - 0.5 * W
        W = tl.where(mask_k[None, :], W, float("-inf"))
        # 2. log-sum-exp over the components, responsibilities
        m = tl.max(W, axis=1)
        e = tl.exp(W - m[:, None])
        s = tl.sum(e, axis=1)
        lse = m + tl.log(s)
        ll += tl.where(mask_n, lse.to(tl.float64), 0.0)
        if WRITE_LOG_NORM:
            if LOG_NORM.dtype.element_ty == tl.float64:  # for the split statistics: m + log s unrounded
                tl.store(LOG_NORM + offs_n, m.to(tl.float64) + tl.log(s.to(tl.float64)), mask=mask_n)
            else:
                tl.store(LOG_NORM + offs_n, lse, mask=mask_n)
        if WRITE_LABELS:
            tl.store(LABELS + offs_n, tl.argmax(W, axis=1).to(tl.int64), mask=mask_n)
        r = tl.where(mask_n[:, None], e * (1.0 / s)[:, None], 0.0)           # BLOCK_N x BLOCK_K
        if WRITE_RESP:
            tl.store(RESP + offs_n[:, None].to(tl.int64) * K + offs_k[None, :], r,
                     mask=mask_n[:, None] & mask_k[None, :])
        # 3. sufficient statistics of the block, added to this program's float64 slot
        if STATS:
            nk_ptr = PART_NK + pid * K + offs_k
            tl.store(nk_ptr, tl.load(nk_ptr, mask=mask_k, other=0.0) + tl.sum(r.to(tl.float64), axis=0),
                     mask=mask_k)
            if S1_DOT:  # first moments of all components in one product, about CENTER: r^T (x - c)
                c1 = tl.load(CENTER + offs_d, mask=mask_d, other=0.0)
                s1_all = tl.dot(tl.trans(r), tl.where(mask_d[None, :], x - c1[None, :], 0.0),
                                input_precision=PRECISION)                  # BLOCK_K x BLOCK_D
                s1_ptrs = PART_S1 + (pid * K + offs_k[:, None]).to(tl.int64) * D + offs_d[None, :]
                mask_kd = mask_k[:, None] & mask_d[None, :]
                tl.store(s1_ptrs, tl.load(s1_ptrs, mask=mask_kd, other=0.0) + s1_all.to(tl.float64), mask=mask_kd)
            if XT_LOAD:  # the block again, transposed (BLOCK_D x BLOCK_N), from L1: the scatter's left side
                xt = tl.load(X + offs_n[None, :].to(tl.int64) * stride_x_n + offs_d[:, None],
                             mask=mask_d[:, None] & mask_n[None, :], other=0.0)
            for k in range(K):
                r_k = tl.sum(tl.where(offs_k[None, :] == k, r, 0.0), axis=1)  # BLOCK_N
                mu = tl.load(MU + k * D + offs_d, mask=mask_d, other=0.0)
                xc = tl.where(mask_d[None, :], x - mu[None, :], 0.0)
                rx = r_k[:, None] * xc                                       # BLOCK_N x BLOCK_D
                slot = pid * K + k
                if not S1_DOT:
                    s1_ptr = PART_S1 + slot.to(tl.int64) * D + offs_d
                    tl.store(s1_ptr, tl.load(s1_ptr, mask=mask_d, other=0.0) + tl.sum(rx, axis=0).to(tl.float64),
                             mask=mask_d)
                if COV == 0:
                    for j0 in range(0, BLOCK_D, BLOCK_J):
                        offs_j = j0 + tl.arange(0, BLOCK_J)
                        mask_j = offs_j < D
                        if BLOCK_J == BLOCK_D:
                            xj = xc
                        else:
                            xj = tl.load(X + offs_n[:, None].to(tl.int64) * stride_x_n + offs_j[None, :],
                                         mask=mask_n[:, None] & mask_j[None, :], other=0.0)
                            mu_j = tl.load(MU + k * D + offs_j, mask=mask_j, other=0.0)
                            xj = tl.where(mask_j[None, :], xj - mu_j[None, :], 0.0)
                        if XT_LOAD:
                            rxt = tl.where(mask_d[:, None], (xt - mu[:, None]) * r_k[None, :], 0.0)
                            acc = tl.dot(rxt, xj, input_precision=PRECISION_S)       # BLOCK_D x BLOCK_J
                        else:
                            acc = tl.dot(tl.trans(rx), xj, input_precision=PRECISION_S)
                        s2_ptr = PART_S2 + slot.to(tl.int64) * D * D + offs_d[:, None] * D + offs_j[None, :]
                        mask_2 = mask_d[:, None] & mask_j[None, :]
                        tl.store(s2_ptr, tl.load(s2_ptr, mask=mask_2, other=0.0) + acc.to(tl.float64), mask=mask_2)
                elif COV == 2:
                    s2_ptr = PART_S2 + slot.to(tl.int64) * D + offs_d
                    tl.store(s2_ptr, tl.load(s2_ptr, mask=mask_d, other=0.0) + tl.sum(rx * xc, axis=0).to(tl.float64),
                             mask=mask_d)
    tl.store(PART_LL + pid, tl.sum(ll, axis=0))


@triton.jit
def _gaussian_full_stats_kernel(X, MU, P, B, CENTER, OFFSET, LOG_NORM,  # N x D, K x D, K x D x D, K x D, D, K, N
                                PART_NK, PART_S1, PART_S2,              # C x K; C x K x D; C x K x D x D
                                N, D, K, stride_x_n, blocks_per_chunk,
                                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, INNER: tl.constexpr,
                                PRECISION: tl.constexpr, PRECISION_S: tl.constexpr, CENTERED: tl.constexpr):
    """Full-covariance statistics as a second launch, after the log-densities' launch has
    written log_norm: program (k, c) takes component k over the point blocks of chunk c. It
    recomputes that component's log-density (one product with P_k, which stays in registers),
    r = exp(log w_k + log N(x | k) - log_norm), and accumulates N_k, sum r (x - mu_k) and the
    scatter sum r (x - mu_k)(x - mu_k)^T in float32 registers over INNER blocks at a time,
    each group then added to the program's own float64 slot (c, k). Against the fused kernel,
    which read-modify-writes K x D x D float64 values of its slot for every block of points,
    this moves INNER times less slot traffic, holds one component's state instead of K, and
    costs a second pass of the log-density products (not counted as work).
    LOG_NORM is float64: the first launch's m + log s before any rounding to X's dtype (at
    D=64 a float32 log_norm of ~-100 carries 4e-6 of rounding, which exp would turn into
    relative errors of every r, the dominant component's included; the fused kernel's
    r = exp(w - m) / s has none there).
    CENTERED: the log-density as the first launch takes it with ALLK_J,
    ||(x - c) P_k - b_k||^2 (b_k in B, c in CENTER), so that r and log_norm share its rounding:
    r = exp(w_k - log_norm) has no log-sum-exp of its own to absorb a difference between the
    two launches' w_k."""
    k = tl.program_id(0)
    c = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    mask_dd = mask_d[:, None] & mask_d[None, :]
    mu = tl.load(MU + k * D + offs_d, mask=mask_d, other=0.0)
    p = tl.load(P + k.to(tl.int64) * D * D + offs_d[:, None] * D + offs_d[None, :], mask=mask_dd, other=0.0)
    off = tl.load(OFFSET + k)
    if CENTERED:
        ctr = tl.load(CENTER + offs_d, mask=mask_d, other=0.0)
        b_k = tl.load(B + k * D + offs_d, mask=mask_d, other=0.0)
    n_blocks = tl.cdiv(N, BLOCK_N)
    b0 = c * blocks_per_chunk
    b1 = tl.minimum(b0 + blocks_per_chunk, n_blocks)
    slot = c * K + k
    nk_ptr = PART_NK + slot
    s1_ptr = PART_S1 + slot.to(tl.int64) * D + offs_d
    s2_ptr = PART_S2 + slot.to(tl.int64) * D * D + offs_d[:, None] * D + offs_d[None, :]
    for g0 in range(b0, b1, INNER):
        a_nk = tl.zeros([BLOCK_N], dtype=mu.dtype)
        a_s1 = tl.zeros([BLOCK_D], dtype=mu.dtype)
        a_s2 = tl.zeros([BLOCK_D, BLOCK_D], dtype=mu.dtype)
        for blk in range(g0, tl.minimum(g0 + INNER, b1)):
            offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            x = tl.load(X + offs_n[:, None].to(tl.int64) * stride_x_n + offs_d[None, :],
                        mask=mask_n[:, None] & mask_d[None, :], other=0.0)
            xc = tl.where(mask_d[None, :], x - mu[None, :], 0.0)                 # BLOCK_N x BLOCK_D
            if CENTERED:
                xt = tl.where(mask_d[None, :], x - ctr[None, :], 0.0)
                y = tl.dot(xt, p, input_precision=PRECISION) - b_k[None, :]
            else:
                y = tl.dot(xc, p, input_precision=PRECISION)
            q = tl.sum(y * y, axis=1)
            ln = tl.load(LOG_NORM + offs_n, mask=mask_n, other=0.0)            # float64
            r = tl.where(mask_n, tl.exp((off - 0.5 * q).to(tl.float64) - ln).to(x.dtype), 0.0)  # BLOCK_N
            rx = r[:, None] * xc
            a_nk += r
            a_s1 += tl.sum(rx, axis=0)
            a_s2 = tl.dot(tl.trans(rx), xc, a_s2, input_precision=PRECISION_S, out_dtype=a_s2.dtype)
        tl.store(nk_ptr, tl.load(nk_ptr) + tl.sum(a_nk.to(tl.float64), axis=0))
        tl.store(s1_ptr, tl.load(s1_ptr, mask=mask_d, other=0.0) + a_s1.to(tl.float64), mask=mask_d)
        tl.store(s2_ptr, tl.load(s2_ptr, mask=mask_dd, other=0.0) + a_s2.to(tl.float64), mask=mask_dd)


def split_stats_config(n, d, k, dtype_is_fp64, n_sm=None, slot_budget_bytes=256 << 20, per_sm=8):
    """Tiles and grid of _gaussian_full_stats_kernel (the split statistics of full covariance),
    or None where it does not apply (BLOCK_D > 64: P_k and the scatter would not fit one
    program's registers; the fused kernel takes those). Grid (K, C): C chunks of point blocks,
    about ``per_sm`` programs a multiprocessor in all (4 chunks under the interpreter), never
    more chunks than blocks, and few enough that the C x K float64 slots fit the budget.
    INNER blocks are summed in registers before each slot update: at 64 points a block, 1024
    points of float32 sums (the CPU kernel sums 384 in float32 before its float64 merge)."""
    block_d = max(16, next_power_of_2(max(d, 1)))
    if block_d > 64:
        return None
    block_n = 64 if block_d <= 32 or not dtype_is_fp64 else 32
    num_warps = 4 if block_d <= 32 else 8
    n_blocks = max(1, cdiv(n, block_n))
    slot = 8 * (1 + d + d * d)
    chunks = cdiv(per_sm * n_sm, max(k, 1)) if n_sm else 4
    chunks = max(1, min(chunks, n_blocks, slot_budget_bytes // max(slot * k, 1)))
    meta = dict(BLOCK_N=block_n, BLOCK_D=block_d, INNER=16, num_warps=num_warps)
    return meta, chunks


def launch_config(n, d, k, dtype_is_fp64, n_sm=None, slot_budget_bytes=256 << 20, cov=0):
    """Tiles and the number of persistent programs for N points, D features, K components.

    BLOCK_D = D rounded up to a power of two (at least 16, tl.dot's smallest side); P_k and
    the scatter are taken in column slabs of BLOCK_J (<= 64, BLOCK_D x BLOCK_J <= 8192
    values). BLOCK_N starts at 256 points (each block's statistics cost a read-modify-write
    of K x D x D float64 values in the program's slot, so bigger blocks amortise it; at
    D=32, K=16 that is 256 KiB of slot traffic for 32 KiB of X) and halves until the point
    tile and the K-wide tile W each hold at most 8192 values (4096 in fp64): 32 KiB of fp32
    over 8 warps is 32 registers a thread. Programs: 2 a multiprocessor, so the slots of
    a D=32, K=16 problem (132 KiB each, 35 MB on an H100) stay in L2; 4 under the
    interpreter (no n_sm); never more than the blocks, and few enough that all slots fit
    in ``slot_budget_bytes`` (at K=256, D=32: 118 programs).
    Full covariance in float32 with D <= 32 takes small programs instead: 64 points, 2 warps,
    8 a multiprocessor (on an H100 at N=1e6, D=32, K=16: 2.9 ms against 7.6 ms for 256 points
    over 8 warps, 2 a multiprocessor; bench/gpu/sweep.py): more programs in flight hide the
    latency of the per-component chain of products, reductions and slot updates. (Compiled
    for sm_90 this program takes 255 registers a thread and spills ~200 B: only 4 of its 2-warp
    programs fit an SM's registers at once, so the 8 run in two waves; bench/gpu/compile_report.py.)
    float64 with D >= 128 takes 32-column slabs over 8 warps: with 64-column slabs over 4 warps
    the passes spilled 200-1000 B a thread to local memory (compile report; not yet timed).
    """
    block_d = max(16, next_power_of_2(max(d, 1)))
    block_k = max(2, next_power_of_2(max(k, 1)))
    block_j = max(16, min(block_d, 64, 8192 // block_d))
    cap = 4096 if dtype_is_fp64 else 8192
    block_n = 256
    while block_n > 16 and (block_n * block_d > cap or block_n * block_k > cap):
        block_n //= 2
    num_warps = 8 if block_n * max(block_d, block_k) >= 8192 else 4
    if dtype_is_fp64 and block_d >= 128:
        block_j, num_warps = 32, 8
    per_sm = 2
    if cov == 0 and not dtype_is_fp64 and block_d <= 32 and block_k <= 64:
        block_n, num_warps, per_sm = 64, 2, 8
    n_blocks = max(1, cdiv(n, block_n))
    slot = 8 * k * (1 + d + (d * d if cov == 0 else d))
    programs = per_sm * n_sm if n_sm else 4
    programs = max(1, min(programs, n_blocks, slot_budget_bytes // max(slot, 1)))
    meta = dict(BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_K=block_k, BLOCK_J=block_j, num_warps=num_warps)
    return meta, programs
