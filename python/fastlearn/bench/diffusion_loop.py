"""Benchmark cases of the whole sampling loop: the digits UNet (fastlearn.diffusion.UNet, 8x8,
10 classes), 50 DDIM steps with classifier-free guidance (w = 3, one forward of 2 x 64 per
step), batch 64. fastlearn.diffusion.sample (CPU: the fused C++ step; GPU: one CUDA graph of all
steps) against the same denoiser driven by the eager loop a user writes with scheduler.step
(fastlearn's DDIMScheduler, and diffusers' when it is installed)."""

from __future__ import annotations

import importlib.util

import torch

from fastlearn.bench.core import Case, torch_threads

BATCH, STEPS, GUIDANCE = 64, 50, 3.0


def _setup(device, scheduler_kind="fastlearn"):
    from fastlearn.diffusion import DDIMScheduler, UNet

    def setup():
        torch.manual_seed(0)
        unet = UNet(1, 8, base_channels=32, channel_mults=(1, 2), num_classes=10).to(device).eval()
        labels = (torch.arange(BATCH) % 10).to(device)
        if scheduler_kind == "diffusers":
            import diffusers

            base = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
        else:
            base = DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
        ours = DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
        return unet, labels, ours, base, device

    return setup


def _fastlearn(inputs, cuda_graph, steps=STEPS, threads=None):
    from fastlearn.diffusion import sample

    unet, labels, ours, _, device = inputs
    with torch_threads(threads):
        return sample(unet, ours, (BATCH, 1, 8, 8), labels=labels, guidance_scale=GUIDANCE,
                      num_inference_steps=steps, seed=0, device=device, cuda_graph=cuda_graph, progress=False)


@torch.no_grad()
def _eager_loop(inputs, threads=None, steps=STEPS):
    """The loop of a diffusers-style pipeline: batched [cond; uncond] forward, CFG in torch,
    scheduler.step."""
    unet, labels, _, sched, device = inputs
    with torch_threads(threads):
        sched.set_timesteps(steps, device=device)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(BATCH, 1, 8, 8, generator=g).to(device)
        both = torch.cat([labels, torch.full_like(labels, 10)])
        for t in sched.timesteps:
            cond, uncond = unet(torch.cat([x, x]), t, both).chunk(2)
            eps = uncond + GUIDANCE * (cond - uncond)
            x = sched.step(eps, t, x).prev_sample
        return x


def cases(quick: bool = False) -> list[Case]:
    shape = f"UNet 8x8 b{BATCH} x{STEPS} DDIM steps, CFG (2x{BATCH} fwd)"
    short = f"UNet 8x8 b{BATCH} x10 DDIM steps, CFG (2x{BATCH} fwd), 1 thread both"
    out = [
        Case(name="sampling loop", shape=short, setup=_setup("cpu"),
             fastlearn=lambda inp: _fastlearn(inp, False, 10, threads=1), baseline=lambda inp: _eager_loop(inp, 1, 10),
             baseline_name="eager loop + DDIMScheduler.step", quick=True,
             notes="the --quick version: 10 steps"),
        Case(name="sampling loop", shape=shape + ", 1 thread both", setup=_setup("cpu"),
             fastlearn=lambda inp: _fastlearn(inp, False, threads=1),
             baseline=lambda inp: _eager_loop(inp, threads=1),
             baseline_name="eager loop + DDIMScheduler.step", quick=False,
             notes="the UNet dominates on CPU; the loop and step are a small share"),
        Case(name="sampling loop", shape=shape + ", default threads both", setup=_setup("cpu"),
             fastlearn=lambda inp: _fastlearn(inp, False), baseline=_eager_loop,
             baseline_name="eager loop + DDIMScheduler.step", quick=False,
             notes="both on torch's default threads (sample() keeps them for any model size)"),
        Case(name="sampling loop CUDA graph", shape=shape, setup=_setup("cuda"),
             fastlearn=lambda inp: _fastlearn(inp, True), baseline=_eager_loop,
             baseline_name="eager loop + DDIMScheduler.step", device="cuda", quick=True,
             notes="one CUDA graph of 50 x (UNet + fused step), replayed; target >= 2x"),
    ]
    if importlib.util.find_spec("diffusers") is None:
        return out
    out.append(Case(name="sampling loop vs diffusers", shape=shape + ", 1 thread both", setup=_setup("cpu", "diffusers"),
                    fastlearn=lambda inp: _fastlearn(inp, False, threads=1),
                    baseline=lambda inp: _eager_loop(inp, threads=1),
                    baseline_name="eager loop + diffusers.DDIMScheduler.step", quick=False))
    if torch.cuda.is_available():
        out.append(Case(name="sampling loop CUDA graph vs diffusers", shape=shape, setup=_setup("cuda", "diffusers"),
                        fastlearn=lambda inp: _fastlearn(inp, True), baseline=_eager_loop,
                        baseline_name="eager loop + diffusers.DDIMScheduler.step", device="cuda", quick=False))
    return out
