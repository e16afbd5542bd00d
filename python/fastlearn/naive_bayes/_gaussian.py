"""GaussianNB: one diagonal Gaussian per class. Means and variances are merged across
partial_fit calls with the pairwise (Chan et al.) update, so streaming in chunks gives the
statistics of the whole data; prediction scores all classes in one C++ pass over X."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, validate_data

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.linear_model._arrays import to_numpy
from fastlearn.naive_bayes._base import BaseNB, check_two_classes, first_partial_fit_call


def merge_mean_variance(n_past, mu, var, X, sample_weight=None):
    """Mean and (biased) variance of the union of a past sample (count n_past, mean mu,
    variance var) and the rows of X (weighted by sample_weight). Returns (mean, var)."""
    if X.shape[0] == 0:
        return mu, var
    if sample_weight is not None:
        n_new = float(sample_weight.sum())
        if np.isclose(n_new, 0.0):
            return mu, var
        new_mu = np.average(X, axis=0, weights=sample_weight)
        new_var = np.average((X - new_mu) ** 2, axis=0, weights=sample_weight)
    else:
        n_new = X.shape[0]
        new_var = np.var(X, axis=0)
        new_mu = np.mean(X, axis=0)
    if n_past == 0:
        return new_mu, new_var
    n_total = float(n_past + n_new)
    total_mu = (n_new * new_mu + n_past * mu) / n_total
    # Sums of squared deviations add, plus the between-groups term.
    total_ssd = n_past * var + n_new * new_var + (n_new * n_past / n_total) * (mu - new_mu) ** 2
    return total_mu, total_ssd / n_total


class GaussianNB(BaseNB):
    """Gaussian naive Bayes (scikit-learn's GaussianNB semantics and attributes).

    Parameters: ``priors`` (class priors; None: estimated from the data), ``var_smoothing``
    (added to every variance, as a fraction of the largest feature variance of the batch).
    Fitted: ``classes_``, ``class_count_``, ``class_prior_``, ``theta_``, ``var_``,
    ``epsilon_``, ``n_features_in_``.
    """

    _parameter_constraints: dict = {
        "priors": ["array-like", None],
        "var_smoothing": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, priors=None, var_smoothing=1e-9):
        self.priors = priors
        self.var_smoothing = var_smoothing

    def fit(self, X, y, sample_weight=None):
        """Fit from scratch on (X, y)."""
        self._validate_params()
        y = to_numpy(y)
        X, y = validate_data(self, to_numpy(X), y, reset=True)
        check_classification_targets(y)
        self.classes_ = None
        return self._partial_fit(X, y, np.unique(y), refit=True, sample_weight=sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update with one chunk; ``classes`` (all labels) is required on the first call."""
        self._validate_params()
        return self._partial_fit(X, y, classes, refit=False, sample_weight=sample_weight)

    def _partial_fit(self, X, y, classes, refit, sample_weight):
        if refit:
            self.classes_ = None
        first = first_partial_fit_call(self, classes)
        X, y = validate_data(self, to_numpy(X), to_numpy(y), reset=first)
        check_classification_targets(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(to_numpy(sample_weight), X)
        # Variance floor relative to the widest feature: keeps 1/var finite for constant features.
        self.epsilon_ = self.var_smoothing * np.var(X, axis=0).max()
        n_features = X.shape[1]
        n_classes = len(self.classes_)
        if first:
            check_two_classes(self.classes_, "GaussianNB")
            self.theta_ = np.zeros((n_classes, n_features))
            self.var_ = np.zeros((n_classes, n_features))
            self.class_count_ = np.zeros(n_classes, dtype=np.float64)
            if self.priors is not None:
                priors = np.asarray(to_numpy(self.priors), dtype=np.float64)
                if priors.ndim != 1 or len(priors) != n_classes:
                    raise ValueError(f"priors has {priors.size} entries but there are {n_classes} classes; "
                                     "pass one prior per class (in the order of classes_).")
                if not np.isclose(priors.sum(), 1.0):
                    raise ValueError(f"The sum of the priors should be 1 (it is {priors.sum()!r}).")
                if (priors < 0).any():
                    raise ValueError("priors must be non-negative.")
                self.class_prior_ = priors
            else:
                self.class_prior_ = np.zeros(n_classes, dtype=np.float64)
        else:
            # The smoothing of the previous call is taken out (with this batch's epsilon, as
            # scikit-learn does) before the statistics are merged, and put back after.
            self.var_[:, :] -= self.epsilon_
        unique_y = np.unique(y)
        unknown = ~np.isin(unique_y, self.classes_)
        if unknown.any():
            raise ValueError(f"The target label(s) {unique_y[unknown]} in y do not exist in the initial classes "
                             f"{self.classes_}; pass every label in classes= on the first partial_fit call.")
        for label in unique_y:
            i = int(np.searchsorted(self.classes_, label))
            mask = y == label
            X_i = X[mask]
            if sample_weight is not None:
                sw_i = sample_weight[mask]
                n_i = sw_i.sum()
            else:
                sw_i = None
                n_i = X_i.shape[0]
            self.theta_[i], self.var_[i] = merge_mean_variance(self.class_count_[i], self.theta_[i], self.var_[i],
                                                               X_i, sw_i)
            self.class_count_[i] += n_i
        self.var_[:, :] += self.epsilon_
        if self.priors is None:
            self.class_prior_ = self.class_count_ / self.class_count_.sum()
        return self

    def _check_X(self, X):
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32], order="C")

    def _joint_log_likelihood(self, X):
        if np.any(self.var_ <= 0):
            raise ValueError("GaussianNB: a fitted variance is zero (a constant feature with var_smoothing=0); "
                             "refit with var_smoothing > 0.")
        with np.errstate(divide="ignore"):
            log_prior = np.log(self.class_prior_)
        jll = np.empty((X.shape[0], len(self.classes_)), dtype=np.float64)
        if X.shape[0]:
            _C.gaussian_nb_jll(view(X, "X"), view(np.ascontiguousarray(self.theta_), "theta"),
                               view(np.ascontiguousarray(self.var_), "var"), view(log_prior, "log_prior"),
                               view(jll, "jll"))
        return jll
