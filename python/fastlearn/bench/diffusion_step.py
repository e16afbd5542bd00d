"""Benchmark cases of fastlearn.ops.diffusion_step: the fused sampler step against the same
step written as PyTorch tensor ops, the way a user writes a scheduler step (diffusers' DDPM
step: guidance combine, x0 from epsilon, clamp, posterior mean, torch.randn noise, add), and
philox_randn against torch.randn. Floors: the state bytes (read x, model output(s); write
prev, x0)."""

from __future__ import annotations

import math

import torch

from fastlearn.bench.core import Case

_ABAR, _ABAR_PREV = 0.3, 0.45  # one DDPM step of a typical schedule


def _ddpm_row():
    alpha = _ABAR / _ABAR_PREV
    beta = 1 - alpha
    return [1 / math.sqrt(_ABAR), -math.sqrt(1 - _ABAR) / math.sqrt(_ABAR), 0.0, 1.0, 0.0,
            math.sqrt(_ABAR_PREV) * beta / (1 - _ABAR), math.sqrt(alpha) * (1 - _ABAR_PREV) / (1 - _ABAR), 0.0,
            math.sqrt(beta * (1 - _ABAR_PREV) / (1 - _ABAR))]


def _torch_ddpm_step(x, cond, uncond, w, generator):
    """diffusers' DDPMScheduler.step (epsilon prediction, clip_sample) after a CFG combine."""
    eps = cond if uncond is None else uncond + w * (cond - uncond)
    x0 = (x - math.sqrt(1 - _ABAR) * eps) / math.sqrt(_ABAR)
    x0 = x0.clamp(-1.0, 1.0)
    alpha = _ABAR / _ABAR_PREV
    beta = 1 - alpha
    mean = (math.sqrt(_ABAR_PREV) * beta / (1 - _ABAR)) * x0 + (math.sqrt(alpha) * (1 - _ABAR_PREV) / (1 - _ABAR)) * x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    prev = mean + math.sqrt(beta * (1 - _ABAR_PREV) / (1 - _ABAR)) * noise
    return prev, x0


def _step_case(shape, cfg, device="cpu", preallocated=False):
    import fastlearn.ops as flops

    n = math.prod(shape)

    def setup():
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=g)
        cond = torch.randn(shape, device=device, generator=g)
        uncond = torch.randn(shape, device=device, generator=g) if cfg else None
        coeffs = torch.tensor([_ddpm_row()], dtype=torch.float32, device=device)
        out = (torch.empty_like(x), torch.empty_like(x)) if preallocated else None
        return x, cond, uncond, coeffs, out, torch.Generator(device=device).manual_seed(1)

    def fl(a):
        x, cond, uncond, coeffs, out, _ = a
        return flops.diffusion_step(x, cond, coeffs, 0, uncond=uncond, guidance_scale=7.5, clip=1.0, seed=1, out=out)

    def base(a):
        x, cond, uncond, _, _, gen = a
        return _torch_ddpm_step(x, cond, uncond, 7.5, gen)

    reads = 3 if cfg else 2
    name = "diffusion step (CFG + DDPM noise)" if cfg else "diffusion step (DDPM noise, no CFG)"
    return Case(name=name + (" out=" if preallocated else ""), shape="x".join(map(str, shape)) + " f32",
                setup=setup, fastlearn=fl, baseline=base, baseline_name="torch ops (diffusers-style step)",
                bytes=(reads + 2) * n * 4, device=device, quick=True,
                notes=f"floor: read {reads} tensors, write prev and x0; noise made in the kernel")


def _noise_case(n, device="cpu"):
    import fastlearn.ops as flops

    def setup():
        return torch.Generator(device=device).manual_seed(0)

    return Case(name="philox_randn", shape=f"{n} f32", setup=setup,
                fastlearn=lambda g: flops.philox_randn((n,), seed=3, device=device),
                baseline=lambda g: torch.randn(n, generator=g, device=device), baseline_name="torch.randn",
                bytes=n * 4, device=device, quick=True, notes="counter-based Philox4x32-10 + Box-Muller")


def cases(quick: bool = False) -> list[Case]:
    out = [_step_case((64, 3, 64, 64), cfg=True), _step_case((64, 3, 64, 64), cfg=False),
           _step_case((64, 3, 64, 64), cfg=True, preallocated=True), _noise_case(1 << 20)]
    if torch.cuda.is_available():
        out += [_step_case((256, 4, 64, 64), cfg=True, device="cuda"),
                _step_case((256, 4, 64, 64), cfg=True, device="cuda", preallocated=True),
                _step_case((256, 4, 64, 64), cfg=False, device="cuda"), _noise_case(1 << 24, device="cuda")]
    return out
