"""softmax / log_softmax against float64 references and PyTorch: values, gradients, odd
shapes, strides, dtypes, -inf rows; opcheck, gradcheck, torch.compile; the Triton kernels
under the interpreter; the CUDA paths on a GPU."""

import numpy as np
import pytest
import torch

import fastlearn.ops as flops
from tests import reference as ref

FUNCS = {"softmax": (flops.softmax, torch.softmax, ref.softmax, ref.softmax_backward),
         "log_softmax": (flops.log_softmax, torch.log_softmax, ref.log_softmax, ref.log_softmax_backward)}

SHAPES = [((7,), 0), ((3, 1), 1), ((5, 97), 1), ((5, 97), 0), ((2, 3, 2049), -1), ((4, 70001), 1),
          ((3, 300, 5), 1), ((2, 5, 3, 257), 2), ((1, 1, 1), 0), ((6, 4, 513), 0)]


def rel_err(a, b):
    """||a - b|| / ||b|| over the finite entries of b; infinite entries of b must be equal in a."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inf = np.isinf(b)
    assert np.array_equal(a[inf], b[inf]), "infinite entries differ"
    a, b = a[~inf], b[~inf]
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape,dim", SHAPES)
def test_float32_matches_float64_reference(name, shape, dim):
    fl, _, reference, _ = FUNCS[name]
    g = torch.Generator().manual_seed(hash((shape, dim)) % 2**31)
    x = torch.randn(shape, generator=g) * 4
    y = fl(x, dim)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert rel_err(y, reference(x.double().numpy(), dim)) < 2e-6


@pytest.mark.parametrize("name", FUNCS)
def test_float32_rows_element_by_element_at_every_vector_and_block_tail(name):
    # The float32 row kernel runs whole 8-float vectors in blocks of 64 (two vector sums),
    # then single vectors, then scalars: each length below ends in a different one of those.
    fl, _, reference, _ = FUNCS[name]
    g = torch.Generator().manual_seed(7)
    for length in (1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 71, 72, 127, 128, 135, 2047, 2048, 2049, 2112, 4100):
        x = torch.randn(3, length, generator=g) * 30  # wide: many exps near the -88 clamp
        exact = torch.from_numpy(reference(x.double().numpy(), 1))
        # log_softmax: x - lse rounds to float32 at the scale of |x| (up to ~120 here)
        atol = 1e-30 if name == "softmax" else 2 * torch.finfo(torch.float32).eps * float(x.abs().max())
        torch.testing.assert_close(fl(x, 1).double(), exact, rtol=3e-6, atol=atol,
                                   msg=lambda m, n=length: f"length {n}: {m}")


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("length", [5, 1031, 2048 + 27, 65537])
def test_float32_outputs_of_32_mib_and_more_streamed_like_the_rest(name, length):
    # Outputs of 32 MiB and more are written with non-temporal stores: whole 64-byte lines
    # only, each row's partial lines at both ends stored normally, softmax's chunks aligned to
    # the output's lines (65537 is past the streamed row limit for softmax). An odd storage
    # offset misaligns every row; -inf, NaN and +inf rows go through the same path.
    fl, th, reference, _ = FUNCS[name]
    rows = -(-(33 << 20) // (4 * length))
    g = torch.Generator().manual_seed(length)
    x = torch.randn(rows, length, generator=g) * 30
    x[1] = -float("inf")
    x[2, length // 2] = float("nan")
    x[3, 0] = float("inf")
    exact = torch.from_numpy(reference(x.double().numpy(), 1))
    atol = 1e-30 if name == "softmax" else 2 * torch.finfo(torch.float32).eps * 200
    out = torch.full((rows * length + 1,), 7.0)[1:].view(rows, length)  # 4-byte aligned only
    small = fl(x[:4], 1)  # 4 rows: the regular path
    for y in (fl(x, 1), fl(x, 1, out=out)):
        torch.testing.assert_close(y.double(), exact, rtol=3e-6, atol=atol, equal_nan=True)
        torch.testing.assert_close(y[:4], th(x[:4], 1), equal_nan=True, rtol=3e-6, atol=atol)
        if length <= 2048:  # one chunk a row either way: the same arithmetic, the same bits
            assert torch.equal(y[:4].nan_to_num(5.0), small.nan_to_num(5.0))
    assert out.data_ptr() % 64 == 4


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("length", [5, 1031, 65537])
def test_float32_backward_of_32_mib_and_more_streamed_like_the_rest(name, length):
    # grad_x of 32 MiB and more is streamed too: the same two passes, the same bits as the
    # regular path on a few of its rows, and the float64 formula at the float32 y.
    log = name == "log_softmax"
    fl, _, _, reference_bwd = FUNCS[name]
    rows = -(-(33 << 20) // (4 * length))
    g = torch.Generator().manual_seed(length)
    y = fl(torch.randn(rows, length, generator=g) * 5, 1)
    grad = torch.randn(rows, length, generator=g)
    gx = torch.ops.fastlearn.softmax_backward(grad, y, 1, log)
    assert torch.equal(gx[:4], torch.ops.fastlearn.softmax_backward(grad[:4], y[:4], 1, log))
    exact = torch.from_numpy(reference_bwd(grad.double().numpy(), y.double().numpy(), 1))
    torch.testing.assert_close(gx.double(), exact, rtol=1e-5, atol=1e-6 * float(exact.abs().max()))


@pytest.mark.parametrize("name", FUNCS)
def test_float64_matches_reference_tightly(name):
    fl, _, reference, _ = FUNCS[name]
    x = torch.randn(9, 1031, dtype=torch.float64) * 10
    assert rel_err(fl(x, 1), reference(x.numpy(), 1)) < 1e-14


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape,dim", [((8, 1000), 1), ((16, 33, 7), 1), ((3, 5000), -1)])
def test_half_error_at_most_twice_pytorch(name, dtype, shape, dim):
    fl, th, reference, _ = FUNCS[name]
    x = (torch.randn(shape) * 3).to(dtype)
    exact = reference(x.double().numpy(), dim)
    ours = rel_err(fl(x, dim).double(), exact)
    theirs = rel_err(th(x, dim).double(), exact)
    assert fl(x, dim).dtype == dtype
    assert ours <= 2 * theirs + 1e-7, (ours, theirs)


@pytest.mark.parametrize("name", FUNCS)
def test_non_contiguous_inputs(name):
    fl, th, _, _ = FUNCS[name]
    base = torch.randn(40, 60, 3)
    for x in (base.transpose(0, 1), base[::2, 5:, 1], base.permute(2, 0, 1)):
        for dim in range(x.dim()):
            torch.testing.assert_close(fl(x, dim), th(x, dim), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", FUNCS)
def test_inf_and_nan_rows_like_pytorch(name):
    fl, th, _, _ = FUNCS[name]
    inf = float("inf")
    for length in (5, 3000):  # one chunk, several chunks
        x = torch.randn(6, length)
        x[0] = -inf                     # all -inf: NaN in PyTorch
        x[1, : length // 2] = -inf      # partly -inf
        x[2, 1] = inf                   # +inf: NaN
        x[3, 2] = float("nan")          # NaN poisons the row
        x[4, -1] = -inf
        torch.testing.assert_close(fl(x, 1), th(x, 1), equal_nan=True, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(fl(x.T.contiguous(), 0), th(x.T.contiguous(), 0), equal_nan=True,
                                   rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", FUNCS)
def test_zero_size_scalar_and_dtype_argument(name):
    fl, th, _, _ = FUNCS[name]
    assert fl(torch.empty(0, 5), 1).shape == (0, 5)
    assert fl(torch.empty(3, 0), 1).shape == (3, 0)
    s = torch.tensor(2.5)
    torch.testing.assert_close(fl(s, 0), th(s, 0))
    x = torch.randn(4, 9)
    out = fl(x, 1, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, th(x, 1, dtype=torch.float64))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape,dim", [((5, 97), 1), ((4, 3000), 1), ((3, 17, 6), 1), ((3, 17, 6), 0)])
def test_backward_matches_reference(name, shape, dim):
    fl, _, reference, reference_bwd = FUNCS[name]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    y = fl(x, dim)
    (gx,) = torch.autograd.grad(y, x, g)
    yr = reference(x.detach().numpy(), dim)
    np.testing.assert_allclose(gx.numpy(), reference_bwd(g.numpy(), yr, dim), rtol=1e-10, atol=1e-12)
    # float32 gradient too, against float64
    xf = x.detach().float().requires_grad_()
    (gxf,) = torch.autograd.grad(fl(xf, dim), xf, g.float())
    assert rel_err(gxf, reference_bwd(g.numpy(), yr, dim)) < 1e-5


@pytest.mark.parametrize("name", FUNCS)
def test_gradcheck_float64(name):
    fl = FUNCS[name][0]
    for shape, dim in (((3, 7), 1), ((4, 3, 5), 0)):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: fl(t, dim), (x,))


@pytest.mark.parametrize("log", [False, True])
def test_opcheck(log):
    for shape, dim in (((4, 33), 1), ((3, 5, 7), 0), ((2, 4100), 1)):
        x = torch.randn(shape, requires_grad=True)
        torch.library.opcheck(torch.ops.fastlearn.softmax.default, (x, dim, log))
        y = torch.softmax(x.detach(), dim)
        torch.library.opcheck(torch.ops.fastlearn.softmax_backward.default, (torch.randn(shape), y, dim, log))


@pytest.mark.slow
def test_torch_compile_fullgraph():
    def f(x):
        return flops.softmax(x * 2, -1).sum(0) + flops.log_softmax(x, 0).mean()

    x = torch.randn(8, 50, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, torch.softmax(x * 2, -1).sum(0) + torch.log_softmax(x, 0).mean())
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad((torch.softmax(x * 2, -1).sum(0) + torch.log_softmax(x, 0).mean()).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="floating dtype"):
        flops.softmax(torch.arange(5), 0)
    with pytest.raises(IndexError, match="dim"):
        flops.softmax(torch.randn(3, 4), 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        flops.log_softmax(np.ones(3), 0)
    with pytest.raises(TypeError, match="'dim' must be an int"):
        flops.softmax(torch.randn(3), 0.5)


# --- Triton kernels: GPU, or CPU tensors under TRITON_INTERPRET=1 ---------------------------

@pytest.mark.triton
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,dim", [((3, 37), 1), ((2, 9000), 1), ((2, 20000), 1), ((4, 6, 5), 1),
                                       ((2, 300, 70), 1), ((5,), 0)])
def test_triton_kernels(triton_device, log, shape, dim):
    from fastlearn.ops.softmax import _triton_launch

    torch.manual_seed(sum(shape) + dim + log)
    x = (torch.randn(shape) * 3).to(triton_device)
    x[0].view(-1)[:3] = -float("inf")
    y = torch.empty_like(x)
    _triton_launch("fwd", (x, y), dim % x.dim(), log)
    exact = (ref.log_softmax if log else ref.softmax)(x.double().cpu().numpy(), dim)
    assert rel_err(y.cpu(), exact) < 2e-6
    g = torch.randn(shape).to(triton_device)
    gx = torch.empty_like(x)
    _triton_launch("bwd", (g, y, gx), dim % x.dim(), log)
    # The backward in float64 at the float32 output the kernel was given: measured at the exact
    # output instead, the rounding of y alone moves a 5-element gradient by up to 4e-4 relative
    # (3000 draws), and an H100 run failed at 1.1e-5.
    bwd = (ref.log_softmax_backward if log else ref.softmax_backward)(g.double().cpu().numpy(),
                                                                      y.double().cpu().numpy(), dim)
    assert rel_err(gx.cpu(), bwd) < 1e-5


@pytest.mark.triton
def test_triton_all_neg_inf_row_is_nan(triton_device):
    from fastlearn.ops.softmax import _triton_launch

    for length in (8, 9000, 20000):  # rows: several a program, one tile, the online loop
        x = torch.randn(2, length).to(triton_device)
        x[0] = -float("inf")
        y = torch.empty_like(x)
        _triton_launch("fwd", (x, y), 1, False)
        assert torch.isnan(y[0]).all() and not torch.isnan(y[1]).any()


def test_small_gpu_call_route_follows_build_and_backend_choice(monkeypatch):
    # Small eager GPU softmax calls take _C's CUDA kernel only when it was built and
    # FASTLEARN_GPU_BACKEND does not ask for Triton; the backend choice itself is unchanged.
    from fastlearn.ops import _device

    for built, env, want in ((True, None, True), (True, "auto", True), (True, "cuda", True),
                             (True, "TRITON", False), (False, None, False)):
        monkeypatch.setattr(_device, "_cuda_built", lambda built=built: built)
        if env is None:
            monkeypatch.delenv("FASTLEARN_GPU_BACKEND", raising=False)
        else:
            monkeypatch.setenv("FASTLEARN_GPU_BACKEND", env)
        assert _device.cuda_kernels_for_small_calls() is want, (built, env)
    monkeypatch.setenv("FASTLEARN_GPU_BACKEND", "fast")
    with pytest.raises(ValueError, match="FASTLEARN_GPU_BACKEND must be"):
        _device.gpu_backend("softmax")


# --- CUDA (GPU machine only) ------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gpu_paths_match_pytorch(monkeypatch, backend, dtype):
    monkeypatch.setenv("FASTLEARN_GPU_BACKEND", backend)
    for shape, dim in (((64, 1000), 1), ((3, 70001), 1), ((8, 33, 12), 1)):
        x = (torch.randn(shape, device="cuda") * 3).to(dtype).requires_grad_()
        for name in FUNCS:
            fl, th, reference, reference_backward = FUNCS[name]
            y = fl(x, dim)
            exact = reference(x.detach().double().cpu().numpy(), dim)
            ours = rel_err(y.detach().double().cpu(), exact)
            theirs = rel_err(th(x, dim).detach().double().cpu(), exact)
            assert ours <= 2 * theirs + 2e-6
            # Gradients against the float64 backward formula: ours within twice PyTorch's error.
            g = torch.randn_like(y)
            (g1,) = torch.autograd.grad(y, x, g)
            (g2,) = torch.autograd.grad(th(x, dim), x, g)
            exact_g = reference_backward(g.double().cpu().numpy(), exact, dim)
            ours = rel_err(g1.double().cpu(), exact_g)
            theirs = rel_err(g2.double().cpu(), exact_g)
            assert ours <= 2 * theirs + 2e-6, (name, shape, ours, theirs)


@pytest.mark.cuda
def test_gpu_opcheck_and_compile():
    x = torch.randn(16, 300, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.fastlearn.softmax.default, (x, 1, False))
    f = torch.compile(lambda t: flops.softmax(t, -1), fullgraph=True)
    torch.testing.assert_close(f(x), torch.softmax(x, -1))


@pytest.mark.cuda
def test_gpu_eager_calls_launch_the_kernel_directly():
    # Plain eager calls (no autograd, no tracing), with or without out=, launch their kernel
    # themselves (here: _C's CUDA kernel for the small rows, the Triton kernel for dim 0).
    # Through torch's higher-order-op dispatch instead, every Triton launch would add its
    # constant arguments to torch's kernel side table (which never shrinks) and cost ~0.7 ms.
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    x = torch.randn(64, 1000, device="cuda")
    xt = torch.randn(1000, 64, device="cuda")  # dim 0: the kernel of an inner dimension
    out = torch.empty_like(x)
    for fl, _, _, _ in FUNCS.values():  # compile first
        fl(x, -1), fl(x, -1, out=out), fl(xt, 0)
    before = len(kernel_side_table.constant_args)
    for fl, th, _, _ in FUNCS.values():
        torch.testing.assert_close(fl(x, -1), th(x, -1))
        torch.testing.assert_close(fl(xt, 0), th(xt, 0))
        assert fl(x, -1, out=out) is out
        torch.testing.assert_close(out, th(x, -1))
    assert len(kernel_side_table.constant_args) == before


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gpu_small_eager_calls_like_pytorch(dtype):
    # Eager calls of at most SMALL_GPU_CALL elements over the last dim take _C's CUDA kernel
    # (launched from C++); the others the Triton kernels. Both against torch, with rows of
    # -inf, long rows and out=.
    from fastlearn.ops.softmax import SMALL_GPU_CALL

    torch.manual_seed(0)
    for shape in ((32, 1000), (3, 70001), (4, 5, 6), (7,), (SMALL_GPU_CALL // 512 + 1, 512)):
        x = (torch.randn(shape, device="cuda") * 3).to(dtype)
        x.view(-1)[:2] = -float("inf")
        if x.dim() > 1:
            x[-1] = -float("inf")  # a row of -inf: NaN, as in PyTorch
        for fl, th, _, _ in FUNCS.values():
            torch.testing.assert_close(fl(x, -1), th(x, -1), equal_nan=True)
            out = torch.empty_like(x)
            torch.testing.assert_close(fl(x, -1, out=out), th(x, -1), equal_nan=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name", FUNCS)
def test_out_argument_like_pytorch(name, device):
    # On the GPU a contiguous out= is written by the Triton kernel directly (rows, long rows,
    # an inner dim); strided or resized ones go through a temporary.
    fl, th, _, _ = FUNCS[name]
    x = torch.randn(33, 70, device=device)
    out = torch.empty(33, 70, device=device)
    assert fl(x, 1, out=out) is out
    torch.testing.assert_close(out, th(x, 1))
    long_rows = torch.randn(3, 20000, device=device) * 4
    torch.testing.assert_close(fl(long_rows, -1, out=torch.empty_like(long_rows)), th(long_rows, -1))
    resized = torch.empty(0, device=device)
    fl(x, 0, out=resized)
    torch.testing.assert_close(resized, th(x, 0))
    strided = torch.empty(70, 33, device=device).T
    fl(x, 1, out=strided)
    torch.testing.assert_close(strided, th(x, 1))
    with pytest.raises(TypeError, match="dtype torch.float64"):
        fl(x, 1, out=torch.empty(33, 70, dtype=torch.float64, device=device))
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        fl(x.requires_grad_(), 1, out=out)
