"""MultiheadAttention: a drop-in for torch.nn.MultiheadAttention (same arguments, parameter
names and state_dict, batch_first or not, unbatched inputs) whose attention runs through
fastlearn.ops.scaled_dot_product_attention. need_weights=True (PyTorch's default) must return
the weights, so that call computes them explicitly, as PyTorch does."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastlearn.ops.attention import scaled_dot_product_attention


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    """PyTorch MHA mask convention (bool True = masked out, float added) -> float to add."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    if not mask.dtype.is_floating_point:
        raise TypeError(f"MultiheadAttention: masks must be bool or float, got {mask.dtype}.")
    return mask.to(dtype)


class MultiheadAttention(nn.Module):
    """Drop-in for ``torch.nn.MultiheadAttention``; see its documentation for the arguments.

    ``add_bias_kv`` and ``add_zero_attn`` are refused (ValueError). ``is_causal=True`` without
    an ``attn_mask`` applies the causal mask directly (PyTorch requires the mask as well).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads}).")
        if add_bias_kv or add_zero_attn:
            raise ValueError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported; use "
                             "torch.nn.MultiheadAttention for them.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1), got {dropout}.")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query, key, value):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight[:E], self.in_proj_weight[E:2 * E], self.in_proj_weight[2 * E:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        unbatched = query.dim() == 2
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"MultiheadAttention: query, key and value must all be 2-d (unbatched) or 3-d, got "
                             f"{query.dim()}, {key.dim()}, {value.dim()} dimensions.")
        if unbatched:
            query, key, value = query[None], key[None], value[None]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        N, L, _ = query.shape
        S, H, D = key.shape[1], self.num_heads, self.head_dim
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query has {query.shape[-1]} features, expected embed_dim="
                             f"{self.embed_dim}.")
        q, k, v = self._project(query, key, value)
        q = q.view(N, L, H, D).transpose(1, 2)  # N x H x L x D
        k = k.view(N, S, H, D).transpose(1, 2)  # N x H x S x D
        v = v.view(N, S, H, D).transpose(1, 2)  # N x H x S x D

        mask = None  # additive, broadcastable to N x H x L x S
        if attn_mask is not None:
            am = _additive(attn_mask, q.dtype)
            if am.dim() == 2:
                if am.shape != (L, S):
                    raise ValueError(f"MultiheadAttention: 2-d attn_mask must be ({L}, {S}), got {tuple(am.shape)}.")
                am = am[None, None]
            elif am.dim() == 3:
                if am.shape != (N * H, L, S):
                    raise ValueError(f"MultiheadAttention: 3-d attn_mask must be ({N * H}, {L}, {S}), got "
                                     f"{tuple(am.shape)}.")
                am = am.view(N, H, L, S)
            else:
                raise ValueError("MultiheadAttention: attn_mask must be 2-d or 3-d.")
            mask = am
        if key_padding_mask is not None:
            if key_padding_mask.shape != (N, S):
                raise ValueError(f"MultiheadAttention: key_padding_mask must be ({N}, {S}), got "
                                 f"{tuple(key_padding_mask.shape)}.")
            kp = _additive(key_padding_mask, q.dtype)[:, None, None, :]
            mask = kp if mask is None else mask + kp
        causal = bool(is_causal) and attn_mask is None
        p = self.dropout if self.training else 0.0

        if need_weights:
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
            if causal:
                s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool, device=s.device).tril(), float("-inf"))
            if mask is not None:
                s = s + mask
            w = torch.softmax(s, dim=-1)
            out = torch.matmul(F.dropout(w, p, training=self.training), v)
            weights = w.mean(dim=1) if average_attn_weights else w
            if unbatched:
                weights = weights[0]
        else:
            out = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(N, L, self.embed_dim))
        if unbatched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights
