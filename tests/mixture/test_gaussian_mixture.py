"""GaussianMixture against scikit-learn's: from the same initial parameters every EM
iteration's lower bound (1e-10 relative in float64, 1e-5 in float32), the fitted parameters,
predictions and scores; the fused E-step statistics against scikit-learn's M-step
formulas; initialisations, n_init, warm start; check_estimator; bad input; re-seeding of
collapsed components; torch input; save/load without pickle."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky, _estimate_gaussian_parameters
from sklearn.utils.estimator_checks import check_estimator

from fastlearn.mixture import GaussianMixture
from fastlearn.mixture._gaussian import gaussian_pass, m_step

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n=500, d=4, k=3, seed=0, dtype=np.float64):
    X, _ = make_blobs(n, n_features=d, centers=k, cluster_std=([1.0, 2.0, 0.5] * k)[:k], random_state=seed)
    return X.astype(dtype)


def random_init(X, cov_type, k=3, seed=1):
    """Initial parameters from scikit-learn's own random initialisation (max_iter=0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGM(k, covariance_type=cov_type, max_iter=0, init_params="random", random_state=seed).fit(X)
    return dict(weights_init=sk.weights_, means_init=sk.means_, precisions_init=sk.precisions_)


def fit_both(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SkGM(**kw).fit(X), GaussianMixture(**kw).fit(X)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_every_iteration_matches_sklearn_float64(cov_type):
    X = blobs()
    kw = dict(n_components=3, covariance_type=cov_type, max_iter=25, tol=0.0, **random_init(X, cov_type))
    sk, fl = fit_both(X, **kw)
    a, b = np.array(sk.lower_bounds_), np.array(fl.lower_bounds_)
    assert len(a) == len(b) == 25
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=0)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(fl, name), getattr(sk, name), rtol=1e-8, atol=1e-10, err_msg=name)
        assert getattr(fl, name).dtype == np.float64
    assert fl.n_iter_ == sk.n_iter_ and fl.converged_ == sk.converged_
    np.testing.assert_array_equal(fl.predict(X), sk.predict(X))
    np.testing.assert_allclose(fl.predict_proba(X), sk.predict_proba(X), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fl.score_samples(X), sk.score_samples(X), rtol=1e-10)
    assert fl.score(X) == pytest.approx(sk.score(X), rel=1e-10)
    assert fl.bic(X) == pytest.approx(sk.bic(X), rel=1e-10)
    assert fl.aic(X) == pytest.approx(sk.aic(X), rel=1e-10)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_lower_bounds_match(cov_type):
    X = blobs(dtype=np.float32)
    kw = dict(n_components=3, covariance_type=cov_type, max_iter=10, tol=0.0, **random_init(X, cov_type))
    sk, fl = fit_both(X, **kw)
    np.testing.assert_allclose(fl.lower_bounds_, sk.lower_bounds_, rtol=1e-5)
    assert fl.means_.dtype == np.float32 and fl.covariances_.dtype == np.float32
    np.testing.assert_allclose(fl.means_, sk.means_, rtol=1e-3, atol=1e-3)
    assert (fl.predict(X) == sk.predict(X)).mean() > 0.99


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("D", [1, 7, 33])
def test_fused_statistics_match_sklearn_m_step(cov_type, D):
    rng = np.random.default_rng(D)
    N, K = 211, 4
    X = rng.normal(size=(N, D)) * 2 + 5
    resp = rng.dirichlet(np.ones(K), size=N)
    _, means, cov = _estimate_gaussian_parameters(X, resp, 1e-6, cov_type)
    pc = _compute_precision_cholesky(cov, cov_type)
    log_w = np.log(np.full(K, 1 / K))
    out = gaussian_pass(X, means, pc, cov_type, log_w, stats=True, log_norm=True)
    from sklearn.mixture._gaussian_mixture import _estimate_log_gaussian_prob
    from scipy.special import logsumexp

    wlp = _estimate_log_gaussian_prob(X, means, pc, cov_type) + log_w
    lse = logsumexp(wlp, axis=1)
    np.testing.assert_allclose(out["log_norm"], lse, rtol=1e-12)
    assert out["loglik"] == pytest.approx(lse.sum(), rel=1e-12)
    r = np.exp(wlp - lse[:, None])
    nk_ref, mu_ref, cov_ref = _estimate_gaussian_parameters(X, r, 1e-6, cov_type)
    Xc = X - X.mean(0)
    w, mu, c2 = m_step(out, means, cov_type, 1e-6, np.float64, Xc.T @ Xc, X.mean(0))
    np.testing.assert_allclose(w, nk_ref / nk_ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(c2, cov_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("init_params", ["random", "random_from_data", "k-means++"])
def test_random_initialisations_reproduce_sklearn(init_params, covariance_type):
    # The same random_state draws the same initial responsibilities as scikit-learn. 'tied' from
    # single points (responsibilities that do not sum to one per sample) checks the correction
    # to the centred tied scatter: without it the first bound was 5.6e-2 off.
    X = blobs(300) + 5.0
    kw = dict(n_components=3, init_params=init_params, random_state=0, max_iter=15, tol=0.0, reg_covar=1e-3,
              covariance_type=covariance_type)
    sk, fl = fit_both(X, **kw)
    np.testing.assert_allclose(fl.lower_bounds_, sk.lower_bounds_, rtol=1e-9)


def test_kmeans_init_and_n_init():
    X = blobs(400, seed=3)
    fl = GaussianMixture(3, n_init=3, random_state=0).fit(X)
    sk = SkGM(3, n_init=3, random_state=0).fit(X)
    assert fl.converged_ and fl.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-6)
    assert fl.lower_bound_ == fl.lower_bounds_[-1]
    assert np.array_equal(fl.fit_predict(X), fl.predict(X))


def test_warm_start_continues():
    X = blobs()
    kw = dict(n_components=3, max_iter=2, tol=0.0, warm_start=True, **random_init(X, "full"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk, fl = SkGM(**kw), GaussianMixture(**kw)
        for _ in range(3):
            sk.fit(X)
            fl.fit(X)
            np.testing.assert_allclose(fl.lower_bounds_, sk.lower_bounds_, rtol=1e-10)


def test_convergence_warning_and_max_iter_zero():
    X = blobs()
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)
    gm = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert gm.n_iter_ == 0 and gm.lower_bounds_ == []


def test_check_estimator():
    # The instance scikit-learn's own suite uses for its GaussianMixture; no expected failures.
    check_estimator(GaussianMixture(n_init=2, max_iter=5))


def test_bad_input():
    X = blobs(50)
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X))
    with pytest.raises(ValueError, match="minimum of 2"):
        GaussianMixture(1).fit(X[:1])
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(X[:4])
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(0).fit(X)
    with pytest.raises(ValueError, match="reg_covar"):
        GaussianMixture(2, reg_covar=-1.0).fit(X)
    with pytest.raises(ValueError, match="normalized"):
        GaussianMixture(2, weights_init=[0.3, 0.3]).fit(X)
    with pytest.raises(ValueError, match="means_init must have shape"):
        GaussianMixture(2, means_init=np.zeros((3, 4))).fit(X)
    with pytest.raises(ValueError, match="positive-definite"):
        GaussianMixture(2, precisions_init=-np.stack([np.eye(4)] * 2)).fit(X)
    # Singular data without reg_covar: scikit-learn's message and its advice.
    singular = np.repeat(np.arange(6.0)[:, None], 3, axis=1)
    with pytest.raises(ValueError, match="increase reg_covar"):
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(singular)


def test_collapse_reseed_carries_on():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(200, 2)), np.tile([[8.0, 8.0]], (3, 1))])  # 3 identical points
    means = np.array([[0.0, 0.0], [8.0, 8.0], [1.0, 1.0]])
    kw = dict(n_components=3, reg_covar=0.0, means_init=means, random_state=0, max_iter=20)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(**kw).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(on_collapse="reseed", **kw).fit(X)
    assert gm.n_reseeded_ >= 1
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.covariances_))
    assert np.isfinite(gm.score(X))


def test_torch_input_and_sample():
    X = blobs()
    gm = GaussianMixture(3, random_state=0).fit(torch.as_tensor(X))
    ref = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(gm.means_, ref.means_)
    labels = gm.predict(torch.as_tensor(X))
    assert isinstance(labels, torch.Tensor) and np.array_equal(labels.numpy(), ref.predict(X))
    Xs, ys = gm.sample(500)
    assert Xs.shape == (500, 4) and ys.shape == (500,) and np.bincount(ys, minlength=3).sum() == 500
    if not torch.cuda.is_available():  # tests/mixture/test_gpu_path.py covers the message in detail
        with pytest.raises(RuntimeError, match="cuda"):
            GaussianMixture(3, device="cuda").fit(X)


def test_save_load_roundtrip(tmp_path):
    X = blobs()
    for cov_type in COV_TYPES:
        gm = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(X)
        path = tmp_path / f"gm_{cov_type}.safetensors"
        gm.save(path)
        back = GaussianMixture.load(path)
        np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))
        assert back.covariance_type == cov_type and back.lower_bounds_ == gm.lower_bounds_
        assert back.converged_ == gm.converged_ and back.n_iter_ == gm.n_iter_
    # initial values and a RandomState: the arrays are kept, the RandomState is saved as None
    gm = GaussianMixture(3, max_iter=5, random_state=np.random.RandomState(0), **random_init(X, "full")).fit(X)
    gm.save(tmp_path / "gm_init.safetensors")
    back = GaussianMixture.load(tmp_path / "gm_init.safetensors")
    np.testing.assert_array_equal(back.means_init, gm.means_init)
    assert back.random_state is None
    np.testing.assert_array_equal(back.predict_proba(X), gm.predict_proba(X))
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a fastlearn estimator file"):
        GaussianMixture.load(tmp_path / "other.npy")
    with pytest.raises(ValueError, match="holds a KMeans"):
        GaussianMixture.load(_saved_kmeans(X, tmp_path))


def _saved_kmeans(X, tmp_path):
    from fastlearn.cluster import KMeans

    KMeans(2, n_init=1, random_state=0).fit(X).save(tmp_path / "km.safetensors")
    return tmp_path / "km.safetensors"


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_overlapping_components_match_sklearn_every_iteration(dtype, rtol):
    """16 overlapping components in 16 features: in float32 the E-step takes the lifted
    products (means near their centre; see test_full_kernel.py), and every lower bound still
    matches; float64 (the triangular pass) on the same data."""
    rng = np.random.default_rng(4)
    centers = rng.normal(scale=0.4, size=(16, 16))
    X = (centers[rng.integers(0, 16, 3000)] + rng.normal(size=(3000, 16)) + 2.0).astype(dtype)
    init = dict(weights_init=np.full(16, 1 / 16), means_init=centers + 2.0 + 0.2 * rng.normal(size=(16, 16)),
                precisions_init=np.stack([np.eye(16)] * 16))
    kw = dict(n_components=16, covariance_type="full", max_iter=15, tol=0.0, **init)
    sk, fl = fit_both(X, **kw)
    np.testing.assert_allclose(fl.lower_bounds_, sk.lower_bounds_, rtol=rtol, atol=0)
    close = dict(rtol=1e-7, atol=1e-9) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-3)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(fl, name), getattr(sk, name), err_msg=name, **close)
    assert (fl.predict(X) == sk.predict(X)).mean() > (0.999 if dtype == np.float64 else 0.99)
