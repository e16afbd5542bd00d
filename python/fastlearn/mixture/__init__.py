"""Gaussian mixtures fitted by EM on a fused C++ E-step (scikit-learn compatible)."""

from fastlearn.mixture._gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
