"""fastlearn.svm.SVC: C-Support Vector Classification with scikit-learn's API and LIBSVM's
one-vs-one formulation, solved by fastlearn's SMO (one kernel cache shared by all pairs)."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn.svm._base import BaseSVM, _Progress, call_solver, fit_matrix_view, to_output
from fastlearn.svm._kernels import resolve_gamma


def ovr_decision_function(predictions: np.ndarray, confidences: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest scores from one-vs-one results (votes plus a confidence term in (-1/3, 1/3)
    that only breaks ties), the transformation scikit-learn applies for shape 'ovr'."""
    n = predictions.shape[0]
    votes = np.zeros((n, n_classes))
    sum_conf = np.zeros((n, n_classes))
    k = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            sum_conf[:, i] -= confidences[:, k]
            sum_conf[:, j] += confidences[:, k]
            votes[predictions[:, k] == 0, i] += 1
            votes[predictions[:, k] == 1, j] += 1
            k += 1
    return votes + sum_conf / (3 * (np.abs(sum_conf) + 1))


class SVC(ClassifierMixin, BaseSVM):
    """C-Support Vector Classification (scikit-learn's ``sklearn.svm.SVC`` API).

    Exact SMO on the dual (second-order working-set selection, shrinking, an LRU cache of
    kernel columns in ``cache_size`` MB shared by all one-vs-one pairs). Kernels: 'linear',
    'poly', 'rbf', 'sigmoid', 'precomputed' or a callable. Probabilities: wrap it in
    ``sklearn.calibration.CalibratedClassifierCV``. ``device``: 'auto' (GPU for large
    problems when one is usable), 'cpu' or 'cuda'. Fitted attributes are scikit-learn's.
    """

    _parameter_constraints: dict = {
        **BaseSVM._parameter_constraints,
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "decision_function_shape": [StrOptions({"ovr", "ovo"})],
        "break_ties": ["boolean"],
    }
    _ARRAYS = ("support_", "support_vectors_", "n_support_", "dual_coef_", "intercept_", "classes_",
               "class_weight_", "n_iter_", "dual_objective_", "_intercept_", "_dual_coef_")
    _SCALARS = ("fit_status_", "_gamma", "n_features_in_")

    def __init__(self, *, C=1.0, kernel="rbf", degree=3, gamma="scale", coef0=0.0, shrinking=True, tol=1e-3,
                 cache_size=200, class_weight=None, verbose=False, max_iter=-1, decision_function_shape="ovr",
                 break_ties=False, device="auto"):
        self.C = C
        self.kernel = kernel
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.shrinking = shrinking
        self.tol = tol
        self.cache_size = cache_size
        self.class_weight = class_weight
        self.verbose = verbose
        self.max_iter = max_iter
        self.decision_function_shape = decision_function_shape
        self.break_ties = break_ties
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the one-vs-one SVM on X (n_samples, n_features) or a precomputed Gram matrix."""
        X, y, sample_weight = self._validate_fit_data(X, y, sample_weight)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        self.class_weight_ = compute_class_weight(self.class_weight, classes=classes, y=y)
        if len(classes) < 2:
            raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class. "
                             "SVC needs samples of at least two classes in y.")
        self.classes_ = classes
        n = len(y)
        self._gamma = resolve_gamma(self.gamma, X, self.kernel)

        # LIBSVM drops samples without positive weight; the rest keep C_i = C * cw * sw.
        keep = np.flatnonzero(sample_weight > 0)
        if keep.size == 0:
            raise ValueError("Invalid input - all samples have zero or negative weights; pass some positive "
                             "sample_weight.")
        present = np.bincount(y_enc[keep], minlength=len(classes))
        if (present == 0).any():
            missing = classes[present == 0]
            raise ValueError(f"class(es) {missing.tolist()} have no sample with a positive weight; give them "
                             "positive sample_weight or drop them from y.")
        order = keep[np.argsort(y_enc[keep], kind="stable")]  # grouped by class, stable (LIBSVM's order)
        sample_c = np.ascontiguousarray(self.C * self.class_weight_[y_enc[order]] * sample_weight[order])
        class_start = np.zeros(len(classes) + 1, dtype=np.int64)
        class_start[1:] = np.cumsum(present)

        M = self._training_matrix(X)
        if self.kernel == "precomputed" or callable(self.kernel):
            M = M[np.ix_(order, order)]
        else:
            M = M[order]
        k = len(classes)
        n_pairs = k * (k - 1) // 2
        m = len(order)
        if self._use_gpu(m):
            from fastlearn.svm._gpu import svc_fit_gpu

            coef, rho, objective, iterations, unconverged = svc_fit_gpu(M, class_start, sample_c,
                                                                        **self._solver_args())
        else:
            m32, xv = fit_matrix_view(M)
            coef = np.empty((n_pairs, m), dtype=np.float64)
            rho = np.empty(n_pairs, dtype=np.float64)
            objective = np.empty(n_pairs, dtype=np.float64)
            iterations = np.empty(n_pairs, dtype=np.int64)
            progress = _Progress(n_pairs, self.verbose, "SVC fit")
            unconverged = call_solver(
                _C.svm_svc_fit, progress, x=xv, class_start=view(class_start, "class_start"),
                sample_c=view(sample_c, "sample_c"), coef=view(coef, "coef"), rho=view(rho, "rho"),
                objective=view(objective, "objective"), iterations=view(iterations, "iterations"),
                **self._solver_args())
        self._set_model(X, coef, rho, objective, iterations, unconverged, order, class_start)
        self.shape_fit_ = X.shape if hasattr(X, "shape") else (n,)
        self._warn_from_fit_status()
        return self

    def _set_model(self, X, coef, rho, objective, iterations, unconverged, order, class_start):
        """LIBSVM's model layout: support vectors grouped by class; the coefficient of a
        class-a support vector in pair (a, b) sits in row b - 1, of a class-b one in row a."""
        k = len(self.classes_)
        is_sv = (coef != 0).any(axis=0)  # over grouped positions
        sv_pos = np.flatnonzero(is_sv)
        cls_of_pos = np.repeat(np.arange(k), np.diff(class_start))
        dual = np.zeros((k - 1, sv_pos.size))
        sv_cls = cls_of_pos[sv_pos]
        p = 0
        for a in range(k):
            for b in range(a + 1, k):
                in_a, in_b = sv_cls == a, sv_cls == b
                dual[b - 1, in_a] = coef[p, sv_pos[in_a]]
                dual[a, in_b] = coef[p, sv_pos[in_b]]
                p += 1
        self.n_support_ = np.bincount(sv_cls, minlength=k).astype(np.int32)
        self._store_support(X, order[sv_pos])
        self._dual_coef_ = dual
        self._intercept_ = -rho
        self.dual_objective_ = objective
        self.n_iter_ = iterations.astype(np.int32)
        self.fit_status_ = int(unconverged > 0)
        if k == 2:  # scikit-learn's sign convention: positive decision -> classes_[1]
            self.dual_coef_ = -dual
            self.intercept_ = rho.copy()
        else:
            self.dual_coef_ = dual
            self.intercept_ = -rho
        if not (np.isfinite(dual).all() and np.isfinite(rho).all()):
            raise ValueError("The dual coefficients or intercepts are not finite. The input data may contain large "
                             "values and need to be preprocessed (e.g. StandardScaler).")

    def _ovo_decision(self, X) -> np.ndarray:
        """LIBSVM's pairwise decision values (n, n_pairs): positive votes for the lower class."""
        k = len(self.classes_)
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        dual = self._dual_coef_
        pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]

        def decide(K):
            # R_c = K[:, SV of c] @ dual[:, SV of c].T, one product per class; then the value
            # of pair (a, b) is R_a[:, b - 1] + R_b[:, a].
            R = [K[:, starts[c]:starts[c + 1]] @ dual[:, starts[c]:starts[c + 1]].T for c in range(k)]
            out = np.empty((K.shape[0], len(pairs)))
            for p, (a, b) in enumerate(pairs):
                out[:, p] = R[a][:, b - 1] + R[b][:, a]
            return out

        return self._raw_decision(X, decide, len(pairs)) + self._intercept_

    def decision_function(self, X):
        """Decision values: (n,) for two classes, else (n, n_classes) for 'ovr' or
        (n, n_classes * (n_classes - 1) / 2) for 'ovo', as scikit-learn's SVC."""
        X, device = self._validate_for_predict(X)
        dec = self._ovo_decision(X)
        if len(self.classes_) == 2:
            out = -dec[:, 0]
        elif self.decision_function_shape == "ovr":
            out = ovr_decision_function(dec < 0, -dec, len(self.classes_))
        else:
            out = dec
        return to_output(out, device)

    def predict(self, X):
        """Class labels: one-vs-one voting (ties go to the lower class, as LIBSVM), or with
        break_ties and 'ovr' the argmax of decision_function."""
        check_is_fitted(self)
        if self.break_ties and self.decision_function_shape == "ovo":
            raise ValueError("break_ties must be False when decision_function_shape is 'ovo'.")
        X, device = self._validate_for_predict(X)
        dec = self._ovo_decision(X)
        k = len(self.classes_)
        if self.break_ties and self.decision_function_shape == "ovr" and k > 2:
            idx = np.argmax(ovr_decision_function(dec < 0, -dec, k), axis=1)
        else:
            votes = np.zeros((dec.shape[0], k), dtype=np.int64)
            p = 0
            for a in range(k):
                for b in range(a + 1, k):
                    win_a = dec[:, p] > 0
                    votes[win_a, a] += 1
                    votes[~win_a, b] += 1
                    p += 1
            idx = np.argmax(votes, axis=1)
        return to_output(self.classes_[idx], device)

    @property
    def coef_(self):
        """Primal weights (linear kernel only): (n_classes * (n_classes - 1) / 2, n_features)."""
        check_is_fitted(self)
        if self.kernel != "linear":
            raise AttributeError("coef_ is only available when using a linear kernel")
        k = len(self.classes_)
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        sv, dual = self.support_vectors_, self._dual_coef_
        rows = []
        for a in range(k):
            for b in range(a + 1, k):
                sa, sb = slice(starts[a], starts[a + 1]), slice(starts[b], starts[b + 1])
                rows.append(dual[b - 1, sa] @ sv[sa] + dual[a, sb] @ sv[sb])
        coef = np.asarray(rows)
        return -coef if k == 2 else coef
