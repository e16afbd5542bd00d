"""Numerics of Gaussian mixtures on the CPU: the one-pass kernel of _C (log-probabilities,
fused E-step with sufficient statistics) and the M-step and precision Cholesky factors that
follow scikit-learn's definitions (reg_covar on the diagonal, nk + 10 eps, upper-triangular
precision factors P with P P^T = Sigma^-1)."""

from __future__ import annotations

import math

import numpy as np

from fastlearn import _C
from fastlearn._buffer import view

COV_CODES = {"full": 0, "tied": 1, "diag": 2, "spherical": 2}

ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined empirical "
               "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
               "number of components, increase reg_covar, or scale the input data.")


def log_det_cholesky(prec_chol, covariance_type, n_features):
    """log det P_k (= -1/2 log det Sigma_k) from the precision Cholesky factors, shape (K,)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def _kernel_factor(prec_chol, covariance_type, n_components, n_features, dtype):
    if covariance_type == "spherical":  # handed to the kernel as diag
        prec_chol = np.repeat(np.asarray(prec_chol).reshape(-1, 1), n_features, axis=1)
    return np.ascontiguousarray(prec_chol, dtype=dtype)


def gaussian_pass(X, means, prec_chol, covariance_type, log_weights=None, *, log_prob=False,
                  log_norm=False, labels=False, stats=False, full_path=0):
    """One pass of the _C kernel over X (float32/float64 C-contiguous ndarray).

    Returns a dict with the requested entries: 'log_prob' (N, K) (weighted when log_weights
    is given), 'log_norm' (N,), 'labels' (N,), 'loglik' (sum of log_norm) and the statistics
    'nk', 's1', 's2' (float64, about ``means``). ``full_path`` (full covariance): 0 lets the
    kernel choose between its triangular and its lifted products, 1 or 2 forces one (tests).
    """
    N, D = X.shape
    K = means.shape[0]
    dtype = X.dtype
    offset = log_det_cholesky(np.asarray(prec_chol, dtype=np.float64), covariance_type, D)
    offset = np.broadcast_to(offset, (K,)) - 0.5 * D * math.log(2 * math.pi)
    if log_weights is not None:
        offset = offset + log_weights
    offset = np.ascontiguousarray(offset, dtype=dtype)
    mu = np.ascontiguousarray(means, dtype=dtype)
    P = _kernel_factor(prec_chol, covariance_type, K, D, dtype)
    out = {}
    kw = {}
    if log_prob:
        out["log_prob"] = kw["log_prob"] = np.empty((N, K), dtype=dtype)
    if log_norm:
        out["log_norm"] = kw["log_norm"] = np.empty(N, dtype=dtype)
    if labels:
        out["labels"] = kw["labels"] = np.empty(N, dtype=np.int64)
    if stats:
        kw["nk"] = np.empty(K)
        kw["s1"] = np.empty((K, D))
        if covariance_type == "full":
            kw["s2"] = np.empty((K, D, D))
        elif covariance_type in ("diag", "spherical"):
            kw["s2"] = np.empty((K, D))
        out.update(nk=kw["nk"], s1=kw["s1"], s2=kw.get("s2"))
    views = {name: view(a, name) for name, a in kw.items()}
    out["loglik"] = _C.gaussian_mixture_pass(view(X, "X"), view(mu, "means"), view(P, "precisions_cholesky"),
                                             view(offset, "offset"), COV_CODES[covariance_type], **views,
                                             full_path=full_path)
    return out


def _tied_correction(nk, e, data_mean, n_samples, outer=np.outer):
    """scikit-learn's tied covariance is (X^T X - sum_k nk m_k m_k^T) / sum nk over all samples,
    also when the responsibilities do not sum to one per sample (initial responsibilities from
    single points). The centred form above equals it exactly when sum nk = N and
    sum nk m_k = N c; otherwise this adds the difference, (N - sum nk) c c^T + u c^T + c u^T with
    u = -sum_k nk (m_k - c), written without the large cancelling terms of X^T X."""
    if n_samples is None:
        return 0.0
    u = -(nk[:, None] * e).sum(0)
    c = data_mean
    return (n_samples - nk.sum()) * outer(c, c) + outer(u, c) + outer(c, u)


def m_step(stats, means, covariance_type, reg_covar, dtype, tied_scatter=None, data_mean=None, n_samples=None):
    """Weights, means and covariances from the E-step statistics, in float64, with
    scikit-learn's definitions: nk = sum r + 10 eps, means = r^T X / nk, covariance about the
    new means divided by nk, plus reg_covar on the diagonal.

    The statistics are about the old means c: s1 = sum r (x - c), s2 = sum r (x - c)(x - c)^T.
    For new means m = (nk_raw c + s1) / nk and d = m - c, sum r (x - m)(x - m)^T equals
    s2 - s1 d^T - d s1^T + nk_raw d d^T exactly.
    """
    eps = np.finfo(dtype).eps
    nk_raw = stats["nk"]
    nk = nk_raw + 10 * eps
    c = np.asarray(means, dtype=np.float64)
    s1 = stats["s1"]
    new_means = (nk_raw[:, None] * c + s1) / nk[:, None]
    d = new_means - c
    if covariance_type == "full":
        s2 = stats["s2"]
        cross = s1[:, :, None] * d[:, None, :]
        cov = s2 - cross - np.transpose(cross, (0, 2, 1)) + nk_raw[:, None, None] * d[:, :, None] * d[:, None, :]
        cov /= nk[:, None, None]
        idx = np.arange(c.shape[1])
        cov[:, idx, idx] += reg_covar
    elif covariance_type in ("diag", "spherical"):
        cov = (stats["s2"] - 2 * s1 * d + nk_raw[:, None] * d * d) / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    else:  # tied: total scatter about the data mean, minus the between-component part
        e = new_means - data_mean
        cov = tied_scatter - (nk[:, None] * e).T @ e
        cov += _tied_correction(nk, e, data_mean, n_samples)
        cov /= nk.sum()
        cov.flat[:: c.shape[1] + 1] += reg_covar
    weights = nk / nk.sum()
    return weights, new_means, cov


def precision_cholesky(covariances, covariance_type):
    """Upper-triangular P with P P^T = Sigma^-1 (full, tied), or 1/sqrt(variance); ValueError
    with scikit-learn's advice when a covariance is not positive definite.

    P = (L^-1)^T for the Cholesky factor L of Sigma, computed with NumPy's batched LAPACK
    calls (one call for all K matrices: a loop of K small SciPy calls costs more in BLAS
    thread hand-offs than in arithmetic), and the strictly lower part set to exact zeros."""
    if covariance_type in ("full", "tied"):
        mats = covariances if covariance_type == "full" else covariances[None]
        if not np.all(np.isfinite(mats)):
            raise ValueError(ILL_DEFINED)
        try:
            L = np.linalg.cholesky(mats)
        except np.linalg.LinAlgError:
            raise ValueError(ILL_DEFINED) from None
        out = np.triu(np.transpose(np.linalg.inv(L), (0, 2, 1)))
        return out if covariance_type == "full" else out[0]
    if np.any(~(covariances > 0.0)):
        raise ValueError(ILL_DEFINED)
    return 1.0 / np.sqrt(covariances)


def precision_cholesky_from_precisions(precisions, covariance_type):
    """Upper-triangular P with P P^T = Lambda from the precisions: Cholesky of the precision
    with rows and columns reversed, reversed back (U U^T factorisation)."""
    if covariance_type in ("full", "tied"):
        mats = precisions if covariance_type == "full" else precisions[None]
        out = np.linalg.cholesky(mats[:, ::-1, ::-1])[:, ::-1, ::-1]
        return out if covariance_type == "full" else out[0]
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol, covariance_type):
    if covariance_type == "full":
        return prec_chol @ np.transpose(prec_chol, (0, 2, 1))
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol ** 2
