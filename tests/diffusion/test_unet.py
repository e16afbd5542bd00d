"""UNet: output shapes across image sizes and channels, the sinusoidal embedding and the attention
block against float64 re-implementations, conditioning (labels change the output, y=None is the
null label), per-sample independence, and clear errors for bad inputs."""

import math

import numpy as np
import pytest
import torch

from fastlearn.diffusion import UNet
from fastlearn.diffusion._unet import _SelfAttention, timestep_embedding


def _randomised(unet, seed=0):
    """Zero-initialised output layers make a fresh UNet output 0; give them weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.abs().sum() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return unet.eval()


@pytest.mark.parametrize("channels,size,mults,classes,attention", [
    (1, 8, (1, 2), 10, True),
    (3, 16, (1, 2, 2), 4, True),
    (2, 32, (1, 2, 2, 2), None, False),
    (1, 8, (1,), 3, True),
])
def test_shapes(channels, size, mults, classes, attention):
    torch.manual_seed(0)
    unet = UNet(channels, size, base_channels=16, channel_mults=mults, num_classes=classes, attention=attention)
    x = torch.randn(3, channels, size, size)
    y = None if classes is None else torch.tensor([0, classes - 1, classes])
    out = unet(x, torch.tensor([0, 500, 999]), y)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv: a fresh model predicts 0
    out = _randomised(unet)(x, 7, y)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 1.0, 17.0, 999.0, 0.5])
    for dim in (8, 9):
        got = timestep_embedding(t, dim).double().numpy()
        half = dim // 2
        f = 10000.0 ** (-np.arange(half) / half)
        ref = np.concatenate([np.cos(t.double().numpy()[:, None] * f), np.sin(t.double().numpy()[:, None] * f)], 1)
        if dim % 2:
            ref = np.pad(ref, ((0, 0), (0, 1)))
        np.testing.assert_allclose(got, ref, atol=2e-4)  # float32 arguments up to 999


def test_attention_against_float64_reference():
    torch.manual_seed(1)
    block = _SelfAttention(8, num_heads=2, groups=4).double()
    with torch.no_grad():
        block.proj.weight.normal_()
        block.proj.bias.normal_()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    got = block(x)
    # reference: GroupNorm, 1x1 conv to q, k, v, per-head softmax(q k^T / sqrt(d)) v, 1x1 proj, residual
    h = torch.nn.functional.group_norm(x, 4, block.norm.weight, block.norm.bias, eps=block.norm.eps)
    qkv = torch.einsum("oc,bcp->bop", block.qkv.weight[:, :, 0, 0], h.reshape(2, 8, 16)) + block.qkv.bias[None, :, None]
    q, k, v = qkv.reshape(2, 3, 2, 4, 16).unbind(1)                   # each B x heads x d x P
    att = torch.softmax(torch.einsum("bhdp,bhdq->bhpq", q, k) / math.sqrt(4), dim=-1)
    o = torch.einsum("bhpq,bhdq->bhdp", att, v).reshape(2, 8, 16)
    ref = x + (torch.einsum("oc,bcp->bop", block.proj.weight[:, :, 0, 0], o)
               + block.proj.bias[None, :, None]).reshape(2, 8, 4, 4)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_conditioning_and_null_label():
    torch.manual_seed(2)
    unet = _randomised(UNet(1, 8, base_channels=16, num_classes=3))
    x = torch.randn(1, 1, 8, 8).expand(4, 1, 8, 8).contiguous()
    with torch.no_grad():
        out = unet(x, 100, torch.tensor([0, 1, 2, 3]))
        # different labels, same input: different predictions
        for i in range(4):
            for j in range(i + 1, 4):
                assert (out[i] - out[j]).abs().max() > 1e-4
        # y=None means the null label (index num_classes)
        torch.testing.assert_close(unet(x, 100), unet(x, 100, torch.full((4,), 3)))
        # a scalar t is broadcast to every sample
        torch.testing.assert_close(unet(x, 100), unet(x, torch.full((4,), 100)))
        # the timestep matters
        assert (unet(x, 100) - unet(x, 900)).abs().max() > 1e-4


def test_samples_are_independent_of_their_batch():
    torch.manual_seed(3)
    unet = _randomised(UNet(2, 16, base_channels=16, channel_mults=(1, 2), num_classes=5))
    x = torch.randn(5, 2, 16, 16)
    t = torch.tensor([3, 50, 400, 700, 999])
    y = torch.tensor([0, 1, 2, 3, 5])
    with torch.no_grad():
        batched = unet(x, t, y)
        single = torch.cat([unet(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(4)
    unet = _randomised(UNet(1, 8, base_channels=16, num_classes=3)).train()
    out = unet(torch.randn(2, 1, 8, 8), torch.tensor([10, 20]), torch.tensor([0, 3]))
    out.square().sum().backward()
    missing = [n for n, p in unet.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_bad_inputs():
    with pytest.raises(ValueError, match="image_size"):
        UNet(1, 10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, 8, channel_mults=())
    with pytest.raises(ValueError, match="num_classes"):
        UNet(1, 8, num_classes=0)
    with pytest.raises(ValueError, match="num_heads"):
        UNet(1, 8, base_channels=16, channel_mults=(1, 2), num_heads=5)
    with pytest.raises(ValueError, match="in_channels"):
        UNet(0, 8)
    unet = UNet(1, 8, base_channels=16, num_classes=3)
    with pytest.raises(ValueError, match="channels"):
        unet(torch.randn(2, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="divisible"):
        unet(torch.randn(2, 1, 7, 7), 1)
    with pytest.raises(ValueError, match="batch, channels"):
        unet(torch.randn(2, 64), 1)
    with pytest.raises(ValueError, match="one timestep per image"):
        unet(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="one label per image"):
        unet(torch.randn(2, 1, 8, 8), 1, torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(1, 8, base_channels=16)(torch.randn(2, 1, 8, 8), 1, torch.tensor([0, 1]))
