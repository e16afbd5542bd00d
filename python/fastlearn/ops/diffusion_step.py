"""diffusion_step: one fused pass for what a DDPM/DDIM scheduler step does in ten tensor ops
(classifier-free guidance and its rescale, x0 prediction, clipping, the update and the added
noise, drawn inside the kernel from a seed and a counter offset). CPU: C++ kernel in _C; CUDA:
Triton kernels; fake kernels for tracing; autograd by a torch formula. Also philox_randn, the
same counter-based noise on its own."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.library import triton_op, wrap_triton

from fastlearn import _C
from fastlearn._buffer import fresh_output, view
from fastlearn.ops._device import _triton_importable
from fastlearn.ops._eager import direct_cpu_call_ok, direct_gpu_call_ok, eager_triton

__all__ = ["diffusion_step", "philox_randn"]

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Columns of the scheduler's fused coefficient table, in order.
COEFFICIENT_COLUMNS = ("ax", "am", "ex", "em", "e0", "p0", "px", "pe", "sigma")
NOISE_TILE = 2048  # kNoiseTile (csrc/include/fastlearn/philox.h), NOISE_TILE of the Triton kernels
_INT64_MAX = 2**63 - 1


# --- GPU launchers (Triton) ------------------------------------------------------------------

def _require_triton(op):
    if not _triton_importable():
        raise RuntimeError(f"{op}: the GPU kernel is written in Triton, which is not installed "
                           f"(pip install triton); or move the tensors to the CPU.")


def _tl_acc(dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_step_gpu(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset, prev, x0):
    """The Triton step into prev and x0 (contiguous, like x): a rescale-statistics pass and a
    per-sample factor first when guidance rescale is on, then the one-pass step kernel."""
    _require_triton("diffusion_step")
    from fastlearn.kernels.triton import diffusion_step as tk

    n = x.numel()
    if n == 0:
        return
    per_sample = n // x.shape[0]
    acc = _tl_acc(x.dtype)
    rescale = u is not None and r > 0
    factor = None
    if rescale:
        chunks = -(-per_sample // tk.STATS_BLOCK)
        stat_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        part = torch.empty((x.shape[0], chunks, 4), dtype=stat_dtype, device=x.device)
        factor = torch.empty(x.shape[0], dtype=stat_dtype, device=x.device)
        wrap_triton(tk._rescale_partial_kernel)[(x.shape[0], chunks)](
            m, u, part, per_sample, chunks, w, ACC=acc, BLOCK=tk.STATS_BLOCK, num_warps=8)
        wrap_triton(tk._rescale_factor_kernel)[(x.shape[0],)](
            part, factor, per_sample, chunks, r, ACC=acc, CHUNK=tk.STATS_BLOCK, BLOCK_P=tk.FACTOR_BLOCK, num_warps=4)
    tiles, rem = divmod(offset, NOISE_TILE)
    grid = (-(-(rem + n) // NOISE_TILE),)
    wrap_triton(tk._diffusion_step_kernel)[grid](
        x, m, x if u is None else u, coeffs, coeffs if step_t is None else step_t, step, coeffs.shape[0],
        coeffs if seed_t is None else seed_t, seed, tiles, rem, x if factor is None else factor, prev, x0, n,
        per_sample, w, clip if math.isfinite(clip) else 0.0,
        HAS_UNCOND=u is not None, RESCALE=rescale, CLIP=math.isfinite(clip), STEP_FROM_PTR=step_t is not None,
        SEED_FROM_PTR=seed_t is not None, ALIGNED=rem == 0, IDX32=rem + n + NOISE_TILE < 2**31, ACC=acc,
        TILE=NOISE_TILE, num_warps=4)


def _launch_noise_gpu(out, seed_t, seed, offset):
    _require_triton("philox_randn")
    from fastlearn.kernels.triton import diffusion_step as tk

    n = out.numel()
    if n == 0:
        return
    tiles, rem = divmod(offset, NOISE_TILE)
    tk._philox_normal_kernel[(-(-(rem + n) // NOISE_TILE),)](
        out, out if seed_t is None else seed_t, seed, tiles, rem, n, SEED_FROM_PTR=seed_t is not None,
        ALIGNED=rem == 0, TILE=NOISE_TILE, num_warps=4)


# --- the op -------------------------------------------------------------------------------
# Registration as softmax.py explains: fastlearn::diffusion_step_cpu is an opaque custom op
# holding the C++ kernel; fastlearn::diffusion_step is a triton_op whose body sends CPU
# tensors there and CUDA tensors to the Triton kernels (torch.compile sees into those).
# Arguments after validation: u None without guidance; step_t / seed_t device tensors (int64,
# one element) or None, then step / seed ints are used; clip = inf for none.

def _step_cpu_kernel(x: torch.Tensor, m: torch.Tensor, u: Optional[torch.Tensor], coeffs: torch.Tensor,
                     step_t: Optional[torch.Tensor], step: int, w: float, r: float, clip: float,
                     seed_t: Optional[torch.Tensor], seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    prev = fresh_output(torch.empty_like(x))
    x0 = fresh_output(torch.empty_like(x))
    _cpu_into(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset, prev, x0)
    return prev, x0


def _cpu_into(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset, prev, x0):
    _C.diffusion_step(view(x, "sample"), view(m, "model_output"), None if u is None else view(u, "uncond"),
                      view(coeffs, "coeffs"), None if step_t is None else view(step_t, "step"), step, w, r, clip,
                      None if seed_t is None else view(seed_t, "seed"), seed, offset, view(prev, "prev"),
                      view(x0, "x0"))


_step_cpu = torch.library.custom_op("fastlearn::diffusion_step_cpu", _step_cpu_kernel, mutates_args=(),
                                    device_types="cpu")


@_step_cpu.register_fake
def _step_cpu_fake(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset):
    return torch.empty_like(x), torch.empty_like(x)


@triton_op("fastlearn::diffusion_step", mutates_args=())
def _diffusion_step(x: torch.Tensor, m: torch.Tensor, u: Optional[torch.Tensor], coeffs: torch.Tensor,
                    step_t: Optional[torch.Tensor], step: int, w: float, r: float, clip: float,
                    seed_t: Optional[torch.Tensor], seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    if x.device.type == "cpu":
        return torch.ops.fastlearn.diffusion_step_cpu(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset)
    return _step_gpu_kernel(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset)


def _step_gpu_kernel(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset):
    prev = torch.empty_like(x)
    x0 = torch.empty_like(x)
    _launch_step_gpu(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset, prev, x0)
    return prev, x0


@_diffusion_step.register_fake
def _diffusion_step_fake(x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset):
    return torch.empty_like(x), torch.empty_like(x)


# --- autograd -----------------------------------------------------------------------------
# The step is linear in x, m and u but for the clamp (gradient: the mask |x0| <= clip) and the
# rescale factor f = r std(c) / std(g) + 1 - r of each sample, g = u + w (c - u), whose
# gradient is written out below. The noise and the coefficients are not differentiated.

def _setup_context(ctx, inputs, output):
    x, m, u, coeffs, step_t, step, w, r, clip, seed_t, seed, offset = inputs
    ctx.save_for_backward(x, m, u, coeffs, step_t)
    ctx.step, ctx.w, ctx.r, ctx.clip = step, w, r, clip


def _backward(ctx, grad_prev, grad_x0):
    x, m, u, coeffs, step_t = ctx.saved_tensors
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # index_select, not coeffs[step_t]: a 0-d index tensor would be read on the host
    row = (coeffs.index_select(0, step_t.reshape(1))[0] if step_t is not None else coeffs[ctx.step]).to(acc)
    ax, am, ex, em, e0, p0, px, pe = row[:8].unbind()
    w, r, clip = ctx.w, ctx.r, ctx.clip
    zeros = torch.zeros((), dtype=acc, device=x.device)
    gp = grad_prev.to(acc) if grad_prev is not None else zeros
    gx0c = (grad_x0.to(acc) if grad_x0 is not None else zeros) + (p0 + pe * e0) * gp  # d/d clamp(x0)
    rescale = u is not None and r > 0
    ma = m.to(acc)
    g = ma if u is None else u.to(acc) + w * (ma - u.to(acc))
    f = 1.0
    if rescale:
        dims = tuple(range(1, x.dim()))
        n = ma[0].numel()
        std_c, std_g = ma.std(dims, keepdim=True), g.std(dims, keepdim=True)
        flat = std_g == 0  # the forward uses f = 1 there: no gradient through f
        std_g1 = torch.where(flat, 1.0, std_g)
        f = torch.where(flat, 1.0, r * std_c / std_g1 + (1.0 - r))
    if math.isfinite(clip):
        x0 = ax * x.to(acc) + am * (g * f)
        gx0c = gx0c * ((x0 >= -clip) & (x0 <= clip))
    gx = (px + pe * ex) * gp + ax * gx0c
    gmv = pe * em * gp + am * gx0c  # gradient of the guided, rescaled model output
    if u is None:
        gm, gu = gmv, None
    else:
        gg = gmv * f
        gc = torch.zeros((), dtype=acc, device=x.device)
        if rescale:
            phi = torch.where(flat, 0.0, (gmv * g).sum(dims, keepdim=True))  # dL/df per sample
            std_c1 = torch.where(std_c == 0, 1.0, std_c)
            # d std(v) / d v_j = (v_j - mean v) / ((n - 1) std(v))
            gc = phi * (r / std_g1) * (ma - ma.mean(dims, keepdim=True)) / ((n - 1) * std_c1)
            gg = gg - phi * (r * std_c / std_g1**2) * (g - g.mean(dims, keepdim=True)) / ((n - 1) * std_g1)
        gm, gu = w * gg + gc, (1.0 - w) * gg
    gx = gx.expand(x.shape)
    gm = gm.expand(m.shape)
    return (gx.to(x.dtype), gm.to(m.dtype), None if gu is None else gu.expand(u.shape).to(u.dtype),
            None, None, None, None, None, None, None, None, None)


_diffusion_step.register_autograd(_backward, setup_context=_setup_context)


# --- public functions ------------------------------------------------------------------------

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _device_int(t, name, device):
    """A one-element integer tensor on `device`, as int64 (a device-side cast, no host sync)."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"diffusion_step: argument '{name}' is a tensor of dtype {t.dtype}; pass a Python int or "
                        f"a one-element int64 tensor.")
    if t.numel() != 1:
        raise ValueError(f"diffusion_step: argument '{name}' must hold one element, got shape {tuple(t.shape)}.")
    if t.device != device:
        raise ValueError(f"diffusion_step: argument '{name}' is on {t.device} but the sample is on {device}; "
                         f"keep it on the sample's device (reading it there never syncs with the host).")
    return t.reshape(()).to(torch.int64)


def _seed_args(seed, device, op):
    if isinstance(seed, torch.Tensor):
        return _device_int(seed, "seed", device).reshape(1), 0
    if not _is_int(seed):
        raise TypeError(f"{op}: argument 'seed' must be an int or a one-element int64 tensor, "
                        f"got {type(seed).__name__}.")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{op}: argument 'seed' must be in [0, 2**64), got {seed}.")
    return None, seed - 2**64 if seed > _INT64_MAX else seed  # the same 64 bits, as int64


def _offset_arg(offset, n, op):
    if not _is_int(offset):
        raise TypeError(f"{op}: argument 'offset' must be an int, got {type(offset).__name__}.")
    if not 0 <= offset <= _INT64_MAX - n - NOISE_TILE:
        raise ValueError(f"{op}: argument 'offset' must be >= 0 and leave room for {n} counters below 2**63, "
                         f"got {offset}.")
    return offset


def _prepare(sample, model_output, coeffs, step, uncond, guidance_scale, guidance_rescale, clip, seed, offset):
    op = "diffusion_step"
    for name, t in (("sample", sample), ("model_output", model_output), ("coeffs", coeffs)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}.")
    if uncond is not None and not isinstance(uncond, torch.Tensor):
        raise TypeError(f"{op}: argument 'uncond' must be a torch.Tensor or None, got {type(uncond).__name__}.")
    x = sample
    if x.dtype not in _FLOATS:
        raise TypeError(f"{op}: argument 'sample' has dtype {x.dtype}; it needs a floating dtype (float32, "
                        f"float64, float16, bfloat16), e.g. sample.float().")
    if x.dim() < 1:
        raise ValueError(f"{op}: argument 'sample' must have a batch dimension first, got a 0-d tensor.")
    tensors = [("model_output", model_output)] + ([("uncond", uncond)] if uncond is not None else [])
    for name, t in tensors:
        if t.dtype not in _FLOATS:
            raise TypeError(f"{op}: argument '{name}' has dtype {t.dtype}; it needs a floating dtype.")
        if t.shape != x.shape:
            raise ValueError(f"{op}: argument '{name}' has shape {tuple(t.shape)} but 'sample' has "
                             f"{tuple(x.shape)}; they must be equal (batch first).")
        if t.device != x.device:
            raise ValueError(f"{op}: argument '{name}' is on {t.device} but 'sample' is on {x.device}.")
    # the model output may come in another precision (autocast): the step runs in the sample's
    m = (model_output if model_output.dtype == x.dtype else model_output.to(x.dtype)).contiguous()
    if uncond is not None:
        u = (uncond if uncond.dtype == x.dtype else uncond.to(x.dtype)).contiguous()
    else:
        u = None
    x = x.contiguous()
    if coeffs.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: argument 'coeffs' has dtype {coeffs.dtype}; the fused coefficient table is "
                        f"float32 or float64.")
    if coeffs.dim() != 2 or coeffs.shape[1] != len(COEFFICIENT_COLUMNS) or coeffs.shape[0] < 1:
        raise ValueError(f"{op}: argument 'coeffs' has shape {tuple(coeffs.shape)}; it must be the scheduler's "
                         f"fused coefficient table [num_steps, 9] (columns {', '.join(COEFFICIENT_COLUMNS)}).")
    if coeffs.device != x.device:
        raise ValueError(f"{op}: argument 'coeffs' is on {coeffs.device} but 'sample' is on {x.device}; move the "
                         f"table to the sample's device once (coeffs.to(sample.device)) so a step never syncs.")
    coeffs = (coeffs.detach() if coeffs.requires_grad else coeffs).contiguous()
    if isinstance(step, torch.Tensor):
        step_t, step_i = _device_int(step, "step", x.device), 0
    elif _is_int(step):
        if not 0 <= step < coeffs.shape[0]:
            raise ValueError(f"{op}: step {step} is out of range for a coefficient table of {coeffs.shape[0]} rows; "
                             f"use a step in [0, {coeffs.shape[0] - 1}].")
        step_t, step_i = None, step
    else:
        raise TypeError(f"{op}: argument 'step' must be an int or a 0-d int64 tensor, got {type(step).__name__}.")
    if not _is_real(guidance_scale) or not math.isfinite(guidance_scale):
        raise ValueError(f"{op}: guidance_scale must be a finite number, got {guidance_scale!r}.")
    if not _is_real(guidance_rescale) or not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"{op}: guidance_rescale must be a number in [0, 1] (0 turns it off), got "
                         f"{guidance_rescale!r}.")
    if clip is None:
        clip_v = math.inf
    elif not _is_real(clip) or not (0 < clip < math.inf):
        raise ValueError(f"{op}: clip must be None or a finite number > 0 (x0 is clamped to [-clip, clip]), "
                         f"got {clip!r}.")
    else:
        clip_v = float(clip)
    if u is not None and guidance_rescale > 0 and x.numel() and x.numel() // x.shape[0] < 2:
        raise ValueError(f"{op}: guidance_rescale needs at least 2 elements per sample for the standard "
                         f"deviation; got shape {tuple(x.shape)}.")
    seed_t, seed_i = _seed_args(seed, x.device, op)
    offset = _offset_arg(offset, x.numel(), op)
    return (x, m, u, coeffs, step_t, step_i, float(guidance_scale), float(guidance_rescale), clip_v, seed_t, seed_i,
            offset)


def _direct_ok(args):
    """Whether the kernels may be called without the dispatcher (plain tensors, eager, no grad)."""
    tensors = [a for a in args if type(a) is torch.Tensor or isinstance(a, torch.Tensor)]
    return direct_cpu_call_ok(*tensors) if tensors[0].is_cpu else direct_gpu_call_ok(*tensors)


def _write_out(args, out):
    x = args[0]
    op = "diffusion_step"
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"{op}: argument 'out' must be a tuple of two tensors (prev, x0).")
    for name, t in zip(("out[0] (prev)", "out[1] (x0)"), out):
        if t.dtype != x.dtype or t.shape != x.shape or t.device != x.device:
            raise ValueError(f"{op}: {name} must match the sample: shape {tuple(x.shape)}, dtype {x.dtype}, "
                             f"device {x.device}; got {tuple(t.shape)}, {t.dtype}, {t.device}.")
    if x.numel() and out[0].data_ptr() == out[1].data_ptr():
        raise ValueError(f"{op}: out[0] and out[1] are the same memory; pass two tensors (out[0] may be the sample "
                         f"itself, for an in-place step).")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*args[:3], *out) if isinstance(t, torch.Tensor)):
        raise RuntimeError(f"{op}(): out=... does not support automatic differentiation, but an argument requires "
                           f"grad; call it under torch.no_grad() or drop out=.")
    prev, x0 = out
    if prev.is_contiguous() and x0.is_contiguous() and _direct_ok(list(args) + [prev, x0]):
        if x.device.type == "cpu":
            _cpu_into(*args, prev, x0)
        else:
            with eager_triton():
                _launch_step_gpu(*args, prev, x0)
    else:
        p, z = torch.ops.fastlearn.diffusion_step(*args)
        prev.copy_(p)
        x0.copy_(z)
    return prev, x0


def diffusion_step(sample: torch.Tensor, model_output: torch.Tensor, coeffs: torch.Tensor, step, *,
                   uncond: torch.Tensor | None = None, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
                   clip: float | None = None, seed=0, offset: int = 0,
                   out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused sampler step: returns ``(prev, x0)``.

    With ``k = coeffs[step]`` = (ax, am, ex, em, e0, p0, px, pe, sigma), per element::

        m   = uncond + guidance_scale * (model_output - uncond)    # when uncond is given
        m   = m * (r * std(model_output) / std(m) + 1 - r)         # r = guidance_rescale > 0, per sample
        x0  = clamp(ax * sample + am * m, -clip, clip)             # no clamp when clip is None
        eps = ex * sample + em * m + e0 * x0
        prev = p0 * x0 + px * sample + pe * eps + sigma * z

    ``z`` is standard normal noise made inside the kernel: element i of the flattened tensor
    gets N(seed, offset + i), Philox4x32-10 as Triton's ``tl.randn4x`` in a fixed layout (see
    ``philox_randn``), identical on CPU and GPU and independent of threads and launch shape.
    Successive steps should use disjoint counter ranges (e.g. ``offset = i * sample.numel()``);
    offsets that are multiples of 2048 keep the GPU loads aligned.

    Args:
        sample, model_output, uncond: same shape, batch first, any float dtype (compute in
            float32; float64 in float64). model_output and uncond are converted to the sample's
            dtype when they differ. Outputs have the sample's dtype.
        coeffs: the scheduler's ``fused_coefficients`` table [num_steps, 9], float32 or
            float64, on the sample's device.
        step: Python int (checked) or a 0-d int64 tensor on the device (read there, no host
            sync; on GPU a row out of range gives NaN outputs, as no error can be raised).
        guidance_scale: w of classifier-free guidance (used with ``uncond``).
        guidance_rescale: r in [0, 1] (Lin et al. 2023, as diffusers' rescale_noise_cfg with
            unbiased std); a sample whose guided output has zero spread is left unscaled.
            Without ``uncond`` it has no effect (std(m) / std(m) = 1).
        clip: clamp x0 to [-clip, clip], or None.
        seed: int in [0, 2**64) or a one-element int64 tensor on the device (a CUDA graph
            replays with new seeds by writing into it).
        offset: first noise counter, int >= 0.
        out: optional (prev, x0) tensors to write into; ``out[0]`` may be ``sample`` itself.

    Differentiable in sample, model_output and uncond (float64 gradcheck); not in the noise
    or the coefficients.
    """
    args = _prepare(sample, model_output, coeffs, step, uncond, guidance_scale, guidance_rescale, clip, seed, offset)
    if out is not None:
        return _write_out(args, out)
    if _direct_ok(args):
        if args[0].is_cpu:
            return _step_cpu_kernel(*args)
        with eager_triton():
            return _step_gpu_kernel(*args)
    return torch.ops.fastlearn.diffusion_step(*args)


def philox_randn(shape, *, seed=0, offset: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise, counter-based: element i of the flattened result is N(seed, offset + i),
    the noise ``diffusion_step`` adds (so ``sigma * philox_randn(x.shape, seed=s, offset=o)`` is
    the noise term of a step drawn with seed s, offset o), on CPU and GPU alike.

    Definition: counter c = offset + i lies in tile t = c // 2048 at position p = c % 2048;
    it takes lane p // 512 of ``tl.randn4x(seed, t * 512 + p % 512)``: Philox4x32-10 keyed by
    (seed & 0xffffffff, seed >> 32) on counter (q & 0xffffffff, q >> 32, 0, 0), outputs mapped
    to [0, 1) by ``uint_to_uniform_float`` and paired by Box-Muller (cos, sin). Computed in
    float32, then cast to ``dtype``.
    """
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not all(_is_int(s) and s >= 0 for s in shape):
        raise ValueError(f"philox_randn: shape must be a tuple of non-negative ints, got {shape}.")
    if dtype not in _FLOATS:
        raise TypeError(f"philox_randn: dtype must be a floating dtype, got {dtype}.")
    out = torch.empty(shape, dtype=dtype, device=device)
    seed_t, seed_i = _seed_args(seed, out.device, "philox_randn")
    offset = _offset_arg(offset, out.numel(), "philox_randn")
    if out.device.type == "cpu":
        _C.philox_normal(view(out, "out"), None if seed_t is None else view(seed_t, "seed"), seed_i, offset)
    else:
        _launch_noise_gpu(out, seed_t, seed_i, offset)
    return out
