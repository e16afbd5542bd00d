"""The sampling loop: ``fastlearn.diffusion.sample(model, scheduler, shape, ...)``.

Classifier-free guidance runs one batched forward of [cond; uncond] per step and combines the
two inside the fused step (``fastlearn.ops.diffusion_step``); classifier guidance adds
-sqrt(1 - alpha_bar_t) s grad_x log p(y | x_t, t) to epsilon (Dhariwal & Nichol 2021) with the
gradient taken by autograd every step. On CPU each step is the fused C++ kernel; on GPU the
denoiser and the fused step of ALL steps are captured once in one CUDA graph and replayed (a
device-side seed makes each replay draw new noise); classifier guidance runs eagerly.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
import weakref
from numbers import Integral, Real

import torch


__all__ = ["sample"]

_GRAPH_CACHE_SIZE = 4  # captured graphs kept per model (each holds its own memory pool)
_graph_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _fused_op():
    try:
        from fastlearn.ops import diffusion_step
    except ImportError:
        return None
    return diffusion_step


def _check_shape(shape):
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not shape or any(
            isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of ints >= 1 (batch first, e.g. (64, 1, 8, 8)), "
                         f"got {shape!r}.")
    return tuple(int(s) for s in shape)


def _check_number(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or \
            (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}.")
    return float(value)


def _resolve_device(model, device):
    if device is None:
        p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        return p.device if p is not None else torch.device("cpu")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu'.")
    return dev


def _model_dtype(model):
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return p.dtype if p is not None and p.dtype.is_floating_point else torch.float32


def _check_labels(labels, batch, model, device):
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got {labels.dtype}.")
    if labels.ndim == 0:
        labels = labels.expand(batch)
    if labels.shape != (batch,):
        raise ValueError(f"labels must hold one class index per sample ({batch},), got shape {tuple(labels.shape)}.")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("labels were given but the model has no num_classes attribute (an unconditional "
                         "model); sample it with labels=None.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] (index {num_classes} is the null label), got "
                         f"values from {int(labels.min())} to {int(labels.max())}.")
    return labels.to(device=device, dtype=torch.long)


def _cfg_combine(cond, uncond, w, rescale):
    """eps_u + w (eps_c - eps_u), then Lin et al.'s rescale toward the std of eps_c."""
    if uncond is None:
        return cond
    out = uncond + w * (cond - uncond)
    if rescale > 0:
        dims = list(range(1, cond.ndim))
        ratio = cond.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True)
        out = rescale * (out * ratio) + (1.0 - rescale) * out
    return out


class _Denoiser:
    """model(x, t, y) with the [cond; uncond] batching of classifier-free guidance."""

    def __init__(self, model, labels, guidance_scale):
        self.model, self.labels = model, labels
        self.cfg = labels is not None and guidance_scale != 1.0
        if self.cfg:
            self.null = torch.full_like(labels, int(model.num_classes))

    def __call__(self, x, t):
        if not self.cfg:
            return self.model(x, t, self.labels) if self.labels is not None else self.model(x, t), None
        # labels concatenated here, not once: a captured graph then reads its static labels buffer
        out = self.model(torch.cat([x, x]), t, torch.cat([self.labels, self.null]))   # 2B x ...
        cond, uncond = out.chunk(2)
        return cond, uncond


def _classifier_delta(classifier, x, t, labels, scale, ab_t, prediction_type):
    """The change of the model output that turns eps into eps - sqrt(1 - ab) s grad log p(y | x_t)
    (for v and x0 predictions the same change expressed in their parametrisation)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = classifier(xg, t)
        log_p = torch.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, xg)
    alpha, sigma = math.sqrt(ab_t), math.sqrt(1.0 - ab_t)
    if prediction_type == "epsilon":
        return (-sigma * scale) * grad
    if prediction_type == "v_prediction":
        return (-sigma / alpha * scale) * grad
    return (sigma * sigma / alpha * scale) * grad   # "sample": x0 = (x - sigma eps) / alpha


def sample(model, scheduler, shape, *, labels=None, guidance_scale=1.0, guidance_rescale=0.0, classifier=None,
           classifier_scale=0.0, num_inference_steps=50, eta=0.0, seed=0, device=None, cuda_graph="auto",
           progress=True, return_x0=False, fused="auto"):
    """Run the reverse diffusion from x_T ~ N(0, init_noise_sigma^2 I) of ``shape`` to x_0.

    Parameters
    ----------
    model : ``model(x, t, y)`` -> the scheduler's prediction (epsilon, v or x0) of x's shape;
        t is a 0-d int64 tensor on the device. For labels, ``model.num_classes`` must exist and
        the label ``num_classes`` is the null (unconditional) label.
    scheduler : a fastlearn (or diffusers-compatible) DDPM/DDIM scheduler; ``set_timesteps`` is
        called with ``num_inference_steps``.
    shape : (batch, C, H, W) (any shape the model takes, batch first).
    labels : (batch,) class indices, or None (unconditional / null label).
    guidance_scale : classifier-free guidance weight w: eps_u + w (eps_c - eps_u) from one
        batched forward of 2 x batch; 1 means plain conditional sampling (one forward of batch).
    guidance_rescale : Lin et al.'s rescale of the guided prediction toward eps_c's std (0 off).
    classifier, classifier_scale : classifier guidance: ``classifier(x_t, t) -> logits``; the
        model output is moved by -sqrt(1 - alpha_bar_t) s grad_x log p(y | x_t, t) (in epsilon
        terms). The gradient needs autograd each step, so no CUDA graph then.
    num_inference_steps, eta : the grid and DDIM's eta (0 = deterministic; DDPM takes no eta).
    seed : int; seeds x_T (drawn on the CPU, so the same on every device) and the step noise
        (the fused op's counter-based noise, or a torch.Generator on the unfused path).
    device : where to run (default: the model's device).
    cuda_graph : "auto" (on for CUDA when the fused step runs and there is no classifier),
        True (required: errors say why it cannot), False. Graphs are cached per model and
        shapes, so repeated calls replay without re-capture; they read the model's parameters
        in place (in-place updates are seen; moved or replaced parameters cause a re-capture).
    progress : a tqdm bar over the steps (one update for a graph replay).
    return_x0 : also return the last prediction of x0.
    fused : "auto" (the fused op when ``scheduler.fused_supported(eta)``), True, False
        (``scheduler.step``).

    Returns x_0 (and x0's last prediction with ``return_x0``). Ctrl-C stops the loop with a
    warning and returns the last x0 prediction in place of x_0 (the model's current best guess).
    """
    shape = _check_shape(shape)
    guidance_scale = _check_number("guidance_scale", guidance_scale)
    guidance_rescale = _check_number("guidance_rescale", guidance_rescale, 0.0)
    if guidance_rescale > 1.0:
        raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}.")
    classifier_scale = _check_number("classifier_scale", classifier_scale, 0.0)
    eta = _check_number("eta", eta, 0.0)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2^63), got {seed!r}.")
    if cuda_graph not in ("auto", True, False):
        raise ValueError(f"cuda_graph must be 'auto', True or False, got {cuda_graph!r}.")
    if fused not in ("auto", True, False):
        raise ValueError(f"fused must be 'auto', True or False, got {fused!r}.")
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t, y), got {type(model).__name__}.")
    dev = _resolve_device(model, device)
    labels = _check_labels(labels, shape[0], model, dev)
    if guidance_scale != 1.0 and labels is None:
        raise ValueError("guidance_scale != 1 (classifier-free guidance) needs labels: the class to guide toward.")
    if classifier_scale > 0 and (classifier is None or labels is None):
        raise ValueError("classifier_scale > 0 needs a classifier and labels (the class to guide toward).")
    if classifier is not None and classifier_scale == 0:
        classifier = None
    takes_eta = "eta" in inspect.signature(scheduler.step).parameters
    if eta != 0.0 and not takes_eta:
        raise ValueError(f"eta is DDIM's parameter; {type(scheduler).__name__} takes none. Use eta=0 or a "
                         f"DDIMScheduler.")
    scheduler.set_timesteps(num_inference_steps, device=dev)

    op = _fused_op()
    can_fuse = op is not None and hasattr(scheduler, "fused_supported") and bool(scheduler.fused_supported(eta))
    if fused is True and not can_fuse:
        why = ("fastlearn.ops.diffusion_step is not available" if op is None else
               f"{type(scheduler).__name__}.fused_supported({eta}) is False (e.g. dynamic thresholding)")
        raise ValueError(f"fused=True but {why}; use fused='auto' or False.")
    use_fused = can_fuse and fused is not False
    use_graph = cuda_graph is True or (cuda_graph == "auto" and dev.type == "cuda" and use_fused and classifier is None)
    if use_graph:
        if dev.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {dev}; use cuda_graph='auto' or False.")
        if classifier is not None:
            raise ValueError("cuda_graph=True cannot run classifier guidance (its autograd gradient is not "
                             "capturable); use cuda_graph='auto' or False.")
        if not use_fused:
            raise ValueError("cuda_graph=True needs the fused step (the scheduler's step reads timesteps on the host); "
                             "use cuda_graph='auto' or False.")

    dtype = _model_dtype(model)
    gen = torch.Generator().manual_seed(int(seed))
    x = (torch.randn(shape, generator=gen, dtype=torch.float32) * float(scheduler.init_noise_sigma)).to(dev, dtype)
    # All of torch's threads, also for small models: unlike training (the Trainer's one-thread
    # rule), the forwards of a sampling loop are batched and gain from them (2 cores: digits UNet
    # 5.4-5.7 s on one thread against 3.5-3.9 s; an MLP of 17k parameters at batch 512 47 against
    # 32 ms, 50 steps).
    with torch.no_grad():
        return _run(model, scheduler, x, labels, guidance_scale, guidance_rescale, classifier, classifier_scale, eta,
                    takes_eta, int(seed), gen, op, use_fused, use_graph, progress, return_x0)


def _run(model, scheduler, x, labels, guidance_scale, guidance_rescale, classifier, classifier_scale, eta, takes_eta,
         seed, gen, op, use_fused, use_graph, progress, return_x0):
    if use_graph:
        out, x0 = _graph_loop(model, scheduler, x, labels, guidance_scale, guidance_rescale, eta, seed, op, progress)
    else:
        out, x0 = _eager_loop(model, scheduler, x, labels, guidance_scale, guidance_rescale, classifier,
                              classifier_scale, eta, takes_eta, seed, gen, op if use_fused else None, progress)
    return (out, x0) if return_x0 else out


def _noise_stride(numel: int) -> int:
    """Counter range of one step's noise: numel rounded up to 2048, so steps draw disjoint noise
    and every step's offset keeps the GPU kernel's loads aligned."""
    return -(-numel // 2048) * 2048


def _bar(total, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step", file=sys.stderr, leave=False, disable=not progress)


def _fused_table(scheduler, dev, dtype, eta):
    kw = {"eta": eta} if eta else {}
    # the op takes float32 or float64 coefficients (half-precision samples compute in float32)
    return scheduler.fused_coefficients(dev, torch.float64 if dtype == torch.float64 else torch.float32, **kw)


def _eager_loop(model, scheduler, x, labels, w, rescale, classifier, classifier_scale, eta, takes_eta, seed, gen,
                op, progress):
    denoise = _Denoiser(model, labels, w)
    timesteps = scheduler.timesteps
    steps = timesteps.tolist()
    stride = _noise_stride(x.numel())
    prediction_type = scheduler.config["prediction_type"]
    coeffs = _fused_table(scheduler, x.device, x.dtype, eta) if op is not None else None
    clip = getattr(scheduler, "fused_clip", None)
    x0 = x
    i = 0
    bar = _bar(len(steps), progress)
    try:
        for i, t in enumerate(steps):
            t_dev = timesteps[i]
            cond, uncond = denoise(x, t_dev)
            if classifier is not None:
                ab_t = float(scheduler.alphas_cumprod[t])
                delta = _classifier_delta(classifier, x, t_dev, labels, classifier_scale, ab_t, prediction_type)
                cond = cond + delta
                uncond = uncond + delta if uncond is not None else None
            if op is not None:
                x, x0 = op(x, cond, coeffs, i, uncond=uncond, guidance_scale=w, guidance_rescale=rescale, clip=clip,
                           seed=seed, offset=i * stride)
            else:
                eps = _cfg_combine(cond, uncond, w, rescale)
                kw = {"eta": eta} if takes_eta else {}
                out = scheduler.step(eps, t, x, generator=gen, **kw)
                x, x0 = out.prev_sample, out.pred_original_sample
            bar.update(1)
    except KeyboardInterrupt:
        warnings.warn(f"sampling interrupted at step {i} of {len(steps)}; returning the last prediction of x0.",
                      RuntimeWarning, stacklevel=3)
        return x0, x0
    finally:
        bar.close()
    return x, x0


def _graph_key(scheduler, x, labels, w, rescale, eta, model):
    config = tuple(sorted((k, repr(v)) for k, v in dict(scheduler.config).items()))
    return (type(scheduler).__name__, config, tuple(scheduler.timesteps.tolist()), tuple(x.shape), x.dtype,
            str(x.device), labels is not None, w, rescale, eta, getattr(model, "training", None))


def _graph_loop(model, scheduler, x_init, labels, w, rescale, eta, seed, op, progress):
    """Capture model + fused step of all steps into one CUDA graph (once per model and key), then
    copy the inputs into its static buffers and replay."""
    key = _graph_key(scheduler, x_init, labels, w, rescale, eta, model)
    per_model = _graph_cache.setdefault(model, {})
    # a graph reads parameters at the addresses it was captured with: after model.to(...),
    # load_state_dict(assign=True) and the like they moved, and the graph must be captured again
    pointers = tuple(t.data_ptr() for t in model.state_dict().values()) if isinstance(model, torch.nn.Module) else ()
    entry = per_model.get(key)
    if entry is not None and entry[2] != pointers:
        del per_model[key]
        entry = None
    if entry is None:
        entry = (*_capture(model, scheduler, x_init, labels, w, rescale, eta, op), pointers)
        if len(per_model) >= _GRAPH_CACHE_SIZE:
            per_model.pop(next(iter(per_model)))
        per_model[key] = entry
    graph, static, _ = entry
    static["x"].copy_(x_init)
    static["seed"].fill_(seed)
    if labels is not None:
        static["labels"].copy_(labels)
    bar = _bar(len(scheduler.timesteps), progress)
    try:
        graph.replay()
        torch.cuda.current_stream().synchronize()
        bar.update(len(scheduler.timesteps))
    except KeyboardInterrupt:
        warnings.warn("sampling interrupted during the graph replay; returning the last prediction of x0.",
                      RuntimeWarning, stacklevel=3)
        torch.cuda.current_stream().synchronize()
        return static["x0"].clone(), static["x0"].clone()
    finally:
        bar.close()
    return static["out"].clone(), static["x0"].clone()


def _capture(model, scheduler, x_init, labels, w, rescale, eta, op):
    dev, dtype = x_init.device, x_init.dtype
    static = {
        "x": torch.empty_like(x_init),
        "seed": torch.zeros((), dtype=torch.int64, device=dev),
        "labels": torch.empty_like(labels) if labels is not None else None,
        "out": torch.empty_like(x_init),
        "x0": torch.empty_like(x_init),
    }
    static["x"].copy_(x_init)
    if labels is not None:
        static["labels"].copy_(labels)
    coeffs = _fused_table(scheduler, dev, dtype, eta)
    static["coeffs"] = coeffs
    timesteps = scheduler.timesteps.to(dev)
    static["timesteps"] = timesteps
    clip = getattr(scheduler, "fused_clip", None)
    stride = _noise_stride(x_init.numel())
    denoise = _Denoiser(model, static["labels"], w)
    # the graph reads the null labels made here: keep them alive with it (not the denoiser, whose
    # reference to the model would keep the weakly keyed cache entry alive forever)
    static["null_labels"] = getattr(denoise, "null", None)

    def run(n_steps):
        x = static["x"]
        x0 = x
        for i in range(n_steps):
            cond, uncond = denoise(x, timesteps[i])
            x, x0 = op(x, cond, coeffs, i, uncond=uncond, guidance_scale=w, guidance_rescale=rescale, clip=clip,
                       seed=static["seed"], offset=i * stride)
        return x, x0

    # warm-up on a side stream (lazy initialisations, Triton compilation, cuBLAS workspaces)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(2):
            run(1)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x, x0 = run(len(timesteps))
        static["out"].copy_(x)
        static["x0"].copy_(x0)
    return graph, static
