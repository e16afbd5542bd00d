"""The shared half of the naive Bayes classifiers: prediction from a joint log-likelihood
(log prior + log likelihood per class), normalised in log space so predict_log_proba stays
finite for inputs whose likelihoods underflow in linear space."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from fastlearn.linear_model._arrays import to_numpy
from fastlearn._persist import SaveLoadMixin


def log_normalize(jll: np.ndarray) -> np.ndarray:
    """jll - logsumexp(jll, axis=1): the max is subtracted first so nothing overflows."""
    m = np.max(jll, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = np.log(np.sum(np.exp(jll - m), axis=1, keepdims=True)) + m
    return jll - lse


def check_two_classes(classes, estimator_name: str) -> None:
    if len(classes) < 2:
        raise ValueError(f"{estimator_name}: y has only one class ({classes[0]!r}); a classifier needs at least "
                         "2 classes in y. Pass data from several classes (or the full list to partial_fit's classes).")


def first_partial_fit_call(est, classes) -> bool:
    """True on the first partial_fit call (classes must then be given; later it must agree)."""
    if getattr(est, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit: the full list of labels, "
                         "e.g. classes=np.unique(y_all).")
    if classes is not None:
        classes = np.unique(to_numpy(classes))
        if getattr(est, "classes_", None) is not None:
            if not np.array_equal(est.classes_, classes):
                raise ValueError(f"`classes={classes!r}` is not the same as on the last call to partial_fit, "
                                 f"was: {est.classes_!r}.")
            return False
        est.classes_ = classes
        return True
    return False


class BaseNB(SaveLoadMixin, ClassifierMixin, BaseEstimator):
    """predict / predict_proba / predict_log_proba from ``_joint_log_likelihood``."""

    def _joint_log_likelihood(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_X(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_joint_log_proba(self, X):
        """log P(x, c) for every class c, shape (n_samples, n_classes)."""
        check_is_fitted(self)
        return self._joint_log_likelihood(self._check_X(to_numpy(X)))

    def predict(self, X):
        jll = self.predict_joint_log_proba(X)
        return self.classes_[np.argmax(jll, axis=1)]

    def predict_log_proba(self, X):
        return log_normalize(self.predict_joint_log_proba(X))

    def predict_proba(self, X):
        return np.exp(self.predict_log_proba(X))
