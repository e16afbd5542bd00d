"""Perceptron against a plain NumPy Rosenblatt loop and scikit-learn's Perceptron: exact
weights without shuffling, zero training errors within the Novikoff bound on separable data,
the same accuracy elsewhere, variants, errors, save/load and check_estimator."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastlearn.linear_model import Perceptron


def rosenblatt(X, y_pm, epochs, eta=1.0, weight=None, average_start=0):
    """Reference: sequential passes in index order; update on y (w.x + b) <= 0.
    Returns (w, b, averaged w, averaged b, mistakes)."""
    n, d = X.shape
    weight = np.ones(n) if weight is None else weight
    w, b = np.zeros(d), 0.0
    sum_w, sum_b, count, mistakes, step = np.zeros(d), 0.0, 0, 0, 0
    for _ in range(epochs):
        for i in range(n):
            step += 1
            if y_pm[i] * (X[i] @ w + b) <= 0:
                mistakes += 1
                w = w + eta * y_pm[i] * weight[i] * X[i]
                b = b + eta * y_pm[i] * weight[i]
            if average_start and step >= average_start:
                sum_w, sum_b, count = sum_w + w, sum_b + b, count + 1
    avg_w = sum_w / max(count, 1)
    avg_b = sum_b / max(count, 1)
    return w, b, avg_w, avg_b, mistakes


def _binary(n=80, d=5, seed=0):
    X, y = make_classification(n, d, n_informative=3, n_redundant=0, random_state=seed)
    return X, y


def test_matches_numpy_rosenblatt_binary():
    X, y = _binary()
    w, b, _, _, mistakes = rosenblatt(X, 2.0 * y - 1, 4, eta=0.5)
    est = Perceptron(shuffle=False, tol=None, max_iter=4, eta0=0.5).fit(X, y)
    np.testing.assert_allclose(est.coef_[0], w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(est.intercept_[0], b, rtol=1e-12, atol=1e-12)
    assert est.n_updates_[0] == mistakes
    assert est.n_iter_ == 4


def test_matches_numpy_rosenblatt_multiclass_weighted():
    X, y = make_classification(90, 6, n_informative=4, n_classes=3, n_clusters_per_class=1, random_state=1)
    sw = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    cw = {0: 1.0, 1: 2.0, 2: 0.5}
    est = Perceptron(shuffle=False, tol=None, max_iter=3, class_weight=cw).fit(X, y, sample_weight=sw)
    for k in range(3):
        # one-vs-rest: the positive class's weight multiplies updates on its samples
        weight = sw * np.where(y == k, cw[k], 1.0)
        w, b, _, _, _ = rosenblatt(X, np.where(y == k, 1.0, -1.0), 3, weight=weight)
        np.testing.assert_allclose(est.coef_[k], w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(est.intercept_[k], b, rtol=1e-12, atol=1e-12)


def test_matches_sklearn_exactly_without_shuffle():
    for X, y in (_binary(200, 8, 3), make_classification(200, 8, n_informative=5, n_classes=4, random_state=4)):
        ref = SkPerceptron(shuffle=False, tol=None, max_iter=5).fit(X, y)
        est = Perceptron(shuffle=False, tol=None, max_iter=5).fit(X, y)
        np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=1e-10, atol=1e-10)
        # with the tol stopping rule the epoch count follows the same losses
        ref = SkPerceptron(shuffle=False, max_iter=50).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = Perceptron(shuffle=False, max_iter=50).fit(X, y)
        assert est.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-10, atol=1e-10)


def test_separable_zero_errors_within_novikoff_bound():
    rng = np.random.default_rng(0)
    d = 10
    u = rng.normal(size=d + 1)  # separator (w*, b*) in the augmented space [x, 1]
    u /= np.linalg.norm(u)
    X = rng.normal(size=(3000, d))
    Xa = np.hstack([X, np.ones((len(X), 1))])
    margin = Xa @ u
    keep = np.abs(margin) > 0.1
    X, Xa, margin = X[keep], Xa[keep], margin[keep]
    y = (margin > 0).astype(int)
    gamma = np.abs(margin).min()
    R = np.linalg.norm(Xa, axis=1).max()
    est = Perceptron(tol=None, max_iter=10_000, random_state=3).fit(X, y)
    assert (est.predict(X) == y).all()
    assert est.n_updates_[0] <= (R / gamma) ** 2


def test_accuracy_matches_sklearn():
    for n_classes in (2, 4):
        X, y = make_classification(3000, 20, n_informative=10, n_classes=n_classes, random_state=5)
        X_test, y_test = X[2000:], y[2000:]
        X, y = X[:2000], y[:2000]
        ref = np.mean([SkPerceptron(random_state=s).fit(X, y).score(X_test, y_test) for s in range(3)])
        ours = np.mean([Perceptron(random_state=s).fit(X, y).score(X_test, y_test) for s in range(3)])
        assert abs(ours - ref) < 0.06, (n_classes, ours, ref)


def test_average_matches_reference():
    X, y = _binary()
    for start in (1, 50):
        _, _, avg_w, avg_b, _ = rosenblatt(X, 2.0 * y - 1, 3, average_start=start)
        est = Perceptron(shuffle=False, tol=None, max_iter=3, average=start if start > 1 else True).fit(X, y)
        np.testing.assert_allclose(est.coef_[0], avg_w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(est.intercept_[0], avg_b, rtol=1e-10, atol=1e-12)


def test_pocket_keeps_best_epoch():
    X, y = make_classification(400, 5, n_informative=3, flip_y=0.2, random_state=0)
    yp = 2.0 * y - 1
    errors = []
    for epochs in range(1, 9):
        w, b, _, _, _ = rosenblatt(X, yp, epochs)
        errors.append(int((yp * (X @ w + b) <= 0).sum()))
    est = Perceptron(shuffle=False, tol=None, max_iter=8, pocket=True).fit(X, y)
    pocket_errors = int((yp * (X @ est.coef_[0] + est.intercept_[0]) <= 0).sum())
    assert pocket_errors == min(errors)
    assert pocket_errors <= errors[-1]


def test_partial_fit_is_one_epoch():
    X, y = _binary()
    est = Perceptron(shuffle=False)
    for idx in np.array_split(np.arange(len(y)), 4):
        est.partial_fit(X[idx], y[idx], classes=np.array([0, 1]))
    w, b, _, _, _ = rosenblatt(X, 2.0 * y - 1, 1)
    np.testing.assert_allclose(est.coef_[0], w, rtol=1e-12, atol=1e-12)
    est.partial_fit(X, y)  # a second epoch continues from the weights
    w, b, _, _, _ = rosenblatt(X, 2.0 * y - 1, 2)
    np.testing.assert_allclose(est.coef_[0], w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(est.intercept_[0], b, rtol=1e-12, atol=1e-12)


def test_early_stopping_and_convergence_warning():
    X, y = make_classification(1000, 10, flip_y=0.3, random_state=0)
    est = Perceptron(early_stopping=True, max_iter=200, random_state=0).fit(X, y)
    assert est.n_iter_ < 200 and est.score(X, y) > 0.5
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        Perceptron(max_iter=2).fit(X, y)


def test_torch_input_and_save_load(tmp_path):
    X, y = _binary()
    est = Perceptron(average=True).fit(torch.from_numpy(X), torch.from_numpy(y))
    path = str(tmp_path / "p.safetensors")
    est.save(path)
    back = Perceptron.load(path)
    np.testing.assert_array_equal(back.decision_function(X), est.decision_function(X))
    back.partial_fit(X, y)  # the averaging state survives
    est.partial_fit(X, y)
    np.testing.assert_allclose(back.coef_, est.coef_)


def test_progress_and_interrupt():
    from fastlearn import _C
    from fastlearn._buffer import view

    X, y = _binary()
    seen = []
    Perceptron(verbose=1, tol=None, max_iter=4).fit(X, y)  # tqdm bar per epoch

    def progress(epoch):
        seen.append(epoch)
        if epoch == 3:
            raise KeyboardInterrupt

    w, b, u, ub, steps = np.zeros((1, 5)), np.zeros(1), np.zeros((1, 5)), np.zeros(1), np.zeros(1)
    n_iter, n_upd = np.zeros(1, np.int64), np.zeros(1, np.int64)
    # views do not own memory: keep every array alive for the call
    y64, sw, val, pos, pw, nw = (y.astype(np.int64), np.ones(len(y)), np.zeros(len(y), np.uint8), np.array([1]),
                                 np.ones(1), np.ones(1))
    args = [view(X, "X"), view(y64, "y"), view(sw, "sw"), view(val, "val"), view(pos, "pos"), view(pw, "pw"),
            view(nw, "nw"), view(w, "coef"), view(b, "b"), view(u, "u"), view(ub, "ub"), view(steps, "steps"),
            view(n_iter, "n_iter"), view(n_upd, "n_upd"), 1.0, 100, False, 0.0, 5, False, False, 0, True, 0, False]
    with pytest.raises(KeyboardInterrupt):
        _C.perceptron_fit(*args, progress)
    assert seen == [1, 2, 3] and n_iter[0] == 3  # stopped after the third of 100 epochs
    ref, ref_b, _, _, _ = rosenblatt(X, 2.0 * y - 1, 3)
    np.testing.assert_allclose(w[0], ref, rtol=1e-12, atol=1e-12)  # the weights keep what was learned
    np.testing.assert_allclose(b[0], ref_b, rtol=1e-12, atol=1e-12)


def test_ctrl_c_stops_a_long_fit():
    import os
    import signal
    import threading
    import time

    X, y = make_classification(5000, 20, flip_y=0.2, random_state=0)
    est = Perceptron(tol=None, max_iter=1_000_000)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        est.fit(X, y)
    timer.join()
    assert time.perf_counter() - t0 < 30  # a million epochs would take far longer
    assert np.abs(est.coef_).sum() > 0  # the weights learned before the stop are kept


def test_errors():
    X, y = _binary()
    Xn = X.copy()
    Xn[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        Perceptron().fit(Xn, y)
    with pytest.raises(ValueError, match="only one class"):
        Perceptron().fit(X, np.zeros(len(y)))
    est = Perceptron().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="use one of them"):
        Perceptron(pocket=True, average=True).fit(X, y)
    with pytest.raises(ValueError, match="classes must be passed"):
        Perceptron().partial_fit(X, y)
    with pytest.raises(ValueError, match="balanced"):
        Perceptron(class_weight="balanced").partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="eta0"):
        Perceptron(eta0=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        Perceptron(max_iter=0).fit(X, y)


_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data": "as for scikit-learn's Perceptron: SGD order differs",
    "check_sample_weight_equivalence_on_sparse_data": "as for scikit-learn's Perceptron: SGD order differs",
}


@parametrize_with_checks([Perceptron(max_iter=5), Perceptron(max_iter=5, pocket=True)],
                         expected_failed_checks=lambda est: _XFAIL)
def test_sklearn_compatible(estimator, check):
    check(estimator)
