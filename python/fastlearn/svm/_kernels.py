"""Kernel parameters shared by SVC and SVR: the kernel codes of _C, gamma resolution, and the
float64 kernel matrix K(X, Y) used at predict time (NumPy BLAS, in row chunks)."""

from __future__ import annotations

import numpy as np

# Codes shared with csrc/svm/kernel.h (enum class KernelKind).
KERNEL_CODES = {"linear": 0, "poly": 1, "rbf": 2, "sigmoid": 3, "precomputed": 4}

_CHUNK_ELEMENTS = 1 << 22  # rows of X per chunk so that a chunk of K has ~4M entries (32 MiB)


def resolve_gamma(gamma, X: np.ndarray, kernel) -> float:
    """scikit-learn's rule: 'scale' = 1 / (n_features * X.var()), 'auto' = 1 / n_features."""
    if kernel == "precomputed" or callable(kernel):
        return 0.0
    if gamma == "scale":
        var = X.var()
        return 1.0 / (X.shape[1] * var) if var != 0 else 1.0
    if gamma == "auto":
        return 1.0 / X.shape[1]
    return float(gamma)


def kernel_matrix(X, Y, kernel, gamma: float, coef0: float, degree: int) -> np.ndarray:
    """K(X, Y) in float64 for the named kernels (X: n x d, Y: m x d), or a callable's K."""
    if callable(kernel):
        return np.asarray(kernel(X, Y), dtype=np.float64)
    dot = X @ Y.T
    if kernel == "linear":
        return dot
    if kernel == "rbf":
        d2 = np.einsum("ij,ij->i", X, X)[:, None] + np.einsum("ij,ij->i", Y, Y)[None, :] - 2.0 * dot
        np.maximum(d2, 0.0, out=d2)
        d2 *= -gamma
        return np.exp(d2, out=d2)
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    if kernel == "sigmoid":
        return np.tanh(gamma * dot + coef0)
    raise ValueError(f"unknown kernel {kernel!r}")


def chunks(n_rows: int, n_cols: int):
    """Row ranges that keep a chunk of K(X, SV) near _CHUNK_ELEMENTS entries."""
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)
