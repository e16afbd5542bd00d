"""Latent diffusion: standardised codes, the training loss against a float64 re-computation,
classifier-free guidance as the stated combination of two denoiser calls, shapes and range of
decoded samples, save/load, bad inputs, and (slow) the judge's accuracy on conditional samples
after a short fit on digits."""

import numpy as np
import pytest
import torch

from fastlearn.diffusion import LatentDenoiser, LatentDiffusion
from fastlearn.nn import Autoencoder
from fastlearn.nn.judge import default_judge, load_digit_images


@pytest.fixture(scope="module")
def digits():
    return load_digit_images(0)   # X in [0, 1], (X_tr, X_te, y_tr, y_te)


@pytest.fixture(scope="module")
def small_fit(digits):
    X_tr, _, y_tr, _ = digits
    ae = Autoencoder(4, epochs=5, random_state=0, device="cpu").fit(X_tr[:300])
    return LatentDiffusion(ae, hidden=32, n_blocks=1, embedding_dim=8, epochs=3, random_state=0,
                           device="cpu").fit(X_tr[:300], y_tr[:300]), ae


def test_latents_standardised_and_autoencoder_reused(small_fit, digits):
    ld, ae = small_fit
    X_tr = digits[0][:300]
    assert ld.autoencoder_ is ae           # a fitted autoencoder is used as is
    Z = (np.asarray(ae.transform(X_tr), dtype=np.float64) - ld.latent_mean_) / ld.latent_scale_
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z.std(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ld.classes_, np.arange(10))


def test_denoiser_loss_against_float64_recomputation():
    torch.manual_seed(0)
    m = LatentDenoiser(3, n_classes=4, hidden=16, n_blocks=1, embedding_dim=8, label_dropout=0.0).double().eval()
    with torch.no_grad():
        m.net.out[-1].weight.normal_(0, 0.5)
    z = torch.randn(8, 3, dtype=torch.float64)
    y = torch.arange(8) % 4
    torch.manual_seed(5)
    got = m.loss(z, y)
    # redo it by hand with the same random draws (u first, then eps)
    torch.manual_seed(5)
    u = torch.rand((), dtype=torch.float64)
    t = (u + torch.arange(8, dtype=torch.float64) / 8) % 1.0
    eps = torch.randn(8, 3, dtype=torch.float64)
    gamma = -10.0 + 18.0 * t
    a, s = (1 / (1 + torch.exp(gamma))).sqrt(), (1 / (1 + torch.exp(-gamma))).sqrt()
    z_t = a[:, None] * z + s[:, None] * eps
    ref = ((eps - m.net(z_t, (gamma + 10.0) / 18.0, y)) ** 2).mean()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)


def test_label_dropout_uses_the_null_token():
    torch.manual_seed(0)
    m = LatentDenoiser(3, n_classes=4, hidden=16, n_blocks=1, embedding_dim=8, label_dropout=1.0).double()
    with torch.no_grad():
        m.net.out[-1].weight.normal_(0, 0.5)
    z = torch.randn(8, 3, dtype=torch.float64)
    torch.manual_seed(1)
    dropped = m.loss(z, torch.arange(8) % 4)     # every label dropped -> same as the null label
    torch.manual_seed(1)
    null = m.loss(z, torch.full((8,), 4))
    assert float(dropped.detach()) == pytest.approx(float(null.detach()), rel=1e-12)
    m.eval()                                      # no dropout at evaluation
    torch.manual_seed(1)
    assert float(m.loss(z, torch.arange(8) % 4).detach()) != pytest.approx(float(null.detach()), rel=1e-6)


def test_guidance_is_the_stated_combination(small_fit):
    """One ancestral run with w is reproduced by hand from eps_c and eps_u of the same network."""
    ld, _ = small_fit
    den = ld.denoiser_.double().eval()
    try:
        w, n, steps = 2.5, 4, 3
        labels = torch.tensor([0, 3, 7, 9])
        got = den.sample(n, labels, w, steps, torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)
        z = torch.randn(n, den.latent_dim, generator=g, dtype=torch.float64)
        null = torch.full((n,), 10)
        with torch.no_grad():
            def eps(z, gamma):
                return den.predict_eps(z, gamma, null) + w * (den.predict_eps(z, gamma, labels) -
                                                             den.predict_eps(z, gamma, null))
            for i in range(steps, 0, -1):
                gt = torch.full((n, 1), -10.0 + 18.0 * i / steps, dtype=torch.float64)
                gs = torch.full((n, 1), -10.0 + 18.0 * (i - 1) / steps, dtype=torch.float64)
                noise = torch.randn(z.shape, generator=g, dtype=torch.float64)
                c = 1 - torch.exp(gs - gt)
                e = eps(z, gt[:, 0])
                z = torch.sqrt(torch.sigmoid(-gs) / torch.sigmoid(-gt)) * (z - c * torch.sqrt(torch.sigmoid(gt)) * e) \
                    + torch.sqrt(c * torch.sigmoid(gs)) * noise
            g0 = torch.full((n, 1), -10.0, dtype=torch.float64)
            ref = (z - torch.sqrt(torch.sigmoid(g0)) * eps(z, g0[:, 0])) / torch.sqrt(torch.sigmoid(-g0))
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-9, atol=1e-10)
    finally:
        ld.denoiser_.float()


def test_sample_shapes_range_and_seeding(small_fit):
    ld, _ = small_fit
    x = ld.sample(5, labels=3, guidance_scale=2.0, num_steps=10, random_state=0)
    assert x.shape == (5, 64) and x.dtype == np.float64
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, ld.sample(5, labels=3, guidance_scale=2.0, num_steps=10, random_state=0))
    u = ld.sample(4, num_steps=10, random_state=1)      # unconditional
    assert u.shape == (4, 64)
    z = ld.sample_latents(4, labels=[1, 2, 3, 4], num_steps=10, random_state=1)
    assert z.shape == (4, 4) and np.all(np.isfinite(z))


def test_save_load_roundtrip(small_fit, tmp_path):
    ld, _ = small_fit
    path = tmp_path / "ld.safetensors"
    ld.save(path)
    loaded = LatentDiffusion.load(path, device="cpu")
    a = ld.sample(6, labels=[0, 1, 2, 3, 4, 5], guidance_scale=3.0, num_steps=8, random_state=2)
    b = loaded.sample(6, labels=[0, 1, 2, 3, 4, 5], guidance_scale=3.0, num_steps=8, random_state=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.classes_, ld.classes_)
    with pytest.raises(ValueError, match="not a VAE|holds"):
        from fastlearn.nn import VAE
        VAE.load(path)


def test_bad_inputs(small_fit, digits):
    ld, _ = small_fit
    with pytest.raises(ValueError, match="not seen in fit"):
        ld.sample(2, labels=[1, 42])
    with pytest.raises(ValueError, match="labels has 3 entries"):
        ld.sample(2, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="guidance_scale"):
        ld.sample(2, labels=1, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="num_steps"):
        ld.sample(2, num_steps=0)
    X_tr = digits[0][:50]
    with pytest.raises(ValueError, match="NaN|infinity"):
        LatentDiffusion(epochs=1, autoencoder_epochs=1).fit(np.where(X_tr > 0.5, np.nan, X_tr))
    with pytest.raises(ValueError, match="features"):
        LatentDiffusion(small_fit[1], epochs=1).fit(X_tr[:, :32])
    uncond = LatentDiffusion(small_fit[1], hidden=8, n_blocks=0, embedding_dim=4, epochs=1, device="cpu").fit(X_tr)
    with pytest.raises(ValueError, match="without y"):
        uncond.sample(2, labels=1)


@pytest.mark.slow
def test_conditional_samples_recognised_by_the_judge(digits):
    """A short fit (about a minute here); the judge's accuracy on conditional samples (chance is
    0.1) and the guided samples at least as accurate (w = 3)."""
    X_tr, _, y_tr, _ = digits
    ld = LatentDiffusion(latent_dim=8, autoencoder_epochs=60, hidden=128, n_blocks=2, epochs=150, random_state=0,
                         device="cpu").fit(X_tr, y_tr)
    labels = np.repeat(np.arange(10), 20)
    judge = default_judge()
    cond = judge.evaluate(ld.sample(200, labels=labels, guidance_scale=1.0, num_steps=50, random_state=0), labels)
    guided = judge.evaluate(ld.sample(200, labels=labels, guidance_scale=3.0, num_steps=50, random_state=0), labels)
    assert cond["accuracy"]["generated"] > 0.5
    assert guided["accuracy"]["generated"] >= cond["accuracy"]["generated"] - 0.02


def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    est = LatentDiffusion(Autoencoder(2, hidden_layer_sizes=(8,), epochs=2, random_state=0), hidden=8, n_blocks=1,
                          embedding_dim=4, epochs=2, random_state=0, device="cpu")
    results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []


@pytest.mark.cuda
def test_cuda_fit_sample_and_load_on_cpu(digits, tmp_path):
    X_tr, _, y_tr, _ = digits
    ld = LatentDiffusion(latent_dim=4, autoencoder_epochs=3, hidden=32, n_blocks=1, embedding_dim=8, epochs=3,
                         random_state=0, device="cuda").fit(X_tr[:300], y_tr[:300])
    assert next(ld.denoiser_.parameters()).is_cuda
    x = ld.sample(6, labels=[0, 1, 2, 3, 4, 5], guidance_scale=2.0, num_steps=10, random_state=0)
    assert x.shape == (6, 64) and x.min() >= 0.0 and x.max() <= 1.0
    ld.save(tmp_path / "ld.safetensors")
    cpu = LatentDiffusion.load(tmp_path / "ld.safetensors", device="cpu")
    z_gpu = ld.sample_latents(6, labels=3, num_steps=10, random_state=1)
    z_cpu = cpu.sample_latents(6, labels=3, num_steps=10, random_state=1)
    np.testing.assert_allclose(z_gpu, z_cpu, rtol=1e-3, atol=1e-3)   # float32 on both, TF32 off by default
