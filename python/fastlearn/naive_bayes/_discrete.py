"""Naive Bayes for counts and categories: MultinomialNB, ComplementNB, BernoulliNB and
CategoricalNB. Each keeps additive sufficient statistics (class counts, feature counts per
class), so partial_fit in chunks equals one fit on the whole data; the smoothed log
probabilities are recomputed from the counts after every update."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_non_negative, validate_data

from fastlearn.linear_model._arrays import to_numpy
from fastlearn.naive_bayes._base import BaseNB, check_two_classes, first_partial_fit_call

_ALPHA_FLOOR = 1e-10


def _class_indicator(y, classes):
    """(n_samples, n_classes) float64 one-hot matrix of y against the sorted classes."""
    idx = np.searchsorted(classes, y)
    idx = np.clip(idx, 0, len(classes) - 1)
    unknown = classes[idx] != y
    if np.any(unknown):
        raise ValueError(f"The target label(s) {np.unique(y[unknown])} in y do not exist in the initial classes "
                         f"{classes}; pass every label in classes= on the first partial_fit call.")
    Y = np.zeros((len(y), len(classes)), dtype=np.float64)
    Y[np.arange(len(y)), idx] = 1.0
    return Y


class _BaseDiscreteNB(BaseNB):
    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left"), "array-like"],
        "fit_prior": ["boolean"],
        "class_prior": ["array-like", None],
        "force_alpha": ["boolean"],
    }

    _accept_sparse = "csr"

    def __sklearn_tags__(self):
        # These models score poorly on scikit-learn's Gaussian blobs (as scikit-learn's own do).
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.poor_score = True
        return tags

    def _validate_X_fit(self, X, y, reset):
        X, y = validate_data(self, X, y, accept_sparse=self._accept_sparse, reset=reset)
        return X, y

    def _check_X(self, X):
        return validate_data(self, X, accept_sparse=self._accept_sparse, reset=False)

    def _checked_alpha(self):
        alpha = np.asarray(to_numpy(self.alpha), dtype=np.float64) if not isinstance(self.alpha, Real) else self.alpha
        alpha_min = np.min(alpha)
        if isinstance(alpha, np.ndarray):
            if alpha.shape != (self.n_features_in_,):
                raise ValueError(f"When alpha is an array, it must have shape (n_features,) = "
                                 f"({self.n_features_in_},); got {alpha.shape}.")
            if alpha_min < 0:
                raise ValueError("All values in alpha must be >= 0.")
        if alpha_min < _ALPHA_FLOOR and not self.force_alpha:
            warnings.warn(f"alpha too small will result in numeric errors, setting alpha = {_ALPHA_FLOOR:.1e}. "
                          "Use force_alpha=True to keep alpha unchanged.", UserWarning, stacklevel=3)
            return np.maximum(alpha, _ALPHA_FLOOR)
        return alpha

    def _update_class_log_prior(self):
        n_classes = len(self.classes_)
        if self.class_prior is not None:
            prior = np.asarray(to_numpy(self.class_prior), dtype=np.float64)
            if prior.ndim != 1 or len(prior) != n_classes:
                raise ValueError(f"class_prior has {prior.size} entries but there are {n_classes} classes; "
                                 "Number of priors must match number of classes.")
            with np.errstate(divide="ignore"):
                self.class_log_prior_ = np.log(prior)
        elif self.fit_prior:
            with np.errstate(divide="ignore"):
                self.class_log_prior_ = np.log(self.class_count_) - np.log(self.class_count_.sum())
        else:
            self.class_log_prior_ = np.full(n_classes, -np.log(n_classes))

    def _init_counters(self, n_classes, n_features):
        self.class_count_ = np.zeros(n_classes, dtype=np.float64)
        self.feature_count_ = np.zeros((n_classes, n_features), dtype=np.float64)

    def fit(self, X, y, sample_weight=None):
        """Fit from scratch on (X, y)."""
        self._validate_params()
        X, y = self._validate_X_fit(to_numpy(X), to_numpy(y), reset=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        check_two_classes(self.classes_, type(self).__name__)
        Y = self._weighted_indicator(X, y, sample_weight)
        self._init_counters(len(self.classes_), X.shape[1])
        self._count(X, Y)
        self._update_feature_log_prob(self._checked_alpha())
        self._update_class_log_prior()
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Add one chunk's counts; ``classes`` (all labels) is required on the first call."""
        self._validate_params()
        first = first_partial_fit_call(self, classes)
        X, y = self._validate_X_fit(to_numpy(X), to_numpy(y), reset=first)
        check_classification_targets(y)
        if first:
            check_two_classes(self.classes_, type(self).__name__)
            self._init_counters(len(self.classes_), X.shape[1])
        Y = self._weighted_indicator(X, y, sample_weight)
        self._count(X, Y)
        self._update_feature_log_prob(self._checked_alpha())
        self._update_class_log_prior()
        return self

    def _weighted_indicator(self, X, y, sample_weight):
        Y = _class_indicator(y, self.classes_)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(to_numpy(sample_weight), X)
            Y *= sample_weight[:, None]
        return Y

    def _count(self, X, Y):
        self.feature_count_ += np.asarray(Y.T @ X)
        self.class_count_ += Y.sum(axis=0)


class MultinomialNB(_BaseDiscreteNB):
    """Multinomial naive Bayes for counts (scikit-learn's MultinomialNB semantics).

    log P(x | c) = sum_j x_j log theta_cj with theta_cj = (N_cj + alpha) / (N_c + alpha d).
    """

    def __init__(self, *, alpha=1.0, force_alpha=True, fit_prior=True, class_prior=None):
        self.alpha = alpha
        self.force_alpha = force_alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        return tags

    def _count(self, X, Y):
        check_non_negative(X, "MultinomialNB (input X)")
        super()._count(X, Y)

    def _update_feature_log_prob(self, alpha):
        smoothed = self.feature_count_ + alpha
        self.feature_log_prob_ = np.log(smoothed) - np.log(smoothed.sum(axis=1).reshape(-1, 1))

    def _joint_log_likelihood(self, X):
        return np.asarray(X @ self.feature_log_prob_.T) + self.class_log_prior_


class ComplementNB(_BaseDiscreteNB):
    """Complement naive Bayes (Rennie et al. 2003; scikit-learn's ComplementNB semantics):
    each class is scored by the counts of all *other* classes, which suits imbalanced text."""

    _parameter_constraints: dict = {**_BaseDiscreteNB._parameter_constraints, "norm": ["boolean"]}

    def __init__(self, *, alpha=1.0, force_alpha=True, fit_prior=True, class_prior=None, norm=False):
        self.alpha = alpha
        self.force_alpha = force_alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior
        self.norm = norm

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        return tags

    def _count(self, X, Y):
        check_non_negative(X, "ComplementNB (input X)")
        super()._count(X, Y)
        self.feature_all_ = self.feature_count_.sum(axis=0)

    def _update_feature_log_prob(self, alpha):
        complement = self.feature_all_ + alpha - self.feature_count_
        logged = np.log(complement / complement.sum(axis=1, keepdims=True))
        if self.norm:
            self.feature_log_prob_ = logged / logged.sum(axis=1, keepdims=True)
        else:
            self.feature_log_prob_ = -logged

    def _joint_log_likelihood(self, X):
        jll = np.asarray(X @ self.feature_log_prob_.T)
        if len(self.classes_) == 1:
            jll = jll + self.class_log_prior_
        return jll


class BernoulliNB(_BaseDiscreteNB):
    """Bernoulli naive Bayes for binary features (scikit-learn's BernoulliNB semantics).
    ``binarize``: threshold mapping X to {0, 1} (None: X is already binary)."""

    _parameter_constraints: dict = {**_BaseDiscreteNB._parameter_constraints, "binarize": [None, Real]}

    def __init__(self, *, alpha=1.0, force_alpha=True, binarize=0.0, fit_prior=True, class_prior=None):
        self.alpha = alpha
        self.force_alpha = force_alpha
        self.binarize = binarize
        self.fit_prior = fit_prior
        self.class_prior = class_prior

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _binarize(self, X):
        if self.binarize is None:
            return X
        if sp.issparse(X):
            X = X.copy()
            X.data = (X.data > self.binarize).astype(np.float64)
            X.eliminate_zeros()
            return X
        return (X > self.binarize).astype(np.float64)

    def _validate_X_fit(self, X, y, reset):
        X, y = super()._validate_X_fit(X, y, reset)
        return self._binarize(X), y

    def _check_X(self, X):
        return self._binarize(super()._check_X(X))

    def _update_feature_log_prob(self, alpha):
        smoothed_fc = self.feature_count_ + alpha
        smoothed_cc = self.class_count_ + alpha * 2
        self.feature_log_prob_ = np.log(smoothed_fc) - np.log(smoothed_cc.reshape(-1, 1))

    def _joint_log_likelihood(self, X):
        # log(1 - p) from log p without cancellation: log(-expm1(log p)).
        neg_prob = np.log(-np.expm1(self.feature_log_prob_))
        jll = np.asarray(X @ (self.feature_log_prob_ - neg_prob).T)
        return jll + self.class_log_prior_ + neg_prob.sum(axis=1)


class CategoricalNB(_BaseDiscreteNB):
    """Naive Bayes for categorical features coded 0, 1, 2, ... (scikit-learn's CategoricalNB
    semantics). ``min_categories``: the least number of categories per feature."""

    _parameter_constraints: dict = {
        **_BaseDiscreteNB._parameter_constraints,
        "min_categories": [None, "array-like", Interval(Integral, 1, None, closed="left")],
    }
    _accept_sparse = False

    def __init__(self, *, alpha=1.0, force_alpha=True, fit_prior=True, class_prior=None, min_categories=None):
        self.alpha = alpha
        self.force_alpha = force_alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior
        self.min_categories = min_categories

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.categorical = True
        tags.input_tags.sparse = False
        tags.input_tags.positive_only = True
        return tags

    def _validate_X_fit(self, X, y, reset):
        X, y = validate_data(self, X, y, dtype="int", accept_sparse=False, reset=reset)
        check_non_negative(X, "CategoricalNB (input X)")
        return X, y

    def _check_X(self, X):
        X = validate_data(self, X, dtype="int", accept_sparse=False, reset=False)
        check_non_negative(X, "CategoricalNB (input X)")
        too_big = X >= np.asarray([f.shape[1] for f in self.feature_log_prob_])
        if too_big.any():
            j = int(np.nonzero(too_big.any(axis=0))[0][0])
            raise ValueError(f"CategoricalNB: feature {j} of X has category {int(X[:, j].max())}, which was never "
                             f"seen in fit (it has {self.feature_log_prob_[j].shape[1]} categories); "
                             "set min_categories to cover every category.")
        return X

    def _init_counters(self, n_classes, n_features):
        self.class_count_ = np.zeros(n_classes, dtype=np.float64)
        self.category_count_ = [np.zeros((n_classes, 0)) for _ in range(n_features)]

    def _n_categories(self, X):
        n_categories_X = X.max(axis=0) + 1
        if self.min_categories is None:
            return n_categories_X
        min_categories = np.asarray(to_numpy(self.min_categories))
        if not np.issubdtype(min_categories.dtype, np.signedinteger):
            raise ValueError(f"'min_categories' should have integral type. Got {min_categories.dtype} instead.")
        if min_categories.ndim > 0 and min_categories.shape != (self.n_features_in_,):
            raise ValueError(f"'min_categories' should have shape ({self.n_features_in_},) when an array-like is "
                             f"provided. Got {min_categories.shape} instead.")
        return np.maximum(n_categories_X, min_categories)

    def _count(self, X, Y):
        self.class_count_ += Y.sum(axis=0)
        self.n_categories_ = self._n_categories(X)
        for j in range(self.n_features_in_):
            count = self.category_count_[j]
            grow = int(self.n_categories_[j]) - count.shape[1]
            if grow > 0:
                count = np.pad(count, [(0, 0), (0, grow)], "constant")
            # count[c, v] += sum of Y[i, c] over the rows i with X[i, j] == v
            onehot = np.zeros((X.shape[0], count.shape[1]))
            onehot[np.arange(X.shape[0]), X[:, j]] = 1.0
            count += Y.T @ onehot
            self.category_count_[j] = count

    def _update_feature_log_prob(self, alpha):
        self.feature_log_prob_ = []
        for count in self.category_count_:
            smoothed = count + alpha
            self.feature_log_prob_.append(np.log(smoothed) - np.log(smoothed.sum(axis=1).reshape(-1, 1)))

    def _joint_log_likelihood(self, X):
        jll = np.zeros((X.shape[0], len(self.classes_)))
        for j, flp in enumerate(self.feature_log_prob_):
            jll += flp[:, X[:, j]].T
        return jll + self.class_log_prior_
