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


def _gpu_kmeans_case(N, D, K, iters=10):
    def setup():
        import torch

        g = torch.Generator(device="cuda").manual_seed(0)
        centers = torch.randn(K, D, generator=g, device="cuda") * 3.0
        X = centers[torch.randint(0, K, (N,), generator=g, device="cuda")] + torch.randn(N, D, generator=g,
                                                                                          device="cuda")
        return X, X[:K].clone()

    def run_fl(inp):
        from fastlearn.cluster import KMeans

        X, init = inp
        return KMeans(K, init=init, n_init=1, max_iter=iters, tol=0.0, device="cuda").fit(X).inertia_

    def run_torch(inp):
        # Lloyd as a user would write it in torch: the N x K distance matrix, argmin, index_add.
        import torch

        X, C = inp
        x_sq = (X * X).sum(1, keepdim=True)
        old = None
        for _ in range(iters):
            d = x_sq - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
            labels = d.argmin(1)
            if old is not None and torch.equal(labels, old):  # strict convergence, as KMeans
                break
            old = labels
            sums = torch.zeros_like(C).index_add_(0, labels, X)
            counts = torch.bincount(labels, minlength=K).to(X.dtype)
            C = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
        d = x_sq - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
        return d.min(1).values.clamp_min(0).sum().item()

    return Case(name=f"KMeans fit ({iters} Lloyd iterations)", shape=f"N={N} D={D} K={K} float32", setup=setup,
                fastlearn=run_fl, baseline=run_torch, baseline_name="torch Lloyd on the GPU (N x K distances)",
                flops=2.0 * N * K * D * iters, bytes=N * D * 4 * iters, bound="compute", dtype="float32",
                device="cuda", quick=False, notes="fused Triton assign + sums (tf32x3); sklearn on the CPU is too "
                                                  "slow at this N, the baseline is Lloyd written plainly in torch")


def cases(quick: bool = False) -> list[Case]:
    return [
        _kmeans_case(20000, 32, 16, np.float64, quick=True),
        _kmeans_case(200000, 32, 16, np.float64, quick=False),
        _kmeans_case(200000, 32, 16, np.float32, quick=False),
        _kmeans_case(200000, 8, 64, np.float32, quick=False),
        _gpu_kmeans_case(1_000_000, 32, 64),
    ]
