"""The one device probe of the ops layer: which GPU backend serves a CUDA tensor.

Triton is the GPU path of choice; the CUDA kernels compiled into _C serve when Triton is
missing, or when FASTLEARN_GPU_BACKEND=cuda asks for them. Asking for a path that is not
there raises an error that says why.
"""

from __future__ import annotations

import functools
import os

from fastlearn import _C


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _cuda_built() -> bool:
    return bool(_C.build_info()["cuda_built"])


def cuda_kernels_for_small_calls() -> bool:
    """Whether a small eager GPU call may take _C's CUDA kernel, launched from C++, instead of a
    Triton launch from Python (on an H100 machine a whole 32x1000 softmax call took 23-33 us of
    host time that way, 36-68 us through Triton): built with CUDA, and FASTLEARN_GPU_BACKEND
    does not ask for Triton."""
    return _cuda_built() and os.environ.get("FASTLEARN_GPU_BACKEND", "auto").lower() != "triton"


def gpu_backend(op: str) -> str:
    """'triton' or 'cuda' for a CUDA tensor reaching ``op``; RuntimeError when neither runs."""
    wanted = os.environ.get("FASTLEARN_GPU_BACKEND", "auto").lower()
    if wanted == "auto" and _triton_importable():  # the common case, first: a small op's call counts
        return "triton"
    cuda_built = _cuda_built()
    if wanted not in ("auto", "triton", "cuda"):
        raise ValueError(f"FASTLEARN_GPU_BACKEND must be 'auto', 'triton' or 'cuda', got {wanted!r}.")
    if wanted in ("auto", "triton") and _triton_importable():
        return "triton"
    if wanted in ("auto", "cuda") and cuda_built:
        return "cuda"
    why = []
    if not _triton_importable():
        why.append("Triton is not installed (pip install triton)")
    if not cuda_built:
        why.append("fastlearn was built without CUDA (rebuild with FASTLEARN_CUDA=ON and nvcc on PATH)")
    if wanted == "cuda" and cuda_built is False:
        why = ["FASTLEARN_GPU_BACKEND=cuda but fastlearn was built without CUDA"]
    raise RuntimeError(f"{op}: no GPU kernel can run: {'; '.join(why)}. Or move the inputs to the CPU.")
