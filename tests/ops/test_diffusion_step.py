"""fastlearn.ops.diffusion_step and philox_randn: the noise against an independent NumPy Philox
(and Random123's known-answer vectors), its statistics and its independence from threads and
chunking; the fused step against the unfused step in float64 torch ops (guidance, rescale as
diffusers' rescale_noise_cfg, clip, DDPM/DDIM rows, every dtype, odd and strided shapes);
opcheck, gradcheck, torch.compile; the Triton kernels under the interpreter against the C++
kernel; bad inputs; CUDA graph capture on a GPU."""

import math

import numpy as np
import pytest
import torch

import fastlearn
import fastlearn.ops as flops
from fastlearn import _C

# --- independent references -------------------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)


def ref_philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 arrays holding 32-bit values (Salmon et al. 2011)."""
    c = [np.asarray(v, np.uint64) & _M32 for v in (c0, c1, c2, c3)]
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _M32]
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return c


def ref_noise(n, seed, offset):
    """N(seed, offset + i) from the documented definition, Box-Muller in float64."""
    c = np.arange(n, dtype=np.uint64) + np.uint64(offset)
    tile, pos = c // np.uint64(2048), c % np.uint64(2048)
    q = tile * np.uint64(512) + pos % np.uint64(512)
    lane = (pos // np.uint64(512)).astype(np.int64)
    r = ref_philox(q & _M32, q >> np.uint64(32), 0, 0, seed & 0xFFFFFFFF, seed >> 32)
    u = []
    for v in r:
        i = v.astype(np.uint32).view(np.int32).astype(np.int64)
        i = np.where(i < 0, ~i, i)
        u.append(i.astype(np.float64) * 4.6566127342e-10)
    out = np.empty(n)
    for (a, b), lanes in (((0, 1), (0, 1)), ((2, 3), (2, 3))):
        u1 = np.maximum(u[a], 1e-7)
        rad = np.sqrt(-2.0 * np.log(u1))
        th = 2 * np.pi * u[b]
        out = np.where(lane == lanes[0], rad * np.cos(th), out)
        out = np.where(lane == lanes[1], rad * np.sin(th), out)
    return out


def ref_step(x, m, u, row, w, r, clip, z):
    """The scheduler step as a user writes it, in float64 torch ops; rescale as diffusers'
    rescale_noise_cfg (torch.std, unbiased)."""
    ax, am, ex, em, e0, p0, px, pe, sigma = [float(v) for v in row]
    x, m = x.double(), m.double()
    g = m
    if u is not None:
        u = u.double()
        g = u + w * (m - u)
        if r > 0:
            dims = list(range(1, x.dim()))
            std_text = m.std(dim=dims, keepdim=True)
            std_cfg = g.std(dim=dims, keepdim=True)
            g = r * (g * (std_text / std_cfg)) + (1 - r) * g
    x0 = ax * x + am * g
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    eps = ex * x + em * g + e0 * x0
    prev = p0 * x0 + px * x + pe * eps + sigma * z.double()
    return prev, x0


def schedule_table():
    """Rows: DDPM (epsilon prediction, posterior mean + sigma z), DDIM eta=0 (eps recomputed
    from the clipped x0, sigma 0), two arbitrary rows using every column (sigma != 0 and == 0)."""
    abar, abar_prev = 0.3, 0.45
    alpha = abar / abar_prev
    beta = 1 - alpha
    ddpm = [1 / math.sqrt(abar), -math.sqrt(1 - abar) / math.sqrt(abar), 0, 1, 0,
            math.sqrt(abar_prev) * beta / (1 - abar), math.sqrt(alpha) * (1 - abar_prev) / (1 - abar), 0,
            math.sqrt(beta * (1 - abar_prev) / (1 - abar))]
    ddim = [1 / math.sqrt(abar), -math.sqrt(1 - abar) / math.sqrt(abar), 1 / math.sqrt(1 - abar), 0,
            -math.sqrt(abar) / math.sqrt(1 - abar), math.sqrt(abar_prev), 0, math.sqrt(1 - abar_prev), 0]
    rand1 = [0.9, -0.7, 0.3, 0.8, -0.25, 0.6, 0.35, 0.45, 0.55]
    rand2 = [1.1, 0.4, -0.2, 0.5, 0.3, -0.6, 0.7, 0.2, 0.0]
    return torch.tensor([ddpm, ddim, rand1, rand2], dtype=torch.float32)


ROWS = {"ddpm": 0, "ddim": 1, "mixed": 2, "mixed_no_noise": 3}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def inputs(shape, dtype=torch.float32, seed=0, uncond=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    m = torch.randn(shape, generator=g, dtype=torch.float64) * 1.3 + 0.2
    u = torch.randn(shape, generator=g, dtype=torch.float64) * 0.9 - 0.1 if uncond else None
    return x.to(dtype), m.to(dtype), None if u is None else u.to(dtype)


# --- noise ------------------------------------------------------------------------------------

def test_philox_known_answer_vectors():
    # Random123 kat_vectors for philox4x32 with 10 rounds: (counter, key) -> output
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, expected in kat:
        assert _C.philox4x32_10(*ctr, *key) == expected
        assert tuple(int(v) for v in ref_philox(*ctr, *key)) == expected


@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3, 2**64 - 1])
@pytest.mark.parametrize("offset", [0, 5, 2047, 3 * 2048 + 1, 2**33 + 7])
def test_noise_matches_numpy_reference(seed, offset):
    n = 5000
    z = flops.philox_randn((n,), seed=seed, offset=offset)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.numpy(), ref_noise(n, seed, offset), rtol=0, atol=1e-5)


def test_noise_statistics():
    from scipy import stats

    z = flops.philox_randn((1 << 20,), seed=1234).double().numpy()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # neighbouring counters (the four lanes of a group, adjacent groups) are uncorrelated
    for lag in (1, 512, 2048):
        assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1]) < 5 / math.sqrt(n)


def test_noise_independent_of_chunking_threads_and_offsets():
    n = 3 * 2048 + 77
    full = flops.philox_randn((n,), seed=9)
    for k in (1, 100, 2048, 4000):
        part = flops.philox_randn((n - k,), seed=9, offset=k)
        assert torch.equal(part, full[k:])
    before = fastlearn.get_num_threads() if hasattr(fastlearn, "get_num_threads") else 2
    try:
        fastlearn.set_num_threads(1)
        one = flops.philox_randn((1 << 17,), seed=3, offset=11)
        fastlearn.set_num_threads(2)
        two = flops.philox_randn((1 << 17,), seed=3, offset=11)
    finally:
        fastlearn.set_num_threads(before)
    assert torch.equal(one, two)
    other = flops.philox_randn((n,), seed=9, offset=n)
    assert not torch.equal(other, full)
    assert abs(np.corrcoef(other.numpy(), full.numpy())[0, 1]) < 0.1
    assert not torch.equal(flops.philox_randn((n,), seed=10), full)
    # the seed tensor form draws the same numbers as the int form
    assert torch.equal(flops.philox_randn((n,), seed=torch.tensor([9])), full)
    # other dtypes are the float32 noise, cast
    assert torch.equal(flops.philox_randn((n,), seed=9, dtype=torch.float64), full.double())
    assert torch.equal(flops.philox_randn((n,), seed=9, dtype=torch.bfloat16), full.bfloat16())


# --- the step against the unfused float64 step -----------------------------------------------------

CASES = [
    # shape, row, uncond, rescale, clip
    ((2, 3, 8, 8), "ddpm", True, 0.0, None),
    ((2, 3, 8, 8), "ddim", True, 0.0, 1.0),
    ((3, 1, 7, 13), "mixed", True, 0.7, 1.5),
    ((3, 1, 7, 13), "mixed", False, 0.0, 2.0),
    ((5, 97), "mixed_no_noise", True, 0.5, None),
    ((4, 3, 33, 31), "ddpm", True, 1.0, 1.0),  # several noise tiles, tile edges inside samples
    ((1, 4099), "mixed", False, 0.0, None),
    ((7,), "mixed", True, 0.3, 0.5),  # one element per sample, no rescale possible -> see errors
]


@pytest.mark.parametrize("shape,row,uncond,rescale,clip", [c for c in CASES if not (c[3] > 0 and len(c[0]) == 1)])
@pytest.mark.parametrize("offset", [0, 4097])
def test_float32_matches_float64_unfused_step(shape, row, uncond, rescale, clip, offset):
    coeffs = schedule_table()
    x, m, u = inputs(shape, uncond=uncond, seed=len(shape) + offset)
    w = 3.5
    prev, x0 = flops.diffusion_step(x, m, coeffs, ROWS[row], uncond=u, guidance_scale=w, guidance_rescale=rescale,
                                    clip=clip, seed=17, offset=offset)
    assert prev.dtype == x0.dtype == torch.float32 and prev.shape == x0.shape == x.shape
    z = flops.philox_randn(shape, seed=17, offset=offset)
    rp, rx = ref_step(x, m, u, coeffs[ROWS[row]], w, rescale, clip, z)
    assert rel_err(x0, rx) < 2e-6
    assert rel_err(prev, rp) < 2e-6
    torch.testing.assert_close(prev.double(), rp, rtol=1e-5, atol=1e-5)
    if clip is not None:
        assert float(x0.abs().max()) <= clip
        assert bool(((rx.abs() - clip).abs() < 1e-9).any())  # the clamp was active


def test_float64_matches_tightly_and_noise_only_when_sigma_nonzero():
    coeffs = schedule_table().double()
    x, m, u = inputs((3, 2, 9, 11), dtype=torch.float64)
    for row in ROWS.values():
        prev, x0 = flops.diffusion_step(x, m, coeffs, row, uncond=u, guidance_scale=2.0, guidance_rescale=0.6,
                                        clip=1.2, seed=5, offset=3)
        z = flops.philox_randn(x.shape, seed=5, offset=3)
        rp, rx = ref_step(x, m, u, coeffs[row], 2.0, 0.6, 1.2, z)
        assert rel_err(x0, rx) < 1e-13 and rel_err(prev, rp) < 1e-13
    # sigma == 0: the seed does not matter; sigma != 0: it does
    a = flops.diffusion_step(x, m, coeffs, ROWS["ddim"], uncond=u, seed=1)[0]
    b = flops.diffusion_step(x, m, coeffs, ROWS["ddim"], uncond=u, seed=2)[0]
    assert torch.equal(a, b)
    a = flops.diffusion_step(x, m, coeffs, ROWS["ddpm"], uncond=u, seed=1)[0]
    b = flops.diffusion_step(x, m, coeffs, ROWS["ddpm"], uncond=u, seed=2)[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("uncond,rescale,clip", [(True, 0.0, None), (True, 0.7, 1.0), (False, 0.0, 1.5)])
def test_half_error_at_most_twice_pytorch(dtype, uncond, rescale, clip):
    coeffs = schedule_table()
    x, m, u = inputs((4, 3, 16, 16), dtype=dtype, uncond=uncond)
    row = ROWS["mixed"]
    prev, x0 = flops.diffusion_step(x, m, coeffs, row, uncond=u, guidance_scale=2.5, guidance_rescale=rescale,
                                    clip=clip, seed=2)
    assert prev.dtype == x0.dtype == dtype
    z = flops.philox_randn(x.shape, seed=2)
    rp, rx = ref_step(x, m, u, coeffs[row], 2.5, rescale, clip, z)
    # PyTorch's own computation of the same step in this precision
    c = [float(v) for v in coeffs[row]]
    g = m if u is None else u + 2.5 * (m - u)
    if u is not None and rescale:
        dims = [1, 2, 3]
        g = rescale * (g * (m.std(dim=dims, keepdim=True) / g.std(dim=dims, keepdim=True))) + (1 - rescale) * g
    tx0 = c[0] * x + c[1] * g
    tx0 = tx0.clamp(-clip, clip) if clip else tx0
    tprev = c[5] * tx0 + c[6] * x + c[7] * (c[2] * x + c[3] * g + c[4] * tx0) + c[8] * z.to(dtype)
    assert rel_err(x0, rx) <= 2 * rel_err(tx0, rx) + 1e-6
    assert rel_err(prev, rp) <= 2 * rel_err(tprev, rp) + 1e-6


def test_model_output_in_another_dtype_and_non_contiguous_inputs():
    coeffs = schedule_table()
    base_x, base_m, base_u = inputs((6, 5, 4, 3))
    x, m, u = base_x.permute(3, 1, 0, 2), base_m.permute(3, 1, 0, 2), base_u.permute(3, 1, 0, 2)
    assert not x.is_contiguous()
    prev, x0 = flops.diffusion_step(x, m, coeffs, 2, uncond=u, guidance_scale=1.7, guidance_rescale=0.4, seed=8)
    e_prev, e_x0 = flops.diffusion_step(x.contiguous(), m.contiguous(), coeffs, 2, uncond=u.contiguous(),
                                        guidance_scale=1.7, guidance_rescale=0.4, seed=8)
    assert torch.equal(prev, e_prev) and torch.equal(x0, e_x0)
    z = flops.philox_randn(x.shape, seed=8)  # logical (C-order) element order of the strided input
    rp, rx = ref_step(x, m, u, coeffs[2], 1.7, 0.4, None, z)
    assert rel_err(prev, rp) < 2e-6
    # a strided slice, and a float16 model output with a float32 sample
    xs, ms = base_x[::2, :, 1:], base_m[::2, :, 1:]
    prev, _ = flops.diffusion_step(xs, ms.half(), coeffs, 0, seed=1)
    rp, _ = ref_step(xs, ms.half().float(), None, coeffs[0], 1.0, 0.0, None, flops.philox_randn(xs.shape, seed=1))
    assert prev.dtype == torch.float32 and rel_err(prev, rp) < 2e-6


def test_same_result_for_any_thread_count_and_batch_split():
    coeffs = schedule_table()
    x, m, u = inputs((8, 3, 32, 32))
    kwargs = dict(uncond=u, guidance_scale=4.0, guidance_rescale=0.7, clip=1.0, seed=77, offset=2048 * 5)
    before = fastlearn.get_num_threads() if hasattr(fastlearn, "get_num_threads") else 2
    try:
        fastlearn.set_num_threads(1)
        one = flops.diffusion_step(x, m, coeffs, 0, **kwargs)
        fastlearn.set_num_threads(2)
        two = flops.diffusion_step(x, m, coeffs, 0, **kwargs)
    finally:
        fastlearn.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    # the batch split in two calls, the second at offset + numel of the first: the same step
    k = 3
    n_first = x[:k].numel()
    a = flops.diffusion_step(x[:k], m[:k], coeffs, 0, **{**kwargs, "uncond": u[:k]})
    b = flops.diffusion_step(x[k:], m[k:], coeffs, 0, **{**kwargs, "uncond": u[k:],
                                                         "offset": kwargs["offset"] + n_first})
    assert torch.equal(torch.cat([a[0], b[0]]), one[0]) and torch.equal(torch.cat([a[1], b[1]]), one[1])


def test_step_tensor_seed_tensor_and_out():
    coeffs = schedule_table()
    x, m, u = inputs((2, 3, 10, 10))
    ref = flops.diffusion_step(x, m, coeffs, 0, uncond=u, guidance_scale=2.0, seed=123, offset=64)
    got = flops.diffusion_step(x, m, coeffs, torch.tensor(0), uncond=u, guidance_scale=2.0,
                               seed=torch.tensor([123]), offset=64)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    out = (torch.empty_like(x), torch.empty_like(x))
    res = flops.diffusion_step(x, m, coeffs, 0, uncond=u, guidance_scale=2.0, seed=123, offset=64, out=out)
    assert res[0] is out[0] and res[1] is out[1]
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    # in place into the sample, and into non-contiguous outputs
    xi = x.clone()
    flops.diffusion_step(xi, m, coeffs, 0, uncond=u, guidance_scale=2.0, seed=123, offset=64,
                         out=(xi, torch.empty_like(x)))
    assert torch.equal(xi, ref[0])
    strided = (torch.empty(10, 10, 3, 2).permute(3, 2, 0, 1), torch.empty(10, 10, 3, 2).permute(3, 2, 0, 1))
    flops.diffusion_step(x, m, coeffs, 0, uncond=u, guidance_scale=2.0, seed=123, offset=64, out=strided)
    assert torch.equal(strided[0], ref[0]) and torch.equal(strided[1], ref[1])
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        flops.diffusion_step(x.clone().requires_grad_(), m, coeffs, 0, out=out)
    with pytest.raises(ValueError, match="same memory"):
        flops.diffusion_step(x, m, coeffs, 0, out=(out[0], out[0]))


def test_empty_batch():
    coeffs = schedule_table()
    prev, x0 = flops.diffusion_step(torch.empty(0, 3, 4), torch.empty(0, 3, 4), coeffs, 1)
    assert prev.shape == x0.shape == (0, 3, 4)


# --- autograd, opcheck, compile ----------------------------------------------------------------

def _grad_inputs(dtype=torch.float64):
    x, m, u = inputs((2, 3, 4), dtype=dtype, seed=4)
    return [t.clone().requires_grad_() for t in (x, m, u)]


@pytest.mark.parametrize("rescale,clip", [(0.0, None), (0.0, 0.8), (0.6, None), (0.8, 0.9)])
def test_gradcheck_float64(rescale, clip):
    coeffs = schedule_table().double()
    x, m, u = _grad_inputs()
    if clip is not None:  # keep x0 away from the clamp's kinks, where finite differences are wrong
        x0 = flops.diffusion_step(x.detach(), m.detach(), coeffs, 2, uncond=u.detach(), guidance_scale=1.8,
                                  guidance_rescale=rescale)[1]  # before the clamp
        assert not bool(((x0.abs() - clip).abs() < 1e-3).any()) and bool((x0.abs() > clip).any())

    def f(x, m, u):
        return flops.diffusion_step(x, m, coeffs, 2, uncond=u, guidance_scale=1.8, guidance_rescale=rescale,
                                    clip=clip, seed=3)

    assert torch.autograd.gradcheck(f, (x, m, u))
    assert torch.autograd.gradcheck(lambda x, m: flops.diffusion_step(x, m, coeffs, 0, clip=clip), (x, m))


def test_backward_matches_autograd_of_reference():
    coeffs = schedule_table().double()
    x, m, u = _grad_inputs()
    gp, gx0 = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    prev, x0 = flops.diffusion_step(x, m, coeffs, 2, uncond=u, guidance_scale=2.2, guidance_rescale=0.7, clip=1.0,
                                    seed=6)
    ours = torch.autograd.grad((prev * gp).sum() + (x0 * gx0).sum(), (x, m, u))
    z = flops.philox_randn(x.shape, seed=6)
    rp, rx = ref_step(x, m, u, coeffs[2], 2.2, 0.7, 1.0, z)
    theirs = torch.autograd.grad((rp * gp).sum() + (rx * gx0).sum(), (x, m, u))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # float32 inputs give float32 gradients close to the float64 ones
    xf, mf, uf = [t.detach().float().requires_grad_() for t in (x, m, u)]
    prev, x0 = flops.diffusion_step(xf, mf, coeffs.float(), 2, uncond=uf, guidance_scale=2.2, guidance_rescale=0.7,
                                    clip=1.0, seed=6)
    g32 = torch.autograd.grad((prev * gp.float()).sum() + (x0 * gx0.float()).sum(), (xf, mf, uf))
    for a, b in zip(g32, theirs):
        assert a.dtype == torch.float32 and rel_err(a, b) < 1e-5


def test_opcheck():
    coeffs = schedule_table()
    x, m, u = _grad_inputs(torch.float32)
    op = torch.ops.fastlearn.diffusion_step.default
    inf = math.inf
    for args in ((x, m, u, coeffs, None, 0, 2.0, 0.0, inf, None, 5, 0),
                 (x, m, u, coeffs, torch.tensor(2), 0, 1.5, 0.7, 1.0, torch.tensor([9]), 0, 2048),
                 (x, m, None, coeffs, None, 3, 1.0, 0.0, 0.5, None, 1, 7)):
        torch.library.opcheck(op, args)


@pytest.mark.slow
def test_torch_compile_fullgraph():
    coeffs = schedule_table()

    def f(x, m, u, seed):
        prev, x0 = flops.diffusion_step(x * 1.0, m, coeffs, 0, uncond=u, guidance_scale=3.0, clip=1.0, seed=seed)
        return prev.sum() + x0.square().mean()

    x, m, u = [t.detach().float().requires_grad_() for t in _grad_inputs()]
    seed = torch.tensor([11])
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x, m, u, seed)
    expected = f(x, m, u, seed)
    torch.testing.assert_close(out, expected)
    g1 = torch.autograd.grad(out, (x, m, u))
    g2 = torch.autograd.grad(expected, (x, m, u))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


# --- bad input ---------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    coeffs = schedule_table()
    x, m, u = inputs((2, 3, 4))
    step = flops.diffusion_step
    with pytest.raises(ValueError, match="model_output.*shape"):
        step(x, m[:1], coeffs, 0)
    with pytest.raises(ValueError, match="uncond.*shape"):
        step(x, m, coeffs, 0, uncond=u[:, :2])
    with pytest.raises(ValueError, match=r"coeffs.*\[num_steps, 9\]"):
        step(x, m, coeffs[:, :8], 0)
    with pytest.raises(TypeError, match="coeffs.*float32 or float64"):
        step(x, m, coeffs.half(), 0)
    with pytest.raises(ValueError, match="out of range"):
        step(x, m, coeffs, 4)
    with pytest.raises(ValueError, match="out of range"):
        step(x, m, coeffs, -1)
    with pytest.raises(ValueError, match="out of range"):  # a CPU step tensor is checked in C++
        step(x, m, coeffs, torch.tensor(9))
    with pytest.raises(TypeError, match="step"):
        step(x, m, coeffs, 1.0)
    with pytest.raises(TypeError, match="step"):
        step(x, m, coeffs, torch.tensor(1.0))
    with pytest.raises(ValueError, match="guidance_scale"):
        step(x, m, coeffs, 0, uncond=u, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="guidance_rescale"):
        step(x, m, coeffs, 0, uncond=u, guidance_rescale=1.5)
    with pytest.raises(ValueError, match="clip"):
        step(x, m, coeffs, 0, clip=0.0)
    with pytest.raises(ValueError, match="clip"):
        step(x, m, coeffs, 0, clip=float("inf"))
    with pytest.raises(TypeError, match="floating dtype"):
        step(x.long(), m, coeffs, 0)
    with pytest.raises(TypeError, match="floating dtype"):
        step(x, m.int(), coeffs, 0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        step(x.numpy(), m, coeffs, 0)
    with pytest.raises(ValueError, match="seed"):
        step(x, m, coeffs, 0, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        step(x, m, coeffs, 0, seed=1.5)
    with pytest.raises(ValueError, match="seed.*one element"):
        step(x, m, coeffs, 0, seed=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="offset"):
        step(x, m, coeffs, 0, offset=-3)
    with pytest.raises(ValueError, match="batch dimension"):
        step(torch.tensor(1.0), torch.tensor(1.0), coeffs, 0)
    with pytest.raises(ValueError, match="at least 2 elements per sample"):
        step(torch.randn(7), torch.randn(7), coeffs, 0, uncond=torch.randn(7), guidance_rescale=0.5)
    with pytest.raises(ValueError, match="meta|device"):
        step(x, m, coeffs.to("meta"), 0)
    with pytest.raises(TypeError, match="out"):
        step(x, m, coeffs, 0, out=torch.empty_like(x))
    with pytest.raises(ValueError, match="out"):
        step(x, m, coeffs, 0, out=(torch.empty(3), torch.empty_like(x)))


def test_nan_inputs_propagate_like_the_unfused_step():
    coeffs = schedule_table()
    x, m, u = inputs((2, 3, 4))
    m[0, 1, 2] = float("nan")
    prev, x0 = flops.diffusion_step(x, m, coeffs, 0, uncond=u, clip=1.0)
    assert torch.isnan(x0[0, 1, 2]) and torch.isnan(prev[0, 1, 2])
    assert int(torch.isnan(prev).sum()) == 1


# --- Triton kernels: GPU, or CPU tensors under TRITON_INTERPRET=1 ----------------------------------

def _triton_step(x, m, u, coeffs, step, *, w=1.0, r=0.0, clip=None, seed=0, offset=0):
    from fastlearn.ops.diffusion_step import _launch_step_gpu

    prev, x0 = torch.empty_like(x), torch.empty_like(x)
    step_t = step if isinstance(step, torch.Tensor) else None
    seed_t = seed if isinstance(seed, torch.Tensor) else None
    _launch_step_gpu(x, m, u, coeffs, step_t, 0 if step_t is not None else step, w, r,
                     math.inf if clip is None else clip, seed_t, 0 if seed_t is not None else seed, offset, prev, x0)
    return prev, x0


@pytest.mark.triton
@pytest.mark.parametrize("offset", [0, 2048, 1000])
@pytest.mark.parametrize("seed", [0, 2**40 + 5])
def test_triton_noise_equals_cpp(triton_device, offset, seed):
    from fastlearn.ops.diffusion_step import _launch_noise_gpu

    n = 2 * 2048 + 300
    out = torch.empty(n, device=triton_device)
    _launch_noise_gpu(out, None, seed, offset)
    cpp = flops.philox_randn((n,), seed=seed, offset=offset)
    torch.testing.assert_close(out.cpu(), cpp, rtol=0, atol=1e-6 if triton_device == "cpu" else 1e-4)
    # and from a seed tensor on the device
    out2 = torch.empty(n, device=triton_device)
    _launch_noise_gpu(out2, torch.tensor([seed - 2**64 if seed >= 2**63 else seed], device=triton_device), 0, offset)
    assert torch.equal(out2, out)


@pytest.mark.triton
@pytest.mark.parametrize("shape,row,uncond,rescale,clip,offset",
                         [((2, 3, 9, 9), "ddpm", True, 0.0, None, 0),
                          ((3, 5, 31), "mixed", True, 0.7, 1.0, 2048 * 3),
                          ((2, 2500), "mixed", False, 0.0, 1.5, 77),
                          ((2, 3, 5, 5), "ddim", True, 1.0, 1.0, 0),
                          ((3, 1000), "mixed_no_noise", True, 0.4, None, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_triton_step_equals_cpp(triton_device, shape, row, uncond, rescale, clip, offset, dtype):
    coeffs = schedule_table()
    x, m, u = inputs(shape, dtype=dtype, uncond=uncond, seed=3)
    cpu = flops.diffusion_step(x, m, coeffs, ROWS[row], uncond=u, guidance_scale=2.5, guidance_rescale=rescale,
                               clip=clip, seed=99, offset=offset)
    dev = [None if t is None else t.to(triton_device) for t in (x, m, u)]
    got = _triton_step(*dev, coeffs.to(triton_device), ROWS[row], w=2.5, r=rescale, clip=clip, seed=99,
                       offset=offset)
    atol = {torch.float32: 1e-5, torch.float64: 1e-5, torch.bfloat16: 3e-2}[dtype]
    if triton_device != "cpu":
        atol = max(atol, 5e-4)
    for a, b in zip(got, cpu):
        assert a.dtype == dtype
        torch.testing.assert_close(a.cpu().double(), b.double(), rtol=1e-5 if dtype != torch.bfloat16 else 2e-2,
                                   atol=atol)


@pytest.mark.triton
def test_triton_step_from_device_step_and_seed_tensors(triton_device):
    coeffs = schedule_table().to(triton_device)
    x, m, u = [t.to(triton_device) for t in inputs((2, 3, 8, 8))]
    a = _triton_step(x, m, u, coeffs, 0, w=2.0, seed=5, offset=64)
    b = _triton_step(x, m, u, coeffs, torch.tensor([0], device=triton_device), w=2.0,
                     seed=torch.tensor([5], device=triton_device), offset=64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a step tensor out of range cannot raise on a GPU without a sync: NaN outputs instead
    c = _triton_step(x, m, u, coeffs, torch.tensor([7], device=triton_device), w=2.0, seed=5)
    assert torch.isnan(c[0]).all() and torch.isnan(c[1]).all()


# --- CUDA (GPU machine only) ----------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gpu_op_matches_cpu_and_autograd(dtype):
    coeffs = schedule_table()
    x, m, u = inputs((4, 3, 40, 40), dtype=dtype)
    kwargs = dict(uncond=u, guidance_scale=3.0, guidance_rescale=0.7, clip=1.0, seed=2**50 + 1, offset=4096)
    cpu = flops.diffusion_step(x, m, coeffs, 0, **kwargs)
    gkw = {**kwargs, "uncond": u.cuda()}
    gpu = flops.diffusion_step(x.cuda(), m.cuda(), coeffs.cuda(), torch.tensor(0, device="cuda"), **gkw)
    tol = dict(rtol=2e-2, atol=3e-2) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, **tol)
    xg = x.cuda().double().requires_grad_()
    mg = m.cuda().double().requires_grad_()
    ug = u.cuda().double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c: flops.diffusion_step(a, b, coeffs.cuda().double(), 0, uncond=c, guidance_scale=2.0,
                                             guidance_rescale=0.5, seed=1),
        (xg[:1, :1, :3, :3].detach().requires_grad_(), mg[:1, :1, :3, :3].detach().requires_grad_(),
         ug[:1, :1, :3, :3].detach().requires_grad_()))


@pytest.mark.cuda
def test_gpu_eager_calls_launch_the_kernels_directly():
    # Plain eager steps, with or without out=, launch the Triton kernels themselves (not
    # through torch's higher-order-op dispatch, which cost 0.4 ms a step and added every
    # launch's constant arguments to torch's kernel side table), with the CPU kernel's numbers.
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    coeffs = schedule_table()
    x, m, u = inputs((2, 3, 16, 16))
    kw = dict(guidance_scale=3.0, guidance_rescale=0.5, clip=1.0, seed=3, offset=2048)
    cpu = flops.diffusion_step(x, m, coeffs, 2, uncond=u, **kw)
    xg, mg, ug, cg = x.cuda(), m.cuda(), u.cuda(), coeffs.cuda()
    out = (torch.empty_like(xg), torch.empty_like(xg))
    flops.diffusion_step(xg, mg, cg, 2, uncond=ug, **kw)  # compile first
    flops.diffusion_step(xg, mg, cg, 2, uncond=ug, out=out, **kw)
    before = len(kernel_side_table.constant_args)
    for _ in range(3):
        plain = flops.diffusion_step(xg, mg, cg, 2, uncond=ug, **kw)
        into = flops.diffusion_step(xg, mg, cg, 2, uncond=ug, out=out, **kw)
    assert len(kernel_side_table.constant_args) == before
    assert into[0] is out[0] and into[1] is out[1]
    for a, b, c in zip(plain, into, cpu):
        torch.testing.assert_close(a.cpu(), c, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b, a)


@pytest.mark.cuda
def test_gpu_cuda_graph_capture_and_replay_with_new_seeds():
    coeffs = schedule_table().cuda()
    x, m, u = [t.cuda() for t in inputs((8, 4, 32, 32))]
    seed = torch.tensor([1], device="cuda")
    step = torch.tensor(0, device="cuda")
    prev, x0 = torch.empty_like(x), torch.empty_like(x)
    kwargs = dict(uncond=u, guidance_scale=3.0, guidance_rescale=0.5, clip=1.0, seed=seed, offset=2048)
    flops.diffusion_step(x, m, coeffs, step, out=(prev, x0), **kwargs)  # compile the kernels before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        flops.diffusion_step(x, m, coeffs, step, out=(prev, x0), **kwargs)
    for s, row in ((7, 0), (8, 2), (2**62 + 1, 2)):
        seed.fill_(s)
        step.fill_(row)
        graph.replay()
        torch.cuda.synchronize()
        eager = flops.diffusion_step(x, m, coeffs, row, **{**kwargs, "seed": s})
        # the same arithmetic (kernel variants reading step and seed from memory or arguments)
        torch.testing.assert_close(prev, eager[0])
        torch.testing.assert_close(x0, eager[1])
    assert not torch.allclose(prev, flops.diffusion_step(x, m, coeffs, 2, **{**kwargs, "seed": 8})[0])


@pytest.mark.cuda
def test_gpu_opcheck_and_compile():
    coeffs = schedule_table().cuda()
    x, m, u = [t.cuda().requires_grad_() for t in inputs((2, 3, 8, 8))]
    torch.library.opcheck(torch.ops.fastlearn.diffusion_step.default,
                          (x, m, u, coeffs, None, 1, 2.0, 0.5, 1.0, None, 3, 0))
    f = torch.compile(lambda a, b, c: flops.diffusion_step(a, b, coeffs, 0, uncond=c, guidance_scale=2.0, seed=4),
                      fullgraph=True)
    got, ref = f(x, m, u), flops.diffusion_step(x, m, coeffs, 0, uncond=u, guidance_scale=2.0, seed=4)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])
