"""Position information: sinusoidal encodings (Vaswani et al. 2017), learned embeddings, and
rotary embeddings (Su et al. 2021) that rotate query/key channel pairs by position."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositionalEncoding(nn.Module):
    """x + PE, PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...). x: (batch, length, d)."""

    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"SinusoidalPositionalEncoding: d_model and max_len must be positive, got "
                             f"{d_model}, {max_len}.")
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]
        freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
        self.register_buffer("pe", pe.float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        n = x.shape[-2]
        if offset + n > self.pe.shape[0]:
            raise ValueError(f"SinusoidalPositionalEncoding: length {offset + n} exceeds max_len "
                             f"{self.pe.shape[0]}; build it with a larger max_len.")
        return x + self.pe[offset:offset + n].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """x + E[pos] with a trained table E of shape (max_len, d_model). x: (batch, length, d)."""

    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        n = x.shape[-2]
        if offset + n > self.weight.shape[0]:
            raise ValueError(f"LearnedPositionalEmbedding: length {offset + n} exceeds max_len "
                             f"{self.weight.shape[0]}.")
        return x + self.weight[offset:offset + n]


class RotaryEmbedding(nn.Module):
    """Rotates channel pairs (i, i + d/2) of queries and keys by angle pos * base^(-2i/d), so
    q_m . k_n depends on m - n only. Apply to (batch, heads, length, head_dim) tensors."""

    def __init__(self, head_dim: int, max_len: int = 4096, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}.")
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        ang = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None, :]  # max_len x head_dim/2
        self.register_buffer("cos", torch.cos(ang).float(), persistent=False)
        self.register_buffer("sin", torch.sin(ang).float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        n, half = x.shape[-2], x.shape[-1] // 2
        if offset + n > self.cos.shape[0]:
            raise ValueError(f"RotaryEmbedding: length {offset + n} exceeds max_len {self.cos.shape[0]}.")
        cos = self.cos[offset:offset + n].to(x.dtype)
        sin = self.sin[offset:offset + n].to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
