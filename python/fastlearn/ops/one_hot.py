"""one_hot as a torch.library custom op: drop-in for torch.nn.functional.one_hot.
CPU: C++ kernel (range check, then one pass of writes); CUDA: Triton kernel (or _C's CUDA
kernel) with an asynchronous range check, so the op never waits for the GPU unless
num_classes=-1 asks for max(labels) + 1, as PyTorch's does."""

from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from fastlearn import _C
from fastlearn._buffer import fresh_output, view
from fastlearn.ops._device import gpu_backend
from fastlearn.ops._eager import direct_cpu_call_ok

__all__ = ["one_hot"]

_INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _resolve_classes(labels, num_classes):
    if num_classes != -1:
        return num_classes
    if labels.numel() == 0:
        raise ValueError("one_hot: can not infer num_classes from empty 'labels'; pass num_classes explicitly.")
    return int(labels.max().item()) + 1


def _one_hot_cpu_kernel(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes == -1 and labels.numel() > 0 and int(labels.min()) < 0:
        raise ValueError("one_hot: argument 'labels' has negative class values; class values must be non-negative.")
    n_cls = _resolve_classes(labels, num_classes)
    out = fresh_output(labels.new_empty((*labels.shape, n_cls), dtype=torch.int64))
    _C.one_hot(view(labels, "labels"), view(out, "out"), n_cls)
    return out


def _one_hot_fake(labels, num_classes):
    if num_classes == -1:
        num_classes = torch.library.get_ctx().new_dynamic_size()
    return labels.new_empty((*labels.shape, num_classes), dtype=torch.int64)


_one_hot_cpu = torch.library.custom_op("fastlearn::one_hot_cpu", _one_hot_cpu_kernel, mutates_args=(),
                                       device_types="cpu")
_one_hot_cpu.register_fake(_one_hot_fake)


# The registration pattern is explained in softmax.py: CPU goes to the opaque _cpu op.
@triton_op("fastlearn::one_hot", mutates_args=())
def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    if labels.device.type == "cpu":
        return torch.ops.fastlearn.one_hot_cpu(labels, num_classes)
    # GPU: out-of-range labels fail asynchronously on the device.
    if num_classes == -1 and labels.numel() > 0:
        torch._assert_async((labels >= 0).all(), "one_hot: class values must be non-negative.")
    n_cls = _resolve_classes(labels, num_classes)
    out = labels.new_empty((*labels.shape, n_cls), dtype=torch.int64)
    if out.numel() == 0:
        return out
    torch._assert_async(((labels >= 0) & (labels < n_cls)).all(),
                        "one_hot: class values must be in [0, num_classes).")
    if gpu_backend("one_hot") == "triton":
        from fastlearn.kernels.triton import one_hot as tk

        flat = labels.reshape(-1)
        meta, grid = tk.launch_config(flat.numel(), n_cls)
        wrap_triton(tk._one_hot_kernel)[grid](flat, out, flat.numel(), n_cls, **meta)
    else:
        _C.one_hot(view(labels, "labels"), view(out, "out"), n_cls)
    return out


_one_hot.register_fake(_one_hot_fake)


def one_hot(tensor: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.one_hot(tensor, num_classes=-1)``.

    Returns int64 of shape ``(*tensor.shape, num_classes)``. Accepts any integer dtype
    (PyTorch takes int64 only). ``num_classes=-1`` uses ``max(tensor) + 1``. Labels outside
    ``[0, num_classes)`` raise ValueError on the CPU (an asynchronous device assert on GPU).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"one_hot: argument 'tensor' must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dtype not in _INTS:
        raise TypeError(f"one_hot: argument 'tensor' has dtype {tensor.dtype}; it must hold integer class "
                        f"indices (int64, int32, ...). Convert it with tensor.long().")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"one_hot: argument 'num_classes' must be an int, got {type(num_classes).__name__}.")
    if num_classes < -1 or num_classes == 0 and tensor.numel() > 0:
        raise ValueError(f"one_hot: argument 'num_classes' must be positive or -1 (infer), got {num_classes}.")
    tensor = tensor.contiguous()
    if direct_cpu_call_ok(tensor):
        return _one_hot_cpu_kernel(tensor, num_classes)
    return torch.ops.fastlearn.one_hot(tensor, num_classes)
