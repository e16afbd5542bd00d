"""Triton flash attention (forward and backward) for fastlearn.ops.scaled_dot_product_attention.

Forward (Dao et al., FlashAttention-2): one program owns BLOCK_M query rows of one (batch,
head), streams key/value tiles of BLOCK_N rows, keeps the running max ``m_i``, sum ``l_i`` and
output ``acc`` in registers, and saves ``lse = m_i + log(l_i)``. Causal programs stop at the
diagonal (block skipping). Backward recomputes the weights from ``lse``: one kernel per key
block accumulates dK, dV over the query blocks of every query head of its group (GQA needs no
atomics), one kernel per query block accumulates dQ. Any length (masked edges), head dims
16..256 (padded to a power of two), fp16/bf16/fp32/fp64, additive masks with any strides,
and dropout whose keep-mask is a hash of (seed, batch*heads + head, row, column): the same
hash as the C++ kernels (csrc/attention/attention.cpp), so both backends drop the same weights.
"""

import os

import triton
import triton.language as tl
from ._host import cdiv, next_power_of_2

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _fmix32(h):
    # murmur3's finaliser on int64 values in [0, 2^32): low 32 bits kept after each product.
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h


@triton.jit
def _dropout_keep(SEED_LO, SEED_HI, bh, offs_m, offs_n, THRESHOLD):
    hi = _fmix32((SEED_HI.to(tl.int64) + bh.to(tl.int64) * 0x9E3779B9) & 0xFFFFFFFF)
    key = _fmix32(hi ^ ((SEED_LO.to(tl.int64) + offs_m.to(tl.int64) * 0x85EBCA6B) & 0xFFFFFFFF))
    h = _fmix32((key[:, None] + offs_n[None, :].to(tl.int64) * 0x27D4EB2F) & 0xFFFFFFFF)
    return (h >> 8) >= THRESHOLD


@triton.jit
def _scores(q, k, BIAS, b, h, offs_m, offs_n, L, S, scale, stride_bb, stride_bh, stride_bm, stride_bn,
            HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr):
    # q: BLOCK_M x BLOCK_D, k: BLOCK_N x BLOCK_D -> s: BLOCK_M x BLOCK_N, -inf where masked out.
    s = tl.dot(q, tl.trans(k), input_precision=PREC).to(tl.float32) * scale
    valid = (offs_m[:, None] < L) & (offs_n[None, :] < S)
    if HAS_BIAS:
        bias = tl.load(BIAS + b.to(tl.int64) * stride_bb + h.to(tl.int64) * stride_bh
                       + offs_m[:, None].to(tl.int64) * stride_bm + offs_n[None, :].to(tl.int64) * stride_bn,
                       mask=valid, other=0.0)
        s = s + bias.to(tl.float32)
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= offs_m[:, None])
    return tl.where(valid, s, float("-inf"))


# Tile shapes. Autotuning over many configurations on every new shape costs minutes of
# compilation (seen on an H100: a test sweep did not finish), so by default one configuration
# is chosen by head dim and precision; FASTLEARN_ATTN_AUTOTUNE=1 times a handful instead (keyed
# by head dims and flags, not lengths) and keeps the fastest.
_AUTOTUNE = os.environ.get("FASTLEARN_ATTN_AUTOTUNE", "0") not in ("", "0")


def _heuristic(bwd, d, elt_bytes):
    """BLOCK_M, BLOCK_N, num_warps, num_stages for head dim ``d`` (padded) and element size."""
    if _INTERPRET:
        return 16, 16, 4, 1
    if elt_bytes >= 4:  # fp32/fp64 tiles take twice the registers and shared memory
        return (32, 32, 4, 2) if bwd else (64, 32, 4, 2)
    if d <= 64:
        return (64, 64, 4, 2) if bwd else (128, 64, 4, 3)
    if d <= 128:
        return (64, 64, 8, 2) if bwd else (128, 64, 8, 3)
    return (32, 32, 4, 1) if bwd else (64, 32, 4, 2)


def _configs(bwd):
    out = []
    for bm, bn, warps, stages in ((128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3),
                                  (128, 32, 4, 4), (64, 32, 4, 2), (64, 64, 8, 2), (32, 32, 4, 1)):
        if bwd and bm * bn > 128 * 64:
            continue
        out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages))
    return out


def _prune(configs, named_args, **kwargs):
    # Large head dims need smaller tiles to fit registers / shared memory (H100: 228 KiB).
    # Triton passes constexpr arguments in named_args (older releases) or in kwargs (3.6+).
    args = {**named_args, **kwargs}
    d = max(args["BLOCK_D"], args["BLOCK_DV"])
    keep = [c for c in configs if d <= 128 or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64]
    return keep or configs[-1:]


_KEY = ["BLOCK_D", "BLOCK_DV", "CAUSAL", "HAS_BIAS", "DROPOUT", "GROUP"]


def _tuned(kernel, bwd):
    return triton.autotune(configs=_configs(bwd), key=_KEY, prune_configs_by={"early_config_prune": _prune})(kernel)


@triton.jit
def _attn_fwd_kernel(Q, K, V, BIAS, OUT, LSE, L, S, HQ, GROUP, E, EV, scale, keep_scale, SEED_LO, SEED_HI,
                     THRESHOLD, stride_bb, stride_bh, stride_bm, stride_bn, HAS_BIAS: tl.constexpr,
                     CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    h = bh % HQ
    bhk = (b * (HQ // GROUP) + h // GROUP).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + (bh.to(tl.int64) * L + offs_m[:, None]) * E + offs_d[None, :],
                mask=(offs_m[:, None] < L) & (offs_d[None, :] < E), other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], ACC)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)  # later key blocks are all above the diagonal
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = tl.load(K + (bhk * S + offs_n[:, None]) * E + offs_d[None, :],
                    mask=(offs_n[:, None] < S) & (offs_d[None, :] < E), other=0.0)
        s = _scores(q, k, BIAS, b, h, offs_m, offs_n, L, S, scale, stride_bb, stride_bh, stride_bm, stride_bn,
                    HAS_BIAS, CAUSAL, PREC)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            keep = _dropout_keep(SEED_LO, SEED_HI, bh, offs_m, offs_n, THRESHOLD)
            p = tl.where(keep, p * keep_scale, 0.0)
        v = tl.load(V + (bhk * S + offs_n[:, None]) * EV + offs_dv[None, :],
                    mask=(offs_n[:, None] < S) & (offs_dv[None, :] < EV), other=0.0)
        acc = acc * alpha[:, None].to(ACC) + tl.dot(p.to(v.dtype), v, input_precision=PREC).to(ACC)
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None].to(ACC)
    out = tl.where(seen[:, None], out, 0.0)
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("inf"))
    tl.store(OUT + (bh.to(tl.int64) * L + offs_m[:, None]) * EV + offs_dv[None, :], out.to(OUT.dtype.element_ty),
             mask=(offs_m[:, None] < L) & (offs_dv[None, :] < EV))
    tl.store(LSE + bh.to(tl.int64) * L + offs_m, lse.to(LSE.dtype.element_ty), mask=offs_m < L)


@triton.jit
def _attn_bwd_dkdv_kernel(Q, K, V, BIAS, GO, LSE, DELTA, DK, DV, L, S, HQ, GROUP, E, EV, scale, keep_scale,
                          SEED_LO, SEED_HI, THRESHOLD, stride_bb, stride_bh, stride_bm, stride_bn,
                          HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr,
                          ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)  # batch * heads_kv + kv head
    hkv = HQ // GROUP
    b = bhk // hkv
    hk = bhk % hkv
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    kv_rows = bhk.to(tl.int64) * S + offs_n[:, None]
    k = tl.load(K + kv_rows * E + offs_d[None, :], mask=(offs_n[:, None] < S) & (offs_d[None, :] < E), other=0.0)
    v = tl.load(V + kv_rows * EV + offs_dv[None, :], mask=(offs_n[:, None] < S) & (offs_dv[None, :] < EV), other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    lo = 0
    if CAUSAL:
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M  # rows above the block's first key see none of it
    for g in range(0, GROUP):
        h = hk * GROUP + g
        bh = b * HQ + h
        for start_m in range(lo, L, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            rows = bh.to(tl.int64) * L + offs_m
            q = tl.load(Q + rows[:, None] * E + offs_d[None, :], mask=(offs_m[:, None] < L) & (offs_d[None, :] < E),
                        other=0.0)
            go = tl.load(GO + rows[:, None] * EV + offs_dv[None, :],
                         mask=(offs_m[:, None] < L) & (offs_dv[None, :] < EV), other=0.0)
            lse = tl.load(LSE + rows, mask=offs_m < L, other=float("inf")).to(tl.float32)
            delta = tl.load(DELTA + rows, mask=offs_m < L, other=0.0).to(tl.float32)
            s = _scores(q, k, BIAS, b, h, offs_m, offs_n, L, S, scale, stride_bb, stride_bh, stride_bm, stride_bn,
                        HAS_BIAS, CAUSAL, PREC)
            p = tl.exp(s - lse[:, None])  # 0 where masked or where the row saw no key (lse = inf)
            dp = tl.dot(go, tl.trans(v), input_precision=PREC).to(tl.float32)
            if DROPOUT:
                keep = _dropout_keep(SEED_LO, SEED_HI, bh, offs_m, offs_n, THRESHOLD)
                z = tl.where(keep, keep_scale, 0.0)
                pd = p * z
                ds = p * (dp * z - delta[:, None]) * scale
            else:
                pd = p
                ds = p * (dp - delta[:, None]) * scale
            dv += tl.dot(tl.trans(pd.to(go.dtype)), go, input_precision=PREC).to(ACC)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC).to(ACC)
    tl.store(DK + kv_rows * E + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=(offs_n[:, None] < S) & (offs_d[None, :] < E))
    tl.store(DV + kv_rows * EV + offs_dv[None, :], dv.to(DV.dtype.element_ty),
             mask=(offs_n[:, None] < S) & (offs_dv[None, :] < EV))


@triton.jit
def _attn_bwd_dq_kernel(Q, K, V, BIAS, GO, LSE, DELTA, DQ, L, S, HQ, GROUP, E, EV, scale, keep_scale, SEED_LO,
                        SEED_HI, THRESHOLD, stride_bb, stride_bh, stride_bm, stride_bn, HAS_BIAS: tl.constexpr,
                        CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    h = bh % HQ
    bhk = (b * (HQ // GROUP) + h // GROUP).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    rows = bh.to(tl.int64) * L + offs_m
    q = tl.load(Q + rows[:, None] * E + offs_d[None, :], mask=(offs_m[:, None] < L) & (offs_d[None, :] < E), other=0.0)
    go = tl.load(GO + rows[:, None] * EV + offs_dv[None, :], mask=(offs_m[:, None] < L) & (offs_dv[None, :] < EV),
                 other=0.0)
    lse = tl.load(LSE + rows, mask=offs_m < L, other=float("inf")).to(tl.float32)
    delta = tl.load(DELTA + rows, mask=offs_m < L, other=0.0).to(tl.float32)
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = tl.load(K + (bhk * S + offs_n[:, None]) * E + offs_d[None, :],
                    mask=(offs_n[:, None] < S) & (offs_d[None, :] < E), other=0.0)
        v = tl.load(V + (bhk * S + offs_n[:, None]) * EV + offs_dv[None, :],
                    mask=(offs_n[:, None] < S) & (offs_dv[None, :] < EV), other=0.0)
        s = _scores(q, k, BIAS, b, h, offs_m, offs_n, L, S, scale, stride_bb, stride_bh, stride_bm, stride_bn,
                    HAS_BIAS, CAUSAL, PREC)
        p = tl.exp(s - lse[:, None])
        dp = tl.dot(go, tl.trans(v), input_precision=PREC).to(tl.float32)
        if DROPOUT:
            keep = _dropout_keep(SEED_LO, SEED_HI, bh, offs_m, offs_n, THRESHOLD)
            dp = dp * tl.where(keep, keep_scale, 0.0)
        ds = p * (dp - delta[:, None]) * scale
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC).to(ACC)
    tl.store(DQ + rows[:, None] * E + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=(offs_m[:, None] < L) & (offs_d[None, :] < E))


# --- launchers -------------------------------------------------------------------------------

def _common(q, k, v, bias, dropout_p, is_causal, scale, seed):
    import torch
    import triton.language as tl

    B, HQ, L, E = q.shape
    HKV, S, EV = k.shape[1], k.shape[2], v.shape[3]
    assert HQ % HKV == 0 and k.shape[3] == E and v.shape[2] == S
    assert 1 <= E <= 256 and 1 <= EV <= 256, "head dims 1..256"
    if bias is not None:
        assert bias.shape == (B, HQ, L, S)
        strides = bias.stride()
    else:
        strides = (0, 0, 0, 0)
    fp64 = q.dtype == torch.float64
    full = q.dtype in (torch.float32, torch.float64)
    return dict(
        L=L, S=S, HQ=HQ, GROUP=HQ // HKV, E=E, EV=EV, scale=float(scale),
        keep_scale=1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0,
        SEED_LO=seed & 0xFFFFFFFF, SEED_HI=(seed >> 32) & 0xFFFFFFFF, THRESHOLD=int(round(dropout_p * (1 << 24))),
        stride_bb=strides[0], stride_bh=strides[1], stride_bm=strides[2], stride_bn=strides[3],
        HAS_BIAS=bias is not None, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0,
        PREC="ieee" if full else "tf32", ACC=tl.float64 if fp64 else tl.float32,
        BLOCK_D=max(16, next_power_of_2(E)), BLOCK_DV=max(16, next_power_of_2(EV)),
    ), (B, HQ, HKV, L, S, E, EV)


_KERNELS = {}


def _kernel(which):
    """The plain kernel, or (FASTLEARN_ATTN_AUTOTUNE=1) its autotuned wrapper, made once."""
    plain = {"fwd": _attn_fwd_kernel, "dkdv": _attn_bwd_dkdv_kernel, "dq": _attn_bwd_dq_kernel}[which]
    if not _AUTOTUNE or _INTERPRET:
        return plain
    if which not in _KERNELS:
        _KERNELS[which] = _tuned(plain, which != "fwd")
    return _KERNELS[which]


def _launch(bwd, meta, q):
    """Launch parameters of the plain kernels (none when autotuning picks them)."""
    if _AUTOTUNE and not _INTERPRET:
        return {}
    bm, bn, warps, stages = _heuristic(bwd, max(meta["BLOCK_D"], meta["BLOCK_DV"]), q.element_size())
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}


def attention_forward(q, k, v, bias, dropout_p, is_causal, scale, seed, wrap=lambda f: f):
    """out (B, Hq, L, Ev) and lse (B, Hq, L; float32, float64 for float64 inputs) of
    q (B, Hq, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), all contiguous; bias (B, Hq, L, S) with
    any strides or None. ``wrap`` is torch.library.wrap_triton inside a triton_op."""
    import torch

    meta, (B, HQ, HKV, L, S, E, EV) = _common(q, k, v, bias, dropout_p, is_causal, scale, seed)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(B, HQ, L, EV, dtype=q.dtype, device=q.device)
    lse = torch.full((B, HQ, L), float("inf"), dtype=lse_dtype, device=q.device)
    if out.numel() == 0 or S == 0:
        return out, lse
    grid = lambda META: (cdiv(L, META["BLOCK_M"]), B * HQ)  # noqa: E731
    wrap(_kernel("fwd"))[grid](q, k, v, bias if bias is not None else q, out, lse, **meta, **_launch(False, meta, q))
    return out, lse


def attention_backward(grad_out, q, k, v, bias, out, lse, dropout_p, is_causal, scale, seed, wrap=lambda f: f):
    """dq, dk, dv for the forward above (recomputing the weights from lse)."""
    import torch

    meta, (B, HQ, HKV, L, S, E, EV) = _common(q, k, v, bias, dropout_p, is_causal, scale, seed)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if q.numel() == 0 or S == 0:
        return dq, dk, dv
    grad_out = grad_out.contiguous()
    delta = (grad_out.to(lse.dtype) * out.to(lse.dtype)).sum(-1)  # B x Hq x L: <dO_i, O_i>
    b = bias if bias is not None else q
    grid_kv = lambda META: (cdiv(S, META["BLOCK_N"]), B * HKV)  # noqa: E731
    wrap(_kernel("dkdv"))[grid_kv](q, k, v, b, grad_out, lse, delta, dk, dv, **meta, **_launch(True, meta, q))
    grid_q = lambda META: (cdiv(L, META["BLOCK_M"]), B * HQ)  # noqa: E731
    wrap(_kernel("dq"))[grid_q](q, k, v, b, grad_out, lse, delta, dq, **meta, **_launch(True, meta, q))
    return dq, dk, dv
