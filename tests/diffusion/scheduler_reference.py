"""Float64 NumPy reference for the noise schedules and the DDPM/DDIM steps, written from the
papers' equations (Ho et al. 2020 eqs. 4, 6, 7, 15; Song et al. 2021 DDIM eqs. 12, 16; Nichol &
Dhariwal 2021 eq. 17; Chen 2023 Alg. 1; Lin et al. 2024 Alg. 1; Salimans & Ho 2022 for v;
Saharia et al. 2022 for dynamic thresholding) and diffusers' documented conventions (timestep
spacings, variance types). Scalar loops and explicit formulas: slow, plain, independent of
fastlearn's code."""

import math
from fractions import Fraction

import numpy as np


# --- schedules -------------------------------------------------------------------------

def betas(name, n, beta_start=1e-4, beta_end=0.02):
    if name == "linear":
        return np.array([beta_start + (beta_end - beta_start) * i / (n - 1) for i in range(n)])
    if name == "scaled_linear":
        a, b = math.sqrt(beta_start), math.sqrt(beta_end)
        return np.array([(a + (b - a) * i / (n - 1)) ** 2 for i in range(n)])
    if name in ("cosine", "squaredcos_cap_v2"):
        s = 0.008

        def f(t):  # Nichol & Dhariwal eq. 17, alpha_bar(t) = f(t) / f(0)
            return math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2

        return np.array([min(1 - (f(i + 1) / f(0)) / (f(i) / f(0)), 0.999) for i in range(n)])
    if name == "sigmoid":  # Chen 2023, Algorithm 1, start=-3, end=3, tau=1, clip_min=1e-9
        start, end, tau = -3.0, 3.0, 1.0

        def sig(z):
            return 1 / (1 + math.exp(-z))

        def gamma(t):
            v = (sig(end / tau) - sig((t * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau))
            return min(max(v, 1e-9), 1.0)

        return np.array([min(1 - gamma((i + 1) / n) / gamma(i / n), 0.999) for i in range(n)])
    if name == "geodiff_sigmoid":
        return np.array([beta_start + (beta_end - beta_start) / (1 + math.exp(-(-6 + 12 * i / (n - 1))))
                         for i in range(n)])
    raise KeyError(name)


def alpha_bar(beta):
    out, prod = [], 1.0
    for b in beta:
        prod *= 1.0 - b
        out.append(prod)
    return np.array(out)


def rescale_zero_terminal_snr(beta):
    """Lin et al. 2024, Algorithm 1."""
    sqrt_ab = np.sqrt(alpha_bar(beta))
    s0, sT = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - sT) * s0 / (s0 - sT)
    ab = sqrt_ab ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


# --- timestep grids (diffusers' three spacings, Lin et al. 2024 Table 2) -----------------

def timesteps(n_train, n_steps, spacing, steps_offset=0):
    if spacing == "leading":
        ratio = n_train // n_steps
        return [k * ratio + steps_offset for k in reversed(range(n_steps))]
    if spacing == "trailing":  # round(T - k T / S) - 1, exact rational rounding, ties to even
        return [round(Fraction(n_train * (n_steps - k), n_steps)) - 1 for k in range(n_steps)]
    if spacing == "linspace":  # diffusers' definition: numpy's float linspace, rounded
        return [int(v) for v in np.linspace(0, n_train - 1, n_steps).round()[::-1]]
    raise KeyError(spacing)


# --- pieces ----------------------------------------------------------------------------

def predicted_x0(kind, m, x, ab):
    if kind == "epsilon":  # Ho et al. eq. 4 solved for x0 (eq. 15)
        return (x - math.sqrt(1 - ab) * m) / math.sqrt(ab)
    if kind == "sample":
        return m.copy()
    if kind == "v_prediction":  # v = sqrt(ab) eps - sqrt(1 - ab) x0  =>  x0 = sqrt(ab) x - sqrt(1 - ab) v
        return math.sqrt(ab) * x - math.sqrt(1 - ab) * m
    raise KeyError(kind)


def predicted_eps(kind, m, x, ab):
    if kind == "epsilon":
        return m.copy()
    if kind == "sample":
        return (x - math.sqrt(ab) * m) / math.sqrt(1 - ab)
    if kind == "v_prediction":
        return math.sqrt(ab) * m + math.sqrt(1 - ab) * x
    raise KeyError(kind)


def dynamic_threshold(x0, ratio, max_value):
    """Saharia et al. 2022: per sample, s = quantile(|x0|, ratio) clamped to [1, max_value]."""
    out = np.empty_like(x0)
    for b in range(x0.shape[0]):
        s = np.quantile(np.abs(x0[b]).ravel(), ratio)
        s = min(max(s, 1.0), max_value)
        out[b] = np.clip(x0[b], -s, s) / s
    return out


def clip_or_threshold(x0, cfg):
    if cfg.get("thresholding", False):
        return dynamic_threshold(x0, cfg.get("dynamic_thresholding_ratio", 0.995), cfg.get("sample_max_value", 1.0))
    if cfg.get("clip_sample", True):
        r = cfg.get("clip_sample_range", 1.0)
        return np.clip(x0, -r, r)
    return x0


# --- steps -----------------------------------------------------------------------------

def ddpm_step(cfg, ab, grid, t, m, x, noise, predicted_variance=None):
    """Ancestral step from x_t to x_{t'} (t' the next grid entry, or x0 after the last):
    mean = posterior mean of q(x_{t'} | x_t, x0) (Ho et al. eq. 7 with alpha_t = ab_t / ab_t'),
    no noise on the final step (Algorithm 2)."""
    k = grid.index(t)
    last = k == len(grid) - 1
    ab_t = ab[t]
    ab_p = 1.0 if last else ab[grid[k + 1]]
    alpha = ab_t / ab_p
    beta = 1 - alpha
    x0 = clip_or_threshold(predicted_x0(cfg.get("prediction_type", "epsilon"), m, x, ab_t), cfg)
    mean = (math.sqrt(ab_p) * beta / (1 - ab_t)) * x0 + (math.sqrt(alpha) * (1 - ab_p) / (1 - ab_t)) * x
    if last:
        return mean, x0
    posterior_var = (1 - ab_p) / (1 - ab_t) * beta          # Ho et al. eq. 7, beta tilde
    kind = cfg.get("variance_type", "fixed_small")
    if kind == "fixed_small":
        std = math.sqrt(max(posterior_var, 1e-20))
    elif kind == "fixed_small_log":
        std = math.exp(0.5 * math.log(max(posterior_var, 1e-20)))
    elif kind == "fixed_large":
        std = math.sqrt(beta)
    elif kind == "fixed_large_log":
        std = math.exp(0.5 * math.log(beta))
    elif kind == "learned":
        std = np.sqrt(predicted_variance)
    elif kind == "learned_range":  # Nichol & Dhariwal eq. 15, v in [-1, 1] mapped to [0, 1]
        frac = (predicted_variance + 1) / 2
        std = np.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(max(posterior_var, 1e-20))))
    else:
        raise KeyError(kind)
    return mean + std * noise, x0


def ddim_step(cfg, ab, grid, t, m, x, eta=0.0, noise=None, use_clipped_model_output=False):
    """Song et al. 2021 eq. 12 with sigma of eq. 16; t' is the next grid entry, after the last the
    'final' level (1 with set_alpha_to_one, else alpha_bar_0)."""
    k = grid.index(t)
    ab_t = ab[t]
    if k == len(grid) - 1:
        ab_p = 1.0 if cfg.get("set_alpha_to_one", True) else ab[0]
    else:
        ab_p = ab[grid[k + 1]]
    kind = cfg.get("prediction_type", "epsilon")
    x0 = predicted_x0(kind, m, x, ab_t)
    eps = predicted_eps(kind, m, x, ab_t)
    x0 = clip_or_threshold(x0, cfg)
    if use_clipped_model_output:
        eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    sigma = eta * math.sqrt((1 - ab_p) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_p)
    prev = math.sqrt(ab_p) * x0 + math.sqrt(max(1 - ab_p - sigma ** 2, 0.0)) * eps
    if eta > 0:
        prev = prev + sigma * noise
    return prev, x0


def gaussian_data_eps(x, ab, mu, s):
    """Optimal epsilon-predictor for data x0 ~ N(mu, s^2 I) under x_t = sqrt(ab) x0 + sqrt(1-ab) eps:
    E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - E x_t) = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""
    return math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * s * s + 1 - ab)
