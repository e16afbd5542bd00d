"""fastlearn.diffusion.sample: the fused loop against a plain scheduler.step loop written here
(DDIM eta=0, DDPM with the fused op's own noise, classifier-free guidance with and without
rescale), classifier guidance on a two-Gaussian model where the guided sampler is an exact
affine map (float64 reference), determinism, Ctrl-C, bad inputs, and (cuda) the CUDA graph
against the eager loop."""

import math
import warnings

import numpy as np
import pytest
import torch

from fastlearn.diffusion import DDIMScheduler, DDPMScheduler, UNet, sample


def _unet(num_classes=3, seed=0):
    torch.manual_seed(seed)
    unet = UNet(1, 8, base_channels=16, channel_mults=(1, 2), num_classes=num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            if p.abs().sum() == 0:   # zero-initialised output layers
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return unet.eval()


def _reference_loop(model, scheduler, x, labels, w=1.0, rescale=0.0, eta=0.0, noises=None, steps=10):
    """What a user writes: model calls, CFG in torch, scheduler.step, in float64 where we can."""
    scheduler.set_timesteps(steps)
    null = torch.full_like(labels, model.num_classes) if labels is not None else None
    for i, t in enumerate(scheduler.timesteps):
        with torch.no_grad():
            if w != 1.0:
                # one batched call as sample() makes (float32 convolutions of a batch of 2B and of B
                # round differently, and 1 / sqrt(alpha_bar) at the first step amplifies that)
                cond, uncond = (o.double() for o in model(torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2))
                eps = uncond + w * (cond - uncond)
                if rescale:
                    dims = list(range(1, x.ndim))
                    std_c, std_g = cond.std(dim=dims, keepdim=True), eps.std(dim=dims, keepdim=True)
                    eps = rescale * eps * std_c / std_g + (1 - rescale) * eps
            else:
                eps = model(x, t, labels).double()
        kw = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
        if noises is not None:
            kw["variance_noise"] = noises[i].to(x.dtype)
        x = scheduler.step(eps.to(x.dtype), t, x, **kw).prev_sample
    return x


def _x_T(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("w,rescale", [(1.0, 0.0), (3.0, 0.0), (2.5, 0.7)])
def test_fused_ddim_equals_scheduler_step_loop(w, rescale, dtype):
    """float64: the loops agree to round-off. float32: each step agrees to ~1e-7, but ten steps
    through a random UNet (and 1 / sqrt(alpha_bar) ~ 160 at the first step) amplify that."""
    tol = 1e-5 if dtype == torch.float64 else 2e-4
    model, sched = _unet().to(dtype), DDIMScheduler(timestep_spacing="trailing")
    labels = torch.tensor([0, 1, 2, 1])
    got = sample(model, sched, (4, 1, 8, 8), labels=labels, guidance_scale=w, guidance_rescale=rescale,
                 num_inference_steps=10, seed=7, progress=False)
    assert got.dtype == dtype
    ref = _reference_loop(model, DDIMScheduler(timestep_spacing="trailing"), _x_T((4, 1, 8, 8), 7).to(dtype), labels,
                          w, rescale)
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    # and the unfused path of sample() is that loop too
    unfused = sample(model, sched, (4, 1, 8, 8), labels=labels, guidance_scale=w, guidance_rescale=rescale,
                     num_inference_steps=10, seed=7, progress=False, fused=False)
    torch.testing.assert_close(unfused, ref, rtol=tol, atol=tol)


def test_cfg_with_weight_one_is_plain_conditional_sampling():
    model, sched = _unet().double(), DDIMScheduler()
    labels = torch.tensor([2, 0, 1])
    w1 = sample(model, sched, (3, 1, 8, 8), labels=labels, guidance_scale=1.0, num_inference_steps=8, seed=3,
                progress=False)
    plain = _reference_loop(model, DDIMScheduler(), _x_T((3, 1, 8, 8), 3).double(), labels, steps=8)
    torch.testing.assert_close(w1, plain, rtol=1e-5, atol=1e-5)
    # guidance changes the result (the test above is not vacuous)
    w3 = sample(model, sched, (3, 1, 8, 8), labels=labels, guidance_scale=3.0, num_inference_steps=8, seed=3,
                progress=False)
    assert (w3 - w1).abs().max() > 1e-3


def test_fused_ddpm_equals_scheduler_step_with_the_same_noise():
    from fastlearn.ops import philox_randn

    model, sched = _unet().double(), DDPMScheduler()
    labels = torch.tensor([0, 2])
    seed, steps, shape = 11, 6, (2, 1, 8, 8)
    got = sample(model, sched, shape, labels=labels, guidance_scale=2.0, num_inference_steps=steps, seed=seed,
                 progress=False)
    stride = -(-math.prod(shape) // 2048) * 2048
    noises = [philox_randn(shape, seed=seed, offset=i * stride) for i in range(steps)]
    ref = _reference_loop(model, DDPMScheduler(), _x_T(shape, seed).double(), labels, w=2.0, noises=noises, steps=steps)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # eta > 0 DDIM draws noise too: seeded, so repeatable, and different per seed
    a = sample(model, DDIMScheduler(), shape, labels=labels, eta=1.0, num_inference_steps=5, seed=1, progress=False)
    b = sample(model, DDIMScheduler(), shape, labels=labels, eta=1.0, num_inference_steps=5, seed=1, progress=False)
    c = sample(model, DDIMScheduler(), shape, labels=labels, eta=1.0, num_inference_steps=5, seed=2, progress=False)
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-2


class _TwoGaussians(torch.nn.Module):
    """x0 ~ 1/2 N(mu_0, s^2 I) + 1/2 N(mu_1, s^2 I): its exact epsilon-prediction, and the exact
    noisy classifier p(y | x_t, t) (logits -|x - a mu_y|^2 / 2 v, v = a^2 s^2 + 1 - a^2)."""

    num_classes = 2

    def __init__(self, alphas_cumprod, mus, s):
        super().__init__()
        self.register_buffer("ab", alphas_cumprod.float())
        self.register_buffer("mus", mus.float())                      # 2 x d
        self.s = s

    def _stats(self, t):
        ab = self.ab[t]
        return ab.sqrt(), 1 - ab, ab * self.s**2 + 1 - ab               # alpha, sigma^2, v

    def classifier(self, x, t):
        a, _, v = self._stats(t)
        d2 = ((x[:, None, :] - a * self.mus[None]) ** 2).sum(-1)        # B x 2
        return -d2 / (2 * v)

    def forward(self, x, t, y=None):
        a, sigma2, v = self._stats(t)
        post = torch.softmax(self.classifier(x, t), dim=-1)             # p(y | x_t)
        mean_mu = post @ self.mus                                        # E[mu_y | x_t]
        return sigma2.sqrt() * (x - a * mean_mu) / v


def test_classifier_guidance_on_two_gaussians():
    """With scale 1 and the exact classifier, guided epsilon is the class-conditional Gaussian's
    epsilon, so DDIM (eta = 0) maps x - a mu_y by the factor (a' a s^2 + sigma' sigma) / v per
    step: samples are an affine function of x_T, computed here in float64."""
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False)
    d, s, n = 3, 0.3, 2000
    mus = torch.tensor([[-0.6, 0.2, 0.4], [0.5, -0.3, 0.6]])
    model = _TwoGaussians(sched.alphas_cumprod, mus, s)
    labels = torch.tensor([1] * n)
    guided = sample(model, sched, (n, d), labels=labels, classifier=model.classifier, classifier_scale=1.0,
                    num_inference_steps=20, seed=0, progress=False).double()
    # float64 reference: the affine DDIM map of N(mu_1, s^2 I)
    x = _x_T((n, d), 0).double()
    ab = sched.alphas_cumprod
    grid = sched.timesteps.tolist()
    mu = mus[1].double()
    for i, t in enumerate(grid):
        a, sg = ab[t].sqrt(), (1 - ab[t]).sqrt()
        ab_prev = ab[grid[i + 1]] if i + 1 < len(grid) else torch.tensor(1.0, dtype=torch.float64)
        a_p, sg_p = ab_prev.sqrt(), (1 - ab_prev).sqrt()
        v = a * a * s * s + sg * sg
        x = a_p * mu + (a_p * a * s * s + sg_p * sg) / v * (x - a * mu)
    torch.testing.assert_close(guided, x, rtol=0, atol=2e-4)
    # the samples sit on class 1: mean near mu_1 (DDIM shrinks the spread a little)
    assert (guided.mean(0) - mu).abs().max() < 0.05
    # without guidance the same model samples the mixture: class-1 fraction near 1/2
    plain = sample(model, sched, (n, d), labels=labels, num_inference_steps=20, seed=0, progress=False)
    frac = (torch.softmax(model.classifier(plain, torch.tensor(0)), -1)[:, 1] > 0.5).float().mean()
    assert 0.4 < float(frac) < 0.6
    guided_frac = (torch.softmax(model.classifier(guided.float(), torch.tensor(0)), -1)[:, 1] > 0.5).float().mean()
    assert float(guided_frac) > 0.95


def test_classifier_guidance_on_a_unet_matches_a_manual_loop():
    """The eps correction -sqrt(1 - ab_t) s grad log p(y | x_t) through autograd, with CFG too."""
    model, sched = _unet(), DDIMScheduler()
    torch.manual_seed(5)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))

    def classifier(x, t):
        return clf(x) * (1 + t.float() / 1000)

    labels = torch.tensor([0, 1, 2])
    got = sample(model, sched, (3, 1, 8, 8), labels=labels, guidance_scale=2.0, classifier=classifier,
                 classifier_scale=4.0, num_inference_steps=6, seed=2, progress=False)
    ref_sched = DDIMScheduler()
    ref_sched.set_timesteps(6)
    x = _x_T((3, 1, 8, 8), 2)
    for t in ref_sched.timesteps:
        xg = x.clone().requires_grad_(True)
        logp = torch.log_softmax(classifier(xg, t), -1)[torch.arange(3), labels].sum()
        (grad,) = torch.autograd.grad(logp, xg)
        with torch.no_grad():
            c, u = model(torch.cat([x, x]), t, torch.cat([labels, torch.full_like(labels, 3)])).chunk(2)
        eps = u + 2.0 * (c - u) - (1 - ref_sched.alphas_cumprod[t]).sqrt().float() * 4.0 * grad
        x = ref_sched.step(eps, t, x).prev_sample
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_determinism_return_x0_and_progress_off():
    model, sched = _unet(), DDPMScheduler()
    a, x0 = sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 1]), num_inference_steps=4, seed=5,
                   progress=False, return_x0=True)
    b = sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 1]), num_inference_steps=4, seed=5, progress=False)
    assert torch.equal(a, b)
    # DDPM's last step adds no noise: the result is the last x0 prediction
    torch.testing.assert_close(a, x0)


def test_interrupt_returns_the_last_x0_prediction():
    base = _unet()

    class Interrupting(torch.nn.Module):
        num_classes = 3

        def __init__(self):
            super().__init__()
            self.inner, self.calls = base, 0

        def forward(self, x, t, y=None):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.inner(x, t, y)

    model = Interrupting()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, x0 = sample(model, DDIMScheduler(), (2, 1, 8, 8), labels=torch.tensor([0, 1]), num_inference_steps=5,
                         seed=0, progress=False, return_x0=True)
    assert any("interrupted at step 2" in str(w.message) for w in caught)
    # the x0 of step 1 (two completed steps)
    sched = DDIMScheduler()
    sched.set_timesteps(5)
    x = _x_T((2, 1, 8, 8), 0)
    for t in sched.timesteps[:2]:
        with torch.no_grad():
            step = sched.step(base(x, t, torch.tensor([0, 1])), t, x)
        x = step.prev_sample
    torch.testing.assert_close(out, step.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_thresholding_runs_unfused():
    model = _unet().double()
    sched = DDIMScheduler(thresholding=True)
    got = sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 1]), num_inference_steps=4, seed=1,
                 progress=False)
    ref = _reference_loop(model, DDIMScheduler(thresholding=True), _x_T((2, 1, 8, 8), 1).double(), torch.tensor([0, 1]),
                          steps=4)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fused=True"):
        sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 1]), num_inference_steps=4, fused=True)


def test_bad_inputs():
    model, sched = _unet(), DDIMScheduler()
    lab = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="shape"):
        sample(model, sched, (0, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        sample(model, sched, "8x8")
    with pytest.raises(ValueError, match="needs labels"):
        sample(model, sched, (2, 1, 8, 8), guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="one class index per sample"):
        sample(model, sched, (2, 1, 8, 8), labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="guidance_scale"):
        sample(model, sched, (2, 1, 8, 8), labels=lab, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="guidance_rescale"):
        sample(model, sched, (2, 1, 8, 8), labels=lab, guidance_rescale=2.0)
    with pytest.raises(ValueError, match="eta"):
        sample(model, DDPMScheduler(), (2, 1, 8, 8), labels=lab, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        sample(model, sched, (2, 1, 8, 8), labels=lab, eta=-1.0)
    with pytest.raises(ValueError, match="classifier"):
        sample(model, sched, (2, 1, 8, 8), labels=lab, classifier_scale=1.0)
    with pytest.raises(ValueError, match="seed"):
        sample(model, sched, (2, 1, 8, 8), seed=-1)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(model, sched, (2, 1, 8, 8), num_inference_steps=0)
    with pytest.raises(ValueError, match="cuda_graph"):
        sample(model, sched, (2, 1, 8, 8), cuda_graph="yes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            sample(model, sched, (2, 1, 8, 8), cuda_graph=True)
    with pytest.raises(ValueError, match="unconditional"):
        sample(UNet(1, 8, base_channels=8, num_classes=None), sched, (2, 1, 8, 8), labels=lab)


@pytest.mark.cuda
@pytest.mark.parametrize("kind,w", [("ddim", 3.0), ("ddpm", 2.0)])
def test_cuda_graph_equals_eager(kind, w, monkeypatch):
    # Full float32 convolutions on the GPU: with cuDNN's default TF32 the CPU comparison below
    # fails for DDIM at w=3 (its first step divides the model's error by sqrt(alpha_bar) ~ 0.006)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = _unet().cuda()
    make = (lambda: DDIMScheduler(timestep_spacing="trailing")) if kind == "ddim" else DDPMScheduler
    labels = torch.tensor([0, 1, 2, 0], device="cuda")
    kw = dict(labels=labels, guidance_scale=w, num_inference_steps=12, progress=False)
    eager = sample(model, make(), (4, 1, 8, 8), seed=3, cuda_graph=False, **kw)
    graph = sample(model, make(), (4, 1, 8, 8), seed=3, cuda_graph=True, **kw)
    torch.testing.assert_close(graph, eager, rtol=1e-4, atol=1e-4)
    # a replay of the cached graph with another seed and labels equals eager with them
    labels2 = torch.tensor([2, 2, 1, 1], device="cuda")
    kw["labels"] = labels2
    eager2 = sample(model, make(), (4, 1, 8, 8), seed=4, cuda_graph=False, **kw)
    graph2 = sample(model, make(), (4, 1, 8, 8), seed=4, cuda_graph=True, **kw)
    torch.testing.assert_close(graph2, eager2, rtol=1e-4, atol=1e-4)
    assert (graph2 - graph).abs().max() > 1e-3
    # and the CPU run of the same model and seed agrees (same x_T, same counter-based noise)
    cpu = sample(model.cpu(), make(), (4, 1, 8, 8), seed=4, **{**kw, "labels": labels2.cpu()})
    torch.testing.assert_close(cpu, graph2.cpu(), rtol=1e-3, atol=1e-3)
    # the model moved away and back: its parameters live elsewhere now, the graph is re-captured
    model.cuda()
    graph3 = sample(model, make(), (4, 1, 8, 8), seed=4, cuda_graph=True, **kw)
    torch.testing.assert_close(graph3, eager2, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_digits_model_samples_with_a_graph_and_classifier_guidance_eagerly():
    from fastlearn.diffusion import DiffusionModel
    from fastlearn.nn.judge import load_digit_images

    X_tr, _, y_tr, _ = load_digit_images(0)
    m = DiffusionModel(epochs=1, base_channels=16, random_state=0, device="cuda").fit(X_tr[:256], y_tr[:256])
    m.fit_classifier(X_tr[:256], y_tr[:256], epochs=1)
    a = m.sample(8, labels=np.arange(8), guidance_scale=3.0, num_inference_steps=5, random_state=0)
    b = m.sample(8, labels=np.arange(8), guidance_scale=3.0, num_inference_steps=5, random_state=0, cuda_graph=False)
    np.testing.assert_allclose(a, b, atol=1e-4)
    c = m.sample(8, labels=np.arange(8), classifier_scale=2.0, num_inference_steps=5, random_state=0)
    assert c.shape == (8, 64) and np.isfinite(c).all()


def test_sample_keeps_the_callers_torch_threads_for_a_small_model():
    """sample() once put models under 1M parameters on one thread (the Trainer's rule), which
    made batched sampling up to ~1.8x slower on 2 cores; it now leaves the caller's setting."""
    seen = []

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x, t, y=None):
            seen.append(torch.get_num_threads())
            return self.lin(x)

    old = torch.get_num_threads()
    torch.set_num_threads(2)  # (the module's fixture runs the tests on one)
    try:
        sample(Tiny(), DDIMScheduler(), (8, 4), num_inference_steps=3, progress=False)
    finally:
        torch.set_num_threads(old)
    assert seen == [2, 2, 2]
