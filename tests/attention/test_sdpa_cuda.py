"""The GPU path (Triton kernels, compiled): bf16/fp16 error at most twice PyTorch's own
against float64, GQA + masks + causal, and CUDA-graph capture. Skipped without a GPU."""

import pytest
import torch
import torch.nn.functional as F

from fastlearn.ops import scaled_dot_product_attention as sdpa

from tests.attention.attention_reference import attention as ref_attention

pytestmark = pytest.mark.cuda


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(0.1)).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("E", [16, 64, 80, 128, 256])
@pytest.mark.parametrize("L,S", [(1, 1), (97, 97), (257, 1025), (1025, 257)])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_half_error_at_most_twice_pytorch(dtype, E, L, S, causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 4, L, E, device="cuda", generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(2, 4, S, E, device="cuda", generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 4, S, E, device="cuda", generator=g, dtype=dtype, requires_grad=True)
    go = torch.randn(2, 4, L, E, device="cuda", generator=g, dtype=dtype)
    out = sdpa(q, k, v, is_causal=causal)
    grads = torch.autograd.grad(out, (q, k, v), go)
    t_out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    t_grads = torch.autograd.grad(t_out, (q, k, v), go)
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(qr.cpu(), kr.cpu(), vr.cpu(), causal=causal).cuda()
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), go.double())
    floor = 2 * torch.finfo(dtype).eps
    assert _rel(out, ref) <= 2 * _rel(t_out, ref) + floor
    for a, t, r in zip(grads, t_grads, ref_grads):
        assert _rel(a, r) <= 2 * _rel(t, r) + floor


def test_gpu_gqa_mask_dropout_and_cuda_graph():
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(1, 8, 130, 64, device="cuda", generator=g)
    k = torch.randn(1, 2, 70, 64, device="cuda", generator=g)
    mask = torch.rand(130, 70, device="cuda", generator=g) > 0.2
    out = sdpa(q, k, k, attn_mask=mask, is_causal=True, enable_gqa=True)
    ref = ref_attention(q.cpu(), k.cpu(), k.cpu(), mask.cpu(), True, gqa=True)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    a = sdpa(q, k, k, dropout_p=0.2, enable_gqa=True)
    torch.manual_seed(0)
    assert torch.equal(a, sdpa(q, k, k, dropout_p=0.2, enable_gqa=True))
    static_q = q.clone()
    sdpa(static_q, k, k, enable_gqa=True)  # warm up (autotuning) outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = sdpa(static_q, k, k, enable_gqa=True)
    static_q.copy_(q * 2)
    graph.replay()
    torch.testing.assert_close(static_out, sdpa(q * 2, k, k, enable_gqa=True))
