"""gaussian_log_prob as a torch.library op: log N(x_n | mu_k, Sigma_k) for all points and
components, from scikit-learn's precision Cholesky factors (P P^T = Sigma^-1). CPU: the C++
kernel of the mixture domain; CUDA: a Triton kernel; fake kernel for tracing; autograd with
respect to X, means and the factors, written as its matrix products."""

from __future__ import annotations

import math

import torch
from torch.library import triton_op, wrap_triton

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.ops._device import gpu_backend
from fastlearn.ops._eager import direct_cpu_call_ok

__all__ = ["gaussian_log_prob"]

_COV = {"full": 0, "tied": 1, "diag": 2, "spherical": 2}


def _offset(prec, cov, n_components, n_features):
    """log det P_k - D/2 log(2 pi), shape (K,)."""
    if cov == 2:
        logdet = torch.log(prec).sum(dim=1)
    else:
        logdet = torch.log(torch.diagonal(prec, dim1=-2, dim2=-1)).sum(dim=-1)
        logdet = logdet.expand(n_components) if cov == 1 else logdet
    return (logdet - 0.5 * n_features * math.log(2 * math.pi)).contiguous()


# Registration follows the ops pattern (see ops/softmax.py): an opaque CPU custom op holding
# the C++ kernel, under a triton_op whose body sends CUDA tensors to the Triton kernel.

def _gaussian_log_prob_cpu_kernel(X: torch.Tensor, means: torch.Tensor, prec: torch.Tensor, cov: int) -> torch.Tensor:
    N, D = X.shape
    K = means.shape[0]
    out = X.new_empty((N, K))
    offset = _offset(prec, cov, K, D)
    _C.gaussian_mixture_pass(view(X, "X"), view(means, "means"), view(prec, "precisions_cholesky"),
                             view(offset, "offset"), cov, log_prob=view(out, "out"))
    return out


_gaussian_log_prob_cpu = torch.library.custom_op("fastlearn::gaussian_log_prob_cpu", _gaussian_log_prob_cpu_kernel,
                                                 mutates_args=(), device_types="cpu")


@_gaussian_log_prob_cpu.register_fake
def _gaussian_log_prob_cpu_fake(X, means, prec, cov):
    return X.new_empty((X.shape[0], means.shape[0]))


def _triton_launch(X, means, prec, cov, out):
    from fastlearn.kernels.triton import gaussian_log_prob as tk

    N, D = X.shape
    K = means.shape[0]
    offset = _offset(prec, cov, K, D)
    meta, grid = tk.launch_config(N, D, K, X.dtype == torch.float64)
    stride_p_k = 0 if cov == 1 else D * D
    wrap_triton(tk._gaussian_log_prob_kernel)[grid](X, means, prec, offset, out, N, D, K, X.stride(0), stride_p_k,
                                                    COV=cov, PRECISION="ieee", **meta)


@triton_op("fastlearn::gaussian_log_prob", mutates_args=())
def _gaussian_log_prob(X: torch.Tensor, means: torch.Tensor, prec: torch.Tensor, cov: int) -> torch.Tensor:
    if X.device.type == "cpu":
        return torch.ops.fastlearn.gaussian_log_prob_cpu(X, means, prec, cov)
    out = X.new_empty((X.shape[0], means.shape[0]))
    if X.shape[0] == 0:
        return out
    if gpu_backend("gaussian_log_prob") != "triton":
        raise RuntimeError("gaussian_log_prob: the GPU kernel is written in Triton; install triton "
                           "(FASTLEARN_GPU_BACKEND=cuda has no CUDA kernel for this op).")
    _triton_launch(X, means, prec, cov, out)
    return out


@_gaussian_log_prob.register_fake
def _gaussian_log_prob_fake(X, means, prec, cov):
    return X.new_empty((X.shape[0], means.shape[0]))


def _setup_context(ctx, inputs, output):
    X, means, prec, cov = inputs
    ctx.save_for_backward(X, means, prec)
    ctx.cov = cov


def _backward(ctx, grad):
    # logp[n, k] = logdet P_k - ||y_nk||^2 / 2 - const, y_nk = (x_n - mu_k) P_k. With g = grad:
    #   dX_n   = -sum_k g_nk P_k y_nk        dmu_k = sum_n g_nk P_k y_nk
    #   dP_k   = -sum_n g_nk (x_n - mu_k) y_nk^T + diag(1 / diag P_k) sum_n g_nk
    X, means, prec = ctx.saved_tensors
    cov = ctx.cov
    g = grad
    gsum = g.sum(dim=0)  # (K,)
    if cov == 2:
        p2 = prec * prec  # (K, D)
        gx = X * (g @ p2) - g @ (means * p2)  # sum_k g_nk p2_k (x_n - mu_k)
        d_x = -gx
        gtx = g.T @ X  # (K, D)
        d_mu = p2 * (gtx - gsum[:, None] * means)
        gtx2 = g.T @ (X * X)
        weighted_sq = gtx2 - 2 * means * gtx + gsum[:, None] * means * means
        d_p = -prec * weighted_sq + gsum[:, None] / prec
        return d_x, d_mu, d_p, None
    d_x = torch.zeros_like(X)
    d_mu = torch.empty_like(means)
    d_p = torch.zeros_like(prec)
    for k in range(means.shape[0]):
        P = prec if cov == 1 else prec[k]
        diff = X - means[k]
        y = diff @ P
        gy = g[:, k:k + 1] * y  # (N, D)
        back = gy @ P.T
        d_x -= back
        d_mu[k] = back.sum(dim=0)
        dP = -(diff.T @ gy) + torch.diag(gsum[k] / torch.diagonal(P))
        if cov == 1:
            d_p += dP
        else:
            d_p[k] = dP
    return d_x, d_mu, d_p, None


_gaussian_log_prob.register_autograd(_backward, setup_context=_setup_context)


def gaussian_log_prob(X: torch.Tensor, means: torch.Tensor, precisions_cholesky: torch.Tensor,
                      covariance_type: str = "full") -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k) for every row of ``X`` (N, D) and component k, shape (N, K).

    ``precisions_cholesky`` as scikit-learn's GaussianMixture defines it (P P^T = Sigma^-1):
    'full' (K, D, D), 'tied' (D, D), 'diag' (K, D), 'spherical' (K,). float32 or float64;
    differentiable with respect to X, means and precisions_cholesky.
    """
    op = "gaussian_log_prob"
    for name, t in (("X", X), ("means", means), ("precisions_cholesky", precisions_cholesky)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}; "
                            f"use torch.as_tensor({name}).")
    if covariance_type not in _COV:
        raise ValueError(f"{op}: covariance_type must be one of 'full', 'tied', 'diag', 'spherical', "
                         f"got {covariance_type!r}.")
    if X.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: argument 'X' has dtype {X.dtype}; pass float32 or float64 (e.g. X.float()).")
    if means.dtype != X.dtype or precisions_cholesky.dtype != X.dtype:
        raise TypeError(f"{op}: 'means' and 'precisions_cholesky' must have X's dtype ({X.dtype}); "
                        f"got {means.dtype} and {precisions_cholesky.dtype}.")
    if X.dim() != 2:
        raise ValueError(f"{op}: argument 'X' must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}.")
    N, D = X.shape
    if means.dim() != 2 or means.shape[1] != D or means.shape[0] < 1:
        raise ValueError(f"{op}: argument 'means' must be (n_components, {D}), got shape {tuple(means.shape)}.")
    K = means.shape[0]
    want = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[covariance_type]
    if tuple(precisions_cholesky.shape) != want:
        raise ValueError(f"{op}: argument 'precisions_cholesky' must have shape {want} for "
                         f"covariance_type={covariance_type!r}, got {tuple(precisions_cholesky.shape)}.")
    if not (X.device == means.device == precisions_cholesky.device):
        raise ValueError(f"{op}: X, means and precisions_cholesky must be on one device.")
    prec = precisions_cholesky
    if covariance_type == "spherical":
        prec = prec[:, None].expand(K, D)
    X, means, prec = X.contiguous(), means.contiguous(), prec.contiguous()
    if direct_cpu_call_ok(X, means, prec):
        return _gaussian_log_prob_cpu_kernel(X, means, prec, _COV[covariance_type])
    return torch.ops.fastlearn.gaussian_log_prob(X, means, prec, _COV[covariance_type])
