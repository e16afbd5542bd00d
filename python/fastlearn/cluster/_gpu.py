"""GPU path of KMeans: the CPU path's algorithm (greedy k-means++ with the same random draws,
Lloyd iterations on centred data, empty clusters re-seeded at the farthest points, tol scaled
by the variance) with tensors on the device: each Lloyd step one launch of the fused Triton
assignment kernel (kernels/triton/kmeans.py), the centre update in float64 torch. Any torch
device works: CPU tensors with TRITON_INTERPRET=1 run it in the tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from fastlearn.mixture._gpu import back, checked_tensor


def assign(X, centers, sample_weight, *, stats=False, min_dist=False, programs=None):
    """One kernel launch: 'labels' (N,) int64, 'inertia' (float64 0-d), and as asked
    'min_dist' (N,) and the float64 'sums' (K, D), 'counts' (K,)."""
    from fastlearn.kernels.triton import kmeans as tk

    N, D = X.shape
    K = centers.shape[0]
    dev, dtype = X.device, X.dtype
    centers = centers.to(dtype).contiguous()
    c_sq = (centers.to(torch.float64) ** 2).sum(1).to(dtype)
    n_sm = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else None
    meta, G = tk.launch_config(N, D, K, dtype == torch.float64, n_sm=n_sm)
    if programs is not None:
        G = max(1, min(int(programs), math.ceil(max(N, 1) / meta["BLOCK_N"])))
    f64 = dict(dtype=torch.float64, device=dev)
    labels = torch.empty(N, dtype=torch.int64, device=dev)
    md = torch.empty(N, dtype=dtype, device=dev) if min_dist else torch.empty(1, dtype=dtype, device=dev)
    part_inertia = torch.zeros(G, **f64)
    part_sums = torch.zeros(G, K, D, **f64) if stats else torch.empty(1, **f64)
    part_counts = torch.zeros(G, K, **f64) if stats else torch.empty(1, **f64)
    if N > 0:
        precision = "ieee" if dtype == torch.float64 else "tf32x3"
        tk._kmeans_assign_kernel[(G,)](X, centers, c_sq, sample_weight.to(dtype).contiguous(), labels, md,
                                       part_inertia, part_sums, part_counts, N, D, K, X.stride(0),
                                       WRITE_MIN_DIST=min_dist, STATS=stats, PRECISION=precision, **meta)
    out = {"labels": labels, "inertia": part_inertia.sum()}
    if min_dist:
        out["min_dist"] = md
    if stats:
        out["sums"], out["counts"] = part_sums.sum(0), part_counts.sum(0)
    return out


def _sq_distances(A, X, x_sq):
    """Squared distances from the rows of A to the rows of X (len(A) x N), clipped at 0."""
    return ((A * A).sum(1)[:, None] - 2.0 * (A @ X.T) + x_sq[None, :]).clamp_min_(0.0)


def kmeans_plusplus(X, n_clusters, *, sample_weight=None, random_state=None, n_local_trials=None):
    """Greedy k-means++ on the device with the CPU version's random draws (NumPy's
    RandomState on the host); returns (centers tensor, indices ndarray)."""
    N, D = X.shape
    if N < n_clusters:
        raise ValueError(f"n_samples={N} should be >= n_clusters={n_clusters}.")
    random_state = check_random_state(random_state)
    w = torch.ones(N, dtype=X.dtype, device=X.device) if sample_weight is None else sample_weight.to(X.dtype)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = (X * X).sum(1)
    centers = torch.empty(n_clusters, D, dtype=X.dtype, device=X.device)
    indices = np.full(n_clusters, -1, dtype=int)
    w_host = w.cpu().numpy()
    first = random_state.choice(N, p=w_host / w_host.sum())
    centers[0], indices[0] = X[first], first
    closest = _sq_distances(X[first][None], X, x_sq)[0]
    potential = float(closest @ w)
    for c in range(1, n_clusters):
        draws = torch.as_tensor(random_state.uniform(size=n_local_trials) * potential, dtype=torch.float64,
                                device=X.device)
        cum = torch.cumsum(w * closest, dim=0, dtype=torch.float64)
        candidates = torch.searchsorted(cum, draws).clamp_max_(N - 1)
        dist = torch.minimum(closest, _sq_distances(X[candidates], X, x_sq))
        pots = dist @ w
        best = int(torch.argmin(pots))
        potential, closest = float(pots[best]), dist[best]
        centers[c], indices[c] = X[candidates[best]], int(candidates[best])
    return centers, indices


def _lloyd(est, X, sample_weight, centers, tol, bar):
    """Lloyd iterations from ``centers`` (as KMeans._lloyd); returns labels, inertia, centers,
    n_iter, interrupted."""
    from fastlearn.cluster._kmeans import _lloyd_converged  # _kmeans imports this module
    labels_old = None
    done = 0  # finished Lloyd steps
    interrupted = False
    try:
        for i in range(est.max_iter):
            out = assign(X, centers, sample_weight, stats=True, min_dist=True)
            labels, sums, counts = out["labels"], out["sums"], out["counts"]
            empty = torch.nonzero(counts == 0).flatten().tolist()
            if empty:
                # Re-seed empty clusters at the samples farthest from their centres.
                far = torch.argsort(-out["min_dist"], stable=True)[: len(empty)].tolist()
                for k, n in zip(empty, far):
                    old = int(labels[n])
                    wn = sample_weight[n].to(torch.float64)
                    xn = X[n].to(torch.float64)
                    sums[old] -= wn * xn
                    counts[old] -= wn
                    sums[k] = wn * xn
                    counts[k] = wn
            new_centers = centers.to(torch.float64).clone()
            nonzero = counts > 0
            new_centers[nonzero] = sums[nonzero] / counts[nonzero, None]
            shift = float(((new_centers - centers.to(torch.float64)) ** 2).sum())
            centers = new_centers.to(X.dtype)
            done += 1
            if bar is not None:
                bar.update(1)
            same = labels_old is not None and torch.equal(labels, labels_old)
            if _lloyd_converged(est.verbose, i, out["inertia"], same, shift, tol):
                break
            labels_old = labels
    except KeyboardInterrupt:  # the centres of the last finished step stay
        interrupted = True
    out = assign(X, centers, sample_weight)
    return out["labels"], float(out["inertia"]), centers, done, interrupted


def _checked_weight(sample_weight, X):
    if sample_weight is None:
        return torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
    w = torch.as_tensor(sample_weight).to(device=X.device, dtype=X.dtype).reshape(-1)
    if w.numel() == 1 and X.shape[0] != 1:
        w = w.expand(X.shape[0]).contiguous()
    if w.shape[0] != X.shape[0]:
        raise ValueError(f"sample_weight.shape == {tuple(w.shape)}, expected ({X.shape[0]},).")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("sample_weight contains NaN or infinity.")
    return w.contiguous()


def fit(est, X_in, sample_weight=None, device=None):
    """KMeans.fit on the device: sets the fitted attributes (NumPy, as the CPU path) and
    returns the labels as a device tensor."""
    from fastlearn.cluster._kmeans import _resolve_init
    from fastlearn.mixture._gaussian_mixture import _progress

    device = device if device is not None else (X_in.device if isinstance(X_in, torch.Tensor) else None)
    X = checked_tensor(est, X_in, device, reset=True)
    w = _checked_weight(sample_weight, X)
    N, D = X.shape
    K = est.n_clusters
    if N < K:
        raise ValueError(f"n_samples={N} should be >= n_clusters={K}; decrease n_clusters.")
    n_init, init = _resolve_init(est, D, np.float64, stacklevel=4)
    if init is not None:
        init = torch.as_tensor(init).to(device=X.device, dtype=X.dtype)
    random_state = check_random_state(est.random_state)
    x_mean = X.mean(dim=0)
    X = X - x_mean  # centred, as the CPU path (and scikit-learn)
    tol = float(X.var(dim=0, unbiased=False).mean()) * est.tol if est.tol else 0.0
    best = None
    interrupted = False
    bar = _progress(est, n_init * est.max_iter)
    for _ in range(n_init):
        if isinstance(est.init, str) and est.init == "k-means++":
            centers, _ = kmeans_plusplus(X, K, sample_weight=w, random_state=random_state)
        elif isinstance(est.init, str):
            p = w.cpu().numpy()
            seeds = random_state.choice(N, size=K, replace=False, p=p / p.sum())
            centers = X[torch.as_tensor(seeds, device=X.device)]
        elif callable(est.init):  # a user's function of NumPy data
            centers = torch.as_tensor(np.asarray(est.init(X.cpu().numpy(), K, random_state=random_state)))
        else:
            centers = init - x_mean
        centers = centers.to(device=X.device, dtype=X.dtype).contiguous()
        labels, inertia, centers, n_iter, interrupted = _lloyd(est, X, w, centers, tol, bar)
        if best is None or inertia < best[1]:
            best = (labels, inertia, centers, n_iter)
        if interrupted:
            break
    if bar is not None:
        bar.close()
    if interrupted:
        warnings.warn("KMeans.fit was interrupted; the model holds the best centres found so far.", RuntimeWarning,
                      stacklevel=3)
    labels, inertia, centers, n_iter = best
    distinct = int(torch.unique(labels).numel())
    if distinct < K:
        warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({K}). Possibly due "
                      "to duplicate points in X.", ConvergenceWarning, stacklevel=3)
    est.cluster_centers_ = (centers + x_mean).cpu().numpy()
    est._n_features_out = K
    est.labels_ = labels.cpu().numpy()
    est.inertia_ = float(inertia)
    est.n_iter_ = n_iter
    return labels


def _fitted(est, X_in, device):
    C = torch.from_numpy(np.ascontiguousarray(est.cluster_centers_)).to(device)
    X = checked_tensor(est, X_in, device, reset=False, dtype=C.dtype)
    return X, C


def predict(est, X_in, device):
    X, C = _fitted(est, X_in, device)
    return back(assign(X, C, torch.ones(X.shape[0], dtype=X.dtype, device=device))["labels"], X_in)


def transform(est, X_in, device):
    """Distances to the centres (N x K: the output itself, so plain torch products)."""
    X, C = _fitted(est, X_in, device)
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return back(d.clamp_min_(0.0).sqrt_(), X_in)


def score(est, X_in, device, sample_weight=None):
    X, C = _fitted(est, X_in, device)
    return -float(assign(X, C, _checked_weight(sample_weight, X))["inertia"])
