"""Diffusion models: the 1-D random walk, noise schedules, diffusers-compatible DDPM/DDIM
schedulers, the sampling loop with classifier and classifier-free guidance (one CUDA graph on
GPU, the fused C++ step on CPU), a class-conditional UNet trained on digits, variational
diffusion (continuous time, learned log-SNR schedule) and latent diffusion.

Each submodule lists its public names in ``__all__``; they are gathered here."""

import importlib as _importlib

__all__ = []
for _name in ("_random_walk", "_schedules", "_schedulers", "_unet", "_training", "_sampling", "_vdm", "_latent"):
    _module = _importlib.import_module(f"{__name__}.{_name}")
    for _public in getattr(_module, "__all__", ()):
        globals()[_public] = getattr(_module, _public)
        __all__.append(_public)
del _importlib, _name, _module
