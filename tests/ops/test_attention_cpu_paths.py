"""The CPU flash-attention kernel's internal paths against the float64 reference
(tests/attention/attention_reference.py): the unmasked fast path of full key tiles (forward
row groups of 6 rows, base-2 exponentials for float32, fused backward pass) next to the masked
path (partial last tile, causal diagonal, mask), row counts that leave micro-kernel remainders,
a running max that rises in every key tile, and logits large enough to underflow weights."""

import pytest
import torch

from fastlearn.ops import scaled_dot_product_attention as sdpa

from tests.attention.attention_reference import attention as ref_attention


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(0.1)).item()


def _check(q, k, v, causal, tol, mask=None, grad_tol=None):
    """float32 kernel vs float64 reference: output and the three gradients."""
    g = torch.Generator().manual_seed(7)
    go = torch.randn(q.shape[:-1] + (v.shape[-1],), generator=g, dtype=torch.float64)
    qq, kk, vv = (t.detach().float().requires_grad_() for t in (q, k, v))
    out = sdpa(qq, kk, vv, attn_mask=mask, is_causal=causal)
    grads = torch.autograd.grad(out, (qq, kk, vv), go.float())
    rq, rk, rv = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(rq, rk, rv, mask, causal)
    ref_grads = torch.autograd.grad(ref, (rq, rk, rv), go)
    assert _rel(out, ref) < tol, _rel(out, ref)
    for name, a, b in zip("qkv", grads, ref_grads):
        assert _rel(a, b) < (grad_tol or 5 * tol), (name, _rel(a, b))


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# Lengths: whole 64-key tiles (fast path only), a partial last tile (masked path for it), a
# length below one micro-kernel strip, and query counts that are not multiples of 6 rows.
@pytest.mark.parametrize("L,S", [(192, 256), (200, 200), (97, 131), (7, 5), (1, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_paths_match_float64_tightly(L, S, causal):
    # The weights' exponentials carry ~2e-7 relative error: float32 results stay within 1e-5 of
    # float64 (a wrong tile, row group or a sloppy exponential shows up as >1e-3).
    q, k, v = _randn(2, 3, L, 64, seed=1), _randn(2, 3, S, 64, seed=2), _randn(2, 3, S, 64, seed=3)
    _check(q, k, v, causal, tol=1e-5, grad_tol=3e-5)


def test_running_max_rises_in_every_tile():
    # Scores grow with the key index, so every key tile raises each row's running max and the
    # accumulator is rescaled each time; the output is dominated by the last keys.
    S, L = 320, 50
    k = _randn(1, 2, S, 32, seed=4) * 0.1
    k[..., 0] = torch.linspace(0, 6, S, dtype=torch.float64)
    q = _randn(1, 2, L, 32, seed=5) * 0.1
    q[..., 0] = 3.0
    v = _randn(1, 2, S, 32, seed=6)
    _check(q, k, v, False, tol=1e-5, grad_tol=3e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_large_logits_underflow_cleanly(causal):
    # Logits spread over hundreds: most weights are below float32's range (2^-127 and smaller
    # give exactly 0), the rest must still normalise; no NaN, no inf.
    q, k, v = _randn(1, 2, 130, 16, seed=8) * 12, _randn(1, 2, 150, 16, seed=9) * 12, _randn(1, 2, 150, 16, seed=10)
    _check(q, k, v, causal, tol=1e-4, grad_tol=1e-3)


def test_mask_with_minus_inf_and_large_values_on_the_fast_tiles():
    # A float mask of -inf (dropped keys) and large finite values on full 64-key tiles: the
    # masked path scales the mask into the same log2 units as the scores.
    L, S = 70, 128
    q, k, v = _randn(1, 2, L, 64, seed=11), _randn(1, 2, S, 64, seed=12), _randn(1, 2, S, 64, seed=13)
    mask = _randn(1, 1, L, S, seed=14).float() * 20
    mask[..., ::3] = float("-inf")
    _check(q, k, v, False, tol=1e-5, mask=mask, grad_tol=3e-5)


def test_nan_input_propagates():
    q, k, v = _randn(1, 1, 70, 64, seed=15).float(), _randn(1, 1, 64, 64, seed=16).float(), _randn(1, 1, 64, 64).float()
    v[0, 0, 3, 0] = float("nan")
    out = sdpa(q, k, v)
    assert out[..., 0].isnan().all() and not out[..., 1:].isnan().any()



@pytest.mark.parametrize("jump", [3.0, 5.0, 7.9, 12.0])
def test_lazy_reference_max_on_full_tiles(jump):
    # The unmasked float32 tiles keep a lazy reference max: weights are 2^(s - m) with the
    # reference m only raised when a tile's max exceeds it by more than 8 (log2 units). Each
    # 64-key tile raises row i's scores by jump * (1 + i / L) log2 units, so within one 6-row
    # group some rows rescale and others keep weights above 1 (up to 256); inputs are exact
    # float32 values so only the kernel's rounding is measured. A skipped or wrong rescale
    # gives errors of order 1.
    S, L = 256, 50
    k = _randn(1, 2, S, 64, seed=17) * 0.1
    k[..., 0] = torch.div(torch.arange(S), 64, rounding_mode="floor").double() * jump * 0.6931471805599453
    q = _randn(1, 2, L, 64, seed=18) * 0.1
    q[..., 0] = 8.0 * (1.0 + torch.arange(L, dtype=torch.float64) / L)  # times 1/sqrt(64) = 1/8
    v = _randn(1, 2, S, 64, seed=19)
    q, k, v = (t.float().double() for t in (q, k, v))
    go = _randn(1, 2, L, 64, seed=23).float()
    qq, kk, vv = (t.float().requires_grad_() for t in (q, k, v))
    out = sdpa(qq, kk, vv)
    (dv,) = torch.autograd.grad(out, (vv,), go)  # dV = P^T dO checks the saved log-sum-exp
    rv = v.clone().requires_grad_()
    ref = ref_attention(q, k, rv, None, False)
    (ref_dv,) = torch.autograd.grad(ref, (rv,), go.double())
    # (dQ and dK are left out: the large first column makes them ill-conditioned in float32)
    assert _rel(out, ref) < 2e-5, _rel(out, ref)
    assert _rel(dv, ref_dv) < 2e-5, _rel(dv, ref_dv)



@pytest.mark.parametrize("S", [5, 64, 200])
@pytest.mark.parametrize("causal", [False, True])
def test_nan_in_query_or_key_gives_nan_rows(S, causal):
    # A NaN score must not vanish: a row is NaN exactly when its query has a NaN or it sees a
    # key with one (the kernel's max skips NaNs; the row's sum carries them); the other rows
    # are exact. (PyTorch's CPU SDPA is not the judge here: it returns a finite row for a NaN
    # query at S=5.)
    L, nan_key = 70, S // 2
    q, k, v = _randn(1, 2, L, 64, seed=17), _randn(1, 2, S, 64, seed=18), _randn(1, 2, S, 64, seed=19)
    q[0, 0, 9, 5] = float("nan")          # one query row of head 0
    k[0, 1, nan_key, 7] = float("nan")    # one key of head 1: every row that sees it
    ours = sdpa(q.float(), k.float(), v.float(), is_causal=causal)
    expect = torch.zeros(1, 2, L, dtype=torch.bool)
    expect[0, 0, 9] = True
    rows = torch.arange(L)
    expect[0, 1] = rows >= nan_key if causal else True  # causal: row i sees keys j <= i
    torch.testing.assert_close(ours.isnan().all(-1), expect)
    torch.testing.assert_close(ours.isnan().any(-1), expect)
    clean_q, clean_k = q.nan_to_num(0.0), k.nan_to_num(0.0)
    ref = ref_attention(clean_q, clean_k, v, None, causal)
    torch.testing.assert_close(ours[~expect].double(), ref[~expect], rtol=1e-4, atol=1e-5)
