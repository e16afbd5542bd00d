"""A small class-conditional UNet denoiser for small images (8x8 digits up to 32x32, C channels):
sinusoidal time embedding plus a label embedding with a null label for classifier-free guidance,
residual blocks (GroupNorm, SiLU), stride-2 down / nearest up with skip connections, and
optional self-attention at the lowest resolution. ``model(x, t, y=None)`` -> same shape as x."""

from __future__ import annotations

import math
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps t (B,) -> (B, dim) in ``dtype``
    (float32 or float64): [cos(t f_k), sin(t f_k)] with f_k = max_period^(-k / half),
    k = 0..half-1 (zero-padded to an odd ``dim``)."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None, :]                           # B x half
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)            # B x 2 half
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class _ResBlock(nn.Module):
    """GN-SiLU-conv, + projected embedding, GN-SiLU-dropout-conv (zero-initialised), + skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))                              # B x out x H x W
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions (scaled_dot_product_attention), residual."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the channels at the lowest resolution "
                             f"({channels}); pick num_heads among the divisors of {channels}.")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                           # each B x heads x HW x d
        out = F.scaled_dot_product_attention(q, k, v)                       # B x heads x HW x d
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """Class-conditional UNet denoiser.

    Parameters
    ----------
    in_channels : image channels C (the output has the same).
    image_size : height = width of the images (divisible by 2^(len(channel_mults) - 1)).
    base_channels : channels at full resolution; level i has base_channels * channel_mults[i].
    channel_mults : one entry per resolution level (each level after the first halves H and W).
    num_res_blocks : residual blocks per level on the way down (one more on the way up).
    num_classes : number of classes for conditioning (labels 0..num_classes-1; the label
        ``num_classes`` is the null label of classifier-free guidance), or None (unconditional).
    attention : self-attention between the two middle residual blocks (lowest resolution).
    num_heads, groups, dropout : attention heads, GroupNorm groups (reduced to a divisor of
        the channels), dropout inside residual blocks.

    ``forward(x, t, y=None)``: x (B, C, H, W); t an int, a 0-d tensor or (B,) timesteps (ints
    or floats); y (B,) int64 labels in [0, num_classes], or None = the null label.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, base_channels: int = 32,
                 channel_mults=(1, 2), num_res_blocks: int = 1, num_classes: int | None = None,
                 attention: bool = True, num_heads: int = 4, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("image_size", image_size, 1),
                                 ("base_channels", base_channels, 1), ("num_res_blocks", num_res_blocks, 1),
                                 ("num_heads", num_heads, 1), ("groups", groups, 1)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        mults = tuple(channel_mults)
        if not mults or any(isinstance(m, bool) or not isinstance(m, Integral) or m < 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of ints >= 1, got {channel_mults!r}.")
        factor = 2 ** (len(mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size={image_size} must be divisible by 2^(len(channel_mults) - 1) = {factor}; "
                             f"use fewer channel_mults or pad the images.")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, Integral)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.in_channels, self.image_size, self.num_classes = int(in_channels), int(image_size), num_classes
        self.base_channels = int(base_channels)
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [base_channels]
        ch = base_channels
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(_ResBlock(ch, base_channels * mult, emb_dim, groups, dropout))
                ch = base_channels * mult
                skips.append(ch)
            if level + 1 < len(mults):
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = _ResBlock(ch, ch, emb_dim, groups, dropout)
        self.mid_attn = _SelfAttention(ch, num_heads, groups) if attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, emb_dim, groups, dropout)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(_ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, groups, dropout))
                ch = base_channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
        self.norm_out = nn.GroupNorm(_groups(ch, groups), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self._factor = factor

    def _check(self, x):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (batch, channels, height, width) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels; this UNet takes in_channels={self.in_channels}.")
        if x.shape[2] % self._factor or x.shape[3] % self._factor:
            raise ValueError(f"x's height and width {tuple(x.shape[2:])} must be divisible by {self._factor} "
                             f"(the UNet halves them {self._factor.bit_length() - 1} times).")

    def embed(self, t, y, batch: int, device) -> torch.Tensor:
        """The block conditioning (B, 4 base_channels): time MLP plus the label embedding."""
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or hold one timestep per image ({batch}), got shape "
                             f"{tuple(t.shape)}.")
        weight = self.time_mlp[0].weight
        emb = self.time_mlp(timestep_embedding(t, self.base_channels, dtype=weight.dtype).to(weight.dtype))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
            elif y.shape != (batch,):
                raise ValueError(f"y must hold one label per image ({batch},), got shape {tuple(y.shape)}.")
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("this UNet is unconditional (num_classes=None); call it without labels y.")
        return emb

    def forward(self, x, t, y=None):
        self._check(x)
        emb = self.embed(t, y, x.shape[0], x.device).to(x.dtype)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _ResBlock) else block(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block in self.up:
            if isinstance(block, _ResBlock):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))
