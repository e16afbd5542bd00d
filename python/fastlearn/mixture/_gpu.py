"""GPU path of GaussianMixture: the same EM as the CPU path (same initialisation, E-step
statistics about the current means, M-step formulas) with X and the parameters as torch
tensors on the device: each E-step one launch of the fused Triton kernel
(kernels/triton/gaussian_estep.py), the M-step and the K Cholesky factorisations in float64
torch. The functions take any torch device: on CPU tensors with TRITON_INTERPRET=1 the tests
run this whole algorithm on machines without a GPU."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils.validation import validate_data

from fastlearn.mixture import _gaussian as G
from fastlearn.ops._device import _triton_importable  # the one probe of the package

_COV = {"full": 0, "tied": 1, "diag": 2, "spherical": 2}


# --- where to run, and the inputs there ------------------------------------------------------

def gpu_device(est, X):
    """The torch device of the GPU path for this input, or None for the CPU path.

    device='cuda' always takes it (NumPy input is copied to the GPU); 'auto' takes it for
    CUDA tensors when Triton is there; 'cpu' never. The private ``est._backend = 'triton'``
    forces it on the input tensor's own device, NumPy input going to the GPU when there is one
    (tests: CPU tensors under Triton's interpreter on a machine without a GPU)."""
    is_tensor = isinstance(X, torch.Tensor)
    if getattr(est, "_backend", None) == "triton":
        return X.device if is_tensor else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if est.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{type(est).__name__}(device='cuda'): no CUDA GPU is visible to torch "
                               "(torch.cuda.is_available() is False); use device='cpu' or 'auto'.")
        if not _triton_importable():
            raise RuntimeError(f"{type(est).__name__}(device='cuda'): the GPU path runs Triton kernels and "
                               "Triton is not installed (pip install triton); or use device='cpu'.")
        return X.device if is_tensor and X.device.type == "cuda" else torch.device("cuda")
    if est.device == "auto" and is_tensor and X.device.type == "cuda" and _triton_importable():
        return X.device
    return None


def host_array(a, dtype):
    """An initial value given as an array-like or a torch tensor on any device, as a NumPy
    array of ``dtype`` (np.asarray alone fails on a CUDA tensor)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def checked_tensor(est, X, device, *, reset, min_samples=1, dtype=None):
    """X as a C-contiguous float32/float64 tensor on ``device``, with scikit-learn's checks
    (2-D, enough samples, finite, n_features_in_). NumPy-like input goes through
    validate_data; tensors are checked on their device (no copy to the host)."""
    if not isinstance(X, torch.Tensor):
        arr = validate_data(est, X, dtype=[np.float64, np.float32], ensure_min_samples=min_samples, reset=reset)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = X.detach()
        if t.dim() != 2:
            raise ValueError(f"Expected 2D input X of shape (n_samples, n_features), got a tensor of shape "
                             f"{tuple(t.shape)}; reshape it (X.reshape(-1, 1) for a single feature).")
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float64)
        n, d = t.shape
        if n < min_samples:
            raise ValueError(f"Found array with {n} sample(s) (shape={tuple(t.shape)}) while a minimum of "
                             f"{min_samples} is required.")
        if d < 1:
            raise ValueError(f"Found array with 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required.")
        if n and not bool(torch.isfinite(t).all()):
            raise ValueError("Input X contains NaN or infinity; remove or impute those values first.")
        if reset:
            est.n_features_in_ = d
            est.__dict__.pop("feature_names_in_", None)
        elif d != est.n_features_in_:
            raise ValueError(f"X has {d} features, but {type(est).__name__} is expecting {est.n_features_in_} "
                             "features as input.")
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device).contiguous()


def back(result, X):
    """Results follow the input: a tensor on the input tensor's device, else NumPy."""
    if isinstance(X, torch.Tensor):
        return result.to(X.device)
    return result.cpu().numpy()


# --- the fused E-step ------------------------------------------------------------------------

def log_det_cholesky(prec_chol, covariance_type, n_features):
    """log det P_k (float64), shape (K,) (a 0-d tensor for 'tied')."""
    if covariance_type == "full":
        return torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(dim=1)
    if covariance_type == "tied":
        return torch.log(torch.diagonal(prec_chol)).sum()
    if covariance_type == "diag":
        return torch.log(prec_chol).sum(dim=1)
    return n_features * torch.log(prec_chol)


def precision_for_kernel():
    """tl.dot precision of float32 E-steps: 'tf32x3' (three TF32 tensor-core products, about
    fp32 accuracy; see tests/mixture/test_gpu_path.py for the measured error) or 'ieee'."""
    return "tf32x3"


# Variants of the full-covariance statistics (kernels/triton/gaussian_estep.py): S1_DOT (first
# moments of all components in one product about the centre), XT_LOAD (the scatter's left
# operand loaded transposed), PRECISION_S (the scatter's tl.dot precision in float32; None:
# 'ieee' up to 64 features, 'tf32x3' above). Chosen by bench/gpu/sweep.py on an H100
# (N=1e6, K=16): D=32 2.9 ms against 7.6 ms for the first way (no S1_DOT, tf32x3, the old
# tiles); D=64 9.5 ms against 12.7; D=128 28.7 ms against 29.4 (there 'ieee' took 109 ms).
# 'ieee' is also the most accurate (scatter 3.5e-8 relative to float64; 'tf32x3' 2.3e-7;
# one-pass 'tf32' 7.2e-4, too coarse for EM).
# ALLK_J: the log-densities of all components as products of x - c (c the centre of the
# means, as 'tied') with slabs of ALLK_J columns of [P_1 | ... | P_K] (ALLK_J / BLOCK_D
# components a slab; 0: one product a component with x - mu_k). Not yet timed; not the default.
# SPLIT: the statistics in a second launch, one program a (component, chunk of points) pair,
# after a first launch without statistics has written log_norm (kernels/triton/
# gaussian_estep.py, _gaussian_full_stats_kernel; D <= 64). Written without a GPU (session
# 11) against the fused kernel's slot traffic; not yet timed, so not the default:
# bench/gpu/sweep.py estep_split compares the two.
ESTEP_FULL_OPTIONS = dict(S1_DOT=True, XT_LOAD=True, PRECISION_S=None, SPLIT=False, ALLK_J=0)


def estep(X, means, prec_chol, log_weights, covariance_type, *, stats=False, log_norm=False, labels=False,
          resp=False, programs=None):
    """One launch of the fused kernel over X (N x D, float32/float64, contiguous).

    Returns a dict: 'loglik' (float64 0-d tensor: sum over points of log sum_k w_k N(x|k)),
    and as asked 'log_norm' (N,), 'labels' (N,) int64, 'resp' (N, K), and the statistics
    'nk' (K,), 's1' (K, D), 's2' (full K x D x D; diag/spherical K x D) in float64, about
    ``means`` (as the CPU kernel's)."""
    from fastlearn.kernels.triton import gaussian_estep as tk

    N, D = X.shape
    K = means.shape[0]
    dev, dtype = X.device, X.dtype
    cov = _COV[covariance_type]
    pc64 = prec_chol.to(torch.float64)
    offset = log_det_cholesky(pc64, covariance_type, D).expand(K) - 0.5 * D * math.log(2 * math.pi)
    offset = (offset + log_weights.to(torch.float64)).to(dtype).contiguous()
    means = means.to(dtype).contiguous()
    P = prec_chol.to(dtype)
    if covariance_type == "spherical":
        P = P[:, None].expand(K, D)
    P = P.contiguous()
    # tied (and full with ALLK_J): the kernel works on x - center, center in X's dtype
    center = means.to(torch.float64).mean(dim=0).to(dtype).to(torch.float64)
    options = dict(ESTEP_FULL_OPTIONS) if cov == 0 else {}
    if cov == 1:
        B = ((means.to(torch.float64) - center) @ pc64).to(dtype).contiguous()
    elif options.get("ALLK_J"):  # full, all components' products at once: b_k = (mu_k - c) P_k
        B = torch.einsum("kd,kde->ke", means.to(torch.float64) - center, pc64).to(dtype).contiguous()
    else:
        B = means
    center = center.to(dtype).contiguous()
    n_sm = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else None
    meta, G_ = tk.launch_config(N, D, K, dtype == torch.float64, n_sm=n_sm, cov=cov)
    if programs is not None:
        G_ = max(1, min(int(programs), math.ceil(max(N, 1) / meta["BLOCK_N"])))
    if options.get("ALLK_J"):  # a slab holds whole components: at least BLOCK_D columns
        options["ALLK_J"] = max(1 << (int(options["ALLK_J"]) - 1).bit_length(), meta["BLOCK_D"])
    split = (tk.split_stats_config(N, D, K, dtype == torch.float64, n_sm=n_sm)
             if options.pop("SPLIT", False) and stats and N > 0 else None)
    # With the split statistics the first launch computes no statistics but always log_norm.
    fused_stats, want_ln = (False, True) if split else (stats, log_norm)
    f64 = dict(dtype=torch.float64, device=dev)
    part_ll = torch.zeros(G_, **f64)
    dummy = torch.empty(1, dtype=dtype, device=dev)
    out = {}
    if fused_stats:
        part_nk = torch.zeros(G_, K, **f64)
        part_s1 = torch.zeros(G_, K, D, **f64)
        part_s2 = (torch.zeros(G_, K, D, D, **f64) if cov == 0 else torch.zeros(G_, K, D, **f64) if cov == 2
                   else torch.empty(1, **f64))
    else:
        part_nk = part_s1 = part_s2 = torch.empty(1, **f64)
    # (the split statistics read log_norm in float64: see _gaussian_full_stats_kernel)
    ln = torch.empty(N, dtype=torch.float64 if split else dtype, device=dev) if want_ln else dummy
    lab = torch.empty(N, dtype=torch.int64, device=dev) if labels else torch.empty(1, dtype=torch.int64, device=dev)
    rs = torch.empty(N, K, dtype=dtype, device=dev) if resp else dummy
    s1_about_center = bool(fused_stats and options.get("S1_DOT"))
    if s1_about_center and meta["BLOCK_K"] < 16:
        meta["BLOCK_K"] = 16  # tl.dot's smallest side
    precision = "ieee" if dtype == torch.float64 else precision_for_kernel()
    if dtype == torch.float64:
        options["PRECISION_S"] = "ieee"
    elif cov == 0 and options.get("PRECISION_S") is None:
        options["PRECISION_S"] = "ieee" if meta["BLOCK_D"] <= 64 else "tf32x3"
    if N > 0:
        stride_p_k = D * D if cov == 0 else D
        tk._gaussian_estep_kernel[(G_,)](X, means, P, B, center, offset, ln, lab, rs, part_ll, part_nk, part_s1, part_s2,
                                         N, D, K, X.stride(0), stride_p_k, COV=cov, WRITE_LOG_NORM=want_ln,
                                         WRITE_LABELS=labels, WRITE_RESP=resp, STATS=fused_stats,
                                         PRECISION=precision, **options, **meta)
    out["loglik"] = part_ll.sum()
    if log_norm:
        out["log_norm"] = ln.to(dtype)
    if labels:
        out["labels"] = lab
    if resp:
        out["resp"] = rs
    if split:  # the second launch: statistics per (component, chunk of points), from log_norm
        meta2, chunks = split
        part_nk = torch.zeros(chunks, K, **f64)
        part_s1 = torch.zeros(chunks, K, D, **f64)
        part_s2 = torch.zeros(chunks, K, D, D, **f64)
        per_chunk = math.ceil(math.ceil(N / meta2["BLOCK_N"]) / chunks)
        tk._gaussian_full_stats_kernel[(K, chunks)](X, means, P, B, center, offset, ln, part_nk, part_s1, part_s2,
                                                    N, D, K, X.stride(0), per_chunk, PRECISION=precision,
                                                    PRECISION_S=options["PRECISION_S"],
                                                    CENTERED=bool(options.get("ALLK_J")), **meta2)
    if stats:  # the second stage of the reduction: the programs' float64 slots, summed in order
        out["nk"] = part_nk.sum(0)
        out["s1"] = part_s1.sum(0)
        if s1_about_center:  # about the centre c: sum r (x - mu) = sum r (x - c) - N_k (mu - c)
            out["s1"] -= out["nk"][:, None] * (means.to(torch.float64) - center.to(torch.float64))
        out["s2"] = part_s2.sum(0) if cov in (0, 2) else None
    return out


# --- M-step and precision factors (float64 torch, the formulas of mixture/_gaussian.py) --------

def m_step(stats, means, covariance_type, reg_covar, eps, tied_scatter=None, data_mean=None, n_samples=None):
    """Weights, means, covariances from statistics about ``means`` (see _gaussian.m_step)."""
    nk_raw = stats["nk"]
    nk = nk_raw + 10 * eps
    c = means.to(torch.float64)
    s1 = stats["s1"]
    new_means = (nk_raw[:, None] * c + s1) / nk[:, None]
    d = new_means - c
    D = c.shape[1]
    if covariance_type == "full":
        cross = s1[:, :, None] * d[:, None, :]
        cov = stats["s2"] - cross - cross.transpose(1, 2) + nk_raw[:, None, None] * d[:, :, None] * d[:, None, :]
        cov = cov / nk[:, None, None]
        cov = cov + reg_covar * torch.eye(D, dtype=torch.float64, device=c.device)
    elif covariance_type in ("diag", "spherical"):
        cov = (stats["s2"] - 2 * s1 * d + nk_raw[:, None] * d * d) / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(dim=1)
    else:
        e = new_means - data_mean
        cov = (tied_scatter - (nk[:, None] * e).T @ e + G._tied_correction(nk, e, data_mean, n_samples, torch.outer)) / nk.sum()
        cov = cov + reg_covar * torch.eye(D, dtype=torch.float64, device=c.device)
    return nk / nk.sum(), new_means, cov


def precision_cholesky(covariances, covariance_type):
    """Upper-triangular P = (L^-1)^T (P P^T = Sigma^-1), or 1/sqrt(variance); ValueError with
    scikit-learn's advice when a covariance is not positive definite."""
    if covariance_type in ("full", "tied"):
        mats = covariances if covariance_type == "full" else covariances[None]
        if not bool(torch.isfinite(mats).all()):
            raise ValueError(G.ILL_DEFINED)
        L, info = torch.linalg.cholesky_ex(mats)
        if bool((info != 0).any()):
            raise ValueError(G.ILL_DEFINED)
        eye = torch.eye(mats.shape[-1], dtype=mats.dtype, device=mats.device).expand_as(mats)
        out = torch.linalg.solve_triangular(L, eye, upper=False).transpose(1, 2).triu()
        return out if covariance_type == "full" else out[0]
    if bool((~(covariances > 0.0)).any()):
        raise ValueError(G.ILL_DEFINED)
    return 1.0 / torch.sqrt(covariances)


def _collapsed(covariances, covariance_type):
    if covariance_type == "full":
        _, info = torch.linalg.cholesky_ex(covariances)
        bad = (info != 0) | ~torch.isfinite(covariances).flatten(1).all(dim=1)
    else:
        bad = ~(covariances > 0).reshape(covariances.shape[0], -1).all(dim=1)
    return [int(k) for k in torch.nonzero(bad).flatten().tolist()]


def _reseed(est, X, log_norm, weights, means, covariances):
    """Move each collapsed component to one of the worst-explained samples (as the CPU path)."""
    ct = est.covariance_type
    bad = _collapsed(covariances, ct)
    good = [k for k in range(len(weights)) if k not in bad]
    worst = torch.argsort(log_norm, stable=True)[: len(bad)]
    if good:
        fallback = covariances[good].mean(dim=0)
    else:
        var = X.to(torch.float64).var(dim=0, unbiased=False) + est.reg_covar
        fallback = {"full": torch.diag(var), "diag": var, "spherical": var.mean()}[ct]
    weights, means, covariances = weights.clone(), means.clone(), covariances.clone()
    for k, n in zip(bad, worst.tolist()):
        means[k] = X[n].to(torch.float64)
        covariances[k] = fallback
        weights[k] = 1.0 / X.shape[0]
    est.n_reseeded_ = getattr(est, "n_reseeded_", 0) + len(bad)
    return weights / weights.sum(), means, covariances


# --- EM ---------------------------------------------------------------------------------------

class _Fit:
    """The state of one fit on the device: X, per-fit constants, the current parameters
    (weights, means, covariances, precision factors; X's dtype)."""

    def __init__(self, est, X):
        self.est, self.X = est, X
        self.ct = est.covariance_type
        self.eps = float(np.finfo(np.float32 if X.dtype == torch.float32 else np.float64).eps)
        self.data_mean = X.to(torch.float64).mean(dim=0) if X.shape[0] <= 65536 else self._chunked_mean()
        self.tied_scatter = None
        if self.ct == "tied":
            D = X.shape[1]
            self.tied_scatter = torch.zeros(D, D, dtype=torch.float64, device=X.device)
            for start in range(0, X.shape[0], 65536):
                Xc = X[start:start + 65536].to(torch.float64) - self.data_mean
                self.tied_scatter += Xc.T @ Xc
        self.params = None

    def _chunked_mean(self):
        total = torch.zeros(self.X.shape[1], dtype=torch.float64, device=self.X.device)
        for start in range(0, self.X.shape[0], 65536):
            total += self.X[start:start + 65536].to(torch.float64).sum(dim=0)
        return total / self.X.shape[0]

    def _set(self, weights, means, covariances, prec_chol):
        dt = self.X.dtype
        self.params = (weights.to(dt), means.to(dt), covariances.to(dt), prec_chol.to(dt))

    def _init_labels(self, random_state):
        est, X = self.est, self.X
        N, K = X.shape[0], est.n_components
        if est.init_params == "kmeans":
            from fastlearn.cluster import KMeans
            from fastlearn.cluster import _gpu as kgpu

            km = KMeans(n_clusters=K, n_init=1, random_state=random_state)
            return kgpu.fit(km, X, None), None
        if est.init_params == "random":
            resp = random_state.uniform(size=(N, K)).astype(np.float32 if X.dtype == torch.float32 else np.float64)
            resp /= resp.sum(axis=1)[:, None]
            return None, torch.from_numpy(resp).to(X.device)
        if est.init_params == "random_from_data":
            indices = random_state.choice(N, size=K, replace=False)
        else:
            from fastlearn.cluster import _gpu as kgpu

            _, indices = kgpu.kmeans_plusplus(X, K, random_state=random_state)
        labels = torch.full((N,), -1, dtype=torch.int64, device=X.device)
        labels[torch.as_tensor(np.asarray(indices), device=X.device)] = torch.arange(K, device=X.device)
        return labels, None

    def _stats_from_assignment(self, labels, resp):
        X, K, D, ct = self.X, self.est.n_components, self.X.shape[1], self.ct
        f64 = dict(dtype=torch.float64, device=X.device)
        nk, s1 = torch.zeros(K, **f64), torch.zeros(K, D, **f64)
        s2 = torch.zeros(K, D, D, **f64) if ct == "full" else torch.zeros(K, D, **f64)
        for k in range(K):
            if labels is not None:
                Xk = X[labels == k].to(torch.float64) - self.data_mean
                nk[k] = Xk.shape[0]
                s1[k] = Xk.sum(0)
                s2[k] = Xk.T @ Xk if ct == "full" else (Xk * Xk).sum(0)
            else:
                Xk = X.to(torch.float64) - self.data_mean
                rk = resp[:, k].to(torch.float64)
                nk[k] = rk.sum()
                s1[k] = rk @ Xk
                s2[k] = (rk * Xk.T) @ Xk if ct == "full" else rk @ (Xk * Xk)
        return {"nk": nk, "s1": s1, "s2": s2}

    def initialize(self, random_state, inits):
        est, X = self.est, self.X
        K, D = est.n_components, X.shape[1]
        dev = X.device
        weights_init, means_init, precisions_init = (None if a is None else torch.from_numpy(a).to(dev)
                                                     for a in inits)
        if weights_init is None or means_init is None or precisions_init is None:
            labels, resp = self._init_labels(random_state)
            center = self.data_mean.expand(K, D)
            stats = self._stats_from_assignment(labels, resp)
            weights, means, covariances = m_step(stats, center, self.ct, est.reg_covar, self.eps,
                                                 self.tied_scatter, self.data_mean, X.shape[0])
            weights = (stats["nk"] + 10 * self.eps) / X.shape[0]  # scikit-learn divides the initial nk by N
        else:
            weights = means = covariances = None
        dt = X.dtype
        weights = (weights if weights_init is None else weights_init).to(dt)
        means = (means if means_init is None else means_init).to(dt)
        if precisions_init is None:
            try:
                prec_chol = precision_cholesky(covariances, self.ct)
            except ValueError:
                if est.on_collapse != "reseed" or self.ct == "tied":
                    raise
                w64, m64 = weights.to(torch.float64), means.to(torch.float64)
                bad = _collapsed(covariances, self.ct)
                good = [k for k in range(K) if k not in bad]
                log_norm = torch.zeros(X.shape[0], dtype=dt, device=dev)
                if good:
                    pc = precision_cholesky(covariances[good], self.ct)
                    log_norm = estep(X, m64[good], pc, torch.log(w64[good]), self.ct, log_norm=True)["log_norm"]
                w64, m64, covariances = _reseed(est, X, log_norm, w64, m64, covariances)
                prec_chol = precision_cholesky(covariances, self.ct)
                weights, means = w64, m64
            self._set(weights, means, covariances, prec_chol)
        else:
            prec = precisions_init.to(torch.float64)
            if self.ct in ("full", "tied"):
                mats = prec if self.ct == "full" else prec[None]
                pc = torch.linalg.cholesky(mats.flip(-2, -1)).flip(-2, -1)
                pc, cov = (pc, torch.linalg.inv(prec)) if self.ct == "full" else (pc[0], torch.linalg.inv(prec))
            else:
                pc, cov = torch.sqrt(prec), 1.0 / prec
            self._set(weights, means, cov, pc)

    def em_step(self):
        """One fused E-step and M-step; the lower bound of the parameters the E-step used."""
        est, X = self.est, self.X
        weights, means, _, prec_chol = self.params
        reseed = est.on_collapse == "reseed"
        out = estep(X, means, prec_chol, torch.log(weights.to(torch.float64)), self.ct, stats=True, log_norm=reseed)
        lower_bound = float(out["loglik"]) / X.shape[0]
        weights, means, covariances = m_step(out, means, self.ct, est.reg_covar, self.eps, self.tied_scatter,
                                             self.data_mean, X.shape[0])
        try:
            prec_chol = precision_cholesky(covariances, self.ct)
        except ValueError as e:
            if not reseed or self.ct == "tied":
                raise ValueError(str(e) + (" The numerical accuracy can also be improved by passing float64 "
                                           "data instead of float32." if X.dtype == torch.float32 else "")) from None
            weights, means, covariances = _reseed(est, X, out["log_norm"], weights, means, covariances)
            prec_chol = precision_cholesky(covariances, self.ct)
        self._set(weights, means, covariances, prec_chol)
        return lower_bound


def params_on_device(est, device, dtype=None):
    """The fitted parameters as tensors on ``device`` (weights, means, precision factors)."""
    dt = dtype or torch.from_numpy(np.asarray(est.means_[:1])).dtype
    conv = [torch.as_tensor(np.asarray(getattr(est, n)), device=device).to(dt)
            for n in ("weights_", "means_", "precisions_cholesky_")]
    return conv


def fit_predict(est, X_in, device):
    """GaussianMixture.fit_predict on the device; fitted attributes are set as NumPy arrays
    (as the CPU path's), the labels follow the input type."""
    from fastlearn.mixture._gaussian_mixture import _run_em

    X = checked_tensor(est, X_in, device, reset=True, min_samples=2)
    if X.shape[0] < est.n_components:
        raise ValueError(f"Expected n_samples >= n_components but got n_components = {est.n_components}, "
                         f"n_samples = {X.shape[0]}; decrease n_components or pass more samples.")
    np_dtype = np.float32 if X.dtype == torch.float32 else np.float64
    inits = est._checked_inits(X.shape[1], np_dtype)
    fit = _Fit(est, X)
    do_init = not (est.warm_start and hasattr(est, "converged_"))
    n_init = est.n_init if do_init else 1
    if not do_init:
        fit._set(*(torch.as_tensor(np.asarray(getattr(est, n)), device=device)
                   for n in ("weights_", "means_", "covariances_", "precisions_cholesky_")))

    def set_params(params):
        fit.params = params

    best_params = _run_em(est, n_init, do_init, initialize=lambda rs: fit.initialize(rs, inits),
                          em_step=fit.em_step, get_params=lambda: fit.params, set_params=set_params)
    est._set_parameters(tuple(p.cpu().numpy() for p in best_params))
    w, m, _, pc = best_params
    labels = estep(X, m, pc, torch.log(w.to(torch.float64)), est.covariance_type, labels=True)["labels"]
    return back(labels, X_in)


def weighted_pass(est, X_in, device, **want):
    """An E-step pass of the fitted model over X on the device (inference)."""
    dt = torch.float32 if np.asarray(est.means_).dtype == np.float32 else torch.float64
    X = checked_tensor(est, X_in, device, reset=False, dtype=dt)
    w, m, pc = params_on_device(est, device, dt)
    return X, estep(X, m, pc, torch.log(w.to(torch.float64)), est.covariance_type, **want)


def score_samples(est, X_in, device):
    _, out = weighted_pass(est, X_in, device, log_norm=True)
    return back(out["log_norm"], X_in)


def score(est, X_in, device):
    X, out = weighted_pass(est, X_in, device)
    return float(out["loglik"]) / X.shape[0]


def predict(est, X_in, device):
    _, out = weighted_pass(est, X_in, device, labels=True)
    return back(out["labels"], X_in)


def predict_proba(est, X_in, device):
    _, out = weighted_pass(est, X_in, device, resp=True)
    return back(out["resp"], X_in)
