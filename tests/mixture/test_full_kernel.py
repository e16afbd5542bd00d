"""The full-covariance CPU pass (the block transposed in SIMD tiles, points in the SIMD lanes,
triangular product, 4x3 scatter tiles of sqrt(r)(x - mu), gathered scatter when most
responsibilities are exactly 0) against a float64 NumPy re-implementation of its equations:
log-likelihoods, labels and the statistics nk, s1, s2 about the given means. Odd D hit every
padding and remainder tile (D % 4, D % 3, and D % 8 / D % 4 of the transpose); N spans several
blocks and a partial last block (and partial transpose tiles); separated components send most
(point, component) pairs through the gathered path, overlapping ones through the dense one; a
precision factor that is not upper triangular takes the all-rows product.

The lifted path (both products as matrix products over [vech(x' x'^T), x', 1], x' = x - c)
runs through the same checks when forced (full_path=2) on data whose means are near their
centre, where the kernel would choose it; its choice is checked to be the bitwise output of
the path it picks."""

import math

import numpy as np
import pytest

from fastlearn.mixture._gaussian import gaussian_pass


def reference(X, means, P, log_w):
    """float64: weighted log-probabilities, log-sum-exp, responsibilities, statistics."""
    X = X.astype(np.float64)
    K, D = means.shape
    offset = np.log(np.abs(np.diagonal(P, axis1=1, axis2=2))).sum(1) - 0.5 * D * math.log(2 * math.pi) + log_w
    lp = np.stack([offset[k] - 0.5 * (((X - means[k]) @ P[k]) ** 2).sum(1) for k in range(K)], 1)
    m = lp.max(1, keepdims=True)
    lse = (m + np.log(np.exp(lp - m).sum(1, keepdims=True)))[:, 0]
    r = np.exp(lp - lse[:, None])
    nk = r.sum(0)
    s1 = np.stack([(r[:, k:k + 1] * (X - means[k])).sum(0) for k in range(K)])
    s2 = np.stack([(r[:, k:k + 1] * (X - means[k])).T @ (X - means[k]) for k in range(K)])
    return lp, lse, nk, s1, s2


def problem(N, D, K, spread, dtype, upper=True, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(K, D))
    X = (centers[rng.integers(0, K, N)] + rng.normal(size=(N, D)) + 3.0).astype(dtype)
    means = (centers + 3.0 + 0.1 * rng.normal(size=(K, D))).astype(dtype).astype(np.float64)
    P = np.stack([np.eye(D) * rng.uniform(0.7, 1.3) + 0.1 * rng.normal(size=(D, D)) for _ in range(K)])
    if upper:
        P = np.triu(P)
    P = P.astype(dtype).astype(np.float64)
    log_w = np.log(rng.dirichlet(np.ones(K) * 5))
    return X, means, P, log_w


def check(X, means, P, log_w, rtol, full_path=0):
    out = gaussian_pass(X, means, P, "full", log_w, stats=True, log_norm=True, log_prob=True, labels=True,
                        full_path=full_path)
    lp, lse, nk, s1, s2 = reference(X, means, P, log_w)
    scale = np.abs(lp).max()
    np.testing.assert_allclose(out["log_prob"], lp, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(out["log_norm"], lse, rtol=0, atol=rtol * scale)
    assert out["loglik"] == pytest.approx(lse.sum(), rel=rtol)
    top2 = np.sort(lp, 1)[:, -2:]
    clear = top2[:, -1] - top2[:, 0] > 1e3 * rtol * scale if lp.shape[1] > 1 else np.ones(len(lp), bool)
    np.testing.assert_array_equal(out["labels"][clear], lp.argmax(1)[clear])
    N = X.shape[0]
    np.testing.assert_allclose(out["nk"], nk, rtol=0, atol=rtol * N)
    s1_scale = np.abs(X - X.mean(0)).max() * N
    np.testing.assert_allclose(out["s1"], s1, rtol=0, atol=rtol * s1_scale)
    np.testing.assert_allclose(out["s2"], s2, rtol=0, atol=rtol * np.abs(s2).max())
    np.testing.assert_array_equal(out["s2"], np.transpose(out["s2"], (0, 2, 1)))


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("D", [1, 2, 3, 5, 6, 8, 13, 32, 35])  # every tail of the 4-row scatter tiles
@pytest.mark.parametrize("spread", [40.0, 0.3], ids=["separated", "overlapping"])
def test_full_pass_matches_float64_reference(dtype, rtol, D, spread):
    X, means, P, log_w = problem(1237, D, 5, spread, dtype)
    check(X, means, P, log_w, rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("D", [4, 7])
def test_full_pass_general_factor(dtype, rtol, D):
    X, means, P, log_w = problem(801, D, 3, 1.0, dtype, upper=False)
    assert np.any(np.tril(P, -1) != 0)
    check(X, means, P, log_w, rtol)


def test_gathered_path_sees_exact_zeros():
    """Separated components in float32: most responsibilities underflow to exactly 0, so the
    scatter runs on gathered points; one component with no points at all adds nothing."""
    X, means, P, log_w = problem(3001, 32, 6, 60.0, np.float32, seed=3)
    means[5] += 1e3  # far from every point: all its responsibilities are 0
    out = gaussian_pass(X, means, P, "full", log_w, stats=True)
    lp, _, nk, _, s2 = reference(X, means, P, log_w)
    assert nk[5] < 1e-30 and out["nk"][5] == 0 and not np.any(out["s2"][5])
    np.testing.assert_allclose(out["nk"], nk, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["s2"], s2, rtol=0, atol=2e-5 * np.abs(s2).max())


def near_problem(N, D, K, dtype, seed=0, upper=True):
    """Overlapping components whose means sit within a standard deviation of their centre,
    the data offset from the origin (the lifted path centres at the means' mean)."""
    X, means, P, log_w = problem(N, D, K, 0.3, dtype, upper=upper, seed=seed)
    return X, means, P / math.sqrt(2.0), log_w


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("D,K", [(1, 3), (3, 1), (7, 5), (8, 16), (9, 8), (13, 17), (32, 16), (33, 4)])
def test_lifted_pass_matches_float64_reference(dtype, rtol, D, K):
    """Every tail: D past the vector width and the 6-row tiles of lifted features (Lz % 6), K
    in one-vector and two-vector panels of components with padding, N over several blocks
    with a partial last one."""
    X, means, P, log_w = near_problem(1237, D, K, dtype)
    check(X, means, P, log_w, rtol, full_path=2)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_lifted_pass_general_factor(dtype, rtol):
    X, means, P, log_w = near_problem(501, 10, 16, dtype, upper=False)
    assert np.any(np.tril(P, -1) != 0)
    check(X, means, P, log_w, rtol, full_path=2)


def test_lifted_pass_small_and_outputs_alone():
    """Fewer points than a tile; the log-probabilities and labels without the statistics."""
    X, means, P, log_w = near_problem(5, 16, 16, np.float64)
    check(X, means, P, log_w, 1e-11, full_path=2)
    X, means, P, log_w = near_problem(300, 16, 16, np.float32)
    a = gaussian_pass(X, means, P, "full", log_w, log_prob=True, labels=True, full_path=2)
    b = gaussian_pass(X, means, P, "full", log_w, log_prob=True, labels=True, full_path=1)
    np.testing.assert_allclose(a["log_prob"], b["log_prob"], rtol=0, atol=2e-5 * np.abs(b["log_prob"]).max())
    assert (a["labels"] == b["labels"]).mean() > 0.99


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_chooses_lifted_only_near_the_centre(dtype):
    """float32, D=16, K=16: overlapping components take the lifted products; separated ones
    (means many standard deviations from their centre), shapes outside its range and float64
    the triangular ones. The choice gives exactly the chosen path's output."""
    def same(a, b):
        return all(np.array_equal(a[n], b[n]) for n in ("nk", "s1", "s2")) and a["loglik"] == b["loglik"]

    lifted = 2 if dtype == np.float32 else 1
    for spread, D, K, want in [(0.3, 16, 16, lifted), (40.0, 16, 16, 1), (0.3, 4, 16, 1), (0.3, 16, 5, 1),
                               (0.3, 48, 16, 1)]:
        X, means, P, log_w = problem(700, D, K, spread, dtype)
        runs = {path: gaussian_pass(X, means, P, "full", log_w, stats=True, full_path=path) for path in (0, 1, 2)}
        assert same(runs[0], runs[want]), (spread, D, K)
        assert not same(runs[1], runs[2]), (spread, D, K)


def test_full_path_argument_checked():
    X, means, P, log_w = near_problem(10, 2, 2, np.float64)
    with pytest.raises(ValueError, match="full_path"):
        gaussian_pass(X, means, P, "full", log_w, stats=True, full_path=3)
