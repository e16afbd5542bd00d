"""A small GPT-style causal language model (pre-norm blocks, fused causal attention, tied
input/output embeddings) with a choice of learned, sinusoidal or rotary positions, and
sampling (temperature, top-k)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastlearn.ops.attention import scaled_dot_product_attention
from fastlearn.transformer.positional import (LearnedPositionalEmbedding, RotaryEmbedding,
                                              SinusoidalPositionalEncoding)

_POSITIONS = ("learned", "sinusoidal", "rotary")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    position: str = "rotary"  # "learned", "sinusoidal" or "rotary"

    def validate(self):
        if self.vocab_size < 2:
            raise ValueError(f"GPTConfig: vocab_size must be >= 2, got {self.vocab_size}.")
        if min(self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0 or self.n_embd % self.n_head:
            raise ValueError("GPTConfig: block_size, n_layer, n_head, n_embd must be positive and n_embd a "
                             f"multiple of n_head (got {self.n_embd}, {self.n_head}).")
        if self.position not in _POSITIONS:
            raise ValueError(f"GPTConfig: position must be one of {_POSITIONS}, got {self.position!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}.")
        return self

    def to_dict(self):
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.rotary = RotaryEmbedding(cfg.n_embd // cfg.n_head, cfg.block_size) if cfg.position == "rotary" else None

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # B x H x T x D
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        y = scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # B x T x C


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only Transformer over token ids: forward(idx (B, T)) -> logits (B, T, vocab)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config.validate()
        self.tok = nn.Embedding(config.vocab_size, config.n_embd)
        if config.position == "learned":
            self.pos = LearnedPositionalEmbedding(config.n_embd, config.block_size)
        elif config.position == "sinusoidal":
            self.pos = SinusoidalPositionalEncoding(config.n_embd, config.block_size)
        else:
            self.pos = None  # rotary: applied inside each attention layer
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied embeddings
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets=None):
        if idx.dim() != 2 or idx.shape[1] > self.config.block_size:
            raise ValueError(f"GPT: idx must be (batch, length <= block_size={self.config.block_size}), got "
                             f"{tuple(idx.shape)}.")
        x = self.tok(idx)  # B x T x C
        if self.pos is not None:
            x = self.pos(x)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # B x T x vocab
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        """Append ``max_new_tokens`` sampled tokens to idx (B, T); the context is cropped to block_size."""
        if temperature <= 0:
            raise ValueError(f"GPT.generate: temperature must be > 0, got {temperature}.")
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
