"""The Python half of the buffer boundary: ``view(x, name)`` turns a NumPy array or a torch
tensor into the ``_C.View`` the C++/CUDA kernels take (pointer, dtype, shape, strides in
elements, device, stream). It is the only place that looks inside arrays for _C."""

from __future__ import annotations

import os

import numpy as np
import torch

from fastlearn import _C

# Codes shared with csrc/include/fastlearn/view.h (enum class DType).
_TORCH_CODES = {
    torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3, torch.int32: 4,
    torch.int64: 5, torch.uint8: 6, torch.bool: 7, torch.int8: 8, torch.int16: 9,
}
_NUMPY_CODES = {
    np.dtype(np.float16): 0, np.dtype(np.float32): 2, np.dtype(np.float64): 3,
    np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint8): 6, np.dtype(np.bool_): 7,
    np.dtype(np.int8): 8, np.dtype(np.int16): 9,
}
_CPU, _CUDA = 0, 1

# Fresh CPU outputs of at least this many bytes are backed by transparent huge pages (see
# fresh_output); FASTLEARN_HUGE_PAGES=0 in the environment turns that off.
HUGE_PAGES_MIN_BYTES = 32 << 20
HUGE_PAGES = os.environ.get("FASTLEARN_HUGE_PAGES", "1") != "0"


def fresh_output(t: torch.Tensor) -> torch.Tensor:
    """``t``, a tensor just allocated and not yet written, is about to be filled by a kernel: a
    large one on the CPU gets huge pages first (Linux), so its first writes fault once per
    2 MiB instead of once per 4 KiB. For an 800 MB output that is 400 faults instead of
    200,000: one_hot of 1M labels x 100 classes took 410-455 ms, 71-81 ms with them. Returns t."""
    if HUGE_PAGES and t.nbytes >= HUGE_PAGES_MIN_BYTES and t.is_cpu:
        _C.advise_huge_pages(t.data_ptr(), t.nbytes)
    return t


def view(x, name: str) -> _C.View:
    """Describe ``x`` (ndarray or tensor) to _C; ``name`` is the argument's name in errors.

    The caller keeps ``x`` alive for as long as the view is used. CUDA tensors carry the
    current stream of their device, read here (inside the op body, never in traced code).
    """
    if isinstance(x, torch.Tensor):
        code = _TORCH_CODES.get(x.dtype)
        if code is None:
            raise TypeError(f"argument {name!r} has dtype {x.dtype}, which fastlearn kernels do not take; "
                            f"convert it first (e.g. {name}.to(torch.float32)).")
        # Kept lean: this runs on every op call (is_cpu/is_cuda are cheaper than x.device.type).
        if x.is_cpu:
            return _C.View(x.data_ptr(), code, x.shape, x.stride(), _CPU, 0, 0, name)
        if x.is_cuda:
            stream = torch.cuda.current_stream(x.device).cuda_stream
            return _C.View(x.data_ptr(), code, x.shape, x.stride(), _CUDA, x.device.index or 0, stream, name)
        raise ValueError(f"argument {name!r} is on device {x.device}; fastlearn kernels run on 'cpu' "
                         f"and 'cuda'. Move it with {name}.to('cpu').")
    if isinstance(x, np.ndarray):
        code = _NUMPY_CODES.get(x.dtype)
        if code is None:
            raise TypeError(f"argument {name!r} has dtype {x.dtype}, which fastlearn kernels do not take; "
                            f"convert it first (e.g. {name}.astype(np.float64)).")
        item = x.itemsize
        if any(s % item for s in x.strides):
            raise ValueError(f"argument {name!r} has strides {x.strides} that are not a multiple of its "
                             f"item size {item}; pass np.ascontiguousarray({name}).")
        return _C.View(x.ctypes.data, code, list(x.shape), [s // item for s in x.strides], _CPU, 0, 0, name)
    raise TypeError(f"argument {name!r} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}.")
