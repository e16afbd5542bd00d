"""float64 attention written from the equations (softmax(q k^T * scale + mask) v), independent
of the kernels under test; PyTorch autograd through it gives the reference gradients."""

import math

import torch


def attention(q, k, v, mask=None, causal=False, scale=None, gqa=False):
    q, k, v = (t.double() for t in (q, k, v))
    if gqa:
        rep = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(rep, dim=-3)
        v = v.repeat_interleave(rep, dim=-3)
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    w = torch.softmax(s, dim=-1)
    w = torch.where(torch.isnan(w), torch.zeros_like(w), w)  # a row that sees no key: weights 0
    return torch.matmul(w, v)
