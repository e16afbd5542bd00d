"""The buffer boundary: views of NumPy arrays and torch tensors, and C++ check errors that
arrive in Python as ValueError/TypeError naming the argument."""

import numpy as np
import pytest
import torch

from fastlearn import _C
from fastlearn._buffer import view


def test_view_of_numpy_array_in_elements():
    a = np.zeros((3, 4), dtype=np.float64)[:, ::2]
    v = view(a, "X")
    assert v.shape == [3, 2] and v.strides == [4, 2] and v.dtype == "float64" and v.name == "X"
    assert not v.is_contiguous


def test_view_of_tensor():
    t = torch.zeros(2, 5, dtype=torch.bfloat16).T
    v = view(t, "q")
    assert v.shape == [5, 2] and v.strides == [1, 5] and v.dtype == "bfloat16"


def test_zero_size_is_contiguous():
    assert view(torch.empty(3, 0), "x").is_contiguous


def test_bad_types_and_dtypes():
    with pytest.raises(TypeError, match="'x' must be a numpy.ndarray or a torch.Tensor"):
        view([1, 2], "x")
    with pytest.raises(TypeError, match="argument 'z' has dtype torch.complex64"):
        view(torch.zeros(2, dtype=torch.complex64), "z")
    with pytest.raises(TypeError, match="argument 'z' has dtype object"):
        view(np.array([1, None]), "z")


def test_cpp_checks_raise_python_errors_with_argument_names():
    x = torch.zeros(4, 6)
    y = torch.zeros(4, 6, dtype=torch.float64)
    with pytest.raises(TypeError, match="'input' and 'out' must have the same dtype"):
        _C.softmax_forward(view(x, "input"), view(y, "out"), 1, False)
    with pytest.raises(ValueError, match="'input' must be contiguous"):
        xt = x.T
        _C.softmax_forward(view(xt, "input"), view(torch.zeros(6, 4), "out"), 1, False)
    with pytest.raises(ValueError, match="argument 'dim' is 5"):
        _C.softmax_forward(view(x, "input"), view(torch.zeros(4, 6), "out"), 5, False)
    with pytest.raises(TypeError, match="argument 'input' has dtype int64"):
        xi = torch.zeros(4, 6, dtype=torch.int64)
        _C.softmax_forward(view(xi, "input"), view(xi.clone(), "out"), 1, False)


def test_cuda_view_without_a_usable_gpu_is_refused():
    # Without a CUDA build: "built without CUDA". With one but no GPU/driver: the launch check
    # reports the CUDA error. Either way a RuntimeError, never a crash.
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    v = _C.View(1, 2, [2], [1], 1, 0, 0, "x")
    match = "CUDA error" if _C.build_info()["cuda_built"] else "built without CUDA"
    with pytest.raises(RuntimeError, match=match):
        _C.softmax_forward(v, v, 0, False)
