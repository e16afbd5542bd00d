"""Perceptron: Rosenblatt's rule (w += eta y x, b += eta y on each misclassified sample),
one-vs-rest for several classes, with scikit-learn's Perceptron arguments and stopping rules
plus averaged and pocket variants. The epoch loop runs in C++ (csrc/linear_model/), one
thread per one-vs-rest problem."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils import check_random_state, compute_class_weight
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.linear_model._arrays import to_numpy
from fastlearn._persist import SaveLoadMixin

_MAX_SEED = np.iinfo(np.int32).max


class Perceptron(SaveLoadMixin, ClassifierMixin, BaseEstimator):
    """Rosenblatt's perceptron (scikit-learn's Perceptron semantics, penalty=None).

    Parameters
    ----------
    fit_intercept : learn the bias b.
    max_iter : most epochs (passes over the data) in fit.
    tol : stop when the epoch's summed loss (sum of max(0, -y p)) has not fallen by
        tol * n_samples for n_iter_no_change epochs; None: always run max_iter epochs.
    shuffle : reshuffle the samples every epoch (seeded by random_state).
    eta0 : learning rate.
    early_stopping, validation_fraction, n_iter_no_change : stop on the accuracy of a held-out
        stratified fraction instead of the training loss.
    class_weight : dict {label: weight}, "balanced" or None; multiplies the update.
    warm_start : start fit from the previous solution.
    average : True or an int a >= 1: coef_ is the average of the weights over all steps from
        sample a on (the averaged perceptron). Not in scikit-learn's Perceptron.
    pocket : keep the weights with the fewest training errors seen at the end of an epoch
        (Gallant's pocket algorithm, for data that are not linearly separable).

    Fitted: classes_, coef_ (1 or n_classes x n_features), intercept_, n_iter_, t_,
    n_features_in_, and n_updates_ (mistakes made, per one-vs-rest problem).
    """

    _parameter_constraints: dict = {
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "shuffle": ["boolean"],
        "verbose": ["verbose"],
        "eta0": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "warm_start": ["boolean"],
        "average": [Interval(Integral, 0, None, closed="left"), "boolean"],
        "pocket": ["boolean"],
    }

    def __init__(self, *, fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0, eta0=1.0,
                 random_state=0, early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 class_weight=None, warm_start=False, average=False, pocket=False):
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.eta0 = eta0
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.average = average
        self.pocket = pocket

    # ----------------------------------------------------------------------------- fitting
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit on (X, y) for up to max_iter epochs."""
        self._validate_params()
        self._check_variants()
        X, y = validate_data(self, to_numpy(X), to_numpy(y), dtype=np.float64, order="C", reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"Perceptron: y has only one class ({classes[0]!r}); a classifier needs at least "
                             "2 classes in y.")
        warm = (self.warm_start and hasattr(self, "_w") and self._w.shape[1] == X.shape[1]
                and np.array_equal(getattr(self, "classes_", None), classes))
        self.classes_ = classes
        if not warm:
            self._init_state(X.shape[1], coef_init, intercept_init)
        sample_weight = _check_sample_weight(to_numpy(sample_weight), X)
        self._expanded_class_weight = compute_class_weight(self.class_weight, classes=classes, y=y)
        val_mask = self._validation_mask(y, sample_weight) if self.early_stopping else np.zeros(len(y), np.uint8)
        seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        n_iter = self._run(X, y, sample_weight, val_mask, self.max_iter, self.tol, self.early_stopping, seed)
        self.n_iter_ = int(n_iter.max())
        if self.tol is not None and self.max_iter > 1 and self.n_iter_ == self.max_iter:
            warnings.warn("Maximum number of iteration reached before convergence. Consider increasing max_iter "
                          "to improve the fit.", ConvergenceWarning, stacklevel=2)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y) from the current weights; ``classes`` is required the first time."""
        self._validate_params()
        self._check_variants()
        if self.class_weight == "balanced":
            raise ValueError("class_weight 'balanced' is not supported for partial_fit (the class frequencies of "
                             "the whole data are unknown); pass a dict {label: weight} instead.")
        first = not hasattr(self, "_w")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit: the full list of "
                                 "labels, e.g. classes=np.unique(y_all).")
            classes = np.unique(to_numpy(classes))
            if len(classes) < 2:
                raise ValueError("Perceptron: classes has only one label; a classifier needs at least 2 classes.")
        elif classes is not None and not np.array_equal(np.unique(to_numpy(classes)), self.classes_):
            raise ValueError(f"`classes` differs from the classes of the first partial_fit call {self.classes_!r}.")
        X, y = validate_data(self, to_numpy(X), to_numpy(y), dtype=np.float64, order="C", reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = classes
            self._init_state(X.shape[1], None, None)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y has label(s) {np.unique(y[unknown])} that are not in classes {self.classes_}.")
        sample_weight = _check_sample_weight(to_numpy(sample_weight), X)
        self._expanded_class_weight = compute_class_weight(self.class_weight, classes=self.classes_, y=y) \
            if self.class_weight is not None else np.ones(len(self.classes_))
        seed_rng = check_random_state(self.random_state)
        # Each call draws a fresh shuffle seed from the running step count, so chunks differ.
        seed = int(seed_rng.randint(_MAX_SEED)) + int(self._steps[0])
        self._run(X, y, sample_weight, np.zeros(len(y), np.uint8), 1, None, False, seed)
        self.n_iter_ = 1
        return self

    def _check_variants(self):
        if self.pocket and self.average:
            raise ValueError("pocket=True and average are two different ways to pick the final weights; "
                             "use one of them.")

    def _n_problems(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _init_state(self, n_features, coef_init, intercept_init):
        P = self._n_problems()
        self._w = np.zeros((P, n_features))
        self._b = np.zeros(P)
        if coef_init is not None:
            coef_init = np.asarray(to_numpy(coef_init), dtype=np.float64).reshape(P, -1)
            if coef_init.shape != (P, n_features):
                raise ValueError(f"coef_init must have shape ({P}, {n_features}); got {coef_init.shape}.")
            self._w[:] = coef_init
        if intercept_init is not None:
            intercept_init = np.asarray(to_numpy(intercept_init), dtype=np.float64).reshape(-1)
            if intercept_init.shape != (P,):
                raise ValueError(f"intercept_init must have shape ({P},); got {intercept_init.shape}.")
            self._b[:] = intercept_init
        self._u = np.zeros((P, n_features))
        self._ub = np.zeros(P)
        self._steps = np.zeros(P)
        self.n_updates_ = np.zeros(P, dtype=np.int64)

    def _validation_mask(self, y, sample_weight):
        split = StratifiedShuffleSplit(test_size=self.validation_fraction, random_state=self.random_state)
        try:
            _, val_idx = next(split.split(np.zeros((len(y), 1)), y))
        except ValueError as e:
            raise ValueError(f"early_stopping: cannot hold out validation_fraction={self.validation_fraction} of "
                             f"{len(y)} samples with every class represented ({e}); increase "
                             "validation_fraction or pass more samples.") from e
        mask = np.zeros(len(y), np.uint8)
        mask[val_idx] = 1
        if mask.sum() == 0 or mask.sum() == len(y):
            raise ValueError("early_stopping: the validation split is empty or holds every sample; "
                             "adjust validation_fraction.")
        return mask

    def _run(self, X, y, sample_weight, val_mask, max_iter, tol, early_stopping, seed):
        P = self._n_problems()
        K = len(self.classes_)
        y_idx = np.searchsorted(self.classes_, y).astype(np.int64)
        cw = self._expanded_class_weight
        if K == 2:
            positive, pos_w, neg_w = np.array([1]), np.array([cw[1]]), np.array([cw[0]])
        else:
            positive, pos_w, neg_w = np.arange(K), cw.astype(np.float64), np.ones(K)
        n_iter = np.zeros(P, np.int64)
        n_updates = np.zeros(P, np.int64)
        average_start = 0 if not self.average else (1 if self.average is True else int(self.average))
        sw = np.ascontiguousarray(sample_weight, dtype=np.float64)
        from tqdm.auto import tqdm

        bar = tqdm(total=int(max_iter), desc="Perceptron epochs", unit="epoch", disable=not self.verbose)
        progress = (lambda epoch: bar.update(epoch - bar.n)) if self.verbose else None
        try:
            _C.perceptron_fit(
                view(X, "X"), view(y_idx, "y"), view(sw, "sample_weight"), view(val_mask, "validation_mask"),
                view(positive.astype(np.int64), "positive_class"),
                view(np.ascontiguousarray(pos_w, np.float64), "pos_weight"),
                view(np.ascontiguousarray(neg_w, np.float64), "neg_weight"), view(self._w, "coef"),
                view(self._b, "intercept"), view(self._u, "avg_u"), view(self._ub, "avg_u_b"),
                view(self._steps, "steps"), view(n_iter, "n_iter"), view(n_updates, "n_updates"),
                float(self.eta0), int(max_iter), tol is not None, float(tol or 0.0), int(self.n_iter_no_change),
                bool(early_stopping), bool(self.shuffle), seed, bool(self.fit_intercept), average_start,
                bool(self.pocket), progress)
        except KeyboardInterrupt:
            # Ctrl-C stops after the current epoch; keep what was learned so far, then re-raise.
            self._publish(average_start)
            raise
        finally:
            bar.close()
        self.n_updates_ = self.n_updates_ + n_updates
        self._publish(average_start)
        self.t_ = float(self._steps[0]) + 1.0
        return n_iter

    def _publish(self, average_start):
        """coef_ / intercept_ from the state: the plain weights, or their running average."""
        if average_start:
            m = self._steps - average_start + 1.0
            active = m > 0
            coef = self._w.copy()
            intercept = self._b.copy()
            coef[active] -= self._u[active] / m[active, None]
            intercept[active] -= self._ub[active] / m[active]
        else:
            coef, intercept = self._w.copy(), self._b.copy()
        self.coef_ = coef
        self.intercept_ = intercept

    # ---------------------------------------------------------------------------- predicting
    def decision_function(self, X):
        """Signed distance to each hyperplane: (n_samples,) for two classes, else (n_samples, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, to_numpy(X), dtype=np.float64, reset=False)
        scores = X @ self.coef_.T + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    # ------------------------------------------------------------------------- persistence
    def _persist_private(self):
        return {"w": self._w, "b": self._b, "u": self._u, "ub": self._ub, "steps": self._steps}

    def _restore_private(self, arrays):
        self._w, self._b, self._u, self._ub, self._steps = (
            np.array(arrays[k]) for k in ("w", "b", "u", "ub", "steps"))
