"""The GPU path of GaussianMixture (mixture/_gpu.py, kernels/triton/gaussian_estep.py).

Without a GPU the whole algorithm runs on CPU tensors under TRITON_INTERPRET=1 (the private
``_backend = 'triton'`` switch): the fused E-step against a float64 NumPy/scikit-learn
re-implementation of the equations, EM against the CPU path and scikit-learn (1e-10 per
iteration in float64, 1e-5 in float32), inference, outputs following the input type, bad
input, interruption and progress. Tests marked cuda run the real device='cuda' path."""

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.mixture._gaussian_mixture import (_compute_precision_cholesky, _estimate_gaussian_parameters,
                                               _estimate_log_gaussian_prob)

from fastlearn.mixture import GaussianMixture
from fastlearn.mixture import _gpu
from tests.mixture.test_gaussian_mixture import blobs as _blobs
from tests.mixture.test_gaussian_mixture import random_init
from tests.triton_path import DEVICE, T, on_triton

COV_TYPES = ["full", "tied", "diag", "spherical"]
pytestmark = pytest.mark.triton


def blobs(n=120, **kw):  # the CPU tests' data, smaller by default (the interpreter is slow)
    return _blobs(n, **kw)


def quiet_fit(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X)


def reference_estep(X, means, pc, log_w, cov_type):
    """float64 E-step from scikit-learn's log-density: log_norm, resp and the statistics
    about the current means, computed directly (N x K matrices)."""
    wlp = _estimate_log_gaussian_prob(X, means, pc, cov_type) + log_w
    lse = logsumexp(wlp, axis=1)
    r = np.exp(wlp - lse[:, None])
    K, D = means.shape
    s1, s2 = np.zeros((K, D)), np.zeros((K, D, D)) if cov_type == "full" else np.zeros((K, D))
    for k in range(K):
        Xc = X - means[k]
        s1[k] = r[:, k] @ Xc
        s2[k] = (r[:, k] * Xc.T) @ Xc if cov_type == "full" else r[:, k] @ (Xc * Xc)
    # The size of the summed terms: the scale of the rounding error of s1, s2 (s1 about the
    # data mean is ~0 by construction, so its own size is no scale).
    Xc = np.abs(X - X.mean(0))
    scale = dict(s1=Xc.sum(0).max(), s2=(Xc * Xc).sum(0).max())
    return dict(loglik=lse.sum(), log_norm=lse, resp=r, labels=wlp.argmax(1), nk=r.sum(0), s1=s1, s2=s2,
                scale=scale)


def params(N, D, K, cov_type, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * rng.uniform(0.5, 3, size=D) + rng.normal(size=D) + offset
    resp = rng.dirichlet(np.ones(K), size=N)
    nk, means, cov = _estimate_gaussian_parameters(X, resp, 1e-6, cov_type)
    return X, means, _compute_precision_cholesky(cov, cov_type), np.log(nk / N)


# --- the fused kernel ---------------------------------------------------------------------------

@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("N,D,K,programs", [(97, 5, 3, None), (600, 3, 1, 1), (40, 70, 2, None)])
def test_fused_estep_matches_float64_reference(cov_type, N, D, K, programs):
    # D=70: P_k and the scatter in two column slabs; programs=1: one program walks several
    # blocks (its float64 slots are read, added to and written back).
    X, means, pc, log_w = params(N, D, K, cov_type, seed=N + D)
    out = _gpu.estep(T(X), T(means), T(pc), T(log_w), cov_type,
                     stats=True, log_norm=True, labels=True, resp=True, programs=programs)
    ref = reference_estep(X, means, pc, log_w, cov_type)
    assert float(out["loglik"]) == pytest.approx(ref["loglik"], rel=1e-12)
    np.testing.assert_allclose(out["log_norm"].cpu().numpy(), ref["log_norm"], rtol=1e-12)
    np.testing.assert_allclose(out["resp"].cpu().numpy(), ref["resp"], rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(out["labels"].cpu().numpy(), ref["labels"])
    np.testing.assert_allclose(out["nk"].cpu().numpy(), ref["nk"], rtol=1e-12)
    for name in ("s1", "s2") if cov_type != "tied" else ("s1",):
        np.testing.assert_allclose(out[name].cpu().numpy(), ref[name], rtol=0, atol=1e-13 * ref["scale"][name],
                                   err_msg=name)
    assert out["nk"].dtype == torch.float64


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_fused_estep_float32_with_offset_data(cov_type):
    # Data far from the origin (offset 1000): statistics about the current means (and, for
    # 'tied', products of x - c) keep float32 accuracy where raw moments would cancel.
    X, means, pc, log_w = params(257, 9, 3, cov_type, seed=3, offset=1000.0)
    f = lambda a: T(a, dtype=torch.float32)  # noqa: E731
    out = _gpu.estep(f(X), f(means), f(pc), T(log_w), cov_type, stats=True, programs=2)
    ref = reference_estep(X.astype(np.float32).astype(np.float64), means.astype(np.float32).astype(np.float64),
                          pc.astype(np.float32).astype(np.float64), log_w, cov_type)
    assert float(out["loglik"]) == pytest.approx(ref["loglik"], rel=1e-5)
    np.testing.assert_allclose(out["nk"].cpu().numpy(), ref["nk"], rtol=1e-5)
    for name in ("s1", "s2") if cov_type != "tied" else ("s1",):
        np.testing.assert_allclose(out[name].cpu().numpy(), ref[name], rtol=0, atol=1e-6 * ref["scale"][name],
                                   err_msg=name)


@pytest.mark.parametrize("s1_dot,xt_load,split,allk_j", [(False, False, False, 0), (True, False, False, 0),
                                                          (False, True, False, 0), (True, True, True, 0),
                                                          (True, True, False, 32), (True, True, True, 64)])
def test_full_statistics_variants(monkeypatch, s1_dot, xt_load, split, allk_j):
    # The kernel's other ways to the full-covariance statistics (first moments per component
    # about its mean; the scatter's left side transposed in registers; the statistics in a
    # second launch per component and chunk of points) and to the log-densities (all
    # components' products in slabs of ALLK_J columns, about the centre of the means) give the
    # same numbers. D=70 is past the split launch's 64 features: there the fused kernel takes
    # the statistics.
    monkeypatch.setattr(_gpu, "ESTEP_FULL_OPTIONS", dict(S1_DOT=s1_dot, XT_LOAD=xt_load, PRECISION_S=None,
                                                         SPLIT=split, ALLK_J=allk_j))
    test_fused_estep_matches_float64_reference("full", 97, 5, 3, None)
    test_fused_estep_matches_float64_reference("full", 40, 70, 2, 1)
    test_fused_estep_float32_with_offset_data("full")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_split_statistics_over_chunks_and_groups(monkeypatch, dtype):
    # The split launch with 3 chunks of 6 point blocks (the last one short, its last block
    # partial) and float32 sums of 2 blocks between the float64 slot updates: every block of
    # every component is counted once, as in the float64 reference.
    from fastlearn.kernels.triton import gaussian_estep as tk

    real = tk.split_stats_config
    seen = []

    def config(*args, **kw):
        meta, chunks = real(*args, **kw)
        seen.append(meta["BLOCK_N"])
        return dict(meta, BLOCK_N=16, INNER=2), 3

    monkeypatch.setattr(tk, "split_stats_config", config)
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "SPLIT", True)
    X, means, pc, log_w = params(263, 16, 4, "full", seed=11, offset=5.0)
    out = _gpu.estep(T(X, dtype=dtype), T(means, dtype=dtype), T(pc, dtype=dtype), T(log_w), "full",
                     stats=True, log_norm=True, labels=True)
    assert seen  # the split launch ran
    f = lambda a: a.astype(np.float32).astype(np.float64) if dtype == torch.float32 else a  # noqa: E731
    ref = reference_estep(f(X), f(means), f(pc), log_w, "full")
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert float(out["loglik"]) == pytest.approx(ref["loglik"], rel=tol)
    np.testing.assert_allclose(out["log_norm"].cpu().numpy(), ref["log_norm"], rtol=tol)
    np.testing.assert_array_equal(out["labels"].cpu().numpy(), ref["labels"])
    np.testing.assert_allclose(out["nk"].cpu().numpy(), ref["nk"], rtol=tol)
    for name in ("s1", "s2"):
        np.testing.assert_allclose(out[name].cpu().numpy(), ref[name], rtol=0, atol=tol * ref["scale"][name],
                                   err_msg=name)


@pytest.mark.parametrize("allk_j,split", [(0, False), (64, False), (64, True)])
def test_float32_log_densities_of_separated_components_far_from_the_origin(monkeypatch, allk_j, split):
    # Components ~45 standard deviations apart, data 1000 from the origin, float32: with all
    # components' products taken about the centre of the means (ALLK_J) the products of
    # x - c and b_k = (mu_k - c) P_k are large and their difference cancels, yet each
    # log_norm stays within 2e-5 of float64 (7e-6 seen; 5e-6 one product a component).
    # With the split statistics the second launch takes the log-density the same way (r =
    # exp(w_k - log_norm) has no log-sum-exp of its own to absorb a difference): N_k within
    # 8e-8 of float64 under the interpreter, 6e-7 when it took x - mu_k instead.
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "ALLK_J", allk_j)
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "SPLIT", split)
    rng = np.random.default_rng(0)
    N, D, K = 600, 32, 8
    centers = rng.normal(scale=8.0, size=(K, D)) + 1000.0
    X = centers[rng.integers(0, K, N)] + rng.normal(size=(N, D))
    A = rng.normal(size=(K, D, D)) * 0.15
    pc = _compute_precision_cholesky(np.eye(D) + A @ A.transpose(0, 2, 1), "full")
    log_w = np.full(K, -np.log(K))
    f = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    ref = reference_estep(f(X), f(centers + 0.3), f(pc), log_w, "full")
    g = lambda a: T(a, dtype=torch.float32)  # noqa: E731
    out = _gpu.estep(g(X), g(centers + 0.3), g(pc), T(log_w), "full", log_norm=True, labels=True, stats=True)
    assert float(out["loglik"]) == pytest.approx(ref["loglik"], rel=1e-7)
    np.testing.assert_allclose(out["log_norm"].cpu().numpy(), ref["log_norm"], rtol=0, atol=2e-5)
    np.testing.assert_array_equal(out["labels"].cpu().numpy(), ref["labels"])
    tol = 3e-7 if DEVICE == "cpu" else 2e-6  # the interpreter's float32 products are NumPy's
    np.testing.assert_allclose(out["nk"].cpu().numpy(), ref["nk"], rtol=0, atol=tol * ref["nk"].max())
    for name in ("s1", "s2"):
        np.testing.assert_allclose(out[name].cpu().numpy(), ref[name], rtol=0, atol=tol * ref["scale"][name],
                                   err_msg=name)


def test_split_statistics_em_matches_cpu_path(monkeypatch):
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "SPLIT", True)
    X = blobs()
    kw = dict(n_components=3, covariance_type="full", max_iter=4, tol=0.0, **random_init(X, "full"))
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(gpu.covariances_, cpu.covariances_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("allk_j", [0, 64])
def test_split_statistics_em_float32(monkeypatch, allk_j):
    # float32, 40 features: r = exp(w_k - log_norm) from a recomputed w_k, as scikit-learn's
    # own float32 E-step takes it; the lower bounds stay within 1e-5 of scikit-learn's float64
    # fit (within 8e-7 seen under the interpreter)
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "SPLIT", True)
    monkeypatch.setitem(_gpu.ESTEP_FULL_OPTIONS, "ALLK_J", allk_j)
    X = blobs(600, d=40, k=4, seed=3, dtype=np.float32)
    kw = dict(n_components=4, covariance_type="full", max_iter=5, tol=0.0, reg_covar=1e-4,
              **random_init(X, "full", k=4))
    sk = quiet_fit(SkGM(**kw), X.astype(np.float64))
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    np.testing.assert_allclose(gpu.lower_bounds_, sk.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(gpu.means_, sk.means_, rtol=0, atol=1e-3)


def test_split_statistics_config():
    from fastlearn.kernels.triton import gaussian_estep as tk

    # H100-like: about 8 programs a multiprocessor over (K, chunks); none past 64 features;
    # the slots stay within the budget at K=256; never more chunks than point blocks.
    meta, chunks = tk.split_stats_config(1_000_000, 32, 16, False, n_sm=132)
    assert chunks == 66 and meta["BLOCK_D"] == 32
    assert tk.split_stats_config(1_000_000, 65, 16, False, n_sm=132) is None
    meta, chunks = tk.split_stats_config(2_000_000, 64, 256, True, n_sm=132)
    assert chunks * 256 * (1 + 64 + 64 * 64) * 8 <= 256 << 20 and chunks >= 1
    assert tk.split_stats_config(100, 8, 2, False, n_sm=132)[1] == 2


def _tf32(a):
    """Round float32 to TF32 (10 explicit mantissa bits, round to nearest) as the tensor cores."""
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _dot_tf32x3(a, b):
    a_hi, b_hi = _tf32(a), _tf32(b)
    a_lo, b_lo = _tf32(a - a_hi), _tf32(b - b_hi)
    return (a_hi @ b_lo + a_lo @ b_hi) + a_hi @ b_hi


def test_tf32x3_precision_meets_the_float32_bound():
    # The interpreter computes tl.dot exactly, so the choice of input_precision='tf32x3' for
    # float32 is checked here by emulating its three TF32 products in NumPy on the kernel's
    # two dots (the log-density and the scatter): the lower bound must stay within 1e-5 of
    # float64 (the float32 tolerance) and the scatter within 1e-4. Plain 'tf32'
    # (one product) misses both, which is why it is not used.
    X, means, pc, log_w = params(1024, 32, 4, "full", seed=5, offset=3.0)
    X32, mu32, pc32 = X.astype(np.float32), means.astype(np.float32), pc.astype(np.float32)
    ref = reference_estep(X32.astype(np.float64), mu32.astype(np.float64), pc32.astype(np.float64), log_w, "full")

    def estep(dot):
        logdet = np.log(np.diagonal(pc32, axis1=1, axis2=2)).sum(1)
        wlp = np.stack([-0.5 * (dot(X32 - mu32[k], pc32[k]) ** 2).sum(1) for k in range(4)], 1)
        wlp = wlp + (logdet - 16 * np.log(2 * np.pi) + log_w).astype(np.float32)
        lse = logsumexp(wlp.astype(np.float64), axis=1)
        r = np.exp(wlp - lse[:, None]).astype(np.float32)
        s2 = np.stack([dot(((X32 - mu32[k]) * r[:, k:k + 1]).T, X32 - mu32[k]) for k in range(4)])
        return lse.sum(), s2

    for dot, ok in ((_dot_tf32x3, True), (lambda a, b: _tf32(a) @ _tf32(b), False)):
        ll, s2 = estep(dot)
        err_ll = abs(ll - ref["loglik"]) / abs(ref["loglik"])
        err_s2 = np.abs(s2 - ref["s2"]).max() / np.abs(ref["s2"]).max()
        assert (err_ll < 1e-5 and err_s2 < 1e-4) == ok, (err_ll, err_s2)


def test_partial_slots_do_not_grow_with_n():
    from fastlearn.kernels.triton import gaussian_estep as tk

    # H100-like: 132 multiprocessors. The float64 partial slots (programs x K x D x D) are the
    # only memory besides X and its N-sized outputs: the same for 2,000,000 as for 200,000 points.
    cfg = [tk.launch_config(n, 32, 256, False, n_sm=132, cov=0) for n in (200_000, 2_000_000)]
    assert cfg[0] == cfg[1]
    meta, programs = cfg[1]
    assert programs * 256 * 32 * 32 * 8 <= 256 << 20
    assert meta["BLOCK_N"] * meta["BLOCK_K"] <= 8192


# --- EM -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_em_iterations_match_cpu_path_and_sklearn_float64(cov_type):
    X = blobs()
    kw = dict(n_components=3, covariance_type=cov_type, max_iter=6, tol=0.0, **random_init(X, cov_type))
    sk = quiet_fit(SkGM(**kw), X)
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    assert len(gpu.lower_bounds_) == 6
    np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(gpu.lower_bounds_, sk.lower_bounds_, rtol=1e-10, atol=0)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert isinstance(getattr(gpu, name), np.ndarray) and getattr(gpu, name).dtype == np.float64
        np.testing.assert_allclose(getattr(gpu, name), getattr(sk, name), rtol=1e-8, atol=1e-10, err_msg=name)
    assert gpu.n_iter_ == sk.n_iter_ and gpu.converged_ == sk.converged_


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_em_iterations_float32(cov_type):
    X = blobs(dtype=np.float32)
    kw = dict(n_components=3, covariance_type=cov_type, max_iter=5, tol=0.0, **random_init(X, cov_type))
    sk = quiet_fit(SkGM(**kw), X.astype(np.float64))
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(gpu.lower_bounds_, sk.lower_bounds_, rtol=1e-5)
    assert gpu.means_.dtype == np.float32
    np.testing.assert_allclose(gpu.means_, sk.means_, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("init_params", ["kmeans", "random", "random_from_data", "k-means++"])
def test_initialisations_match_cpu_path(init_params):
    # Same random_state, same initial parameters as the CPU path. random_from_data and
    # k-means++ start from one sample a component (covariance reg_covar I): the first bound is
    # about -1e6 and ill-conditioned (the CPU path and scikit-learn differ at 5e-10 there too),
    # so that one is held to 1e-8.
    X = blobs(150, seed=2)
    kw = dict(n_components=3, init_params=init_params, random_state=0, max_iter=4, tol=0.0)
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    np.testing.assert_allclose(gpu.lower_bounds_[0], cpu.lower_bounds_[0], rtol=1e-8)
    np.testing.assert_allclose(gpu.lower_bounds_[1:], cpu.lower_bounds_[1:], rtol=1e-10)
    np.testing.assert_allclose(gpu.means_, cpu.means_, rtol=1e-9, atol=1e-10)


def test_inference_matches_cpu_path_and_follows_input_type():
    X = blobs()
    kw = dict(n_components=3, covariance_type="full", max_iter=3, tol=0.0, **random_init(X, "full"))
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(**kw)), T(X))
    Xt = T(X)
    labels = gpu.predict(Xt)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.cpu().numpy(), cpu.predict(X))
    np.testing.assert_allclose(gpu.predict_proba(Xt).cpu().numpy(), cpu.predict_proba(X), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gpu.score_samples(Xt).cpu().numpy(), cpu.score_samples(X), rtol=1e-11)
    assert gpu.score(Xt) == pytest.approx(cpu.score(X), rel=1e-11)
    assert gpu.bic(Xt) == pytest.approx(cpu.bic(X), rel=1e-11)
    assert gpu.aic(Xt) == pytest.approx(cpu.aic(X), rel=1e-11)
    out = gpu.score_samples(X)  # NumPy in (forced GPU path): NumPy out
    assert isinstance(out, np.ndarray)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert isinstance(on_triton(GaussianMixture(**kw)).fit_predict(Xt), torch.Tensor)
    Xs, ys = gpu.sample(50)
    assert Xs.shape == (50, 4) and ys.shape == (50,)


def test_warm_start_n_init_and_max_iter_zero():
    X = blobs()
    kw = dict(n_components=3, max_iter=2, tol=0.0, warm_start=True, **random_init(X, "diag"),
              covariance_type="diag")
    cpu, gpu = GaussianMixture(**kw), on_triton(GaussianMixture(**kw))
    for _ in range(2):
        quiet_fit(cpu, X)
        quiet_fit(gpu, T(X))
        np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=1e-10)
    g0 = quiet_fit(on_triton(GaussianMixture(3, max_iter=0, init_params="random", random_state=0)), T(X))
    c0 = quiet_fit(GaussianMixture(3, max_iter=0, init_params="random", random_state=0), X)
    assert g0.n_iter_ == 0 and g0.lower_bounds_ == []
    np.testing.assert_allclose(g0.means_, c0.means_, rtol=1e-12)
    kw = dict(n_components=2, n_init=2, max_iter=3, init_params="random", random_state=0, covariance_type="spherical")
    np.testing.assert_allclose(quiet_fit(on_triton(GaussianMixture(**kw)), T(X)).lower_bound_,
                               quiet_fit(GaussianMixture(**kw), X).lower_bound_, rtol=1e-10)


def test_collapse_reseed_matches_cpu_path():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(120, 2)), np.tile([[8.0, 8.0]], (3, 1))])  # 3 identical points
    kw = dict(n_components=3, reg_covar=0.0, means_init=np.array([[0.0, 0.0], [8.0, 8.0], [1.0, 1.0]]),
              random_state=0, max_iter=4)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        on_triton(GaussianMixture(**kw)).fit(T(X))
    cpu = quiet_fit(GaussianMixture(on_collapse="reseed", **kw), X)
    gpu = quiet_fit(on_triton(GaussianMixture(on_collapse="reseed", **kw)), T(X))
    if DEVICE == "cpu":
        assert gpu.n_reseeded_ == cpu.n_reseeded_ >= 1
        np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=1e-10)
    else:  # whether a nearly singular re-seeded covariance factors is up to the device's rounding
        assert gpu.n_reseeded_ >= 1 and np.isfinite(gpu.lower_bounds_).all()
        np.testing.assert_allclose(gpu.lower_bounds_[0], cpu.lower_bounds_[0], rtol=1e-10)


def test_bad_input():
    X = T(blobs(40))
    gm = on_triton(GaussianMixture(2, max_iter=2))
    bad = X.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gm.fit(bad)
    with pytest.raises(ValueError, match="2D"):
        gm.fit(X[:, 0])
    with pytest.raises(ValueError, match="minimum of 2"):
        gm.fit(X[:1])
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        on_triton(GaussianMixture(5)).fit(X[:4])
    quiet_fit(gm, X)
    with pytest.raises(ValueError, match="expecting 4 features"):
        gm.predict(X[:, :3])
    ints = quiet_fit(on_triton(GaussianMixture(2, max_iter=2)), (X * 10).to(torch.int64))
    assert ints.means_.dtype == np.float64  # integers are read as float64, as validate_data does


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_device_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        GaussianMixture(2, device="cuda").fit(blobs(20))


def test_interrupt_keeps_best_fit_so_far(monkeypatch):
    X = T(blobs())
    kw = dict(n_components=3, max_iter=10, tol=0.0, **random_init(blobs(), "full"))
    real = _gpu._Fit.em_step
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(_gpu._Fit, "em_step", flaky)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        gm = on_triton(GaussianMixture(**kw)).fit(X)
    monkeypatch.setattr(_gpu._Fit, "em_step", real)
    two = quiet_fit(GaussianMixture(**{**kw, "max_iter": 2}), X.cpu().numpy())
    assert gm.n_iter_ == 2 and len(gm.lower_bounds_) == 2
    np.testing.assert_allclose(gm.means_, two.means_, rtol=1e-10)
    assert gm.predict(X).shape == (X.shape[0],)


def test_progress_bar_with_verbose(capsys):
    X = T(blobs(60))
    quiet_fit(on_triton(GaussianMixture(2, max_iter=2, tol=0.0, verbose=1, init_params="random", random_state=0)), X)
    err = capsys.readouterr().err
    assert "GaussianMixture" in err  # the tqdm bar's description, on stderr


def test_cpu_path_progress_and_interrupt(monkeypatch, capsys):
    # The same two behaviours on the CPU path's EM loop (C++ E-step).
    X = blobs()
    kw = dict(n_components=3, max_iter=10, tol=0.0, **random_init(X, "full"))
    quiet_fit(GaussianMixture(**{**kw, "max_iter": 2}, verbose=1), X)
    assert "GaussianMixture" in capsys.readouterr().err
    real = GaussianMixture._em_step
    calls = []

    def flaky(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(GaussianMixture, "_em_step", flaky)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        gm = GaussianMixture(**kw).fit(X)
    monkeypatch.setattr(GaussianMixture, "_em_step", real)
    three = quiet_fit(GaussianMixture(**{**kw, "max_iter": 3}), X)
    assert gm.n_iter_ == 3
    np.testing.assert_allclose(gm.means_, three.means_, rtol=1e-12)
    np.testing.assert_allclose(gm.lower_bounds_, three.lower_bounds_, rtol=1e-12)


# --- the real device ------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_cuda_fit_matches_cpu_path(cov_type, dtype, rtol):
    X = blobs(20000, d=32, k=8, seed=1, dtype=dtype)
    # reg_covar 1e-4 in float32: with the default 1e-6 a full covariance collapses within the 8
    # iterations, in scikit-learn's float32 fit as in ours
    reg_covar = 1e-6 if dtype == np.float64 else 1e-4
    kw = dict(n_components=8, covariance_type=cov_type, max_iter=8, tol=0.0, reg_covar=reg_covar,
              **random_init(X, cov_type, k=8))
    # scikit-learn's float32 weights_ of 20,000 points sum to 1 - 1.7e-6: normalised again in
    # float64, or the weights_init check (which scikit-learn shares, stricter) refuses them
    kw["weights_init"] = kw["weights_init"] / kw["weights_init"].sum(dtype=np.float64)
    cpu = quiet_fit(GaussianMixture(**kw), X)
    gpu = quiet_fit(GaussianMixture(device="cuda", **kw), X)  # NumPy in: copied to the GPU
    np.testing.assert_allclose(gpu.lower_bounds_, cpu.lower_bounds_, rtol=rtol)
    Xc = torch.tensor(X, device="cuda")
    labels = GaussianMixture(**kw).fit(Xc).predict(Xc)  # device='auto' + CUDA tensor: the GPU path
    on_gpu = {k: torch.tensor(v, device="cuda") if k.endswith("_init") else v for k, v in kw.items()}
    np.testing.assert_allclose(quiet_fit(GaussianMixture(**on_gpu), Xc).lower_bounds_, cpu.lower_bounds_, rtol=rtol)
    assert labels.device.type == "cuda"
    assert (labels.cpu().numpy() == cpu.predict(X)).mean() > 0.999
    # float32: points between two components move by up to 1e-2 (8 iterations of parameters
    # equal to 1e-5 relative; seen on an H100: 8.5e-4 full, 1.9e-3 and 5.8e-3 spherical); the
    # bulk stays within 1e-4
    diff = np.abs(gpu.predict_proba(Xc).cpu().numpy() - cpu.predict_proba(X))
    assert diff.max() < (1e-6 if dtype == np.float64 else 2e-2)
    assert np.median(diff.max(axis=1)) < (1e-9 if dtype == np.float64 else 1e-4)


@pytest.mark.cuda
def test_cuda_peak_memory_does_not_grow_with_n_times_k():
    # N=2,000,000, D=32, K=256 full: an E-step with statistics allocates the float64 partial
    # slots (bounded at 256 MiB) and N-sized outputs; an N x K matrix would be 2 GB.
    torch.manual_seed(0)
    N, D, K = 2_000_000, 32, 256
    X = torch.randn(N, D, device="cuda")
    means = X[:K].clone()
    pc = torch.eye(D, device="cuda").expand(K, D, D).contiguous()
    log_w = torch.full((K,), -float(np.log(K)), dtype=torch.float64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = _gpu.estep(X, means, pc, log_w, "full", stats=True)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 300 << 20, extra
    assert np.isfinite(float(out["loglik"]))
