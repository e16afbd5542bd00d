"""Discrete-time noise schedules for diffusion models, as float64 tables: the betas of the
forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), their cumulative
products alpha_bar_t, the signal-to-noise ratio, and the rescale to zero terminal SNR."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["SCHEDULE_NAMES", "betas_for_schedule", "rescale_zero_terminal_snr", "alphas_cumprod", "snr",
           "log_snr"]

# "cosine" is an alias of diffusers' name "squaredcos_cap_v2".
SCHEDULE_NAMES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine", "sigmoid", "geodiff_sigmoid")


def _check_count(num_train_timesteps):
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, numbers.Integral):
        raise TypeError(f"num_train_timesteps must be an int, got {type(num_train_timesteps).__name__}.")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}.")
    return int(num_train_timesteps)


def _check_beta(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}; typical values are beta_start=1e-4, "
                         f"beta_end=0.02.")
    return float(value)


def _betas_from_alpha_bar(alpha_bar, n, max_beta):
    """beta_i = min(1 - alpha_bar((i+1)/n) / alpha_bar(i/n), max_beta): the discretisation of a
    continuous alpha_bar(t), t in [0, 1], of Nichol & Dhariwal (2021), eq. 17 and after."""
    grid = np.arange(n + 1, dtype=np.float64) / n
    values = alpha_bar(grid)
    return np.minimum(1.0 - values[1:] / values[:-1], max_beta)


def betas_for_schedule(name: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                       beta_end: float = 0.02, *, max_beta: float = 0.999, cosine_s: float = 0.008,
                       sigmoid_start: float = -3.0, sigmoid_end: float = 3.0, sigmoid_tau: float = 1.0,
                       sigmoid_clip_min: float = 1e-9) -> np.ndarray:
    """The betas of a named schedule, a float64 array of length ``num_train_timesteps``.

    - ``"linear"``: beta_start to beta_end, evenly spaced (Ho et al. 2020).
    - ``"scaled_linear"``: evenly spaced in sqrt(beta), then squared (latent diffusion).
    - ``"squaredcos_cap_v2"`` / ``"cosine"``: Nichol & Dhariwal (2021),
      alpha_bar(t) = cos(((t + s) / (1 + s)) pi / 2)^2 with s = ``cosine_s``, each beta capped at
      ``max_beta``. beta_start/beta_end are not used.
    - ``"sigmoid"``: Chen (2023), "On the importance of noise scheduling for diffusion models",
      Algorithm 1: alpha_bar(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start),
      v_* = sigmoid(* / tau), clipped below at ``sigmoid_clip_min``; discretised like the cosine
      schedule (betas capped at ``max_beta``). beta_start/beta_end are not used.
    - ``"geodiff_sigmoid"``: sigmoid(linspace(-6, 6)) scaled into [beta_start, beta_end] — what
      diffusers' DDPMScheduler calls ``"sigmoid"`` (GeoDiff).
    """
    n = _check_count(num_train_timesteps)
    if not isinstance(name, str) or name not in SCHEDULE_NAMES:
        raise ValueError(f"unknown beta_schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}.")
    max_beta = _check_beta("max_beta", max_beta)
    if name in ("linear", "scaled_linear", "geodiff_sigmoid"):
        beta_start = _check_beta("beta_start", beta_start)
        beta_end = _check_beta("beta_end", beta_end)
    if name == "linear":
        betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
    elif name == "scaled_linear":
        betas = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2
    elif name == "geodiff_sigmoid":
        u = np.linspace(-6.0, 6.0, n, dtype=np.float64)
        betas = (beta_end - beta_start) / (1.0 + np.exp(-u)) + beta_start
    elif name in ("squaredcos_cap_v2", "cosine"):
        if not (math.isfinite(cosine_s) and cosine_s > 0):
            raise ValueError(f"cosine_s must be a positive number, got {cosine_s!r} (Nichol & Dhariwal use 0.008).")
        betas = _betas_from_alpha_bar(lambda t: np.cos((t + cosine_s) / (1.0 + cosine_s) * math.pi / 2) ** 2,
                                      n, max_beta)
    else:  # sigmoid (Chen 2023)
        for arg, value in (("sigmoid_start", sigmoid_start), ("sigmoid_end", sigmoid_end),
                           ("sigmoid_tau", sigmoid_tau), ("sigmoid_clip_min", sigmoid_clip_min)):
            if not math.isfinite(value):
                raise ValueError(f"{arg} must be finite, got {value!r}.")
        if not sigmoid_end > sigmoid_start:
            raise ValueError(f"sigmoid_end must exceed sigmoid_start, got start={sigmoid_start}, end={sigmoid_end} "
                             f"(Chen 2023 uses start=-3, end=3).")
        if not sigmoid_tau > 0:
            raise ValueError(f"sigmoid_tau must be positive, got {sigmoid_tau}.")
        if not 0 < sigmoid_clip_min < 1:
            raise ValueError(f"sigmoid_clip_min must lie in (0, 1), got {sigmoid_clip_min}.")

        def sigmoid(z):
            return 1.0 / (1.0 + np.exp(-z))

        v_start = sigmoid(sigmoid_start / sigmoid_tau)
        v_end = sigmoid(sigmoid_end / sigmoid_tau)

        def alpha_bar(t):
            out = (v_end - sigmoid((t * (sigmoid_end - sigmoid_start) + sigmoid_start) / sigmoid_tau)) / (v_end - v_start)
            return np.clip(out, sigmoid_clip_min, 1.0)

        betas = _betas_from_alpha_bar(alpha_bar, n, max_beta)
    _check_betas(betas, "betas")
    return betas


def _check_betas(betas, name, allow_last_one=False):
    """Validate a beta table; returns it as a float64 numpy array."""
    if isinstance(betas, torch.Tensor):
        betas = betas.detach().to("cpu", torch.float64).numpy()
    try:
        betas = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-D sequence of numbers: {e}") from None
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 betas, got shape {betas.shape}.")
    if not np.all(np.isfinite(betas)):
        raise ValueError(f"{name} contains NaN or inf.")
    upper_ok = betas < 1.0
    if allow_last_one:
        upper_ok[-1] = betas[-1] <= 1.0
    if not (np.all(betas > 0.0) and np.all(upper_ok)):
        bad = np.flatnonzero(~((betas > 0.0) & upper_ok))
        limit = "(0, 1) (the last may be 1: zero terminal SNR)" if allow_last_one else "(0, 1)"
        raise ValueError(f"{name} must lie in {limit}; entries {bad[:5].tolist()} are "
                         f"{betas[bad[:5]].tolist()}.")
    return betas


def rescale_zero_terminal_snr(betas) -> np.ndarray:
    """Lin et al. (2024), "Common diffusion noise schedules and sample steps are flawed", Algorithm 1:
    shift and scale sqrt(alpha_bar) so that the last is 0 (zero terminal SNR) and the first is
    unchanged, then recover the betas. The returned float64 table ends in beta = 1 exactly."""
    betas = _check_betas(betas, "betas")
    sqrt_ab = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab ** 2
    alphas = np.empty_like(ab)
    alphas[0] = ab[0]
    alphas[1:] = ab[1:] / ab[:-1]
    out = 1.0 - alphas
    out[-1] = 1.0  # exact: the shift made sqrt_ab[-1] zero
    return out


def _as_float64(values, name):
    if isinstance(values, torch.Tensor):
        return values.detach().to(torch.float64), True
    return np.asarray(values, dtype=np.float64), False


def alphas_cumprod(betas):
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), in float64 (a NumPy array, or a float64 tensor when
    given a tensor)."""
    values, is_torch = _as_float64(betas, "betas")
    if is_torch:
        return torch.cumprod(1.0 - values, dim=-1)
    return np.cumprod(1.0 - values, axis=-1)


def snr(alphas_cumprod):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar), float64 (inf where alpha_bar = 1)."""
    ab, is_torch = _as_float64(alphas_cumprod, "alphas_cumprod")
    if is_torch:
        return ab / (1.0 - ab)
    with np.errstate(divide="ignore"):
        return ab / (1.0 - ab)


def log_snr(alphas_cumprod):
    """log(alpha_bar / (1 - alpha_bar)), float64, computed as log(alpha_bar) - log1p(-alpha_bar) so
    that it stays accurate near both ends (-inf at alpha_bar = 0, +inf at 1)."""
    ab, is_torch = _as_float64(alphas_cumprod, "alphas_cumprod")
    if is_torch:
        return torch.log(ab) - torch.log1p(-ab)
    with np.errstate(divide="ignore"):
        return np.log(ab) - np.log1p(-ab)
