"""Benchmark cases of the mixture domain: one EM iteration of GaussianMixture (fused E-step
with statistics, M-step, precision factors) against one of scikit-learn's (its _e_step and
_m_step on the same parameters), per covariance type, float64 and float32.

Work of one 'full' iteration, counting the triangular factor and the symmetric scatter:
E-step N K D(D+1)/2 multiply-adds, scatter the same again, so 2 N K D(D+1) FLOPs (3.4 GFLOP
at N=100k, D=32, K=16). 'tied' does one triangular product a point (N D(D+1) FLOPs) plus
N K D for the distances; 'diag'/'spherical' about 6 N K D (E-step and both moments).
The cuda cases (N=1,000,000) compare the fused Triton E-step with the same EM iteration
written plainly in torch on the GPU (scikit-learn on the CPU is too slow to time there).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from fastlearn.bench.core import Case


def _flops(cov, N, D, K):
    if cov == "full":
        return 2.0 * N * K * D * (D + 1)
    if cov == "tied":
        return N * D * (D + 1) + 3.0 * N * K * D
    return 6.0 * N * K * D


def _em_case(cov, N, D, K, dtype, quick, spread=4.0):
    def setup():
        from sklearn.mixture import GaussianMixture as SkGM

        from fastlearn.mixture import GaussianMixture

        rng = np.random.default_rng(0)
        centers = rng.normal(scale=spread, size=(K, D))
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
    shape = f"N={N} D={D} K={K} {dt}" + ("" if spread == 4.0 else f" overlapping (centres scale {spread})")
    return Case(name=f"GaussianMixture EM iteration ({cov})", shape=shape, setup=setup,
                fastlearn=run_fl, baseline=run_sk, baseline_name="sklearn GaussianMixture (_e_step+_m_step)",
                flops=_flops(cov, N, D, K), bytes=N * D * np.dtype(dtype).itemsize, bound="compute", dtype=dt,
                quick=quick, notes="fused E-step + statistics, no N x K matrix")


def _torch_estep(X, weights, means, prec_chol, cov):
    """The E-step as a user would write it in torch on the GPU (scikit-learn's _e_step
    ported): the N x K log-probabilities and responsibilities are materialised, one (N x D)
    product per component; float32 matmuls without TF32. Returns (log_norm, resp)."""
    N, D = X.shape
    K = means.shape[0]
    if cov == "full":
        log_prob = torch.stack([((X @ prec_chol[k] - means[k] @ prec_chol[k]) ** 2).sum(1) for k in range(K)], 1)
        log_det = torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(1)
    else:  # diag
        p2 = prec_chol ** 2
        log_prob = (X * X) @ p2.T - 2.0 * X @ (means * p2).T + (means * means * p2).sum(1)
        log_det = torch.log(prec_chol).sum(1)
    weighted = -0.5 * (D * math.log(2 * math.pi) + log_prob) + log_det + torch.log(weights)
    log_norm = torch.logsumexp(weighted, dim=1)
    return log_norm, torch.exp(weighted - log_norm[:, None])


def _torch_estep_stats(X, weights, means, prec_chol, cov):
    """The E-step and the statistics the fused kernel returns (N_k, first moments and
    scatter about the current means), as a user would write them in torch."""
    log_norm, resp = _torch_estep(X, weights, means, prec_chol, cov)
    nk = resp.sum(0)
    s1 = resp.T @ X - nk[:, None] * means
    if cov == "full":
        s2 = torch.stack([(resp[:, k:k + 1] * (X - means[k])).T @ (X - means[k]) for k in range(means.shape[0])])
    else:
        s2 = resp.T @ (X * X) - 2.0 * (resp.T @ X) * means + nk[:, None] * means ** 2
    return log_norm.sum(), nk, s1, s2


def _torch_em_step(X, weights, means, prec_chol, cov, reg_covar=1e-6):
    """One EM iteration as a user would write it in torch on the GPU (scikit-learn's
    _e_step and _m_step ported), on _torch_estep."""
    N, D = X.shape
    K = means.shape[0]
    log_norm, resp = _torch_estep(X, weights, means, prec_chol, cov)
    nk = resp.sum(0) + 10 * torch.finfo(X.dtype).eps
    new_means = (resp.T @ X) / nk[:, None]
    if cov == "full":
        eye = torch.eye(D, device=X.device, dtype=X.dtype)
        covs = torch.stack([((resp[:, k:k + 1] * (X - new_means[k])).T @ (X - new_means[k])) / nk[k] + reg_covar * eye
                            for k in range(K)])
        L = torch.linalg.cholesky(covs)
        new_prec = torch.linalg.solve_triangular(L, eye.expand(K, D, D), upper=False).transpose(1, 2)
    else:
        avg_x2 = (resp.T @ (X * X)) / nk[:, None]
        covs = avg_x2 - new_means ** 2 + reg_covar
        new_prec = 1.0 / torch.sqrt(covs)
    return log_norm.mean().item(), (nk / N, new_means, new_prec)


def _gpu_problem(cov, N, D, K):
    """Blobs on the GPU and a mid-fit state: (X, weights, means shifted from the true centres,
    unit precision factors)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    centers = torch.randn(K, D, generator=g, device="cuda") * 4.0
    labels = torch.randint(0, K, (N,), generator=g, device="cuda")
    X = centers[labels] + torch.randn(N, D, generator=g, device="cuda")
    if cov == "full":
        prec = torch.eye(D, device="cuda").expand(K, D, D).contiguous()
    else:
        prec = torch.ones(K, D, device="cuda")
    return X, torch.full((K,), 1.0 / K, device="cuda"), centers + 0.5, prec


def _gpu_em_case(cov, N, D, K):
    def setup():
        from fastlearn.mixture import GaussianMixture
        from fastlearn.mixture import _gpu

        X, weights, means, prec = _gpu_problem(cov, N, D, K)
        est = GaussianMixture(n_components=K, covariance_type=cov, device="cuda")
        fit = _gpu._Fit(est, X)
        covs = torch.linalg.inv(prec @ prec.transpose(1, 2)) if cov == "full" else 1.0 / prec ** 2
        start = (weights, means, covs, prec)
        return X, fit, start

    def run_fl(inp):
        X, fit, start = inp
        fit._set(*start)
        return fit.em_step()

    def run_torch(inp):
        X, _, (weights, means, _, prec) = inp
        return _torch_em_step(X, weights, means, prec, cov)[0]

    return Case(name=f"GaussianMixture EM iteration ({cov})", shape=f"N={N} D={D} K={K} float32", setup=setup,
                fastlearn=run_fl, baseline=run_torch, baseline_name="torch E+M step on the GPU (N x K resp)",
                flops=_flops(cov, N, D, K), bytes=N * D * 4, bound="compute", dtype="float32", device="cuda",
                quick=False, notes="fused Triton E-step (tf32x3) + float64 M-step; scikit-learn on the CPU is "
                                   "too slow at this N, the baseline is the same EM written plainly in torch")


def _gpu_estep_case(cov, N, D, K):
    """The fused Triton E-step alone (log-likelihood and statistics, no M-step): the kernel
    the issue's fraction of the fp32 peak is about."""
    def setup():
        from fastlearn.mixture import _gpu

        return (_gpu, *_gpu_problem(cov, N, D, K))

    def run_fl(inp):
        _gpu, X, weights, means, prec = inp
        return _gpu.estep(X, means, prec, torch.log(weights), cov, stats=True)["loglik"]

    def run_torch(inp):
        _, X, weights, means, prec = inp
        return _torch_estep_stats(X, weights, means, prec, cov)[0]

    return Case(name=f"GaussianMixture E-step + statistics ({cov})", shape=f"N={N} D={D} K={K} float32",
                setup=setup, fastlearn=run_fl, baseline=run_torch,
                baseline_name="torch E-step + statistics on the GPU (N x K resp)", flops=_flops(cov, N, D, K),
                bytes=N * D * 4, bound="compute", dtype="float32", device="cuda", quick=False,
                notes="fused Triton kernel alone; flops counts the triangular/symmetric work, as on the CPU")


def cases(quick: bool = False) -> list[Case]:
    out = []
    # Quick: a few seconds on 2 cores (scikit-learn's iterations dominate).
    out.append(_em_case("full", 10000, 32, 16, np.float64, quick=True))
    out.append(_em_case("diag", 10000, 32, 16, np.float64, quick=False))
    for cov in ("full", "tied", "diag", "spherical"):
        for dtype in (np.float64, np.float32):
            out.append(_em_case(cov, 100000, 32, 16, dtype, quick=False))
    # Overlapping components: few responsibilities underflow to 0, so the full kernel's scatter
    # runs on every point (the separated case above gathers the nonzero ones first).
    for dtype in (np.float64, np.float32):
        out.append(_em_case("full", 100000, 32, 16, dtype, quick=False, spread=0.3))
    out.append(_gpu_em_case("full", 1_000_000, 32, 16))  # the target: >= half the fp32 peak
    out.append(_gpu_em_case("diag", 1_000_000, 32, 16))
    for D in (32, 64):
        out.append(_gpu_estep_case("full", 1_000_000, D, 16))
    out.append(_gpu_estep_case("diag", 1_000_000, 32, 16))
    return out
