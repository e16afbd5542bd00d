"""scaled_dot_product_attention as a torch.library op: drop-in for
torch.nn.functional.scaled_dot_product_attention. CPU: the C++ flash-attention kernels in _C;
CUDA: the Triton kernels of fastlearn.kernels.triton.attention. Fake kernels for tracing;
autograd through fastlearn::sdpa_backward, which recomputes the weights from the saved
log-sum-exp (memory linear in the sequence length)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.library import triton_op, wrap_triton

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.ops._eager import direct_cpu_call_ok
from fastlearn.ops._device import gpu_backend

__all__ = ["scaled_dot_product_attention"]

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_OP = "scaled_dot_product_attention"


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _lse_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _require_triton(op):
    if gpu_backend(op) != "triton":
        raise RuntimeError(f"{op}: the GPU path of attention is written in Triton, which is not importable "
                           f"(FASTLEARN_GPU_BACKEND=cuda has no attention kernel); pip install triton.")


# --- forward -------------------------------------------------------------------------------
# Tensors reaching the ops (shapes as comments):
#   q     batch x heads_q  x len_q  x dim_qk       k  batch x heads_kv x len_kv x dim_qk
#   v     batch x heads_kv x len_kv x dim_v        bias  batch x heads_q x len_q x len_kv (may be expanded)
#   out   batch x heads_q  x len_q  x dim_v        lse   batch x heads_q x len_q

@triton_op("fastlearn::sdpa", mutates_args=())
def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor], dropout_p: float,
          is_causal: bool, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if q.device.type == "cpu":  # reached only when tracing decomposes this op (eager CPU calls go below)
        return torch.ops.fastlearn.sdpa_cpu(q, k, v, bias, dropout_p, is_causal, scale, seed)
    from fastlearn.kernels.triton import attention as ta

    _require_triton("scaled_dot_product_attention")
    return ta.attention_forward(q, k, v, bias, dropout_p, is_causal, scale, seed, wrap=wrap_triton)


def _sdpa_cpu_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor], dropout_p: float,
              is_causal: bool, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ct = _compute_dtype(q.dtype)
    B, H, L, _ = q.shape
    qc, kc, vc = (t if t.dtype == ct and t.is_contiguous() else t.to(ct).contiguous() for t in (q, k, v))
    bc = None if bias is None or bias.dtype == ct else bias.to(ct)
    bc = bias if bc is None else bc
    if B * H * L * v.shape[-1] == 0 or k.shape[2] == 0:  # nothing to attend: zeros, as PyTorch
        return (torch.zeros(B, H, L, v.shape[-1], dtype=q.dtype),
                torch.full((B, H, L), float("inf"), dtype=ct))
    out = torch.empty(B, H, L, v.shape[-1], dtype=ct)  # the kernel writes every row of both
    lse = torch.empty((B, H, L), dtype=ct)
    _C.attention_forward(view(qc, "query"), view(kc, "key"), view(vc, "value"),
                         None if bc is None else view(bc, "attn_mask"), view(out, "out"), view(lse, "lse"),
                         scale, is_causal, dropout_p, seed)
    return out.to(q.dtype), lse


@_sdpa.register_fake
def _sdpa_fake(q, k, v, bias, dropout_p, is_causal, scale, seed):
    B, H, L, _ = q.shape
    return q.new_empty(B, H, L, v.shape[-1]), q.new_empty(B, H, L, dtype=_lse_dtype(q.dtype))


# The CPU kernel serves eager calls; the same function as an op of its own (with the same fake)
# is what the triton_op body calls on CPU tensors when tracing decomposes it.
_sdpa.register_kernel("cpu")(_sdpa_cpu_impl)
torch.library.custom_op("fastlearn::sdpa_cpu", _sdpa_cpu_impl, mutates_args=()).register_fake(_sdpa_fake)


# --- backward ------------------------------------------------------------------------------

@triton_op("fastlearn::sdpa_backward", mutates_args=())
def _sdpa_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   bias: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor, dropout_p: float,
                   is_causal: bool, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if q.device.type == "cpu":
        return torch.ops.fastlearn.sdpa_backward_cpu(grad_out, q, k, v, bias, out, lse, dropout_p, is_causal,
                                                     scale, seed)
    from fastlearn.kernels.triton import attention as ta

    _require_triton("scaled_dot_product_attention backward")
    return ta.attention_backward(grad_out, q, k, v, bias, out, lse, dropout_p, is_causal, scale, seed,
                                 wrap=wrap_triton)


def _sdpa_backward_cpu_impl(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       bias: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor, dropout_p: float,
                       is_causal: bool, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ct = _compute_dtype(q.dtype)
    go, qc, kc, vc, oc = (t.to(ct).contiguous() for t in (grad_out, q, k, v, out))
    bc = None if bias is None else bias.to(ct)
    dq, dk, dv = torch.zeros_like(qc), torch.zeros_like(kc), torch.zeros_like(vc)
    if qc.numel() == 0 or kc.numel() == 0 or vc.numel() == 0:
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
    _C.attention_backward(view(go, "grad_out"), view(qc, "query"), view(kc, "key"), view(vc, "value"),
                          None if bc is None else view(bc, "attn_mask"), view(oc, "out"),
                          view(lse.contiguous(), "lse"), view(dq, "grad_query"), view(dk, "grad_key"),
                          view(dv, "grad_value"), scale, is_causal, dropout_p, seed)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_sdpa_backward.register_fake
def _sdpa_backward_fake(grad_out, q, k, v, bias, out, lse, dropout_p, is_causal, scale, seed):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_sdpa_backward.register_kernel("cpu")(_sdpa_backward_cpu_impl)
torch.library.custom_op("fastlearn::sdpa_backward_cpu", _sdpa_backward_cpu_impl,
                        mutates_args=()).register_fake(_sdpa_backward_fake)


def _setup_context(ctx, inputs, output):
    q, k, v, bias, dropout_p, is_causal, scale, seed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, bias, out, lse)
    ctx.args = (dropout_p, is_causal, scale, seed)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, bias, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.fastlearn.sdpa_backward(grad_out.contiguous(), q, k, v, bias, out, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_sdpa.register_autograd(_backward, setup_context=_setup_context)


# --- the public function ---------------------------------------------------------------------

def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_OP}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}.")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{_OP}: argument '{name}' has dtype {t.dtype}; use float32, float64, float16 or bfloat16.")
    if t.dim() < 2:
        raise ValueError(f"{_OP}: argument '{name}' must have at least 2 dimensions (..., length, dim), "
                         f"got shape {tuple(t.shape)}.")


def _broadcast(shapes, what):
    if shapes[0] == shapes[1] == shapes[2]:  # the common case, without torch's general helper
        return tuple(shapes[0])
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise ValueError(f"{_OP}: the batch dimensions of query, key and value ({', '.join(map(str, shapes))}) "
                         f"do not broadcast; {what}") from None


def _as4(t, lead, B, H):
    """t (..., n, d) broadcast to lead + (n, d) and seen as (B, H, n, d); no copy when it already is."""
    if t.dim() == 4 and tuple(t.shape[:2]) == (B, H):
        return t
    return t.expand(tuple(lead) + tuple(t.shape[-2:])).reshape(B, H, t.shape[-2], t.shape[-1])


def _mask_to_bias(attn_mask, query, out_lead, L, S, B, H):
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"{_OP}: argument 'attn_mask' must be a torch.Tensor or None, got {type(attn_mask).__name__}.")
    if attn_mask.device != query.device:
        raise ValueError(f"{_OP}: argument 'attn_mask' is on {attn_mask.device} but 'query' is on {query.device}.")
    if attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
        bias = bias.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask.dtype.is_floating_point:
        if attn_mask.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"{_OP}: gradients with respect to a float 'attn_mask' are not supported; pass "
                             f"attn_mask.detach() (or a boolean mask).")
        # Converted to the query's dtype (a float32 mask on float64 inputs keeps its values).
        bias = attn_mask.to(query.dtype)
    else:
        raise TypeError(f"{_OP}: argument 'attn_mask' has dtype {attn_mask.dtype}; use a bool mask (True = attend) "
                        f"or a float mask added to the scores.")
    try:
        bias = bias.expand(out_lead + (L, S))
    except RuntimeError:
        raise ValueError(f"{_OP}: argument 'attn_mask' of shape {tuple(attn_mask.shape)} does not broadcast to the "
                         f"attention weights' shape {out_lead + (L, S)}.") from None
    return bias.reshape(B, H, L, S)  # a view (no copy) for the usual 4-d masks


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention``.

    softmax(query @ key^T * scale + mask) @ value, computed flash-attention style (never
    materialising the weights). Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev);
    batch dimensions broadcast. ``attn_mask``: bool (True = may attend) or float (added to
    the scores), broadcastable to (..., L, S), any float dtype (converted to the query's).
    ``is_causal``: query i sees keys j <= i (top-left aligned, as PyTorch; combined with a
    mask when both are given). ``enable_gqa``: query heads (dim -3) a multiple of key/value
    heads. ``dropout_p`` drops weights with a mask drawn from torch's default generator (so
    ``torch.manual_seed`` reproduces it; the mask differs from PyTorch's). A query row that
    sees no key gives zeros. Differentiable in query, key and value.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, t)
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{_OP}: query, key and value must have one dtype, got {query.dtype}, {key.dtype}, "
                        f"{value.dtype}.")
    if not (query.device == key.device == value.device):
        raise ValueError(f"{_OP}: query, key and value must be on one device, got {query.device}, {key.device}, "
                         f"{value.device}.")
    L, E = query.shape[-2:]
    S, Ek = key.shape[-2:]
    Ev = value.shape[-1]
    if Ek != E:
        raise ValueError(f"{_OP}: the last dimension of 'key' ({Ek}) must equal that of 'query' ({E}).")
    if value.shape[-2] != S:
        raise ValueError(f"{_OP}: 'key' has {S} positions but 'value' has {value.shape[-2]}; they must match.")
    if E == 0:
        raise ValueError(f"{_OP}: the embedding dimension of 'query' is 0; attention needs E >= 1.")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{_OP}: dropout_p must be a float in [0, 1), got {dropout_p!r}.")
    if scale is None:
        scale = 1.0 / math.sqrt(E)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{_OP}: scale must be a finite float or None, got {scale!r}.")
    if not isinstance(is_causal, bool) or not isinstance(enable_gqa, bool):
        raise TypeError(f"{_OP}: is_causal and enable_gqa must be bools.")

    if enable_gqa:
        if min(query.dim(), key.dim(), value.dim()) < 3:
            raise ValueError(f"{_OP}: enable_gqa=True needs a heads dimension (-3) in query, key and value.")
        Hq, Hk, Hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if Hk != Hv or Hk == 0 or Hq % Hk:
            raise ValueError(f"{_OP}: with enable_gqa=True the heads of 'query' ({Hq}) must be a multiple of the "
                             f"heads of 'key' ({Hk}) and 'value' ({Hv}), which must be equal.")
        lead = _broadcast([query.shape[:-3], key.shape[:-3], value.shape[:-3]], "fix the leading dimensions.")
        B = math.prod(lead)
        q4 = _as4(query, lead + (Hq,), B, Hq)
        k4 = _as4(key, lead + (Hk,), B, Hk)
        v4 = _as4(value, lead + (Hk,), B, Hk)
        out_lead, H = lead + (Hq,), Hq
    else:
        out_lead = _broadcast([query.shape[:-2], key.shape[:-2], value.shape[:-2]],
                              "for grouped-query attention pass enable_gqa=True.")
        H = out_lead[-1] if out_lead else 1
        B = math.prod(out_lead[:-1]) if out_lead else 1
        q4, k4, v4 = (_as4(t, out_lead, B, H) for t in (query, key, value))
    bias = None if attn_mask is None else _mask_to_bias(attn_mask, query, out_lead, L, S, B, H)
    seed = 0
    if dropout_p > 0:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    q4, k4, v4 = q4.contiguous(), k4.contiguous(), v4.contiguous()
    if direct_cpu_call_ok(q4, k4, v4) and (bias is None or direct_cpu_call_ok(bias)):
        out, _ = _sdpa_cpu_impl(q4, k4, v4, bias, float(dropout_p), is_causal, float(scale), seed)
    else:
        out, _ = torch.ops.fastlearn.sdpa(q4, k4, v4, bias, float(dropout_p), is_causal, float(scale), seed)
    return out.reshape(out_lead + (L, Ev))
