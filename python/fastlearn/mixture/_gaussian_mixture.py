"""GaussianMixture: scikit-learn's estimator (same arguments, attributes, EM iterations and
lower bound), with each EM iteration one fused pass of the C++ kernel over the data: the
E-step's per-sample log-likelihoods and the M-step's sufficient statistics are computed
together, so the n_samples x n_components responsibility matrix is never stored. On the GPU
(device='cuda', or CUDA tensors) the same EM runs in mixture/_gpu.py on a fused Triton E-step."""

from __future__ import annotations

import sys
import time
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from fastlearn._persist import SaveLoadMixin
from fastlearn.mixture import _gaussian as G
from fastlearn.mixture import _gpu

__all__ = ["GaussianMixture"]


def _as_numpy(X, device, what="X"):
    """(array, torch_device or None). Torch tensors are read through NumPy on the CPU path."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
    if torch is not None and isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy(), X.device
    return X, None


def _progress(est, total):
    """A tqdm bar over the EM (or Lloyd) iterations on stderr when ``verbose`` >= 1, else None."""
    if not est.verbose or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=type(est).__name__, unit="it", file=sys.stderr, leave=False)


def _run_em(est, n_init, do_init, initialize, em_step, get_params, set_params):
    """The EM driver of the CPU and GPU paths: ``n_init`` runs of at most ``max_iter`` EM
    steps, stopping when the lower bound changes by less than ``tol``; the run with the best
    final bound wins (scikit-learn's rule). Sets ``converged_``, ``n_iter_``, ``lower_bound_``,
    ``lower_bounds_``, ``n_reseeded_``; returns the best parameters (as ``get_params`` gives
    them). Ctrl-C ends the fit and keeps the best parameters so far, with a RuntimeWarning."""
    max_lower_bound = -np.inf
    best_lower_bounds = []
    est.converged_ = False
    est.n_reseeded_ = 0
    random_state = check_random_state(est.random_state)
    best_params, best_n_iter = None, 0
    interrupted = False
    bar = _progress(est, n_init * est.max_iter)
    for init in range(n_init):
        est._print_init_begin(init)
        if do_init:
            initialize(random_state)
        lower_bound = -np.inf if do_init else est.lower_bound_
        current = []
        if est.max_iter == 0:
            best_params, best_n_iter = get_params(), 0
            continue
        converged = False
        start_params = get_params()
        try:
            for n_iter in range(1, est.max_iter + 1):
                prev = lower_bound
                lower_bound = em_step()
                current.append(lower_bound)
                change = lower_bound - prev
                est._print_iter_end(n_iter, change)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(init=init, lower_bound=f"{lower_bound:.6g}")
                if abs(change) < est.tol:
                    converged = True
                    break
        except KeyboardInterrupt:  # em_step sets the parameters at its end: they are the last finished step's
            interrupted = True
            if not current:  # nothing finished in this run: keep its starting parameters
                set_params(start_params)
        est._print_init_end(lower_bound, converged)
        if current and (lower_bound > max_lower_bound or max_lower_bound == -np.inf):
            max_lower_bound = lower_bound
            best_params, best_n_iter = get_params(), len(current)
            best_lower_bounds = current
            est.converged_ = converged
        elif best_params is None:
            best_params = get_params()
        if interrupted:
            break
    if bar is not None:
        bar.close()
    if interrupted:
        warnings.warn("GaussianMixture.fit was interrupted; the model holds the best parameters found so far.",
                      RuntimeWarning, stacklevel=4)
    elif not est.converged_ and est.max_iter > 0:
        warnings.warn("Best performing initialization did not converge. Try different init parameters, or "
                      "increase max_iter, tol, or check for degenerate data.", ConvergenceWarning)
    est.n_iter_ = best_n_iter
    est.lower_bound_ = max_lower_bound
    est.lower_bounds_ = best_lower_bounds
    return best_params


def _back(result, torch_device):
    if torch_device is None:
        return result
    import torch

    return torch.as_tensor(result, device=torch_device)


class GaussianMixture(SaveLoadMixin, DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM, a drop-in for ``sklearn.mixture.GaussianMixture``.

    Same arguments, attributes and methods; started from the same parameters, every EM
    iteration gives scikit-learn's lower bound (to rounding). Extra arguments:

    on_collapse : {'raise', 'reseed'}, default='raise'
        What to do when a component collapses (its covariance is not positive definite):
        raise scikit-learn's ValueError, or re-seed the component at the worst-explained
        sample (with the mean covariance of the others) and carry on (counted in
        ``n_reseeded_``).
    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where to run. 'auto': CUDA tensors on the GPU (fused Triton E-step, M-step in torch
        on the device), NumPy arrays and CPU tensors on the CPU kernels; 'cuda': always the
        GPU (NumPy input is copied there); 'cpu': always the CPU. Fitted attributes are NumPy
        arrays either way; predictions follow the input (NumPy, or a tensor on its device);
        ``sample`` draws on the host with NumPy, as the CPU path.

    With ``verbose`` >= 1 a tqdm bar over the EM iterations goes to stderr (besides
    scikit-learn's messages); Ctrl-C ends the fit early with the best parameters so far
    (a RuntimeWarning says so).
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "k-means++", "random", "random_from_data"})],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "on_collapse": [StrOptions({"raise", "reseed"})],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100,
                 n_init=1, init_params="kmeans", weights_init=None, means_init=None, precisions_init=None,
                 random_state=None, warm_start=False, verbose=0, verbose_interval=10, on_collapse="raise",
                 device="auto"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.on_collapse = on_collapse
        self.device = device

    # --- validation -----------------------------------------------------------------------

    def _checked_inits(self, n_features, dtype):
        K, ct = self.n_components, self.covariance_type
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = _gpu.host_array(self.weights_init, dtype)
            if weights.shape != (K,):
                raise ValueError(f"weights_init must have shape ({K},), got {weights.shape}.")
            if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.max() > 1:
                raise ValueError("weights_init must be finite and in [0, 1]; got "
                                 f"min {weights.min():.5f}, max {weights.max():.5f}.")
            atol = 1e-6 if dtype == np.float32 else 1e-8
            if not np.allclose(np.abs(1.0 - weights.sum()), 0.0, atol=atol):
                raise ValueError(f"weights_init should be normalized, but got sum(weights) = {weights.sum():.5f}; "
                                 "divide it by its sum.")
        if self.means_init is not None:
            means = _gpu.host_array(self.means_init, dtype)
            if means.shape != (K, n_features):
                raise ValueError(f"means_init must have shape ({K}, {n_features}), got {means.shape}.")
            if not np.all(np.isfinite(means)):
                raise ValueError("means_init contains NaN or infinity.")
        if self.precisions_init is not None:
            precisions = _gpu.host_array(self.precisions_init, dtype)
            shape = {"full": (K, n_features, n_features), "tied": (n_features, n_features),
                     "diag": (K, n_features), "spherical": (K,)}[ct]
            if precisions.shape != shape:
                raise ValueError(f"precisions_init must have shape {shape} for covariance_type={ct!r}, "
                                 f"got {precisions.shape}.")
            if not np.all(np.isfinite(precisions)):
                raise ValueError("precisions_init contains NaN or infinity.")
            if ct in ("diag", "spherical"):
                if np.any(precisions <= 0.0):
                    raise ValueError(f"precisions_init ({ct}) should be positive.")
            else:
                mats = precisions if ct == "full" else precisions[None]
                for m in mats:
                    if not np.allclose(m, m.T) or np.any(np.linalg.eigvalsh(m) <= 0.0):
                        raise ValueError(f"precisions_init ({ct}) should be symmetric, positive-definite.")
        return weights, means, precisions

    # --- initialisation ---------------------------------------------------------------------

    def _init_labels(self, X, random_state):
        """One component per sample (kmeans, k-means++, random_from_data) as labels, or None
        with a dense responsibility matrix for init_params='random'."""
        N, K = X.shape[0], self.n_components
        if self.init_params == "kmeans":
            from fastlearn.cluster import KMeans

            return KMeans(n_clusters=K, n_init=1, random_state=random_state).fit(X).labels_, None
        if self.init_params == "random":
            resp = random_state.uniform(size=(N, K)).astype(X.dtype)
            resp /= resp.sum(axis=1)[:, None]
            return None, resp
        if self.init_params == "random_from_data":
            indices = random_state.choice(N, size=K, replace=False)
        else:
            from fastlearn.cluster import kmeans_plusplus

            _, indices = kmeans_plusplus(X, K, random_state=random_state)
        labels = np.full(N, -1, dtype=np.int64)
        labels[indices] = np.arange(K)
        return labels, None

    def _stats_from_assignment(self, X, labels, resp, center):
        """E-step-shaped statistics (about ``center``) of a hard assignment or a dense resp."""
        K, D = self.n_components, X.shape[1]
        ct = self.covariance_type
        stats = {"nk": np.zeros(K), "s1": np.zeros((K, D)),
                 "s2": np.zeros((K, D, D)) if ct == "full" else np.zeros((K, D)) if ct != "tied" else None}
        if labels is not None:  # each component's points in their order, from one stable sort
            order = np.argsort(labels, kind="stable")
            bounds = np.searchsorted(labels[order], np.arange(K + 1))
        for k in range(K):
            if labels is not None:
                Xk = X[order[bounds[k]:bounds[k + 1]]].astype(np.float64) - center[k]
                rk = None
                stats["nk"][k] = Xk.shape[0]
            else:
                Xk = X.astype(np.float64) - center[k]
                rk = resp[:, k].astype(np.float64)
                stats["nk"][k] = rk.sum()
            stats["s1"][k] = Xk.sum(0) if rk is None else rk @ Xk
            if ct == "full":
                stats["s2"][k] = Xk.T @ Xk if rk is None else (rk * Xk.T) @ Xk
            elif ct != "tied":
                stats["s2"][k] = (Xk * Xk).sum(0) if rk is None else rk @ (Xk * Xk)
        return stats

    def _initialize(self, X, random_state, inits, fit_state):
        weights_init, means_init, precisions_init = inits
        K, D = self.n_components, X.shape[1]
        dtype = X.dtype
        if weights_init is None or means_init is None or precisions_init is None:
            labels, resp = self._init_labels(X, random_state)
            center = np.broadcast_to(fit_state["data_mean"], (K, D))
            stats = self._stats_from_assignment(X, labels, resp, center)
            weights, means, covariances = G.m_step(stats, center, self.covariance_type, self.reg_covar, dtype,
                                                   fit_state["tied_scatter"], fit_state["data_mean"], X.shape[0])
            nk = stats["nk"] + 10 * np.finfo(dtype).eps
            weights = nk / X.shape[0]  # scikit-learn divides the initial nk by n_samples
        else:
            weights = means = covariances = None
        self.weights_ = (weights if weights_init is None else weights_init).astype(dtype)
        self.means_ = (means if means_init is None else means_init).astype(dtype)
        if precisions_init is None:
            try:
                prec_chol = G.precision_cholesky(covariances, self.covariance_type)
            except ValueError:
                if self.on_collapse != "reseed" or self.covariance_type == "tied":
                    raise
                # No E-step has run yet: the samples of lowest density under the components
                # that are well defined stand for the worst explained.
                weights = self.weights_.astype(np.float64)
                means = self.means_.astype(np.float64)
                bad = _collapsed(covariances, self.covariance_type)
                good = [k for k in range(K) if k not in bad]
                log_norm = np.zeros(X.shape[0])
                if good:
                    pc = G.precision_cholesky(covariances[good], self.covariance_type)
                    log_norm = G.gaussian_pass(X, means[good], pc, self.covariance_type,
                                               np.log(weights[good]), log_norm=True)["log_norm"]
                weights, means, covariances = self._reseed(X, log_norm, weights, means, covariances)
                prec_chol = G.precision_cholesky(covariances, self.covariance_type)
                self.weights_, self.means_ = weights.astype(dtype), means.astype(dtype)
            self.covariances_ = covariances.astype(dtype)
            self.precisions_cholesky_ = prec_chol.astype(dtype)
        else:
            prec = precisions_init.astype(np.float64)
            self.precisions_cholesky_ = G.precision_cholesky_from_precisions(prec, self.covariance_type).astype(dtype)
            # The covariances these precisions stand for (scikit-learn leaves the attribute
            # unset here, which breaks max_iter=0).
            inv = np.linalg.inv(prec) if self.covariance_type in ("full", "tied") else 1.0 / prec
            self.covariances_ = inv.astype(dtype)

    # --- EM -------------------------------------------------------------------------------------

    def _fit_state(self, X):
        """Per-fit constants: the data mean and, for 'tied', the scatter about it (float64)."""
        mean = X.mean(axis=0, dtype=np.float64)
        scatter = None
        if self.covariance_type == "tied":
            scatter = np.zeros((X.shape[1], X.shape[1]))
            for start in range(0, X.shape[0], 65536):
                Xc = X[start:start + 65536].astype(np.float64) - mean
                scatter += Xc.T @ Xc
        return {"data_mean": mean, "tied_scatter": scatter}

    def _em_step(self, X, fit_state):
        """One E-step (fused with the statistics) and M-step; returns the lower bound of the
        parameters the E-step used, as scikit-learn does."""
        reseed = self.on_collapse == "reseed"
        out = G.gaussian_pass(X, self.means_, self.precisions_cholesky_, self.covariance_type,
                              np.log(self.weights_.astype(np.float64)), stats=True, log_norm=reseed)
        lower_bound = out["loglik"] / X.shape[0]
        weights, means, covariances = G.m_step(out, self.means_, self.covariance_type, self.reg_covar, X.dtype,
                                               fit_state["tied_scatter"], fit_state["data_mean"], X.shape[0])
        try:
            prec_chol = G.precision_cholesky(covariances, self.covariance_type)
        except ValueError as e:
            if not reseed or self.covariance_type == "tied":
                raise ValueError(str(e) + (" The numerical accuracy can also be improved by passing float64 "
                                           "data instead of float32." if X.dtype == np.float32 else "")) from None
            weights, means, covariances = self._reseed(X, out["log_norm"], weights, means, covariances)
            prec_chol = G.precision_cholesky(covariances, self.covariance_type)
        dtype = X.dtype
        self.weights_, self.means_ = weights.astype(dtype), means.astype(dtype)
        self.covariances_ = covariances.astype(dtype)
        self.precisions_cholesky_ = prec_chol.astype(dtype)
        return lower_bound

    def _reseed(self, X, log_norm, weights, means, covariances):
        """Move each collapsed component to one of the worst-explained samples."""
        ct = self.covariance_type
        bad = _collapsed(covariances, ct)
        good = [k for k in range(len(weights)) if k not in bad]
        worst = np.argsort(log_norm, kind="stable")[: len(bad)]
        if good:
            fallback = covariances[good].mean(axis=0)
        else:
            var = X.var(axis=0, dtype=np.float64) + self.reg_covar
            fallback = {"full": np.diag(var), "diag": var, "spherical": var.mean()}[ct]
        for k, n in zip(bad, worst):
            means[k] = X[n]
            covariances[k] = fallback
            weights[k] = 1.0 / X.shape[0]
        weights = weights / weights.sum()
        self.n_reseeded_ = getattr(self, "n_reseeded_", 0) + len(bad)
        return weights, means, covariances

    def fit(self, X, y=None):
        """Estimate the parameters by EM (n_init runs, the best lower bound kept)."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then label X by the most probable component (consistent with predict)."""
        self._validate_params()
        gpu = _gpu.gpu_device(self, X)
        if gpu is not None:  # the same EM with tensors on the device (mixture/_gpu.py)
            return _gpu.fit_predict(self, X, gpu)
        X, tdev = _as_numpy(X, self.device)
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {X.shape[0]}; decrease n_components or pass more samples.")
        X = np.ascontiguousarray(X)
        inits = self._checked_inits(X.shape[1], X.dtype)
        fit_state = self._fit_state(X)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        best_params = _run_em(self, n_init, do_init,
                              initialize=lambda rs: self._initialize(X, rs, inits, fit_state),
                              em_step=lambda: self._em_step(X, fit_state),
                              get_params=self._get_parameters, set_params=self._set_parameters)
        self._set_parameters(best_params)
        labels = G.gaussian_pass(X, self.means_, self.precisions_cholesky_, self.covariance_type,
                                 np.log(self.weights_.astype(np.float64)), labels=True)["labels"]
        return _back(labels, tdev)

    def _get_parameters(self):
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self.precisions_ = G.precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)

    # --- verbose output (scikit-learn's format) ------------------------------------------------

    def _print_init_begin(self, init):
        if self.verbose >= 1:
            print(f"Initialization {init}")
            self._init_prev_time = self._iter_prev_time = time.time()

    def _print_iter_end(self, n_iter, diff):
        if self.verbose >= 1 and n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {n_iter}")
            else:
                now = time.time()
                print(f"  Iteration {n_iter}\t time lapse {now - self._iter_prev_time:.5f}s\t ll change {diff:.5f}")
                self._iter_prev_time = now

    def _print_init_end(self, lb, converged):
        msg = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {msg}.")
        elif self.verbose >= 2:
            print(f"Initialization {msg}. time lapse {time.time() - self._init_prev_time:.5f}s\t lower bound {lb:.5f}.")

    # --- inference ----------------------------------------------------------------------------

    def _checked_X(self, X):
        check_is_fitted(self)
        X, tdev = _as_numpy(X, self.device)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return np.ascontiguousarray(X, dtype=self.means_.dtype), tdev

    def _weighted_pass(self, X, **want):
        return G.gaussian_pass(X, self.means_, self.precisions_cholesky_, self.covariance_type,
                               np.log(self.weights_.astype(np.float64)), **want)

    def score_samples(self, X):
        """Per-sample log-likelihood log p(x) under the mixture, shape (n_samples,)."""
        check_is_fitted(self)
        gpu = _gpu.gpu_device(self, X)
        if gpu is not None:
            return _gpu.score_samples(self, X, gpu)
        X, tdev = self._checked_X(X)
        return _back(self._weighted_pass(X, log_norm=True)["log_norm"], tdev)

    def score(self, X, y=None):
        """Mean per-sample log-likelihood of X."""
        check_is_fitted(self)
        gpu = _gpu.gpu_device(self, X)
        if gpu is not None:
            return _gpu.score(self, X, gpu)
        X, _ = self._checked_X(X)
        return float(self._weighted_pass(X, log_norm=True)["loglik"] / X.shape[0])

    def predict(self, X):
        """Most probable component of each sample, shape (n_samples,)."""
        check_is_fitted(self)
        gpu = _gpu.gpu_device(self, X)
        if gpu is not None:
            return _gpu.predict(self, X, gpu)
        X, tdev = self._checked_X(X)
        return _back(self._weighted_pass(X, labels=True)["labels"], tdev)

    def predict_proba(self, X):
        """Posterior probability of each component, shape (n_samples, n_components)."""
        check_is_fitted(self)
        gpu = _gpu.gpu_device(self, X)
        if gpu is not None:
            return _gpu.predict_proba(self, X, gpu)
        X, tdev = self._checked_X(X)
        wlp = self._weighted_pass(X, log_prob=True)["log_prob"]
        with np.errstate(under="ignore"):
            resp = np.exp(wlp - logsumexp(wlp, axis=1)[:, None])
        return _back(resp, tdev)

    def sample(self, n_samples=1):
        """Draw n_samples from the fitted mixture; returns (X, component labels)."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. The sampling requires at least one sample.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_.astype(np.float64))
        D = self.means_.shape[1]
        parts = []
        for k, (mean, count) in enumerate(zip(self.means_, counts)):
            if self.covariance_type in ("full", "tied"):
                cov = self.covariances_[k] if self.covariance_type == "full" else self.covariances_
                parts.append(rng.multivariate_normal(mean, cov, int(count)))
            else:
                parts.append(mean + rng.standard_normal(size=(count, D)) * np.sqrt(self.covariances_[k]))
        y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return np.vstack(parts), y

    def _n_parameters(self):
        K, D = self.means_.shape
        cov = {"full": K * D * (D + 1) / 2.0, "diag": K * D, "tied": D * (D + 1) / 2.0, "spherical": K}
        return int(cov[self.covariance_type] + K * D + K - 1)

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        n = np.shape(X)[0]
        return -2 * self.score(X) * n + self._n_parameters() * np.log(n)

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        return -2 * self.score(X) * np.shape(X)[0] + 2 * self._n_parameters()


def _collapsed(covariances, covariance_type):
    """Indices of the components whose covariance is not positive definite."""
    if covariance_type == "full":
        return [k for k in range(len(covariances)) if not _is_pd(covariances[k])]
    return list(np.flatnonzero(~np.all(np.atleast_2d(covariances.T).T > 0, axis=-1)))


def _is_pd(m):
    try:
        np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.isfinite(m)))
