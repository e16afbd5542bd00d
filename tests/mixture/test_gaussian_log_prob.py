"""fastlearn.ops.gaussian_log_prob against scikit-learn's _estimate_log_gaussian_prob and
SciPy's multivariate normal (float64): values for each covariance type and odd shapes,
float32 against float64, gradients (gradcheck), opcheck, torch.compile, errors, and the
Triton kernel under the interpreter."""

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.mixture._gaussian_mixture import (_compute_precision_cholesky, _estimate_gaussian_parameters,
                                               _estimate_log_gaussian_prob)

from fastlearn.ops import gaussian_log_prob

COV_TYPES = ["full", "tied", "diag", "spherical"]


def make_params(N, D, K, cov_type, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * rng.uniform(0.5, 3, size=D) + rng.normal(size=D)
    resp = rng.uniform(size=(N, K))
    resp /= resp.sum(1, keepdims=True)
    _, means, cov = _estimate_gaussian_parameters(X, resp, 1e-6, cov_type)
    return X, means, _compute_precision_cholesky(cov, cov_type), cov


def t(a, dtype=torch.float64, grad=False):
    return torch.tensor(np.asarray(a), dtype=dtype, requires_grad=grad)


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("N,D,K", [(97, 1, 1), (97, 5, 3), (257, 33, 4), (5, 13, 7)])
def test_matches_sklearn_float64(cov_type, N, D, K):
    X, means, pc, _ = make_params(N, D, K, cov_type)
    ours = gaussian_log_prob(t(X), t(means), t(pc), cov_type).numpy()
    ref = _estimate_log_gaussian_prob(X, means, pc, cov_type)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_full_matches_scipy_multivariate_normal():
    X, means, pc, cov = make_params(50, 6, 3, "full", seed=3)
    ours = gaussian_log_prob(t(X), t(means), t(pc), "full").numpy()
    for k in range(3):
        np.testing.assert_allclose(ours[:, k], scipy.stats.multivariate_normal(means[k], cov[k]).logpdf(X), rtol=1e-11)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_close_to_float64(cov_type):
    X, means, pc, _ = make_params(301, 32, 5, cov_type, seed=1)
    ours = gaussian_log_prob(t(X, torch.float32), t(means, torch.float32), t(pc, torch.float32), cov_type)
    ref = _estimate_log_gaussian_prob(X, means, pc, cov_type)
    assert np.abs(ours.numpy() - ref).max() / np.abs(ref).max() < 2e-6


def test_lower_triangular_factor_gives_same_density():
    # Any P with P P^T = Lambda gives the same density; the kernel skips zero rows per column
    # group, so a lower-triangular factor exercises the other triangle.
    X, means, pc, cov = make_params(40, 9, 2, "full", seed=4)
    lower = np.stack([np.linalg.cholesky(np.linalg.inv(c)) for c in cov])
    a = gaussian_log_prob(t(X), t(means), t(pc), "full")
    b = gaussian_log_prob(t(X), t(means), t(lower), "full")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gradcheck(cov_type):
    X, means, pc, _ = make_params(7, 3, 2, cov_type, seed=2)
    args = (t(X, grad=True), t(means, grad=True), t(pc, grad=True))
    assert torch.autograd.gradcheck(lambda a, b, c: gaussian_log_prob(a, b, c, cov_type), args)


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag"])
def test_opcheck(cov_type):
    X, means, pc, _ = make_params(9, 4, 3, cov_type, seed=5)
    code = {"full": 0, "tied": 1, "diag": 2}[cov_type]
    torch.library.opcheck(torch.ops.fastlearn.gaussian_log_prob.default,
                          (t(X, grad=True), t(means, grad=True), t(pc, grad=True), code))


def test_torch_compile_fullgraph():
    X, means, pc, _ = make_params(20, 4, 3, "full", seed=6)

    def f(x, m, p):
        return torch.logsumexp(gaussian_log_prob(x * 1.0, m, p, "full"), dim=1).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    args = (t(X, grad=True), t(means), t(pc))
    torch.testing.assert_close(compiled(*args), f(*args))
    (g1,) = torch.autograd.grad(compiled(*args), args[0])
    (g2,) = torch.autograd.grad(f(*args), args[0])
    torch.testing.assert_close(g1, g2)


def test_errors():
    X, means, pc, _ = make_params(10, 3, 2, "full")
    with pytest.raises(ValueError, match="covariance_type"):
        gaussian_log_prob(t(X), t(means), t(pc), "banana")
    with pytest.raises(ValueError, match="precisions_cholesky"):
        gaussian_log_prob(t(X), t(means), t(pc[0]), "full")
    with pytest.raises(ValueError, match="means"):
        gaussian_log_prob(t(X), t(means[:, :2]), t(pc), "full")
    with pytest.raises(TypeError, match="dtype"):
        gaussian_log_prob(t(X, torch.float32), t(means), t(pc), "full")
    with pytest.raises(TypeError, match="torch.Tensor"):
        gaussian_log_prob(X, t(means), t(pc), "full")
    with pytest.raises(TypeError, match="float32 or float64"):
        gaussian_log_prob(t(X).to(torch.int64), t(means).long(), t(pc).long(), "full")


# --- Triton kernel: GPU, or CPU tensors under TRITON_INTERPRET=1 ------------------------------

@pytest.mark.triton
@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_kernel(triton_device, cov_type, dtype):
    from fastlearn.ops.gaussian_log_prob import _triton_launch

    N, D, K = 37, 5, 3
    X, means, pc, _ = make_params(N, D, K, cov_type, seed=7)
    P = np.repeat(pc[:, None], D, axis=1) if cov_type == "spherical" else pc
    code = {"full": 0, "tied": 1, "diag": 2, "spherical": 2}[cov_type]
    out = torch.empty(N, K, dtype=dtype, device=triton_device)
    _triton_launch(t(X, dtype).to(triton_device), t(means, dtype).to(triton_device),
                   t(P, dtype).to(triton_device), code, out)
    ref = _estimate_log_gaussian_prob(X, means, pc, cov_type)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert np.abs(out.cpu().double().numpy() - ref).max() / np.abs(ref).max() < tol


@pytest.mark.cuda
def test_gpu_op_matches_cpu():
    X, means, pc, _ = make_params(1000, 32, 8, "full", seed=8)
    cpu = gaussian_log_prob(t(X, torch.float32), t(means, torch.float32), t(pc, torch.float32), "full")
    gpu = gaussian_log_prob(*(t(a, torch.float32).cuda() for a in (X, means, pc)), "full")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-4)
