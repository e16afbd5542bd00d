"""KMeans against scikit-learn's: inertia, labels and centres from the same initial centres
(float64 and float32, with sample weights), greedy k-means++ seeding from the same
random_state, empty-cluster relocation, predict/transform/score, check_estimator, bad
input, torch input, save/load."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import check_estimator

from fastlearn.cluster import KMeans, kmeans_plusplus


def blobs(n=2000, d=8, k=6, seed=0, dtype=np.float64):
    X, _ = make_blobs(n, n_features=d, centers=k, cluster_std=2.5, random_state=seed)
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("D,K", [(8, 6), (3, 13), (33, 5)])
def test_same_initial_centres_same_result(dtype, D, K):
    X = blobs(d=D, k=K, dtype=dtype)
    init = X[::97][:K].copy()
    sk = SkKMeans(K, init=init, n_init=1).fit(X)
    fl = KMeans(K, init=init, n_init=1).fit(X)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    assert fl.inertia_ == pytest.approx(sk.inertia_, rel=rtol)
    assert fl.n_iter_ == sk.n_iter_
    np.testing.assert_array_equal(fl.labels_, sk.labels_)
    np.testing.assert_allclose(fl.cluster_centers_, sk.cluster_centers_, rtol=rtol, atol=rtol)
    assert fl.cluster_centers_.dtype == dtype


def test_sample_weight_matches():
    X = blobs(800)
    w = np.random.default_rng(0).uniform(0.1, 3.0, size=len(X))
    init = X[:6].copy()
    sk = SkKMeans(6, init=init, n_init=1).fit(X, sample_weight=w)
    fl = KMeans(6, init=init, n_init=1).fit(X, sample_weight=w)
    assert fl.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)
    np.testing.assert_allclose(fl.cluster_centers_, sk.cluster_centers_, rtol=1e-10)
    assert fl.score(X, sample_weight=w) == pytest.approx(sk.score(X, sample_weight=w), rel=1e-10)


def test_kmeans_plusplus_same_draws_as_sklearn():
    X = blobs(1500)
    for seed in range(3):
        c1, i1 = kmeans_plusplus(X, 7, random_state=seed)
        c2, i2 = sk_kmeans_plusplus(X, 7, random_state=seed)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(c1, c2)
    fl = KMeans(6, random_state=0).fit(X)
    sk = SkKMeans(6, random_state=0).fit(X)
    assert fl.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)


def test_random_init_and_n_init():
    X = blobs(600)
    fl = KMeans(6, init="random", n_init=4, random_state=1).fit(X)
    best = min(KMeans(6, init=X[i * 50:i * 50 + 6], n_init=1).fit(X).inertia_ for i in range(3))
    assert fl.inertia_ <= best * 1.05  # the best of 4 random starts is competitive
    assert len(np.unique(fl.labels_)) == 6


def test_empty_cluster_is_relocated():
    X = blobs(500, k=3)
    init = np.vstack([X[:3], [[1e3] * X.shape[1]]])  # a centre no sample is nearest to
    sk = SkKMeans(4, init=init, n_init=1).fit(X)
    fl = KMeans(4, init=init, n_init=1).fit(X)
    assert len(np.unique(fl.labels_)) == 4
    assert fl.inertia_ == pytest.approx(sk.inertia_, rel=1e-8)


def test_predict_transform_score():
    X = blobs()
    init = X[:6].copy()
    sk = SkKMeans(6, init=init, n_init=1).fit(X)
    fl = KMeans(6, init=init, n_init=1).fit(X)
    Y = blobs(300, seed=5)
    np.testing.assert_array_equal(fl.predict(Y), sk.predict(Y))
    np.testing.assert_allclose(fl.transform(Y), sk.transform(Y), rtol=1e-9)
    assert fl.score(Y) == pytest.approx(sk.score(Y), rel=1e-10)
    np.testing.assert_array_equal(fl.fit_predict(X), sk.fit_predict(X))


def test_check_estimator():
    # scikit-learn marks this check as an expected failure for its own KMeans.
    check_estimator(KMeans(n_init=2, n_clusters=2, max_iter=5), expected_failed_checks={
        "check_sample_weight_equivalence_on_dense_data": "sample_weight is not equivalent to repeating samples "
                                                         "(scikit-learn's KMeans xfails it too)"})


def test_bad_input():
    X = blobs(50)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(60).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        KMeans(2).fit(np.where(np.eye(50, 8) > 0, np.nan, X))
    with pytest.raises(ValueError, match="initial centers"):
        KMeans(3, init=np.zeros((2, 8))).fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(0).fit(X)
    with pytest.raises(ValueError, match="0 sample"):
        KMeans(2).fit(X[:0])


def test_torch_input_and_save_load(tmp_path):
    X = blobs(400)
    fl = KMeans(4, random_state=0).fit(torch.as_tensor(X))
    ref = KMeans(4, random_state=0).fit(X)
    np.testing.assert_array_equal(fl.labels_, ref.labels_)
    assert isinstance(fl.predict(torch.as_tensor(X)), torch.Tensor)
    fl.save(tmp_path / "km.safetensors")
    back = KMeans.load(tmp_path / "km.safetensors")
    np.testing.assert_array_equal(back.predict(X), ref.predict(X))
    assert back.inertia_ == ref.inertia_ and back.n_iter_ == ref.n_iter_
    assert list(back.get_feature_names_out()) == [f"kmeans{k}" for k in range(4)]
    # a callable init is saved as 'k-means++' (the fitted centres are what is kept)
    first = KMeans(3, init=lambda X, k, random_state: X[:k], n_init=1).fit(X)
    first.save(tmp_path / "km_callable.safetensors")
    again = KMeans.load(tmp_path / "km_callable.safetensors")
    assert again.init == "k-means++"
    np.testing.assert_array_equal(again.cluster_centers_, first.cluster_centers_)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 7, 12, 16, 24, 32, 40, 57])
@pytest.mark.parametrize("N,D", [(1001, 6), (1000, 11)])
def test_assignment_is_the_first_nearest_centre(dtype, K, N, D):
    # The kernel's branch-free argmin against a float64 brute force. K covers every register
    # tile shape (1 to 4 SIMD vectors of centres, and 5 or more with each remainder) in both
    # dtypes; N leaves a partial tile of points for each tile height; D a partial SIMD vector
    # in the recomputed distance. Exact ties (a duplicated centre): the first copy must win,
    # as in scikit-learn's strict-< scan.
    from fastlearn.cluster._kmeans import _assign

    rng = np.random.default_rng(K)
    X = rng.integers(-4, 5, size=(N, D)).astype(dtype)  # small integers: exact distances
    C = X[rng.choice(len(X), K, replace=False)].copy()
    if K > 1:
        C[K - 1] = C[0]  # a tie between centre 0 and centre K-1 for every point
    out = _assign(X, C, np.ones(len(X), dtype), stats=True, min_dist=True)
    d = ((X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(out["labels"], d.argmin(1))
    np.testing.assert_array_equal(out["min_dist"], d.min(1))
    assert out["inertia"] == pytest.approx(d.min(1).sum(), rel=1e-12)
    np.testing.assert_array_equal(out["counts"], np.bincount(d.argmin(1), minlength=K))
    assert _assign(X, C, np.ones(len(X), dtype), inertia=False)["inertia"] == 0.0


def test_float32_assignment_refuses_more_centres_than_it_can_index():
    """The argmin carries centre indices in the data's float type: float32 stops at 2^24."""
    from fastlearn.cluster._kmeans import _assign

    X = np.zeros((1, 1), dtype=np.float32)
    C = np.zeros((1 << 24, 1), dtype=np.float32)  # 64 MiB; the check comes before any work
    with pytest.raises(ValueError, match=r"2\^24.*float64"):
        _assign(X, C, np.ones(1, dtype=np.float32))
    labels = _assign(X.astype(np.float64), C[:3].astype(np.float64), np.ones(1))["labels"]
    assert labels.tolist() == [0]  # three equal centres: the first wins
