"""The 1-D random walk against its closed forms: the exact trinomial law at small t, the mean
and the variance growing linearly in t (tolerances from the sample size), and the Gaussian limit
(Kolmogorov-Smirnov distance) at large t. Seeded."""

import math

import numpy as np
import pytest
from scipy import stats

from fastlearn.diffusion import random_walk, random_walk_mean, random_walk_variance


def trinomial_pmf(t, p, q):
    """P(X_t = k) for k = -t..t, from the counts of left (L) and right (R) jumps: independent
    reference for the simulator."""
    pmf = np.zeros(2 * t + 1)
    for left in range(t + 1):
        for right in range(t - left + 1):
            stay = t - left - right
            ways = math.factorial(t) // (math.factorial(left) * math.factorial(right) * math.factorial(stay))
            pmf[right - left + t] += ways * p ** left * q ** right * (1 - p - q) ** stay
    return pmf


@pytest.mark.parametrize("stepwise", [True, False], ids=["every-step", "binomial-jumps"])
@pytest.mark.parametrize("p,q", [(0.3, 0.3), (0.1, 0.5), (0.5, 0.5), (0.0, 0.4)])
def test_law_at_small_t_is_trinomial(stepwise, p, q):
    t, n = 6, 40_000
    times = None if stepwise else [2, t]
    walk = random_walk(n, t, p, q, random_state=1, times=times)
    final = walk.positions[-1]
    expected = trinomial_pmf(t, p, q) * n
    observed = np.bincount(final + t, minlength=2 * t + 1)
    keep = expected > 5                                                # chi-square validity
    assert observed[~keep].sum() <= max(5 * expected[~keep].sum(), 10)
    obs, exp = observed[keep], expected[keep]
    exp = exp * obs.sum() / exp.sum()
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-4, keep.sum() - 1), (chi2, keep.sum())


@pytest.mark.parametrize("p,q", [(0.25, 0.25), (0.2, 0.45)])
def test_variance_grows_linearly_with_the_closed_form_slope(p, q):
    n = 40_000
    times = np.arange(20, 401, 20)
    walk = random_walk(n, 400, p, q, random_state=7, times=times)
    var = walk.positions.var(axis=1, ddof=1)
    mean = walk.positions.mean(axis=1)
    # least-squares line through the sample variances
    slope, intercept = np.polyfit(times, var, 1)
    sigma2 = p + q - (q - p) ** 2
    # The sample variance at time t has relative standard error ~ sqrt(2 / (n - 1)) (near-Gaussian
    # law); the fitted slope is no worse than the last point's. 5 standard errors.
    assert abs(slope - sigma2) < 5 * math.sqrt(2 / (n - 1)) * sigma2, (slope, sigma2)
    assert abs(intercept) < 5 * math.sqrt(2 / (n - 1)) * sigma2 * times[-1]
    # linear, not curved: residuals of the line are within the noise of the points
    residual = var - (slope * times + intercept)
    assert np.all(np.abs(residual) < 5 * math.sqrt(2 / (n - 1)) * sigma2 * times)
    np.testing.assert_allclose(var, random_walk_variance(times, p, q), rtol=6 * math.sqrt(2 / (n - 1)))
    se_mean = np.sqrt(random_walk_variance(times, p, q) / n)
    assert np.all(np.abs(mean - random_walk_mean(times, p, q)) < 5 * se_mean)


def ks_to_standard_normal(positions, t, p, q):
    z = (positions - random_walk_mean(t, p, q)) / math.sqrt(random_walk_variance(t, p, q))
    # spread each lattice point uniformly over its cell, so a continuous limit can be compared
    jitter = np.random.default_rng(3).uniform(-0.5, 0.5, positions.shape) / math.sqrt(random_walk_variance(t, p, q))
    return stats.kstest(z + jitter, "norm").statistic


@pytest.mark.parametrize("p,q", [(0.3, 0.3), (0.15, 0.45)])
def test_distribution_tends_to_gaussian(p, q):
    n = 50_000
    walk = random_walk(n, 4000, p, q, random_state=11, times=[1, 4000])
    # Sampling noise of the KS statistic: P(D > 1.95 / sqrt(n)) ~ 1e-3. The Berry-Esseen bound
    # for the law itself at t = 4000 is C rho / (sigma^3 sqrt(t)) <= 0.5 / sqrt(sigma^2 t) < 0.012;
    # the Edgeworth term actually seen is far smaller, allow 0.005.
    bound = 1.95 / math.sqrt(n) + 0.005
    assert ks_to_standard_normal(walk.positions[1], 4000, p, q) < bound
    # ...and the check can fail: after one step the law (three atoms) is far from Gaussian.
    assert ks_to_standard_normal(walk.positions[0], 1, p, q) > 3 * bound


def test_start_and_all_times_shape():
    walk = random_walk(5, 10, 0.5, 0.5, random_state=0, start=-3)
    assert walk.positions.shape == (11, 5) and walk.positions.dtype == np.int64
    assert np.all(walk.positions[0] == -3)
    assert np.all(np.abs(np.diff(walk.positions, axis=0)) <= 1)
    np.testing.assert_array_equal(walk.times, np.arange(11))


def test_seeded_runs_repeat():
    a = random_walk(100, 50, 0.2, 0.3, random_state=5, times=[10, 50])
    b = random_walk(100, 50, 0.2, 0.3, random_state=5, times=[10, 50])
    np.testing.assert_array_equal(a.positions, b.positions)


def test_pure_drift_is_deterministic():
    walk = random_walk(4, 30, 0.0, 1.0, random_state=0, times=[7, 30])
    np.testing.assert_array_equal(walk.positions, [[7] * 4, [30] * 4])
    walk = random_walk(4, 30, 1.0, 0.0, random_state=0)
    np.testing.assert_array_equal(walk.positions[-1], [-30] * 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(p=0.7, q=0.5), "p \\+ q"),
    (dict(p=-0.1, q=0.5), "p must lie"),
    (dict(p=float("nan"), q=0.5), "p must be a finite"),
    (dict(p=0.2, q=0.2, times=[5, 3]), "strictly increasing"),
    (dict(p=0.2, q=0.2, times=[0, 101]), "n_steps=100"),
    (dict(p=0.2, q=0.2, times=[0.5]), "ints"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_walk(10, 100, **kwargs)


def test_memory_guard_and_counts():
    with pytest.raises(ValueError, match="pass times"):
        random_walk(100_000, 1_000, 0.2, 0.2)
    with pytest.raises(ValueError, match="n_particles"):
        random_walk(0, 10, 0.2, 0.2)
    with pytest.raises(TypeError, match="n_steps"):
        random_walk(10, 2.5, 0.2, 0.2)


def test_plot_helper_draws_paths_and_band():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from fastlearn.diffusion import plot_random_walk

    walk = random_walk(50, 100, 0.2, 0.3, random_state=0)
    ax = plot_random_walk(walk, 0.2, 0.3, n_paths=5)
    assert len(ax.lines) == 6                                           # 5 paths + the mean
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), 0.1 * np.arange(101))
    matplotlib.pyplot.close(ax.figure)
