"""The GPU path of KMeans (cluster/_gpu.py, kernels/triton/kmeans.py), run on CPU tensors
under TRITON_INTERPRET=1 through the private ``_backend = 'triton'`` switch: the fused
assign+sums kernel against a float64 NumPy reference, Lloyd against the CPU path and
scikit-learn from the same initial centres, k-means++ seeding with the same random draws,
empty clusters, inference, bad input, interruption. Tests marked cuda run device='cuda'."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from fastlearn.cluster import KMeans, kmeans_plusplus
from fastlearn.cluster import _gpu
from tests.triton_path import T, on_triton

pytestmark = pytest.mark.triton


def blobs(n=120, d=5, k=4, seed=0, dtype=np.float64):
    X, _ = make_blobs(n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    return X.astype(dtype)


def reference_assign(X, C, w):
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # N x K, float64, directly
    labels = d.argmin(1)
    K = C.shape[0]
    sums = np.stack([(w[labels == k, None] * X[labels == k]).sum(0) for k in range(K)])
    counts = np.array([w[labels == k].sum() for k in range(K)])
    return labels, d.min(1), (w * d.min(1)).sum(), sums, counts


@pytest.mark.parametrize("N,D,K,programs", [(150, 5, 70, 1), (60, 17, 3, None)])
def test_assign_kernel_matches_float64_reference(N, D, K, programs):
    # K=70: two tiles of centres (the running minimum across tiles); programs=1: one program
    # walks three blocks of 64 points.
    rng = np.random.default_rng(N)
    X = rng.normal(size=(N, D)) * 3
    C = rng.normal(size=(K, D)) * 3
    w = rng.uniform(0.5, 2.0, size=N)
    out = _gpu.assign(T(X), T(C), T(w), stats=True, min_dist=True,
                      programs=programs)
    labels, md, inertia, sums, counts = reference_assign(X, C, w)
    np.testing.assert_array_equal(out["labels"].cpu().numpy(), labels)
    np.testing.assert_allclose(out["min_dist"].cpu().numpy(), md, rtol=1e-12)
    assert float(out["inertia"]) == pytest.approx(inertia, rel=1e-12)
    np.testing.assert_allclose(out["sums"].cpu().numpy(), sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["counts"].cpu().numpy(), counts, rtol=1e-12)


def test_assign_kernel_float32():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(100, 9)) * 3).astype(np.float32)
    C = X[::10].copy()
    w = np.ones(100, dtype=np.float32)
    out = _gpu.assign(T(X), T(C), T(w), stats=True)
    labels, _, inertia, sums, counts = reference_assign(X.astype(np.float64), C.astype(np.float64), w.astype(np.float64))
    np.testing.assert_array_equal(out["labels"].cpu().numpy(), labels)
    assert float(out["inertia"]) == pytest.approx(inertia, rel=1e-5)
    np.testing.assert_allclose(out["sums"].cpu().numpy(), sums, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["counts"].cpu().numpy(), counts)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_same_initial_centres_as_cpu_path_and_sklearn(dtype, rtol):
    X = blobs(dtype=dtype)
    init = X[::30][:4].copy()
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=X.shape[0]).astype(dtype)
    sk = SkKMeans(4, init=init, n_init=1).fit(X, sample_weight=w)
    cpu = KMeans(4, init=init, n_init=1).fit(X, sample_weight=w)
    gpu = on_triton(KMeans(4, init=init, n_init=1)).fit(T(X), sample_weight=T(w))
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=rtol)
    assert gpu.inertia_ == pytest.approx(sk.inertia_, rel=rtol)
    np.testing.assert_array_equal(gpu.labels_, sk.labels_)
    np.testing.assert_allclose(gpu.cluster_centers_, sk.cluster_centers_, rtol=rtol * 10, atol=rtol)
    assert gpu.n_iter_ == cpu.n_iter_
    assert isinstance(gpu.labels_, np.ndarray) and gpu.cluster_centers_.dtype == dtype


def test_kmeans_plusplus_same_draws_as_cpu():
    X = blobs(100, d=3, k=5, seed=4)
    c_cpu, i_cpu = kmeans_plusplus(X, 5, random_state=7)
    c_gpu, i_gpu = _gpu.kmeans_plusplus(T(X), 5, random_state=7)
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_allclose(c_gpu.cpu().numpy(), c_cpu)


@pytest.mark.parametrize("init,n_init", [("k-means++", "auto"), ("random", 2)])
def test_fit_from_random_state_matches_cpu_path(init, n_init):
    X = blobs(100, seed=2)
    cpu = KMeans(4, init=init, n_init=n_init, random_state=3).fit(X)
    gpu = on_triton(KMeans(4, init=init, n_init=n_init, random_state=3)).fit(T(X))
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-10)
    np.testing.assert_array_equal(gpu.labels_, cpu.labels_)
    assert gpu.n_iter_ == cpu.n_iter_


def test_empty_cluster_relocated_as_cpu_path():
    X = blobs(90, d=2, k=3, seed=5)
    init = np.vstack([X[:2], [[1e3, 1e3]]])  # the far centre owns no point at the first step
    cpu = KMeans(3, init=init, n_init=1, max_iter=5).fit(X)
    gpu = on_triton(KMeans(3, init=init, n_init=1, max_iter=5)).fit(T(X))
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-10)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-10)
    assert len(np.unique(gpu.labels_)) == 3


def test_inference_follows_input_type():
    X = blobs()
    init = X[:4].copy()
    cpu = KMeans(4, init=init, n_init=1).fit(X)
    gpu = on_triton(KMeans(4, init=init, n_init=1)).fit(T(X))
    Xt = T(X)
    labels = gpu.predict(Xt)
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.cpu().numpy(), cpu.predict(X))
    np.testing.assert_allclose(gpu.transform(Xt).cpu().numpy(), cpu.transform(X), rtol=1e-9, atol=1e-9)
    assert gpu.score(Xt) == pytest.approx(cpu.score(X), rel=1e-10)
    assert isinstance(gpu.predict(X), np.ndarray)  # NumPy in (forced GPU path): NumPy out
    np.testing.assert_allclose(gpu.fit_transform(Xt).cpu().numpy(), cpu.transform(X), rtol=1e-9, atol=1e-9)


def test_bad_input():
    X = T(blobs(40))
    km = on_triton(KMeans(3, n_init=1, random_state=0))
    bad = X.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        km.fit(bad)
    with pytest.raises(ValueError, match="n_clusters"):
        on_triton(KMeans(50)).fit(X)
    with pytest.raises(ValueError, match="sample_weight"):
        km.fit(X, sample_weight=torch.ones(7))
    with pytest.raises(ValueError, match="shape of the initial centers"):
        on_triton(KMeans(3, init=np.zeros((2, 5)))).fit(X)
    km.fit(X)
    with pytest.raises(ValueError, match="expecting 5 features"):
        km.predict(X[:, :2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_device_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        KMeans(2, device="cuda").fit(blobs(20))


def test_interrupt_keeps_last_centres(monkeypatch):
    X = blobs(100, seed=6)
    init = X[:4].copy()
    real = _gpu.assign
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(_gpu, "assign", flaky)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        gpu = on_triton(KMeans(4, init=init, n_init=1, tol=0.0)).fit(T(X))
    monkeypatch.setattr(_gpu, "assign", real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        two = KMeans(4, init=init, n_init=1, max_iter=2, tol=0.0).fit(X)
    assert gpu.n_iter_ == 2
    np.testing.assert_allclose(gpu.cluster_centers_, two.cluster_centers_, rtol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_cuda_fit_matches_cpu_path(dtype, rtol):
    X = blobs(50000, d=32, k=16, seed=1, dtype=dtype)
    init = X[::1000][:16].copy()
    cpu = KMeans(16, init=init, n_init=1, max_iter=20, tol=0.0).fit(X)
    gpu = KMeans(16, init=init, n_init=1, max_iter=20, tol=0.0, device="cuda").fit(X)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=rtol)
    assert (gpu.labels_ == cpu.labels_).mean() > 0.999
    if dtype == np.float64:  # k-means++ from the same draws (float32 distances may pick other candidates)
        Xc = torch.tensor(X, device="cuda")
        km = KMeans(16, random_state=0).fit(Xc)  # device='auto' + CUDA tensor: the GPU path
        assert km.predict(Xc).device.type == "cuda" and km.transform(Xc).shape == (50000, 16)
        assert km.inertia_ == pytest.approx(KMeans(16, random_state=0).fit(X).inertia_, rel=1e-9)
        # initial centres given as a CUDA tensor (np.asarray alone cannot read one)
        on_gpu = KMeans(16, init=torch.tensor(init, device="cuda"), n_init=1, max_iter=20, tol=0.0).fit(Xc)
        assert on_gpu.inertia_ == pytest.approx(cpu.inertia_, rel=rtol)
