"""fastlearn.ops.scaled_dot_product_attention on the CPU against a float64 reference: values
and gradients over a sweep of dtype x causal x mask x GQA x head dim x lengths, dropout by
reproducibility and statistics, opcheck, gradcheck, torch.compile and the refusals."""

import math

import pytest
import torch
import torch.nn.functional as F

import fastlearn
from fastlearn.ops import scaled_dot_product_attention as sdpa

from tests.attention.attention_reference import attention as ref_attention

# (head dim qk, head dim v, len_q, len_kv)
SHAPES = [
    (16, 16, 1, 1), (16, 16, 17, 17), (64, 64, 97, 97), (80, 80, 257, 257), (128, 128, 17, 97),
    (256, 256, 97, 17), (64, 32, 257, 1025), (64, 64, 1025, 1025), (33, 17, 70, 130),
]
MASKS = ["none", "bool", "float"]


def make_inputs(B, Hq, Hkv, L, S, E, Ev, dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, L, E, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, S, E, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, S, Ev, generator=g, dtype=torch.float64)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(L, S, generator=g) > 0.3
    elif mask_kind == "float":
        mask = torch.randn(B, 1, L, S, generator=g, dtype=torch.float32)  # float32 on any query dtype
    return q, k, v, mask


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(0.1)).item()


def run(q, k, v, mask, causal, gqa, dtype, fn):
    qq, kk, vv = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = fn(qq, kk, vv, attn_mask=mask, is_causal=causal, enable_gqa=gqa)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad(out, (qq, kk, vv), grad.to(dtype))
    return out, grads, grad


def reference(q, k, v, mask, causal, gqa, grad):
    qq, kk, vv = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = ref_attention(qq, kk, vv, mask, causal, gqa=gqa)
    return out, torch.autograd.grad(out, (qq, kk, vv), grad)


@pytest.mark.parametrize("E,Ev,L,S", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_reference(E, Ev, L, S, dtype):
    # Each shape runs causal x mask kinds x GQA in turn (cheap ones fully, long ones thinned).
    combos = [(c, m, gq) for c in (False, True) for m in MASKS for gq in (False, True)]
    if L * S > 20000:
        if dtype == torch.float64:
            pytest.skip("long float64 cases: float32 covers these lengths (keeps CI time low)")
        combos = combos[::3]
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    for i, (causal, mask_kind, gqa) in enumerate(combos):
        Hq, Hkv = (4, 2) if gqa else (2, 2)
        q, k, v, mask = make_inputs(1, Hq, Hkv, L, S, E, Ev, dtype, mask_kind, seed=i)
        out, grads, grad = run(q, k, v, mask, causal, gqa, dtype, sdpa)
        ref_out, ref_grads = reference(q, k, v, mask, causal, gqa, grad)
        assert out.dtype == dtype and out.shape == ref_out.shape
        assert rel_err(out, ref_out) < tol, (causal, mask_kind, gqa)
        for name, a, b in zip("qkv", grads, ref_grads):
            assert rel_err(a, b) < 5 * tol, (name, causal, mask_kind, gqa)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_error_at_most_twice_pytorch(dtype, causal):
    for E, L, S in ((64, 97, 97), (128, 257, 130)):
        q, k, v, mask = make_inputs(2, 2, 2, L, S, E, E, dtype, "float")
        mask = mask.to(dtype)
        out, grads, grad = run(q, k, v, mask, causal, False, dtype, sdpa)
        t_out, t_grads, _ = run(q, k, v, mask, causal, False, dtype, F.scaled_dot_product_attention)
        ref_out, ref_grads = reference(q, k, v, mask, causal, False, grad)
        floor = 2 * torch.finfo(dtype).eps  # below this both are exact to the format
        assert out.dtype == dtype
        assert rel_err(out, ref_out) <= 2 * rel_err(t_out, ref_out) + floor
        for a, t, b in zip(grads, t_grads, ref_grads):
            assert rel_err(a, b) <= 2 * rel_err(t, b) + floor


def test_matches_torch_broadcasting_and_shapes():
    g = torch.Generator().manual_seed(0)
    cases = [
        ((3, 5, 8), (3, 6, 8), (3, 6, 2), None),          # 3-d, Ev != E
        ((2, 3, 5, 8), (1, 3, 6, 8), (1, 3, 6, 8), None),  # batch broadcast
        ((5, 8), (6, 8), (6, 4), (5, 6)),                  # 2-d with a mask
        ((2, 2, 3, 5, 8), (2, 2, 3, 6, 8), (2, 2, 3, 6, 8), (2, 1, 1, 1, 6)),  # 5-d, key-padding mask
    ]
    for qs, ks, vs, ms in cases:
        q, k, v = (torch.randn(s, generator=g, dtype=torch.float64) for s in (qs, ks, vs))
        mask = None if ms is None else torch.rand(ms, generator=g) > 0.2
        got = sdpa(q, k, v, attn_mask=mask, scale=0.3)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_causal_alignment_and_mask_combined_like_pytorch():
    g = torch.Generator().manual_seed(3)
    for L, S in ((5, 3), (3, 7), (70, 130)):
        q = torch.randn(1, 2, L, 8, generator=g, dtype=torch.float64)
        k = torch.randn(1, 2, S, 8, generator=g, dtype=torch.float64)
        mask = torch.randn(L, S, generator=g, dtype=torch.float64)
        for m in (None, mask):
            torch.testing.assert_close(sdpa(q, k, k, attn_mask=m, is_causal=True),
                                       F.scaled_dot_product_attention(q, k, k, attn_mask=m, is_causal=True))


def test_fully_masked_rows_give_zeros_and_zero_gradients():
    q, k, v, _ = make_inputs(1, 1, 1, 4, 70, 8, 8, torch.float32, "none")
    mask = torch.ones(4, 70, dtype=torch.bool)
    mask[1] = False
    q.requires_grad_()
    out = sdpa(q.float(), k.float(), v.float(), attn_mask=mask)
    assert torch.all(out[0, 0, 1] == 0) and torch.isfinite(out).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask))
    qq = q.detach().float().requires_grad_()
    (gq,) = torch.autograd.grad(sdpa(qq, k.float(), v.float(), attn_mask=mask).sum(), qq)
    assert torch.all(gq[0, 0, 1] == 0) and torch.isfinite(gq).all()


def test_float32_mask_on_float64_inputs_keeps_its_values():
    q, k, v, mask = make_inputs(1, 2, 2, 17, 33, 16, 16, torch.float64, "float")
    got = sdpa(q, k, v, attn_mask=mask)
    want = ref_attention(q, k, v, mask.double())
    assert rel_err(got, want) < 1e-12


def test_empty_inputs():
    q = torch.randn(2, 3, 0, 8)
    k = torch.randn(2, 3, 5, 8)
    assert sdpa(q, k, k).shape == (2, 3, 0, 8)
    out = sdpa(torch.randn(2, 3, 4, 8), torch.randn(2, 3, 0, 8), torch.randn(2, 3, 0, 6))
    assert out.shape == (2, 3, 4, 6) and torch.all(out == 0)


# --- dropout -------------------------------------------------------------------------------

def test_dropout_reproducible_with_manual_seed_and_unbiased():
    q, k, v, _ = make_inputs(2, 4, 4, 64, 64, 16, 16, torch.float32, "none")
    q, k, v = q.float(), k.float(), v.float()
    torch.manual_seed(123)
    a = sdpa(q, k, v, dropout_p=0.3)
    torch.manual_seed(123)
    b = sdpa(q, k, v, dropout_p=0.3)
    c = sdpa(q, k, v, dropout_p=0.3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Uniform weights (q = 0) on v = 1: each output is (kept keys / S) / (1 - p), mean 1,
    # variance p / ((1 - p) S) per row; over 4096 rows the mean is within 5 sigma of 1.
    p, S = 0.3, 256
    q0 = torch.zeros(1, 16, 256, 8)
    ones = torch.ones(1, 16, S, 1)
    out = sdpa(q0, torch.randn(1, 16, S, 8), ones, dropout_p=p)
    rows = out.numel()
    sigma = math.sqrt(p / ((1 - p) * S) / rows)
    assert abs(out.mean().item() - 1) < 5 * sigma
    assert abs(out.var().item() - p / ((1 - p) * S)) < 0.2 * p / ((1 - p) * S)


def test_dropout_gradients_match_the_same_mask():
    # With a fixed seed the op is deterministic: its gradient must match finite differences.
    q, k, v, _ = make_inputs(1, 2, 1, 5, 7, 4, 3, torch.float64, "none")
    bias = torch.randn(1, 2, 5, 7, dtype=torch.float64)

    def f(q, k, v):
        return torch.ops.fastlearn.sdpa(q, k, v, bias, 0.4, True, 0.5, 987654321)[0]

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (q, k, v)))


def test_dropout_keep_rate():
    kept = sum(fastlearn._C.attention_dropout_keep(7, 3, i, j, 0.25) for i in range(100) for j in range(100))
    assert abs(kept / 10000 - 0.75) < 5 * math.sqrt(0.25 * 0.75 / 10000)


# --- integration ---------------------------------------------------------------------------

def test_gradcheck_float64_mask_causal_gqa():
    q, k, v, mask = make_inputs(1, 4, 2, 5, 6, 3, 2, torch.float64, "bool")
    mask[:, 0] = True  # every row sees at least one key: finite differences stay smooth

    def f(q, k, v):
        return sdpa(q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (q, k, v)))


def test_opcheck():
    q, k, v, _ = make_inputs(1, 4, 2, 9, 11, 8, 6, torch.float32, "none")
    bias = torch.randn(1, 1, 9, 11).expand(1, 4, 9, 11)
    for args in ((q.float(), k.float(), v.float(), None, 0.0, False, 0.35, 0),
                 (q.float().requires_grad_(), k.float().requires_grad_(), v.float().requires_grad_(), bias, 0.0,
                  True, 0.35, 0)):
        torch.library.opcheck(torch.ops.fastlearn.sdpa.default, args)
    out, lse = torch.ops.fastlearn.sdpa(q, k, v, None, 0.0, False, 0.35, 0)
    torch.library.opcheck(torch.ops.fastlearn.sdpa_backward.default,
                          (torch.randn_like(out), q, k, v, None, out, lse, 0.0, False, 0.35, 0))


def test_torch_compile_fullgraph():
    q, k, v, mask = make_inputs(1, 2, 2, 17, 17, 16, 16, torch.float32, "bool")
    q, k, v = q.float(), k.float(), v.float()

    def f(q, k, v):
        return sdpa(q, k, v, attn_mask=mask, is_causal=True) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v))


# --- refusals --------------------------------------------------------------------------------

def test_errors_name_the_argument():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(TypeError, match="one dtype"):
        sdpa(q, q.double(), q)
    with pytest.raises(TypeError, match="'key'"):
        sdpa(q, q.int(), q)
    with pytest.raises(ValueError, match="last dimension of 'key'"):
        sdpa(q, torch.randn(1, 2, 4, 7), q)
    with pytest.raises(ValueError, match="'value' has"):
        sdpa(q, q, torch.randn(1, 2, 5, 8))
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, q, q, dropout_p=1.0)
    with pytest.raises(ValueError, match="scale"):
        sdpa(q, q, q, scale=float("nan"))
    with pytest.raises(ValueError, match="enable_gqa=True"):
        sdpa(torch.randn(1, 4, 4, 8), q, q)
    with pytest.raises(ValueError, match="multiple"):
        sdpa(torch.randn(1, 3, 4, 8), q, q, enable_gqa=True)
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="attn_mask"):
        sdpa(q, q, q, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="detach"):
        sdpa(q, q, q, attn_mask=torch.zeros(4, 4, requires_grad=True))
    with pytest.raises(TypeError, match="torch.Tensor"):
        sdpa(q.numpy(), q, q)
