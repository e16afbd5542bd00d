"""softmax and log_softmax as torch.library custom ops: drop-in for torch.softmax and
torch.log_softmax. CPU: C++ kernel in _C; CUDA: Triton kernel (or _C's CUDA kernel); fake
kernels for tracing; autograd through fastlearn::softmax_backward, a kernel of its own."""

from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from fastlearn import _C
from fastlearn._buffer import fresh_output, view
from fastlearn.ops._device import cuda_kernels_for_small_calls, gpu_backend
from fastlearn.ops._eager import direct_cpu_call_ok, direct_gpu_call_ok, eager_triton

__all__ = ["softmax", "log_softmax"]

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _split3(shape, dim):
    outer = 1
    for s in shape[:dim]:
        outer *= s
    inner = 1
    for s in shape[dim + 1:]:
        inner *= s
    length = shape[dim] if len(shape) else 1
    return outer, length, inner


def _triton_launch(direction, tensors, dim, log):
    """direction 'fwd' or 'bwd'; rows of the last dim (inner == 1) take the rows kernels."""
    from fastlearn.kernels.triton import softmax as tk

    ref = tensors[0]
    outer, length, inner = _split3(ref.shape, dim)
    acc = _tl_acc(ref.dtype)
    if inner == 1:
        meta, grid = tk.rows_launch_config(outer, length, ref.element_size())
        kernel, sizes = getattr(tk, f"_softmax_rows_{direction}_kernel"), (outer, length)
    else:
        meta, grid = tk.launch_config(outer, length, inner)
        kernel, sizes = getattr(tk, f"_softmax_{direction}_kernel"), (length, inner)
    wrap_triton(kernel)[grid](*tensors, *sizes, LOG=log, ACC=acc, **meta)


def _tl_acc(dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


# Registration pattern (shared by every fastlearn op with a Triton GPU kernel):
# - fastlearn::<op>_cpu is an opaque custom_op holding the C++ kernel, with a fake kernel.
# - fastlearn::<op> is a triton_op whose body picks the path by device: CPU tensors go to
#   the _cpu op, CUDA tensors to the Triton kernel through wrap_triton. triton_op decomposes
#   the op into its body when AOTAutograd functionalises, so under torch.compile Inductor sees
#   the Triton kernel on GPU and the opaque C++ op on CPU. (A triton_op body that called _C
#   directly would hand fake tensors to C++.) The fake kernel and autograd attach to the
#   outer op.

# --- forward ---------------------------------------------------------------------------

def _softmax_cpu_kernel(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    y = fresh_output(torch.empty_like(x))
    _C.softmax_forward(view(x, "input"), view(y, "out"), dim, log)
    return y


_softmax_cpu = torch.library.custom_op("fastlearn::softmax_cpu", _softmax_cpu_kernel, mutates_args=(),
                                       device_types="cpu")


@_softmax_cpu.register_fake
def _softmax_cpu_fake(x, dim, log):
    return torch.empty_like(x)


def _softmax_gpu(x, dim, log):
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    if gpu_backend("softmax") == "triton":
        _triton_launch("fwd", (x, y), dim % max(x.dim(), 1), log)
    else:  # _C's CUDA kernel reduces over the last dim
        xl = x.movedim(dim, -1).contiguous()
        yl = torch.empty_like(xl)
        _C.softmax_forward(view(xl, "input"), view(yl, "out"), -1, log)
        y.copy_(yl.movedim(-1, dim))
    return y


# Eager GPU calls (direct_gpu_call_ok) of at most this many elements, over the last dim, take
# _C's CUDA kernel: the Python call and Triton launch cost more than such a kernel runs.
SMALL_GPU_CALL = 1 << 20


def _gpu_forward_into(x, y, d, log):
    """An eager GPU forward into y (contiguous, like x); the caller checked direct_gpu_call_ok."""
    if d == x.dim() - 1 and x.numel() <= SMALL_GPU_CALL and cuda_kernels_for_small_calls():
        _C.softmax_forward(view(x, "input"), view(y, "out"), -1, log)
    else:
        with eager_triton():
            _triton_launch("fwd", (x, y), d, log)


def _softmax_gpu_direct(x, d, log):
    y = torch.empty_like(x)
    if x.numel():
        _gpu_forward_into(x, y, d, log)
    return y


@triton_op("fastlearn::softmax", mutates_args=())
def _softmax(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    if x.device.type == "cpu":
        return torch.ops.fastlearn.softmax_cpu(x, dim, log)
    return _softmax_gpu(x, dim, log)


@_softmax.register_fake
def _softmax_fake(x, dim, log):
    return torch.empty_like(x)


# --- backward ----------------------------------------------------------------------------

@torch.library.custom_op("fastlearn::softmax_backward_cpu", mutates_args=(), device_types="cpu")
def _softmax_backward_cpu(grad_y: torch.Tensor, y: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    gx = fresh_output(torch.empty_like(y))
    _C.softmax_backward(view(grad_y, "grad_output"), view(y, "output"), view(gx, "grad_input"), dim, log)
    return gx


@_softmax_backward_cpu.register_fake
def _softmax_backward_cpu_fake(grad_y, y, dim, log):
    return torch.empty_like(y)


@triton_op("fastlearn::softmax_backward", mutates_args=())
def _softmax_backward(grad_y: torch.Tensor, y: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    if y.device.type == "cpu":
        return torch.ops.fastlearn.softmax_backward_cpu(grad_y, y, dim, log)
    gx = torch.empty_like(y)
    if y.numel() == 0:
        return gx
    if gpu_backend("softmax_backward") == "triton":
        _triton_launch("bwd", (grad_y, y, gx), dim % max(y.dim(), 1), log)
    else:
        gl, yl = grad_y.movedim(dim, -1).contiguous(), y.movedim(dim, -1).contiguous()
        gxl = torch.empty_like(yl)
        _C.softmax_backward(view(gl, "grad_output"), view(yl, "output"), view(gxl, "grad_input"), -1, log)
        gx.copy_(gxl.movedim(-1, dim))
    return gx


@_softmax_backward.register_fake
def _softmax_backward_fake(grad_y, y, dim, log):
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    _, dim, log = inputs
    ctx.save_for_backward(output)
    ctx.dim, ctx.log = dim, log


def _backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return torch.ops.fastlearn.softmax_backward(grad.contiguous(), y, ctx.dim, ctx.log), None, None


_softmax.register_autograd(_backward, setup_context=_setup_context)


# --- public functions ----------------------------------------------------------------------

def _prepare(x, dim, dtype, op):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a torch.Tensor, got {type(x).__name__}; "
                        f"use torch.as_tensor(input).")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op}: argument 'dim' must be an int, got {type(dim).__name__}.")
    if dtype is not None:
        x = x.to(dtype)
    if x.dtype not in _FLOATS:
        raise TypeError(f"{op}: argument 'input' has dtype {x.dtype}; softmax needs a floating dtype "
                        f"(float32, float64, float16, bfloat16): pass dtype=torch.float32 or convert it.")
    nd = max(x.dim(), 1)
    if not -nd <= dim < nd:
        raise IndexError(f"{op}: argument 'dim' is {dim}, out of range for a {x.dim()}-d input "
                         f"(expected in [{-nd}, {nd - 1}]).")
    return x.contiguous(), dim % nd


def _write_out(x, d, log, out, op):
    """out= semantics of torch.softmax: same dtype, resized to the input's shape, no autograd."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{op}: argument 'out' must be a torch.Tensor, got {type(out).__name__}.")
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        raise RuntimeError(f"{op}(): functions with out=... arguments don't support automatic differentiation, "
                           f"but one of the arguments requires grad; call it under torch.no_grad() or drop out=.")
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: argument 'out' has dtype {out.dtype} but the result is {x.dtype}; "
                        f"pass an out tensor of dtype {x.dtype}.")
    if out.device != x.device:
        raise ValueError(f"{op}: argument 'out' is on {out.device} but 'input' is on {x.device}.")
    if out.shape != x.shape:
        out.resize_(x.shape)
    if out.is_contiguous() and direct_cpu_call_ok(x, out):
        _C.softmax_forward(view(x, "input"), view(out, "out"), d, log)
    elif out.is_contiguous() and direct_gpu_call_ok(x, out) and gpu_backend(op) == "triton":
        if x.numel():  # the kernel writes straight into out (no temporary, no copy)
            _gpu_forward_into(x, out, d, log)
    else:
        out.copy_(torch.ops.fastlearn.softmax(x, d, log))
    return out


def _forward(input, dim, dtype, out, log, op):
    """softmax / log_softmax: out= written in place; plain eager tensors straight to the
    kernels (no dispatcher); everything else through the op (autograd, tracing, modes)."""
    x, d = _prepare(input, dim, dtype, op)
    if out is not None:
        return _write_out(x, d, log, out, op)
    if direct_cpu_call_ok(x):
        return _softmax_cpu_kernel(x, d, log)
    if direct_gpu_call_ok(x) and gpu_backend(op) == "triton":
        return _softmax_gpu_direct(x, d, log)
    return torch.ops.fastlearn.softmax(x, d, log)


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None, *,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Drop-in for ``torch.softmax(input, dim, dtype=None, *, out=None)``: exp(x - max) / sum
    along ``dim``.

    Any floating dtype (float16/bfloat16 accumulate in float32), any dim, any length; a row of
    all ``-inf`` gives NaN, as in PyTorch. Differentiable. The output is contiguous; with
    ``out=`` the result is written into it (no autograd, as in PyTorch).
    """
    return _forward(input, dim, dtype, out, False, "softmax")


def log_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None, *,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Drop-in for ``torch.log_softmax(input, dim, dtype=None, *, out=None)``:
    x - max - log(sum(exp(x - max)))."""
    return _forward(input, dim, dtype, out, True, "log_softmax")
