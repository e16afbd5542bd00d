"""Benchmark cases of the cluster domain: KMeans (Lloyd, 10 iterations from the same initial
centres, tol=0) against scikit-learn's KMeans. Work: 2 N K D FLOPs an iteration for the
distances (the centre update is N D more)."""

from __future__ import annotations

import numpy as np

from fastlearn.bench.core import Case


def _kmeans_case(N, D, K, dtype, quick, iters=10):
    def setup():
        rng = np.random.default_rng(0)
        centers = rng.normal(scale=3.0, size=(K, D))
        X = (centers[rng.integers(0, K, N)] + rng.normal(size=(N, D))).astype(dtype)
        return X, X[:K].copy()

    def run_fl(inp):
        from fastlearn.cluster import KMeans

        X, init = inp
        return KMeans(K, init=init, n_init=1, max_iter=iters, tol=0.0).fit(X).inertia_

    def run_sk(inp):
        from sklearn.cluster import KMeans

        X, init = inp
        return KMeans(K, init=init, n_init=1, max_iter=iters, tol=0.0).fit(X).inertia_

    dt = np.dtype(dtype).name
    return Case(name=f"KMeans fit ({iters} Lloyd iterations)", shape=f"N={N} D={D} K={K} {dt}", setup=setup,
                fastlearn=run_fl, baseline=run_sk, baseline_name="sklearn KMeans (lloyd)",
                flops=2.0 * N * K * D * iters, bytes=N * D * np.dtype(dtype).itemsize * iters, bound="compute",
                dtype=dt, quick=quick)


def cases(quick: bool = False) -> list[Case]:
    return [
        _kmeans_case(20000, 32, 16, np.float64, quick=True),
        _kmeans_case(200000, 32, 16, np.float64, quick=False),
        _kmeans_case(200000, 32, 16, np.float32, quick=False),
        _kmeans_case(200000, 8, 64, np.float32, quick=False),
    ]
