"""fastlearn.svm.SVR: epsilon-Support Vector Regression with scikit-learn's API, solved by
fastlearn's SMO over LIBSVM's 2n-variable dual."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import column_or_1d

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.svm._base import BaseSVM, _Progress, call_solver, fit_matrix_view, to_output
from fastlearn.svm._kernels import resolve_gamma


class SVR(RegressorMixin, BaseSVM):
    """Epsilon-Support Vector Regression (scikit-learn's ``sklearn.svm.SVR`` API).

    Exact SMO on the dual (second-order working-set selection, shrinking, an LRU cache of
    kernel columns in ``cache_size`` MB). ``device``: 'auto', 'cpu' or 'cuda' (the GPU solver
    serves SVC only; SVR runs on the CPU and says so when 'cuda' is asked for).
    """

    _parameter_constraints: dict = {
        **BaseSVM._parameter_constraints,
        "epsilon": [Interval(Real, 0.0, None, closed="left")],
    }
    _ARRAYS = ("support_", "support_vectors_", "n_support_", "dual_coef_", "intercept_", "dual_objective_")
    _SCALARS = ("fit_status_", "_gamma", "n_features_in_", "n_iter_")

    def __init__(self, *, kernel="rbf", degree=3, gamma="scale", coef0=0.0, tol=1e-3, C=1.0, epsilon=0.1,
                 shrinking=True, cache_size=200, verbose=False, max_iter=-1, device="auto"):
        self.kernel = kernel
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.tol = tol
        self.C = C
        self.epsilon = epsilon
        self.shrinking = shrinking
        self.cache_size = cache_size
        self.verbose = verbose
        self.max_iter = max_iter
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the epsilon-SVR on X (n_samples, n_features) or a precomputed Gram matrix."""
        X, y, sample_weight = self._validate_fit_data(X, y, sample_weight)
        y = column_or_1d(y, warn=True).astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity; pass finite targets.")
        if self.device == "cuda":
            raise RuntimeError("SVR(device='cuda'): the GPU solver serves SVC only; use device='cpu' or 'auto'.")
        self._gamma = resolve_gamma(self.gamma, X, self.kernel)
        keep = np.flatnonzero(sample_weight > 0)  # LIBSVM drops samples without positive weight
        if keep.size == 0:
            raise ValueError("Invalid input - all samples have zero or negative weights; pass some positive "
                             "sample_weight.")
        M = self._training_matrix(X)
        M = M[np.ix_(keep, keep)] if (self.kernel == "precomputed" or callable(self.kernel)) else M[keep]
        m32, xv = fit_matrix_view(M)
        target = np.ascontiguousarray(y[keep])
        sample_c = np.ascontiguousarray(self.C * sample_weight[keep])
        coef = np.empty(keep.size)
        rho = np.empty(1)
        objective = np.empty(1)
        iterations = np.empty(1, dtype=np.int64)
        progress = _Progress(1, self.verbose, "SVR fit")
        unconverged = call_solver(
            _C.svm_svr_fit, progress, x=xv, target=view(target, "y"), sample_c=view(sample_c, "sample_c"),
            epsilon=float(self.epsilon), coef=view(coef, "coef"), rho=view(rho, "rho"),
            objective=view(objective, "objective"), iterations=view(iterations, "iterations"),
            **self._solver_args())
        if not (np.isfinite(coef).all() and np.isfinite(rho).all()):
            raise ValueError("The dual coefficients or intercepts are not finite. The input data may contain large "
                             "values and need to be preprocessed (e.g. StandardScaler).")
        sv = np.flatnonzero(coef != 0)
        self._store_support(X, keep[sv])
        self.dual_coef_ = coef[sv][None, :]
        self.intercept_ = -rho
        self.n_support_ = np.array([sv.size], dtype=np.int32)
        self.dual_objective_ = objective
        self.n_iter_ = int(iterations[0])
        self.fit_status_ = int(unconverged)
        self.shape_fit_ = X.shape if hasattr(X, "shape") else (len(y),)
        self._warn_from_fit_status()
        return self

    @property
    def coef_(self):
        """Primal weights (linear kernel only): (1, n_features)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if self.kernel != "linear":
            raise AttributeError("coef_ is only available when using a linear kernel")
        return self.dual_coef_ @ self.support_vectors_

    def predict(self, X):
        """Predicted targets, (n_samples,)."""
        X, device = self._validate_for_predict(X)
        coef = self.dual_coef_[0]
        out = self._raw_decision(X, lambda K: (K @ coef)[:, None], 1)[:, 0] + self.intercept_[0]
        return to_output(out, device)
