"""Maximum-likelihood estimators of the common distributions, their Fisher information and the
Cramér–Rao lower bound, and a simulation that compares an estimator's variance with the bound.

Parametrisations (as in our notes and scipy.stats):
    gaussian     (mu, sigma2)    bernoulli  (p,)        categorical (p_0, ..., p_{K-2}) (p_{K-1} = 1 - sum)
    poisson      (lam,)          exponential (rate,)    gamma       (shape k, scale theta)
Every function takes x along the last axis, so many samples are estimated in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

DISTRIBUTIONS = ("gaussian", "bernoulli", "categorical", "poisson", "exponential", "gamma")


def _check_sample(x, name="x", integer=False):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} is empty; pass at least one observation along the last axis.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}.")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf; remove or impute those observations first.")
    if integer and np.any(x != np.round(x)):
        raise ValueError(f"{name} must hold whole numbers (counts or category codes).")
    return x


def mle_gaussian(x):
    """(mu, sigma2): the sample mean and the biased (1/n) variance."""
    x = _check_sample(x)
    mu = x.mean(-1)
    return mu, ((x - mu[..., None]) ** 2).mean(-1)


def mle_bernoulli(x):
    """p: the fraction of ones; x must hold only 0 and 1."""
    x = _check_sample(x, integer=True)
    if np.any((x != 0) & (x != 1)):
        raise ValueError("x must hold only 0 and 1 for a Bernoulli sample.")
    return x.mean(-1)


def mle_categorical(x, n_categories=None):
    """Category probabilities (..., K): the relative frequencies of the codes 0..K-1."""
    x = _check_sample(x, integer=True)
    if np.any(x < 0):
        raise ValueError("x must hold category codes 0, 1, ..., K-1 (no negative codes).")
    K = int(x.max()) + 1 if n_categories is None else int(n_categories)
    if x.max() >= K:
        raise ValueError(f"x has code {int(x.max())} but n_categories={K}; raise n_categories.")
    counts = (x[..., None] == np.arange(K)).sum(-2)
    return counts / x.shape[-1]


def mle_poisson(x):
    """lam: the sample mean of non-negative counts."""
    x = _check_sample(x, integer=True)
    if np.any(x < 0):
        raise ValueError("x must hold non-negative counts for a Poisson sample.")
    return x.mean(-1)


def mle_exponential(x):
    """rate = 1 / mean of positive observations."""
    x = _check_sample(x)
    if np.any(x < 0):
        raise ValueError("x must be non-negative for an exponential sample.")
    m = x.mean(-1)
    if np.any(m == 0):
        raise ValueError("x is all zeros: the exponential rate MLE is infinite.")
    return 1.0 / m


def mle_gamma(x, tol=1e-12, max_iter=100):
    """(shape k, scale theta). k solves log k - digamma(k) = log(mean x) - mean(log x) (Newton's
    method from Minka's closed-form start); theta = mean / k."""
    x = _check_sample(x)
    if np.any(x <= 0):
        raise ValueError("x must be strictly positive for a gamma sample.")
    m = x.mean(-1)
    s = np.log(m) - np.log(x).mean(-1)
    if np.any(s <= 1e-14):
        raise ValueError("all observations of a gamma sample are (nearly) equal: the shape MLE is infinite.")
    k = (3.0 - s + np.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    for _ in range(max_iter):
        f = np.log(k) - special.digamma(k) - s
        step = f / (1.0 / k - special.polygamma(1, k))
        k_new = np.where(k - step > 0, k - step, k / 2)
        done = np.all(np.abs(k_new - k) <= tol * k_new)
        k = k_new
        if done:
            break
    return k, m / k


def mle(distribution, x, **kwargs):
    """The MLE of ``distribution`` (one of DISTRIBUTIONS) as a parameter array (..., n_params)."""
    fn = {"gaussian": mle_gaussian, "normal": mle_gaussian, "bernoulli": mle_bernoulli,
          "categorical": mle_categorical, "poisson": mle_poisson, "exponential": mle_exponential,
          "gamma": mle_gamma}.get(distribution)
    if fn is None:
        raise ValueError(f"unknown distribution {distribution!r}; use one of {DISTRIBUTIONS}.")
    out = fn(x, **kwargs)
    if distribution == "categorical":
        return out[..., :-1]  # the free parameters
    return np.stack(out, -1) if isinstance(out, tuple) else np.asarray(out)[..., None]


def _check_params(distribution, params):
    p = np.atleast_1d(np.asarray(params, dtype=np.float64))
    if not np.all(np.isfinite(p)):
        raise ValueError(f"params {params!r} must be finite.")
    expected = {"gaussian": 2, "normal": 2, "bernoulli": 1, "poisson": 1, "exponential": 1, "gamma": 2}
    if distribution in expected and p.shape != (expected[distribution],):
        raise ValueError(f"{distribution} takes {expected[distribution]} parameter(s); got {p.shape[0]}.")
    bad = {
        "gaussian": lambda: p[1] <= 0, "normal": lambda: p[1] <= 0, "bernoulli": lambda: not 0 < p[0] < 1,
        "poisson": lambda: p[0] <= 0, "exponential": lambda: p[0] <= 0, "gamma": lambda: p[0] <= 0 or p[1] <= 0,
        "categorical": lambda: np.any(p <= 0) or p.sum() >= 1,
    }.get(distribution)
    if bad is None:
        raise ValueError(f"unknown distribution {distribution!r}; use one of {DISTRIBUTIONS}.")
    if bad():
        raise ValueError(f"params {params!r} are outside the parameter space of {distribution} (variance, rate, "
                         "shape and scale must be > 0; probabilities in (0, 1)).")
    return p


def fisher_information(distribution, params, n=1):
    """Fisher information matrix of n i.i.d. observations, I_n = n I_1, at ``params``."""
    p = _check_params(distribution, params)
    if distribution in ("gaussian", "normal"):
        I1 = np.diag([1.0 / p[1], 1.0 / (2.0 * p[1] ** 2)])
    elif distribution == "bernoulli":
        I1 = np.array([[1.0 / (p[0] * (1.0 - p[0]))]])
    elif distribution == "categorical":  # free parameters p_0..p_{K-2}, p_{K-1} = 1 - sum
        I1 = np.diag(1.0 / p) + 1.0 / (1.0 - p.sum())
    elif distribution == "poisson":
        I1 = np.array([[1.0 / p[0]]])
    elif distribution == "exponential":
        I1 = np.array([[1.0 / p[0] ** 2]])
    else:  # gamma (shape k, scale theta)
        k, theta = p
        I1 = np.array([[special.polygamma(1, k), 1.0 / theta], [1.0 / theta, k / theta**2]])
    return n * I1


def cramer_rao_bound(distribution, params, n=1):
    """The Cramér–Rao lower bound I_n^-1 on the covariance of an unbiased estimator from n
    observations (a matrix; for one parameter a 1 x 1 matrix)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 observations, got {n}.")
    return np.linalg.inv(fisher_information(distribution, params, n))


def sample(distribution, params, size, random_state=None):
    """Draw observations of ``distribution`` at ``params`` (shape ``size``)."""
    p = _check_params(distribution, params)
    rng = np.random.default_rng(random_state)
    if distribution in ("gaussian", "normal"):
        return rng.normal(p[0], np.sqrt(p[1]), size)
    if distribution == "bernoulli":
        return (rng.random(size) < p[0]).astype(np.float64)
    if distribution == "categorical":
        full = np.append(p, 1.0 - p.sum())
        return rng.choice(len(full), size=size, p=full).astype(np.float64)
    if distribution == "poisson":
        return rng.poisson(p[0], size).astype(np.float64)
    if distribution == "exponential":
        return rng.exponential(1.0 / p[0], size)
    return rng.gamma(p[0], p[1], size)


@dataclass
class VarianceStudy:
    """Result of ``simulate_variance``: the estimates of every trial, their mean, bias and
    covariance, the Cramér–Rao bound, and efficiency = bound / variance (diagonal)."""
    estimates: np.ndarray
    mean: np.ndarray
    bias: np.ndarray
    covariance: np.ndarray
    bound: np.ndarray
    efficiency: np.ndarray


def simulate_variance(distribution, params, n, n_trials=2000, estimator=None, random_state=None, progress=False):
    """Estimate an estimator's variance by simulation and compare it with the Cramér–Rao bound.

    Draws ``n_trials`` samples of ``n`` observations, applies ``estimator`` (default: the MLE;
    a callable x -> parameter vector, called on one sample or, if it accepts them, on all
    samples at once along the last axis) and returns a VarianceStudy.
    """
    if int(n_trials) < 2:
        raise ValueError("n_trials must be >= 2 to estimate a variance.")
    p = _check_params(distribution, params)
    bound = cramer_rao_bound(distribution, p, n)
    X = sample(distribution, p, (int(n_trials), int(n)), random_state)
    if estimator is None:
        est = mle(distribution, X)
    else:
        from tqdm.auto import tqdm

        rows = tqdm(X, disable=not progress, desc="simulate_variance")
        est = np.asarray([np.atleast_1d(estimator(x)) for x in rows], dtype=np.float64)
    est = est.reshape(int(n_trials), -1)
    if est.shape[1] != p.shape[0]:
        raise ValueError(f"the estimator returns {est.shape[1]} value(s) but {distribution} has {p.shape[0]} "
                         "parameter(s).")
    cov = np.atleast_2d(np.cov(est, rowvar=False))
    mean = est.mean(0)
    return VarianceStudy(est, mean, mean - p, cov, bound, np.diag(bound) / np.diag(cov))
