"""MLEs against their closed forms (and scipy for the gamma), Fisher information against a
Monte Carlo estimate of E[score score^T] from scipy's log-densities, and the simulated
variance of the Gaussian mean estimator against the Cramér–Rao bound."""

import numpy as np
import pytest
from scipy import stats as st

import fastlearn.stats as fs


def test_mles_equal_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, 500)
    mu, var = fs.mle_gaussian(x)
    np.testing.assert_allclose([mu, var], [x.sum() / 500, ((x - x.sum() / 500) ** 2).sum() / 500], rtol=1e-12)
    b = (rng.random(400) < 0.3).astype(float)
    np.testing.assert_allclose(fs.mle_bernoulli(b), b.sum() / 400, rtol=1e-14)
    c = rng.integers(0, 5, 700)
    np.testing.assert_allclose(fs.mle_categorical(c), np.bincount(c, minlength=5) / 700, rtol=1e-14)
    p = rng.poisson(4.0, 300)
    np.testing.assert_allclose(fs.mle_poisson(p), p.sum() / 300, rtol=1e-14)
    e = rng.exponential(0.5, 300)
    np.testing.assert_allclose(fs.mle_exponential(e), 300 / e.sum(), rtol=1e-13)
    g = rng.gamma(2.5, 1.7, 3000)
    k, theta = fs.mle_gamma(g)
    k_ref, _, theta_ref = st.gamma.fit(g, floc=0)
    np.testing.assert_allclose([k, theta], [k_ref, theta_ref], rtol=1e-6)
    # the gamma MLE is a stationary point of the log-likelihood
    ll = lambda k_, t_: st.gamma.logpdf(g, k_, scale=t_).sum()  # noqa: E731
    assert ll(k, theta) >= max(ll(k * 1.001, theta), ll(k * 0.999, theta), ll(k, theta * 1.001))
    # batched: one estimate per row
    X = rng.normal(size=(4, 50))
    np.testing.assert_allclose(fs.mle("gaussian", X)[:, 0], X.mean(1), rtol=1e-12)


def _mc_fisher(logpdf, params, draws, h=1e-5):
    """E[score score^T] with the score from central differences of scipy's log-density."""
    params = np.asarray(params, float)
    scores = []
    for j in range(len(params)):
        up, dn = params.copy(), params.copy()
        up[j] += h
        dn[j] -= h
        scores.append((logpdf(draws, up) - logpdf(draws, dn)) / (2 * h))
    S = np.stack(scores, 1)
    return S.T @ S / len(draws)


@pytest.mark.parametrize("dist,params,logpdf", [
    ("gaussian", [1.0, 2.0], lambda x, p: st.norm.logpdf(x, p[0], np.sqrt(p[1]))),
    ("bernoulli", [0.3], lambda x, p: st.bernoulli.logpmf(x, p[0])),
    ("poisson", [3.0], lambda x, p: st.poisson.logpmf(x, p[0])),
    ("exponential", [2.0], lambda x, p: st.expon.logpdf(x, scale=1 / p[0])),
    ("gamma", [2.5, 1.5], lambda x, p: st.gamma.logpdf(x, p[0], scale=p[1])),
    ("categorical", [0.2, 0.5], lambda x, p: np.log(np.append(p, 1 - p.sum())[x.astype(int)])),
])
def test_fisher_information_matches_monte_carlo(dist, params, logpdf):
    draws = fs.sample(dist, params, 200_000, random_state=1)
    ref = _mc_fisher(logpdf, params, draws)
    I1 = fs.fisher_information(dist, params)
    np.testing.assert_allclose(I1, ref, rtol=0.03, atol=0.03 * np.abs(I1).max())
    np.testing.assert_allclose(fs.fisher_information(dist, params, n=7), 7 * I1, rtol=1e-14)
    np.testing.assert_allclose(fs.cramer_rao_bound(dist, params, n=7) @ (7 * I1), np.eye(len(params)), atol=1e-10)


def test_gaussian_mean_variance_approaches_cramer_rao_bound():
    sigma2, n = 4.0, 25
    study = fs.simulate_variance("gaussian", [1.0, sigma2], n, n_trials=40_000, random_state=0)
    np.testing.assert_allclose(study.bound[0, 0], sigma2 / n, rtol=1e-14)
    # the sample mean is efficient: its variance equals the bound (within Monte Carlo error ~1%)
    np.testing.assert_allclose(study.covariance[0, 0], sigma2 / n, rtol=0.03)
    assert abs(study.bias[0]) < 4 * np.sqrt(sigma2 / n / 40_000)
    # a custom, inefficient estimator (the median) has variance ~ pi/2 times the bound
    med = fs.simulate_variance("gaussian", [1.0, sigma2], 101, n_trials=4000, random_state=0,
                               estimator=lambda x: [np.median(x), np.var(x)])
    assert 1.35 < med.covariance[0, 0] / med.bound[0, 0] < 1.8


def test_poisson_and_exponential_efficiency():
    pois = fs.simulate_variance("poisson", [3.0], 40, n_trials=20_000, random_state=2)
    np.testing.assert_allclose(pois.efficiency, 1.0, rtol=0.04)
    # the exponential rate MLE is biased for small n: variance n^2 lam^2/((n-1)^2 (n-2)) > bound
    expo = fs.simulate_variance("exponential", [2.0], 10, n_trials=40_000, random_state=3)
    np.testing.assert_allclose(expo.covariance[0, 0], 100 * 4 / (81 * 8), rtol=0.06)


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        fs.mle_gaussian([])
    with pytest.raises(ValueError, match="NaN"):
        fs.mle_poisson([1.0, np.nan])
    with pytest.raises(ValueError, match="only 0 and 1"):
        fs.mle_bernoulli([0, 2])
    with pytest.raises(ValueError, match="non-negative"):
        fs.mle_poisson([1, -1])
    with pytest.raises(ValueError, match="strictly positive"):
        fs.mle_gamma([1.0, 0.0])
    with pytest.raises(ValueError, match="equal"):
        fs.mle_gamma([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="parameter space"):
        fs.fisher_information("gaussian", [0.0, -1.0])
    with pytest.raises(ValueError, match="unknown distribution"):
        fs.cramer_rao_bound("cauchy", [0.0])
    with pytest.raises(ValueError, match="n_trials"):
        fs.simulate_variance("poisson", [1.0], 10, n_trials=1)
