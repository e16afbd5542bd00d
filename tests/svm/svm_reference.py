"""Independent references for the SVM tests: the dual objective of a fitted model recomputed
in float64 from its public attributes (dual_coef_, support vectors, a scikit-learn kernel),
so fastlearn's and scikit-learn's models are scored by the same formula."""

from __future__ import annotations

import numpy as np
from sklearn.metrics.pairwise import pairwise_kernels


def gram(model, A, B):
    if model.kernel == "precomputed":
        raise ValueError("pass the Gram matrix directly")
    params = {"linear": {}, "rbf": {"gamma": model._gamma}, "poly": {"gamma": model._gamma, "degree": model.degree,
              "coef0": model.coef0}, "sigmoid": {"gamma": model._gamma, "coef0": model.coef0}}[model.kernel]
    return pairwise_kernels(A, B, metric=model.kernel, **params)


def svc_pair_objectives(model, K_sv=None):
    """LIBSVM's dual objective 0.5 c'Kc - sum|c| of each one-vs-one pair, c = y * alpha."""
    sv = model.support_vectors_
    K = gram(model, sv, sv) if K_sv is None else K_sv
    k = len(model.classes_)
    dual = model.dual_coef_
    if k == 2:
        dual = -dual  # undo scikit-learn's binary sign flip (the objective does not care)
    starts = np.concatenate([[0], np.cumsum(model.n_support_)])
    out = []
    for a in range(k):
        for b in range(a + 1, k):
            ia = np.arange(starts[a], starts[a + 1])
            ib = np.arange(starts[b], starts[b + 1])
            idx = np.concatenate([ia, ib])
            c = np.concatenate([dual[b - 1, ia], dual[a, ib]])
            out.append(0.5 * c @ K[np.ix_(idx, idx)] @ c - np.abs(c).sum())
    return np.asarray(out)


def svr_objective(model, y_train, K_sv=None):
    """epsilon-SVR dual objective 0.5 c'Kc + eps sum|c| - sum y_t c_t, c = alpha - alpha*."""
    sv = model.support_vectors_
    K = gram(model, sv, sv) if K_sv is None else K_sv
    c = model.dual_coef_[0]
    return 0.5 * c @ K @ c + model.epsilon * np.abs(c).sum() - y_train[model.support_] @ c
