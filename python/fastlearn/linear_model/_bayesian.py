"""Bayesian linear regression as in our notes: t = w^T phi(x) + noise, noise precision beta,
prior w ~ N(m0, S0) (isotropic S0 = I / alpha by default). The posterior
    SN^-1 = S0^-1 + beta Phi^T Phi,   mN = SN (S0^-1 m0 + beta Phi^T t)
is computed from a Cholesky factor of SN^-1 (never an explicit inverse of it). The data enter
only through sufficient statistics (n, Phi^T Phi, Phi^T t, t^T t; centred when
fit_intercept), so partial_fit in chunks gives the posterior of one fit on all the data and
the evidence approximation (MacKay's fixed point for alpha and beta, with the effective
number of parameters gamma) can rerun after every chunk."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg as sla
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import PolynomialFeatures
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fastlearn._info import one_blas_thread
from fastlearn.linear_model._arrays import to_numpy
from fastlearn._persist import SaveLoadMixin

# Up to this many basis functions the fit and the predictive std run their BLAS on one thread
# (see one_blas_thread). Fits on 2 cores, one thread against the default two: 20000 x 400
# 172 ms against 252; 8000 x 1000 625 against 600; 8000 x 2000 7.4 s against 2.6 s (there the
# M x M eigendecomposition is large enough for LAPACK's threads to pay).
_ONE_THREAD_MAX_BASIS = 512


def gaussian_rbf(X, centers, length_scale):
    """phi_k(x) = exp(-||x - c_k||^2 / (2 length_scale^2)), shape (n_samples, n_centers)."""
    d2 = (X * X).sum(1)[:, None] - 2.0 * X @ centers.T + (centers * centers).sum(1)[None, :]
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * length_scale**2))


def _cholesky(A, what):
    try:
        return sla.cholesky(A, lower=True)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"BayesianLinearRegression: {what} is not positive definite ({e}); give a prior with "
                         "positive definite S0 (or alpha > 0) and finite, scaled features.") from e


def posterior(prior_precision, prior_natural, G, b, beta):
    """(mN, L) with L L^T = SN^-1 = prior_precision + beta G and mN = SN (prior_natural + beta b)."""
    L = _cholesky(prior_precision + beta * G, "the posterior precision S0^-1 + beta Phi^T Phi")
    mN = sla.cho_solve((L, True), prior_natural + beta * b)
    return mN, L


class BayesianLinearRegression(SaveLoadMixin, RegressorMixin, BaseEstimator):
    """Bayesian linear regression with basis functions and the evidence approximation.

    Parameters
    ----------
    basis : "identity", "polynomial" (powers and products up to ``degree``), "rbf" (Gaussian
        bumps at ``centers`` with width ``length_scale``) or a callable X -> Phi.
    degree : polynomial degree.
    centers : RBF centres, an (n_centers, n_features) array, or an int: that many training
        rows drawn with ``random_state`` on the first fit.
    length_scale : RBF width (None: the median distance between centres).
    alpha : prior precision of the weights (S0 = I / alpha); the starting value when learned.
    beta : noise precision; None starts from 1 / var(t).
    m0, S0 : prior mean and covariance (defaults 0 and I / alpha). With S0 given, alpha is
        not used and the evidence maximisation learns beta only.
    fit_intercept : add an unpenalised bias (features and targets are centred, as in
        scikit-learn's BayesianRidge; the bias has a flat prior).
    fit_evidence : learn alpha and beta by maximising the log evidence.
    max_iter, tol : bound and relative tolerance of the evidence fixed-point iteration.

    Fitted: mN_, SN_ (posterior mean and covariance), coef_ (= mN_, the MAP weights),
    intercept_, alpha_, beta_, gamma_ (effective number of parameters), log_evidence_,
    n_iter_, n_features_in_.
    """

    _parameter_constraints: dict = {
        "basis": [StrOptions({"identity", "polynomial", "rbf"}), callable],
        "degree": [Interval(Integral, 1, None, closed="left")],
        "centers": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "length_scale": [Interval(Real, 0, None, closed="neither"), None],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="neither"), None],
        "m0": ["array-like", None],
        "S0": ["array-like", None],
        "fit_intercept": ["boolean"],
        "fit_evidence": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, basis="identity", degree=3, centers=10, length_scale=None, alpha=1.0, beta=None,
                 m0=None, S0=None, fit_intercept=True, fit_evidence=True, max_iter=1000, tol=1e-12,
                 random_state=None):
        self.basis = basis
        self.degree = degree
        self.centers = centers
        self.length_scale = length_scale
        self.alpha = alpha
        self.beta = beta
        self.m0 = m0
        self.S0 = S0
        self.fit_intercept = fit_intercept
        self.fit_evidence = fit_evidence
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # ------------------------------------------------------------------------------ basis
    def _setup_basis(self, X):
        if self.basis == "polynomial":
            self._poly = PolynomialFeatures(self.degree, include_bias=False).fit(X)
        elif self.basis == "rbf":
            if isinstance(self.centers, Integral):
                rng = check_random_state(self.random_state)
                k = min(int(self.centers), X.shape[0])
                self.centers_ = X[rng.choice(X.shape[0], size=k, replace=False)].copy()
            else:
                self.centers_ = np.asarray(to_numpy(self.centers), dtype=np.float64)
                if self.centers_.ndim != 2 or self.centers_.shape[1] != X.shape[1]:
                    raise ValueError(f"centers must be an (n_centers, {X.shape[1]}) array; got shape "
                                     f"{self.centers_.shape}.")
            if self.length_scale is not None:
                self.length_scale_ = float(self.length_scale)
            else:
                c = self.centers_
                dist = np.sqrt(np.maximum(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1), 0.0))
                off = dist[~np.eye(len(c), dtype=bool)]
                self.length_scale_ = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0

    def transform_basis(self, X):
        """Phi(X): the design matrix of the basis functions, shape (n_samples, n_basis)."""
        if self.basis == "identity":
            return X
        if self.basis == "polynomial":
            return self._poly.transform(X)
        if self.basis == "rbf":
            return gaussian_rbf(X, self.centers_, self.length_scale_)
        Phi = np.asarray(to_numpy(self.basis(X)), dtype=np.float64)
        if Phi.ndim != 2 or Phi.shape[0] != X.shape[0]:
            raise ValueError(f"the basis callable must return an (n_samples, n_basis) array; got shape {Phi.shape}.")
        if not np.all(np.isfinite(Phi)):
            raise ValueError("the basis callable returned NaN or inf; check the basis function and the input.")
        return Phi

    # ------------------------------------------------------------------------------ prior
    def _prior(self, M):
        """(precision, natural mean, isotropic) of N(m0, S0) with S0^-1 = alpha_ I unless given."""
        m0 = np.zeros(M) if self.m0 is None else np.asarray(to_numpy(self.m0), dtype=np.float64).reshape(-1)
        if m0.shape != (M,):
            raise ValueError(f"m0 must have one entry per basis function ({M}); got shape {m0.shape}.")
        if self.S0 is None:
            return self.alpha_ * np.eye(M), self.alpha_ * m0, m0, True
        S0 = np.asarray(to_numpy(self.S0), dtype=np.float64)
        if S0.shape != (M, M) or not np.allclose(S0, S0.T) or not np.all(np.isfinite(S0)):
            raise ValueError(f"S0 must be a finite symmetric ({M}, {M}) covariance matrix; got shape {S0.shape}.")
        L0 = _cholesky(S0, "S0")
        P0 = sla.cho_solve((L0, True), np.eye(M))
        return P0, P0 @ m0, m0, False

    # ------------------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Posterior (and, with fit_evidence, alpha and beta) from (X, y)."""
        self._validate_params()
        for attr in ("_stats", "centers_", "length_scale_", "_poly"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self._update(X, y, sample_weight, reset=True)

    def partial_fit(self, X, y, sample_weight=None):
        """Add one chunk: the current posterior becomes the prior of the new data (exactly:
        the sufficient statistics add up, so chunks give the same posterior as one fit)."""
        self._validate_params()
        return self._update(X, y, sample_weight, reset=not hasattr(self, "_stats"))

    def _update(self, X, y, sample_weight, reset):
        X, y = validate_data(self, to_numpy(X), to_numpy(y), dtype=np.float64, y_numeric=True, reset=reset)
        sw = _check_sample_weight(to_numpy(sample_weight), X) if sample_weight is not None else None
        if reset:
            self._setup_basis(X)
        Phi = self.transform_basis(X)
        with one_blas_thread(when=Phi.shape[1] <= _ONE_THREAD_MAX_BASIS):
            self._accumulate(Phi, y, sw)
            n = self._stats["n"]
            if self.fit_evidence and (n < 2 or X.shape[0] < 1):
                raise ValueError(f"BayesianLinearRegression needs at least 2 samples to learn alpha and beta "
                                 f"(got {int(n)} sample); pass more data or set fit_evidence=False.")
            if reset or not hasattr(self, "alpha_"):
                self.alpha_ = float(self.alpha)
                if self.beta is not None:
                    self.beta_ = float(self.beta)
                else:
                    var_t = self._stats["tt"] / n if self.fit_intercept else self._stats["tt"] / n - 0.0
                    self.beta_ = 1.0 / (var_t + np.finfo(np.float64).eps)
            self._solve()
        return self

    def _accumulate(self, Phi, t, sw):
        """Merge this chunk's (weighted, centred when fit_intercept) statistics into the totals."""
        w = np.ones(len(t)) if sw is None else sw
        n_b = float(w.sum())
        if n_b <= 0:
            raise ValueError("sample_weight sums to zero: there is nothing to fit.")
        if self.fit_intercept:
            mu_b = (w @ Phi) / n_b
            tm_b = float(w @ t) / n_b
            Pc, tc = Phi - mu_b, t - tm_b
        else:
            mu_b, tm_b, Pc, tc = np.zeros(Phi.shape[1]), 0.0, Phi, t
        if sw is None:  # skip the weighted copy of the design matrix
            G_b = Pc.T @ Pc
            b_b = Pc.T @ tc
        else:
            G_b = (Pc * w[:, None]).T @ Pc
            b_b = Pc.T @ (w * tc)
        tt_b = float(w @ (tc * tc))
        if not hasattr(self, "_stats"):
            self._stats = {"n": n_b, "mu": mu_b, "tm": tm_b, "G": G_b, "b": b_b, "tt": tt_b}
            return
        s = self._stats
        if Phi.shape[1] != s["G"].shape[0]:
            raise ValueError(f"X gives {Phi.shape[1]} basis functions but the model has {s['G'].shape[0]}.")
        n_a = s["n"]
        n = n_a + n_b
        if self.fit_intercept:
            dmu, dt, c = mu_b - s["mu"], tm_b - s["tm"], n_a * n_b / n
            s["G"] = s["G"] + G_b + c * np.outer(dmu, dmu)
            s["b"] = s["b"] + b_b + c * dmu * dt
            s["tt"] = s["tt"] + tt_b + c * dt * dt
            s["mu"] = s["mu"] + dmu * (n_b / n)
            s["tm"] = s["tm"] + dt * (n_b / n)
        else:
            s["G"], s["b"], s["tt"] = s["G"] + G_b, s["b"] + b_b, s["tt"] + tt_b
        s["n"] = n

    def _residual(self, mN):
        """||t - Phi mN||^2 from the statistics (t^T t - 2 mN^T Phi^T t + mN^T Phi^T Phi mN)."""
        s = self._stats
        return max(s["tt"] - 2.0 * mN @ s["b"] + mN @ s["G"] @ mN, 0.0)

    def _solve(self):
        s = self._stats
        G, b, n = s["G"], s["b"], s["n"]
        M = G.shape[0]
        self.n_iter_ = 0
        if self.fit_evidence and s["tt"] <= 0.0:
            warnings.warn("BayesianLinearRegression: the targets are constant, so the evidence has no finite "
                          "maximum; alpha and beta keep their starting values.", UserWarning, stacklevel=4)
        elif self.fit_evidence:
            self._maximize_evidence(G, b, n, M)
        P0, h0, m0, _ = self._prior(M)
        mN, L = posterior(P0, h0, G, b, self.beta_)
        Linv = sla.solve_triangular(L, np.eye(M), lower=True)
        self.SN_ = Linv.T @ Linv  # (L L^T)^-1 from the triangular factor, symmetric by construction
        self.mN_ = mN
        self._L = L
        self.coef_ = mN
        self.intercept_ = float(s["tm"] - s["mu"] @ mN) if self.fit_intercept else 0.0
        # gamma = sum_i beta lambda_i / (alpha + beta lambda_i) = M - tr(S0^-1 SN)
        self.gamma_ = float(M - np.trace(sla.cho_solve((L, True), P0)))
        self.log_evidence_ = self._log_evidence(P0, m0, mN, L, n, M)

    def _log_evidence(self, P0, m0, mN, L, n, M):
        """ln p(t | alpha, beta) = n/2 ln beta - n/2 ln 2 pi - beta/2 ||t - Phi mN||^2
        - 1/2 (mN - m0)^T S0^-1 (mN - m0) + 1/2 ln|S0^-1| - 1/2 ln|SN^-1|."""
        beta = self.beta_
        dm = mN - m0
        logdet_post = 2.0 * np.sum(np.log(np.diag(L)))
        logdet_prior_prec = 2.0 * np.sum(np.log(np.diag(_cholesky(P0, "S0^-1"))))
        return float(0.5 * n * np.log(beta) - 0.5 * n * np.log(2 * np.pi) - 0.5 * beta * self._residual(mN)
                     - 0.5 * dm @ P0 @ dm + 0.5 * logdet_prior_prec - 0.5 * logdet_post)

    def _maximize_evidence(self, G, b, n, M):
        """MacKay's fixed point: gamma = sum beta lambda_i / (alpha + beta lambda_i),
        alpha = gamma / ||mN - m0||^2, beta = (n - gamma) / ||t - Phi mN||^2. With a user S0 only
        beta is learned (gamma = M - tr(S0^-1 SN))."""
        lam, V = np.linalg.eigh(G)
        lam = np.maximum(lam, 0.0)
        alpha, beta = self.alpha_, self.beta_
        P0, h0, m0, isotropic = self._prior(M)
        Vb, Vm0 = V.T @ b, V.T @ m0
        converged = exact_fit = no_signal = False
        for it in range(1, self.max_iter + 1):
            if isotropic:
                mN = V @ ((alpha * Vm0 + beta * Vb) / (alpha + beta * lam))
                gamma = float(np.sum(beta * lam / (alpha + beta * lam)))
            else:
                mN, L = posterior(P0, h0, G, b, beta)
                gamma = float(M - np.trace(sla.cho_solve((L, True), P0)))
            resid = self._residual(mN)
            # Below this floor (1e-8 of the targets' sum of squares, about where the residual
            # formed from the statistics is rounding noise) the data count as fitted exactly: the
            # evidence would send beta to infinity, so the floor keeps it finite (and warns).
            floor = 1e-8 * max(self._stats["tt"], np.finfo(np.float64).tiny)
            if resid <= floor:
                resid = floor
                exact_fit = True
            if n - gamma <= 0.0:
                raise ValueError("BayesianLinearRegression: the effective number of parameters reaches the number "
                                 "of samples, so beta cannot be learned; use fewer basis functions, more data, or "
                                 "set fit_evidence=False and give beta.")
            beta_new = (n - gamma) / resid
            alpha_new = alpha
            if isotropic:
                dm2 = float((mN - m0) @ (mN - m0))
                # When the targets carry no signal the basis can fit, the evidence keeps growing
                # as alpha -> infinity (mN -> m0); stop where the prior outweighs the data 1e10-fold.
                alpha_cap = 1e10 * max(beta * float(lam.max()), np.finfo(np.float64).tiny)
                if dm2 <= 0.0 or gamma <= 0.0 or gamma >= alpha_cap * dm2:
                    alpha_new, no_signal = alpha_cap, True
                else:
                    alpha_new = gamma / dm2
            change = max(abs(alpha_new - alpha) / alpha, abs(beta_new - beta) / beta)
            alpha, beta = alpha_new, beta_new
            self.n_iter_ = it
            if change <= self.tol:
                converged = True
                break
        if not converged:
            warnings.warn(f"BayesianLinearRegression: the evidence maximisation did not converge in max_iter="
                          f"{self.max_iter} iterations (relative change {change:.2e} > tol={self.tol}); increase "
                          "max_iter or tol.", ConvergenceWarning, stacklevel=5)
        if no_signal:
            warnings.warn("BayesianLinearRegression: the targets carry no signal the basis functions can fit "
                          f"(the evidence grows without bound in alpha); alpha was capped at {alpha:.3g}.",
                          UserWarning, stacklevel=5)
        if exact_fit:
            warnings.warn("BayesianLinearRegression: the data are fitted exactly (zero residual), so the learned "
                          f"noise precision was capped at beta={beta:.3g}; set fit_evidence=False and give beta "
                          "for a different noise level.", UserWarning, stacklevel=5)
        self.alpha_, self.beta_ = float(alpha), float(beta)

    # ---------------------------------------------------------------------------- predicting
    def predict(self, X, return_std=False):
        """Predictive mean mN^T phi(x) (+ bias); with return_std also the predictive std
        sqrt(1/beta + phi^T SN phi) (plus the bias' variance 1/(beta n) when fit_intercept)."""
        check_is_fitted(self)
        X = validate_data(self, to_numpy(X), dtype=np.float64, reset=False)
        Phi = self.transform_basis(X)
        mean = Phi @ self.mN_ + self.intercept_
        if not return_std:
            return mean
        Pc = Phi - self._stats["mu"] if self.fit_intercept else Phi
        # phi^T SN phi = ||L^-1 phi||^2 with L L^T = SN^-1: a triangular solve, no inverse.
        with one_blas_thread(when=self._L.shape[0] <= _ONE_THREAD_MAX_BASIS):
            Z = sla.solve_triangular(self._L, Pc.T, lower=True)
        var = 1.0 / self.beta_ + (Z * Z).sum(0)
        if self.fit_intercept:
            var = var + 1.0 / (self.beta_ * self._stats["n"])
        return mean, np.sqrt(var)

    def sample_posterior(self, n_samples=1, random_state=None):
        """Weight vectors drawn from N(mN, SN), shape (n_samples, n_basis): mN + L^-T z."""
        check_is_fitted(self)
        rng = check_random_state(random_state)
        Z = rng.standard_normal((self.mN_.shape[0], int(n_samples)))
        return (self.mN_[:, None] + sla.solve_triangular(self._L, Z, lower=True, trans="T")).T

    def sample_y(self, X, n_samples=1, random_state=None):
        """Function values w^T phi(x) + bias for weights drawn from the posterior, (n_samples, len(X))."""
        check_is_fitted(self)
        X = validate_data(self, to_numpy(X), dtype=np.float64, reset=False)
        W = self.sample_posterior(n_samples, random_state)
        Phi = self.transform_basis(X)
        return W @ Phi.T + self.intercept_ if not self.fit_intercept else \
            W @ (Phi - self._stats["mu"]).T + self._stats["tm"]

    # ------------------------------------------------------------------------- persistence
    def save(self, path):
        if callable(self.basis):
            raise ValueError("save: a model with a callable basis cannot be saved without pickle; use "
                             "basis='identity', 'polynomial' or 'rbf', or save mN_ and SN_ yourself.")
        super().save(path)

    def _persist_private(self):
        s = self._stats
        return {"n": np.array([s["n"]]), "mu": s["mu"], "tm": np.array([s["tm"]]), "G": s["G"], "b": s["b"],
                "tt": np.array([s["tt"]]), "L": self._L}

    def _restore_private(self, a):
        self._stats = {"n": float(a["n"][0]), "mu": np.array(a["mu"]), "tm": float(a["tm"][0]), "G": np.array(a["G"]),
                       "b": np.array(a["b"]), "tt": float(a["tt"][0])}
        self._L = np.array(a["L"])
        if self.basis == "polynomial":  # stateless apart from the input width
            self._poly = PolynomialFeatures(self.degree, include_bias=False).fit(np.zeros((1, self.n_features_in_)))
