"""SVR against scikit-learn's SVR (LIBSVM epsilon-SVR): R^2 of the predictions, support
vector counts and the dual objective recomputed in float64 from each model's attributes."""

import numpy as np
import pytest
import sklearn.svm as sk
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fastlearn.svm import SVR

from tests.svm.svm_reference import svr_objective


def _data(name):
    if name == "diabetes":
        X, y = datasets.load_diabetes(return_X_y=True)
        return StandardScaler().fit_transform(X), (y - y.mean()) / y.std()
    if name == "friedman":
        X, y = datasets.make_friedman1(n_samples=800, noise=0.5, random_state=0)
        return X, y
    if name == "regression":
        X, y = datasets.make_regression(n_samples=600, n_features=10, noise=5.0, random_state=0)
        return StandardScaler().fit_transform(X), y / y.std()
    raise KeyError(name)


@pytest.mark.parametrize("name", ["diabetes", "friedman", "regression"])
@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_svr_matches_sklearn(name, kernel):
    X, y = _data(name)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
    ours = SVR(kernel=kernel, C=2.0, epsilon=0.2).fit(X_tr, y_tr)
    ref = sk.SVR(kernel=kernel, C=2.0, epsilon=0.2).fit(X_tr, y_tr)
    assert abs(ours.score(X_te, y_te) - ref.score(X_te, y_te)) <= 1e-3
    n_ours, n_ref = ours.n_support_[0], ref.n_support_[0]
    assert abs(n_ours - n_ref) <= 0.02 * n_ref
    obj_ours, obj_ref = svr_objective(ours, y_tr), svr_objective(ref, y_tr)
    np.testing.assert_allclose(obj_ours, obj_ref, rtol=1e-3)
    np.testing.assert_allclose(ours.dual_objective_[0], obj_ours, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.predict(X_te), ref.predict(X_te), atol=5e-3 * np.abs(y).max())
    assert isinstance(ours.n_iter_, int) and ours.dual_coef_.shape == (1, n_ours)
    if kernel == "linear":
        np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())
        np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=5e-3)


def test_svr_sample_weight_and_precomputed():
    X, y = _data("diabetes")
    w = np.random.RandomState(1).uniform(0.1, 2.0, size=len(y))
    ours = SVR(C=3.0).fit(X, y, sample_weight=w)
    ref = sk.SVR(C=3.0).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(svr_objective(ours, y), svr_objective(ref, y), rtol=1e-3)
    K = X @ X.T
    pre = SVR(kernel="precomputed").fit(K, y)
    lin = sk.SVR(kernel="linear").fit(X, y)
    np.testing.assert_allclose(pre.predict(K), lin.predict(X), atol=5e-3)


def test_svr_large_enough_to_compact_the_active_set():
    # 4500 samples = 9000 dual variables: shrinking compacts the active rows into a
    # kernel of their own (problems of 8192+ variables); the model must not change.
    X, y = datasets.make_friedman1(n_samples=4500, noise=0.3, random_state=2)
    ours = SVR(C=5.0, epsilon=0.3).fit(X, y)
    ref = sk.SVR(C=5.0, epsilon=0.3).fit(X, y)
    np.testing.assert_allclose(svr_objective(ours, y), svr_objective(ref, y), rtol=1e-3)
    assert abs(ours.n_support_[0] - ref.n_support_[0]) <= 0.02 * ref.n_support_[0]
    assert abs(ours.score(X, y) - ref.score(X, y)) <= 1e-3
