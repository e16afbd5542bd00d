"""Benchmark cases of the mixture domain: one EM iteration of GaussianMixture (fused E-step
with statistics, M-step, precision factors) against one of scikit-learn's (its _e_step and
_m_step on the same parameters), per covariance type, float64 and float32.

Work of one 'full' iteration, counting the triangular factor and the symmetric scatter:
E-step N K D(D+1)/2 multiply-adds, scatter the same again, so 2 N K D(D+1) FLOPs (3.4 GFLOP
at N=100k, D=32, K=16). 'tied' does one triangular product a point (N D(D+1) FLOPs) plus
N K D for the distances; 'diag'/'spherical' about 6 N K D (E-step and both moments).
"""

from __future__ import annotations

import warnings

import numpy as np

from fastlearn.bench.core import Case


def _flops(cov, N, D, K):
    if cov == "full":
        return 2.0 * N * K * D * (D + 1)
    if cov == "tied":
        return N * D * (D + 1) + 3.0 * N * K * D
    return 6.0 * N * K * D


def _em_case(cov, N, D, K, dtype, quick):
    def setup():
        from sklearn.mixture import GaussianMixture as SkGM

        from fastlearn.mixture import GaussianMixture

        rng = np.random.default_rng(0)
        centers = rng.normal(scale=4.0, size=(K, D))
        X = (centers[rng.integers(0, K, N)] + rng.normal(size=(N, D))).astype(dtype)
        # Start from the true centres (shifted) with unit covariances: a typical mid-fit state.
        precisions = {"full": np.stack([np.eye(D)] * K), "tied": np.eye(D), "diag": np.ones((K, D)),
                      "spherical": np.ones(K)}[cov]
        kw = dict(n_components=K, covariance_type=cov, weights_init=np.full(K, 1.0 / K),
                  means_init=centers + 0.5, precisions_init=precisions, max_iter=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fl = GaussianMixture(**kw).fit(X)
        sk = SkGM(**kw)  # scikit-learn cannot fit with max_iter=0 and precisions_init: set its state
        sk.weights_, sk.means_, sk.covariances_, sk.precisions_cholesky_ = (a.copy() for a in fl._get_parameters())
        state = fl._fit_state(X)
        start_fl = fl._get_parameters()
        start_sk = (sk.weights_, sk.means_, sk.covariances_, sk.precisions_cholesky_)
        return X, fl, state, start_fl, sk, start_sk

    def run_fl(inp):
        X, fl, state, start, _, _ = inp
        fl.weights_, fl.means_, fl.covariances_, fl.precisions_cholesky_ = start
        return fl._em_step(X, state)

    def run_sk(inp):
        X, _, _, _, sk, start = inp
        sk.weights_, sk.means_, sk.covariances_, sk.precisions_cholesky_ = start
        log_prob_norm, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        return log_prob_norm

    dt = np.dtype(dtype).name
    return Case(name=f"GaussianMixture EM iteration ({cov})", shape=f"N={N} D={D} K={K} {dt}", setup=setup,
                fastlearn=run_fl, baseline=run_sk, baseline_name="sklearn GaussianMixture (_e_step+_m_step)",
                flops=_flops(cov, N, D, K), bytes=N * D * np.dtype(dtype).itemsize, bound="compute", dtype=dt,
                quick=quick, notes="fused E-step + statistics, no N x K matrix")


def cases(quick: bool = False) -> list[Case]:
    out = []
    # Quick: a few seconds on 2 cores (scikit-learn's iterations dominate).
    out.append(_em_case("full", 10000, 32, 16, np.float64, quick=True))
    out.append(_em_case("diag", 10000, 32, 16, np.float64, quick=False))
    for cov in ("full", "tied", "diag", "spherical"):
        for dtype in (np.float64, np.float32):
            out.append(_em_case(cov, 100000, 32, 16, dtype, quick=False))
    return out
