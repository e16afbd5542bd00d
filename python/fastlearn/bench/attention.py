"""Benchmark cases of fastlearn.ops.scaled_dot_product_attention against
torch.nn.functional.scaled_dot_product_attention: forward and forward+backward, reported in
TFLOP/s with the standard count (4*B*H*N^2*D forward, halved when causal; backward 2.5x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastlearn.bench.core import Case


def _case(B, H, N, D, causal, backward, quick, device="cpu", dtype=torch.float32):
    from fastlearn.ops import scaled_dot_product_attention as fl_sdpa

    def setup():
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(B, H, N, D, generator=g, device=device, dtype=dtype).requires_grad_(backward)
                   for _ in range(3))
        return q, k, v, torch.randn(B, H, N, D, device=device, dtype=dtype)

    def run(fn):
        def call(inp):
            q, k, v, g = inp
            out = fn(q, k, v, is_causal=causal)
            if backward:
                return torch.autograd.grad(out, (q, k, v), g)
            return out
        return call

    base_fn = F.scaled_dot_product_attention
    base_name = "F.scaled_dot_product_attention"
    if device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def base_fn(q, k, v, is_causal):  # noqa: F811  (PyTorch's flash backend, as the issue asks)
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        base_name += " (flash)"
    fwd_flops = 4 * B * H * N * N * D / (2 if causal else 1)
    flops = fwd_flops * (3.5 if backward else 1.0)
    dt = str(dtype).replace("torch.", "")
    return Case(
        name=f"sdpa {'fwd+bwd' if backward else 'fwd'}{' causal' if causal else ''}",
        shape=f"B={B} H={H} N={N} D={D} {dt}", setup=setup, fastlearn=run(fl_sdpa),
        baseline=run(base_fn), baseline_name=base_name, flops=flops, bound="compute", dtype=dt, device=device,
        quick=quick, notes=f"{flops / 1e12:.4f} TFLOP per call (4BHN^2D fwd, /2 causal, x3.5 fwd+bwd)",
    )


def cases(quick: bool = False) -> list[Case]:
    out = [_case(1, 8, 1024, 64, False, False, quick=True), _case(1, 8, 1024, 64, False, True, quick=True)]
    for N in (1024, 4096):
        for causal in (False, True):
            for backward in (False, True):
                if N == 1024 and not causal:
                    continue  # the quick cases above
                out.append(_case(1, 8, N, 64, causal, backward, quick=False))
    if torch.cuda.is_available():
        for D in (64, 128):
            for N in (1024, 4096, 16384):
                for backward in (False, True):
                    out.append(_case(16384 // N * 2, 16, N, D, False, backward, quick=N == 4096, device="cuda",
                                     dtype=torch.bfloat16))
            out.append(_case(2, 16, 8192, D, True, False, quick=False, device="cuda", dtype=torch.bfloat16))
    return out
