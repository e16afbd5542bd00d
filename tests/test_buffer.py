"""The buffer boundary: views of NumPy arrays and torch tensors, and C++ check errors that
arrive in Python as ValueError/TypeError naming the argument."""

import ctypes
import mmap
import os
import sys

import numpy as np
import pytest
import torch

from fastlearn import _C, _buffer
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


def _vm_flags(address):
    """VmFlags of the mapping of this process that holds ``address`` (Linux)."""
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(v, 16) for v in head.split("-"))
            if lo <= address < hi:
                for follow in lines[i + 1:]:
                    if follow.startswith("VmFlags:"):
                        return follow.split()[1:]
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/smaps"),
                    reason="transparent huge pages are a Linux feature")
def test_fresh_output_marks_a_large_cpu_tensor_for_huge_pages():
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists(thp) or "[never]" in open(thp).read():
        pytest.skip("transparent huge pages are off on this machine")
    # The advice itself, on a mapping of our own: fresh from mmap, so not yet advised.
    region = mmap.mmap(-1, 48 << 20)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    inside = (address + (4 << 20)) & ~((2 << 20) - 1)  # a 2 MiB boundary well inside it
    assert "hg" not in _vm_flags(inside)
    assert _C.advise_huge_pages(address, 48 << 20)
    assert "hg" in _vm_flags(inside)
    # fresh_output on a tensor: advised afterwards. (Not checked before: when the allocator
    # hands out memory it got back from an earlier advised tensor, that is advised already.)
    t = torch.empty(48 << 18)  # 48 MiB
    inside = (t.data_ptr() + (4 << 20)) & ~((2 << 20) - 1)
    assert _buffer.fresh_output(t) is t
    assert "hg" in _vm_flags(inside)
    t.fill_(1.5)
    assert float(t.sum()) == 1.5 * t.numel()


def test_fresh_output_only_advises_large_cpu_tensors_and_can_be_turned_off(monkeypatch):
    calls = []
    monkeypatch.setattr(_buffer._C, "advise_huge_pages", lambda p, n: calls.append((p, n)) or True)
    big = torch.empty(_buffer.HUGE_PAGES_MIN_BYTES // 4)
    _buffer.fresh_output(torch.empty(1000))
    assert calls == []
    _buffer.fresh_output(big)
    assert calls == [(big.data_ptr(), big.nbytes)]
    monkeypatch.setattr(_buffer, "HUGE_PAGES", False)
    _buffer.fresh_output(big)
    assert len(calls) == 1


def test_ops_with_advised_outputs_match_pytorch(monkeypatch):
    # Every output advised (threshold lowered to one byte): the values are those of PyTorch.
    import fastlearn.ops as flops

    monkeypatch.setattr(_buffer, "HUGE_PAGES_MIN_BYTES", 1)
    x = torch.randn(300, 1000, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(flops.softmax(x.detach(), 1), torch.softmax(x.detach(), 1), rtol=1e-12, atol=1e-15)
    flops.log_softmax(x, 1).sum().backward()
    g = x.grad.clone()
    x.grad = None
    torch.log_softmax(x, 1).sum().backward()
    torch.testing.assert_close(g, x.grad, rtol=1e-12, atol=1e-12)
    labels = torch.randint(0, 37, (5000,))
    assert torch.equal(flops.one_hot(labels, 37), torch.nn.functional.one_hot(labels, 37))
