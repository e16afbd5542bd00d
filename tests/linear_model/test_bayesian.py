"""BayesianLinearRegression against a float64 closed form (explicit inverses, written from the
equations), scikit-learn's BayesianRidge with negligible hyperpriors, and scipy's Gaussian
log-density for the evidence."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.linear_model import BayesianRidge
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastlearn.linear_model import BayesianLinearRegression as BLR


def _data(n=120, d=4, noise=0.4, seed=0, offset=2.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return X, X @ w + offset + noise * rng.normal(size=n)


def closed_form(Phi, t, m0, S0, beta):
    SN = np.linalg.inv(np.linalg.inv(S0) + beta * Phi.T @ Phi)
    mN = SN @ (np.linalg.inv(S0) @ m0 + beta * Phi.T @ t)
    return mN, SN


def test_posterior_equals_closed_form():
    X, y = _data()
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 4))
    S0 = A @ A.T + 0.5 * np.eye(4)
    m0 = rng.normal(size=4)
    for kw, (pm, pS) in (({"alpha": 2.5}, (np.zeros(4), np.eye(4) / 2.5)), ({"m0": m0, "S0": S0}, (m0, S0))):
        est = BLR(fit_intercept=False, fit_evidence=False, beta=3.0, **kw).fit(X, y)
        mN, SN = closed_form(X, y, pm, pS, 3.0)
        np.testing.assert_allclose(est.mN_, mN, rtol=1e-10)
        np.testing.assert_allclose(est.SN_, SN, rtol=1e-10, atol=1e-14)
        mean, std = est.predict(X[:7], return_std=True)
        np.testing.assert_allclose(mean, X[:7] @ mN, rtol=1e-10)
        np.testing.assert_allclose(std, np.sqrt(1 / 3.0 + np.einsum("ij,jk,ik->i", X[:7], SN, X[:7])), rtol=1e-10)
        # the evidence is the Gaussian marginal t ~ N(Phi m0, I / beta + Phi S0 Phi^T)
        ref = multivariate_normal(X @ pm, np.eye(len(y)) / 3.0 + X @ pS @ X.T).logpdf(y)
        np.testing.assert_allclose(est.log_evidence_, ref, rtol=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_evidence_maximisation_matches_bayesian_ridge(fit_intercept):
    X, y = _data()
    ref = BayesianRidge(alpha_1=1e-12, alpha_2=1e-12, lambda_1=1e-12, lambda_2=1e-12, tol=1e-14, max_iter=100_000,
                        fit_intercept=fit_intercept, compute_score=True).fit(X, y)
    est = BLR(fit_intercept=fit_intercept).fit(X, y)
    # scikit-learn calls the noise precision alpha_ and the weight precision lambda_
    np.testing.assert_allclose(est.beta_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(est.alpha_, ref.lambda_, rtol=1e-6)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-6)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(est.SN_, ref.sigma_, rtol=1e-6)
    np.testing.assert_allclose(est.log_evidence_, ref.scores_[-1], rtol=1e-6)
    if not fit_intercept:  # scikit-learn's std ignores the bias' uncertainty, so compare without it
        np.testing.assert_allclose(est.predict(X, return_std=True)[1], ref.predict(X, return_std=True)[1],
                                   rtol=1e-6)


def test_predictive_std_with_intercept_closed_form():
    # A flat prior on the bias = the limit of an augmented design [Phi, 1] with bias precision -> 0.
    X, y = _data(n=60, d=3)
    est = BLR(fit_evidence=False, alpha=1.5, beta=2.0).fit(X, y)
    Phi = np.hstack([X, np.ones((len(X), 1))])
    S0 = np.diag([1 / 1.5] * 3 + [1e10])
    mN, SN = closed_form(Phi, y, np.zeros(4), S0, 2.0)
    Xq = np.random.default_rng(3).normal(size=(5, 3))
    Pq = np.hstack([Xq, np.ones((5, 1))])
    mean, std = est.predict(Xq, return_std=True)
    np.testing.assert_allclose(mean, Pq @ mN, rtol=1e-7)
    np.testing.assert_allclose(std, np.sqrt(0.5 + np.einsum("ij,jk,ik->i", Pq, SN, Pq)), rtol=1e-7)


def test_evidence_is_maximal_and_gamma():
    X, y = _data()
    est = BLR(fit_intercept=False).fit(X, y)
    lam = np.linalg.eigvalsh(X.T @ X) * est.beta_
    np.testing.assert_allclose(est.gamma_, np.sum(lam / (est.alpha_ + lam)), rtol=1e-10)
    for da, db in ((1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)):
        other = BLR(fit_intercept=False, fit_evidence=False, alpha=est.alpha_ * da, beta=est.beta_ * db).fit(X, y)
        assert other.log_evidence_ < est.log_evidence_


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_partial_fit_chunks_equal_one_fit(fit_intercept):
    X, y = _data(n=200)
    full = BLR(fit_intercept=fit_intercept).fit(X, y)
    inc = BLR(fit_intercept=fit_intercept)
    for idx in np.array_split(np.arange(200), 5):
        inc.partial_fit(X[idx], y[idx])
    for attr in ("mN_", "SN_", "alpha_", "beta_", "intercept_", "log_evidence_"):
        np.testing.assert_allclose(getattr(inc, attr), getattr(full, attr), rtol=1e-8, err_msg=attr)


def test_partial_fit_posterior_becomes_prior():
    X, y = _data(n=100)
    a, b = slice(0, 40), slice(40, 100)
    seq = BLR(fit_intercept=False, fit_evidence=False, alpha=2.0, beta=4.0).fit(X[a], y[a])
    explicit = BLR(fit_intercept=False, fit_evidence=False, beta=4.0, m0=seq.mN_, S0=seq.SN_).fit(X[b], y[b])
    seq.partial_fit(X[b], y[b])
    np.testing.assert_allclose(seq.mN_, explicit.mN_, rtol=1e-9)
    np.testing.assert_allclose(seq.SN_, explicit.SN_, rtol=1e-9, atol=1e-15)


def test_posterior_samples():
    X, y = _data(n=40)
    est = BLR().fit(X, y)
    W = est.sample_posterior(40_000, random_state=0)
    np.testing.assert_allclose(W.mean(0), est.mN_, atol=4 * np.sqrt(np.diag(est.SN_).max() / 40_000) * 3)
    np.testing.assert_allclose(np.cov(W, rowvar=False), est.SN_, atol=0.05 * np.abs(est.SN_).max())
    assert est.sample_y(X[:3], 5, random_state=0).shape == (5, 3)


def test_basis_functions():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(80, 1))
    t = np.sin(3 * x[:, 0]) + 0.1 * rng.normal(size=80)
    poly = BLR(basis="polynomial", degree=4, fit_evidence=False, alpha=0.5, beta=10.0).fit(x, t)
    Phi = np.hstack([x ** k for k in range(1, 5)])
    ref = BLR(basis=lambda X: np.hstack([X ** k for k in range(1, 5)]), fit_evidence=False, alpha=0.5,
              beta=10.0).fit(x, t)
    ident = BLR(fit_evidence=False, alpha=0.5, beta=10.0).fit(Phi, t)
    np.testing.assert_allclose(poly.mN_, ident.mN_, rtol=1e-10)
    np.testing.assert_allclose(ref.mN_, ident.mN_, rtol=1e-10)
    centers = np.linspace(-1, 1, 9)[:, None]
    rbf = BLR(basis="rbf", centers=centers, length_scale=0.3).fit(x, t)
    Phi_rbf = np.exp(-(x - centers.T) ** 2 / (2 * 0.3 ** 2))
    np.testing.assert_allclose(rbf.mN_, BLR().fit(Phi_rbf, t).mN_, rtol=1e-8)
    assert np.sqrt(np.mean((rbf.predict(x) - np.sin(3 * x[:, 0])) ** 2)) < 0.1


def test_torch_input_and_save_load(tmp_path):
    X, y = _data()
    for basis in ("identity", "polynomial", "rbf"):
        est = BLR(basis=basis, degree=2, centers=5, random_state=0).fit(torch.from_numpy(X), torch.from_numpy(y))
        path = str(tmp_path / f"{basis}.safetensors")
        est.save(path)
        back = BLR.load(path)
        np.testing.assert_allclose(back.predict(X, return_std=True), est.predict(X, return_std=True), rtol=1e-12)
        back.partial_fit(X[:10], y[:10])


def test_errors():
    X, y = _data()
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BLR().fit(Xn, y)
    with pytest.raises(ValueError, match="1 sample"):
        BLR().fit(X[:1], y[:1])
    est = BLR().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="S0"):
        BLR(S0=-np.eye(4), fit_intercept=False).fit(X, y)
    with pytest.raises(ValueError, match="m0"):
        BLR(m0=np.zeros(3)).fit(X, y)
    with pytest.warns(UserWarning, match="fitted exactly"):
        exact = BLR(fit_intercept=False).fit(X, X @ np.ones(4))
    assert np.isfinite(exact.beta_) and exact.beta_ > 1e5
    np.testing.assert_allclose(exact.coef_, np.ones(4), rtol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        BLR(alpha=-1.0).fit(X, y)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        BLR(max_iter=1).fit(X, y)
    assert any("did not converge" in str(x.message) for x in w)


@parametrize_with_checks([BLR(), BLR(basis="polynomial", degree=2)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_warnings_point_at_the_callers_line():
    X = np.random.default_rng(0).normal(size=(50, 3))
    for fit in (lambda: BLR().fit(X, X @ np.ones(3)),                    # exact fit
                lambda: BLR().fit(X, np.ones(50)),                       # constant targets
                lambda: BLR(max_iter=1).fit(X, np.arange(50.0))):        # not converged
        with pytest.warns(Warning) as rec:
            fit()
        assert rec[0].filename == __file__, (rec[0].filename, str(rec[0].message))
