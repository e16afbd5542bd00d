"""SVC against scikit-learn's SVC (LIBSVM) on the issue's data sets: predictions, support
vector counts, dual objectives (recomputed in float64 from each model's own attributes)
and decision values; then the other kernels, weights and the multiclass options."""

import numpy as np
import pytest
import sklearn.svm as sk
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fastlearn.svm import SVC

from tests.svm.svm_reference import svc_pair_objectives


def _data(name):
    if name == "iris":
        return datasets.load_iris(return_X_y=True)
    if name == "wine":
        X, y = datasets.load_wine(return_X_y=True)
        return StandardScaler().fit_transform(X), y
    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return StandardScaler().fit_transform(X), y
    if name == "digits":
        return datasets.load_digits(return_X_y=True)
    if name == "moons":
        return datasets.make_moons(n_samples=600, noise=0.25, random_state=0)
    if name == "classification":
        return datasets.make_classification(n_samples=1500, n_features=20, n_informative=6, n_classes=3,
                                            random_state=0)
    raise KeyError(name)


def _compare(ours, ref, X_test, K_sv=None):
    agree = np.mean(ours.predict(X_test) == ref.predict(X_test))
    assert agree >= 0.995, agree
    n_ours, n_ref = ours.n_support_.sum(), ref.n_support_.sum()
    assert abs(n_ours - n_ref) <= 0.02 * n_ref, (ours.n_support_, ref.n_support_)
    obj_ours, obj_ref = svc_pair_objectives(ours, K_sv), svc_pair_objectives(ref, K_sv)
    np.testing.assert_allclose(obj_ours, obj_ref, rtol=1e-3)
    # The objective the solver reports is the one of the model it returned.
    np.testing.assert_allclose(ours.dual_objective_, obj_ours, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits", "moons", "classification"])
def test_matches_sklearn_rbf(name):
    X, y = _data(name)
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    ours = SVC().fit(X_tr, y_tr)
    ref = sk.SVC().fit(X_tr, y_tr)
    _compare(ours, ref, X_te)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    assert ours.dual_coef_.shape[0] == ref.dual_coef_.shape[0]
    assert ours.n_iter_.shape == ref.n_iter_.shape and ours.fit_status_ == 0
    # Decision values agree to the solver's tolerance (the ovr transform adds votes, so
    # compare the one-vs-one values).
    ours.set_params(decision_function_shape="ovo")
    ref.set_params(decision_function_shape="ovo")
    np.testing.assert_allclose(ours.decision_function(X_te), ref.decision_function(X_te), atol=5e-3)


@pytest.mark.parametrize("kernel,params", [("linear", {}), ("poly", {"degree": 3, "coef0": 1.0}),
                                           ("sigmoid", {"gamma": 0.01, "coef0": 0.0}), ("rbf", {"gamma": 0.3})])
def test_kernels_match_sklearn(kernel, params):
    X, y = _data("wine")
    ours = SVC(kernel=kernel, C=0.8, **params).fit(X, y)
    ref = sk.SVC(kernel=kernel, C=0.8, **params).fit(X, y)
    _compare(ours, ref, X)
    if kernel == "linear":
        np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())


def test_precomputed_and_callable_kernels():
    X, y = _data("breast_cancer")
    K = X @ X.T
    ref = sk.SVC(kernel="linear", C=0.1).fit(X, y)
    pre = SVC(kernel="precomputed", C=0.1).fit(K, y)
    assert pre.support_vectors_.shape == (0, 0)
    np.testing.assert_allclose(svc_pair_objectives(pre, K[np.ix_(pre.support_, pre.support_)]),
                               svc_pair_objectives(ref), rtol=1e-3)
    assert np.mean(pre.predict(K) == ref.predict(X)) >= 0.995
    call = SVC(kernel=lambda A, B: A @ B.T, C=0.1).fit(X, y)
    np.testing.assert_allclose(call.decision_function(X), ref.decision_function(X), atol=5e-3)
    with pytest.raises(ValueError, match="569 features"):
        pre.predict(K[:, :10])


def test_binary_sign_convention_and_intercept():
    X, y = _data("breast_cancer")
    ours, ref = SVC(C=2.0).fit(X, y), sk.SVC(C=2.0).fit(X, y)
    np.testing.assert_array_equal(ours.support_, ref.support_)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, atol=2e-3)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=2e-3)
    d = ours.decision_function(X)
    assert d.shape == (X.shape[0],)
    np.testing.assert_array_equal(ours.predict(X), ours.classes_[(d > 0).astype(int)])


def test_class_and_sample_weights_match_sklearn():
    X, y = _data("iris")
    w = np.random.RandomState(0).uniform(0.2, 3.0, size=len(y))
    w[:5] = 0.0  # dropped, as LIBSVM drops non-positive weights
    for cw in ({0: 1.0, 1: 3.0, 2: 0.5}, "balanced"):
        ours = SVC(C=1.5, class_weight=cw).fit(X, y, sample_weight=w)
        ref = sk.SVC(C=1.5, class_weight=cw).fit(X, y, sample_weight=w)
        np.testing.assert_allclose(ours.class_weight_, ref.class_weight_)
        _compare(ours, ref, X)
        # Same support vectors. (scikit-learn's support_ counts positions after dropping the
        # zero-weight samples; ours indexes X itself, as its documentation says.)
        np.testing.assert_array_equal(ours.support_vectors_, ref.support_vectors_)
        np.testing.assert_array_equal(ours.support_vectors_, X[ours.support_])


def test_ovo_ovr_and_break_ties():
    X, y = _data("classification")
    X = X[:400]
    y = y[:400]
    ours = SVC(decision_function_shape="ovo").fit(X, y)
    ref = sk.SVC(decision_function_shape="ovo").fit(X, y)
    assert ours.decision_function(X).shape == (400, 3)
    ours.set_params(decision_function_shape="ovr", break_ties=True)
    ref.set_params(decision_function_shape="ovr", break_ties=True)
    d_ours, d_ref = ours.decision_function(X), ref.decision_function(X)
    assert d_ours.shape == (400, 3)
    assert np.mean(np.argmax(d_ours, 1) == np.argmax(d_ref, 1)) >= 0.995
    np.testing.assert_array_equal(ours.predict(X), ours.classes_[np.argmax(d_ours, 1)])
    assert np.mean(ours.predict(X) == ref.predict(X)) >= 0.995


def test_no_shrinking_same_solution():
    X, y = _data("moons")
    a = SVC(shrinking=True).fit(X, y)
    b = SVC(shrinking=False).fit(X, y)
    np.testing.assert_allclose(a.dual_objective_, b.dual_objective_, rtol=1e-4)
    assert np.mean(a.predict(X) == b.predict(X)) >= 0.995


def test_small_cache_same_solution():
    # 0.05 MB holds ~20 columns of 600 rows: the LRU evicts constantly.
    X, y = _data("moons")
    a = SVC(cache_size=0.05).fit(X, y)
    b = SVC(cache_size=500).fit(X, y)
    np.testing.assert_allclose(a.dual_objective_, b.dual_objective_, rtol=1e-6)
    np.testing.assert_array_equal(a.support_, b.support_)


def test_threads_do_not_change_the_solution():
    # 4500 x 64 is big enough for threaded kernel columns; each row's value is computed the
    # same way whichever thread owns it, so one and two threads give the same model.
    import fastlearn

    X, y = datasets.make_classification(n_samples=4500, n_features=64, random_state=0)
    before = fastlearn.get_num_threads()
    try:
        fastlearn.set_num_threads(1)
        one = SVC(tol=1e-2).fit(X, y)
        fastlearn.set_num_threads(2)
        two = SVC(tol=1e-2).fit(X, y)
    finally:
        fastlearn.set_num_threads(before)
    np.testing.assert_array_equal(one.support_, two.support_)
    np.testing.assert_array_equal(one.dual_coef_, two.dual_coef_)
