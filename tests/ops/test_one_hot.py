"""one_hot against a NumPy reference and torch.nn.functional.one_hot: shapes, dtypes,
num_classes=-1, errors; opcheck and torch.compile; the Triton kernel under the interpreter."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastlearn.ops as flops
from tests import reference as ref


@pytest.mark.parametrize("shape", [(0,), (1,), (37,), (4, 9), (2, 3, 5)])
@pytest.mark.parametrize("num_classes", [-1, 7, 300])
def test_matches_reference_and_torch(shape, num_classes):
    labels = torch.randint(0, 7, shape)
    if num_classes == -1 and labels.numel() == 0:
        with pytest.raises(ValueError, match="num_classes"):
            flops.one_hot(labels, num_classes)
        return
    out = flops.one_hot(labels, num_classes)
    n = num_classes if num_classes != -1 else int(labels.max()) + 1
    assert out.dtype == torch.int64 and out.shape == (*shape, n)
    np.testing.assert_array_equal(out.numpy(), ref.one_hot(labels.numpy(), n))
    torch.testing.assert_close(out, F.one_hot(labels, num_classes))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
def test_other_integer_dtypes(dtype):
    labels = torch.randint(0, 5, (50,)).to(dtype)
    np.testing.assert_array_equal(flops.one_hot(labels, 5).numpy(), ref.one_hot(labels.long().numpy(), 5))


def test_non_contiguous_labels():
    labels = torch.randint(0, 4, (6, 8)).T
    torch.testing.assert_close(flops.one_hot(labels, 4), F.one_hot(labels, 4))


def test_errors():
    with pytest.raises(ValueError, match="smaller than num_classes=3"):
        flops.one_hot(torch.tensor([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        flops.one_hot(torch.tensor([0, -1, 2]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        flops.one_hot(torch.tensor([0, -1, 2]))
    with pytest.raises(TypeError, match="integer class"):
        flops.one_hot(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="positive or -1"):
        flops.one_hot(torch.tensor([0, 1]), -5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        flops.one_hot([0, 1], 2)


def test_opcheck_and_compile():
    labels = torch.randint(0, 6, (5, 3))
    torch.library.opcheck(torch.ops.fastlearn.one_hot.default, (labels, 6))
    f = torch.compile(lambda y: flops.one_hot(y, 6) * 2, fullgraph=True)
    torch.testing.assert_close(f(labels), F.one_hot(labels, 6) * 2)


@pytest.mark.triton
def test_triton_kernel(triton_device):
    from fastlearn.kernels.triton import one_hot as tk

    for n, c in ((1, 1), (70, 5), (130, 200)):
        labels = torch.randint(0, c, (n,)).to(triton_device)
        out = torch.full((n, c), -7, dtype=torch.int64, device=triton_device)  # poison
        meta, grid = tk.launch_config(n, c)
        tk._one_hot_kernel[grid](labels, out, n, c, **meta)
        np.testing.assert_array_equal(out.cpu().numpy(), ref.one_hot(labels.cpu().numpy(), c))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu(monkeypatch, backend):
    monkeypatch.setenv("FASTLEARN_GPU_BACKEND", backend)
    labels = torch.randint(0, 10, (1000,), device="cuda")
    torch.testing.assert_close(flops.one_hot(labels, 10), F.one_hot(labels, 10))
    torch.testing.assert_close(flops.one_hot(labels), F.one_hot(labels))
