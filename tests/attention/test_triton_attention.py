"""The Triton attention kernels under the interpreter (CPU tensors, tiny shapes): forward and
gradients against the float64 reference, and dropout against the C++ kernel, which hashes the
same (seed, head, row, column) into the same keep-mask."""

import pytest
import torch

import fastlearn.ops  # noqa: F401  (registers torch.ops.fastlearn.sdpa)

from tests.attention.attention_reference import attention as ref_attention

pytestmark = pytest.mark.triton


def _inputs(B, Hq, Hkv, L, S, E, Ev, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, L, E, generator=g).to(dtype)
    k = torch.randn(B, Hkv, S, E, generator=g).to(dtype)
    v = torch.randn(B, Hkv, S, Ev, generator=g).to(dtype)
    return q.to(device), k.to(device), v.to(device)


@pytest.mark.parametrize("causal,masked,gqa,L,S,E", [
    (False, False, False, 17, 17, 16),
    (True, True, True, 19, 33, 24),   # E not a power of two, L != S, bool mask + causal, GQA
])
def test_triton_forward_backward_match_reference(triton_device, causal, masked, gqa, L, S, E):
    from fastlearn.kernels.triton import attention as ta

    Hq, Hkv = (4, 2) if gqa else (2, 2)
    q, k, v = _inputs(1, Hq, Hkv, L, S, E, 8, torch.float32, triton_device)
    mask = bias = None
    if masked:
        mask = torch.rand(L, S, generator=torch.Generator().manual_seed(5)) > 0.3
        mask[:, 0] = True
        bias = torch.zeros(L, S).masked_fill(~mask, float("-inf")).to(triton_device).expand(1, Hq, L, S)
    scale = E ** -0.5
    out, lse = ta.attention_forward(q, k, v, bias, 0.0, causal, scale, 0)
    qr, kr, vr = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(qr, kr, vr, mask, causal, gqa=gqa)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-4, atol=1e-5)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    dq, dk, dv = ta.attention_backward(go.to(triton_device), q, k, v, bias, out, lse, 0.0, causal, scale, 0)
    rq, rk, rv = torch.autograd.grad(ref, (qr, kr, vr), go.double())
    for a, b in ((dq, rq), (dk, rk), (dv, rv)):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-4)


def test_triton_dropout_matches_cpu_kernel(triton_device):
    from fastlearn.kernels.triton import attention as ta

    q, k, v = _inputs(1, 2, 1, 20, 18, 16, 16, torch.float32, triton_device)
    args = (0.3, True, 0.25, 1234567890123)
    out, lse = ta.attention_forward(q, k, v, None, *args)
    cpu = [t.cpu().requires_grad_() for t in (q, k, v)]
    out_cpu, _ = torch.ops.fastlearn.sdpa(*cpu, None, *args)
    torch.testing.assert_close(out.cpu(), out_cpu.detach(), rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape)
    grads = ta.attention_backward(go.to(triton_device), q, k, v, None, out, lse, *args)
    grads_cpu = torch.autograd.grad(out_cpu, cpu, go)
    for a, b in zip(grads, grads_cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)


def test_triton_half_forward_close_to_reference(triton_device):
    from fastlearn.kernels.triton import attention as ta

    q, k, v = _inputs(1, 1, 1, 16, 16, 16, 16, torch.float16, triton_device)
    out, _ = ta.attention_forward(q, k, v, None, 0.0, False, 0.25, 0)
    ref = ref_attention(q.cpu(), k.cpu(), v.cpu(), scale=0.25)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.cpu().double(), ref, rtol=2e-2, atol=2e-3)
