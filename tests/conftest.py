"""Test configuration: markers `cuda` (skipped without a GPU and a CUDA build) and `triton`
(run under TRITON_INTERPRET=1 on a machine without a GPU, so the GPU kernels' logic is
checked in CI on small shapes)."""

import os

import pytest
import torch

# Must be set before any Triton kernel is decorated (i.e. before fastlearn.kernels.triton.*
# is imported): triton.jit picks the interpreter at decoration time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_GPU = torch.cuda.is_available()


def _triton_importable():
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    import fastlearn

    cuda_built = fastlearn.info()["build"]["cuda_built"]
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU and fastlearn built with CUDA")
    skip_triton = pytest.mark.skip(reason="Triton is not installed")
    for item in items:
        if "cuda" in item.keywords and not (HAS_GPU and cuda_built):
            item.add_marker(skip_cuda)
        if "triton" in item.keywords and not _triton_importable():
            item.add_marker(skip_triton)


@pytest.fixture
def triton_device():
    """Where Triton kernels run in this session: the GPU, or CPU tensors under the interpreter."""
    return "cuda" if HAS_GPU else "cpu"
