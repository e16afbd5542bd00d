"""DiffusionModel training: the EMA against its closed form, the loss falling on a small digit
subset, label dropout at its rate, the epsilon / v targets against their equations, Ctrl-C
leaving a usable model, save/load round trips without pickle, bad inputs, and (slow) the judge's
accuracy of class-conditional samples rising with classifier-free guidance."""

import math
import warnings

import numpy as np
import pytest
import torch

from fastlearn.diffusion import DiffusionModel, ExponentialMovingAverage, UNet
from fastlearn.diffusion._training import _DenoiserTraining
from fastlearn.nn.judge import load_digit_images

SMALL = dict(base_channels=16, channel_mults=(1, 2), attention=False, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def digits():
    X_tr, X_te, y_tr, y_te = load_digit_images(0)
    return X_tr, X_te, y_tr, y_te


@pytest.fixture(scope="module")
def small_model(digits):
    X_tr, _, y_tr, _ = digits
    return DiffusionModel(epochs=3, random_state=0, **{**SMALL, "batch_size": 32}).fit(X_tr[:256], y_tr[:256])


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_closed_form(warmup):
    """e_n = (prod_k d_k) theta_0 + sum_k (1 - d_k) (prod_{j > k} d_j) theta_k, in float64."""
    module = torch.nn.Linear(3, 2).double()
    decay = 0.9
    ema = ExponentialMovingAverage(module, decay=decay, warmup=warmup)
    theta0 = torch.cat([p.detach().flatten() for p in module.parameters()]).clone()
    rng = np.random.default_rng(0)
    thetas = []
    for _ in range(25):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(p.shape)))
        thetas.append(torch.cat([p.detach().flatten() for p in module.parameters()]).clone())
        ema.update(module)
    d = [min(decay, (1 + k) / (10 + k)) if warmup else decay for k in range(1, 26)]
    expected = math.prod(d) * theta0
    for k in range(25):
        expected = expected + (1 - d[k]) * math.prod(d[k + 1:]) * thetas[k]
    got = torch.cat([p.flatten() for p in ema.shadow.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert ema.num_updates == 25
    if warmup:
        assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(10_000) == decay
    assert not any(p.requires_grad for p in ema.shadow.parameters())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_targets_and_label_dropout(prediction_type):
    """The loss is the MSE between unet(x_t, t, y') and eps (or v = sqrt(ab) eps - sqrt(1-ab) x0),
    with x_t = sqrt(ab) x0 + sqrt(1-ab) eps and y' the null label with probability p_uncond."""
    from fastlearn.diffusion import DDIMScheduler

    torch.manual_seed(0)
    seen = {}

    class Recorder(UNet):
        def forward(self, x, t, y=None):
            seen.update(x=x, t=t, y=y)
            return torch.zeros_like(x)

    unet = Recorder(1, 8, base_channels=8, num_classes=10, attention=False)
    schedule = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    training = _DenoiserTraining(unet, UNet(1, 8, base_channels=8, num_classes=10, attention=False), schedule,
                                 p_uncond=0.25, ema_decay=0.99)
    x0 = torch.rand(4000, 1, 8, 8) * 2 - 1
    y = torch.randint(0, 10, (4000,))
    torch.manual_seed(1)
    loss = training.loss(x0, y)
    # replay the same draws to know t and the noise
    torch.manual_seed(1)
    t = torch.randint(0, 1000, (4000,))
    noise = torch.randn_like(x0)
    ab = DDIMScheduler(beta_schedule="linear").alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()
    torch.testing.assert_close(seen["x"].double(), x_t, rtol=1e-5, atol=1e-5)
    target = noise.double() if prediction_type == "epsilon" else ab.sqrt() * noise.double() - (1 - ab).sqrt() * x0.double()
    assert float(loss) == pytest.approx(float(target.square().mean()), rel=1e-5)
    dropped = seen["y"] == 10
    assert torch.equal(seen["y"][~dropped], y[~dropped])
    assert abs(dropped.float().mean().item() - 0.25) < 0.03   # 4000 draws: std 0.007


def test_loss_decreases_and_sampling_shapes(small_model):
    m = small_model
    assert m.n_iter_ == 3 and len(m.loss_curve_) == 3
    # a fresh model predicts 0 (loss = E eps^2 = 1); 24 steps on 256 digits bring it near 0.4
    assert m.loss_curve_[-1] < 0.6 and m.loss_curve_[-1] < 0.7 * m.loss_curve_[0]
    assert m.image_shape_ == (1, 8, 8) and list(m.classes_) == list(range(10))
    out = m.sample(6, labels=[0, 1, 2, 3, 4, 5], num_inference_steps=4, random_state=0)
    assert out.shape == (6, 64) and out.dtype == np.float64 and out.min() >= 0 and out.max() <= 1
    again = m.sample(6, labels=[0, 1, 2, 3, 4, 5], num_inference_steps=4, random_state=0)
    np.testing.assert_array_equal(out, again)
    other = m.sample(6, labels=[0, 1, 2, 3, 4, 5], num_inference_steps=4, random_state=1)
    assert np.abs(out - other).max() > 1e-3
    # EMA weights differ from the raw weights after training (and are what sample() uses)
    diff = [(a - b).abs().max() for a, b in zip(m.module_.unet.parameters(), m.module_.ema_unet.parameters())]
    assert max(diff) > 0


def test_fit_is_seeded(digits):
    X_tr, _, y_tr, _ = digits
    a = DiffusionModel(epochs=1, random_state=3, **SMALL).fit(X_tr[:64], y_tr[:64])
    b = DiffusionModel(epochs=1, random_state=3, **SMALL).fit(X_tr[:64], y_tr[:64])
    for p, q in zip(a.module_.ema_unet.parameters(), b.module_.ema_unet.parameters()):
        assert torch.equal(p, q)


def test_unconditional_and_multichannel():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(40, 2 * 8 * 8)).astype(np.float32)
    m = DiffusionModel((2, 8, 8), epochs=1, random_state=0, **SMALL).fit(X)
    assert m.classes_ is None and m.module_.unet.num_classes is None
    out = m.sample(3, num_inference_steps=3, random_state=0)
    assert out.shape == (3, 128)
    with pytest.raises(ValueError, match="without labels"):
        m.sample(3, labels=[0, 0, 0])


def test_v_prediction_model_samples_through_the_fused_step(digits):
    X_tr, _, y_tr, _ = digits
    m = DiffusionModel(prediction_type="v_prediction", epochs=1, random_state=0, **SMALL).fit(X_tr[:64], y_tr[:64])
    sched = m.make_scheduler("ddim")
    assert sched.config["prediction_type"] == "v_prediction" and sched.fused_supported(1.0)
    out = m.sample(4, labels=[0, 1, 2, 3], guidance_scale=2.0, num_inference_steps=4, random_state=0)
    assert out.shape == (4, 64) and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    ddpm = m.sample(4, labels=[0, 1, 2, 3], scheduler="ddpm", num_inference_steps=4, random_state=0)
    assert np.abs(ddpm - out).max() > 1e-3


def test_interrupt_keeps_a_usable_model(digits, monkeypatch):
    X_tr, _, y_tr, _ = digits
    calls = {"n": 0}
    original = _DenoiserTraining.training_step

    def interrupting(self, batch, trainer):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch, trainer)

    monkeypatch.setattr(_DenoiserTraining, "training_step", interrupting)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = DiffusionModel(epochs=5, random_state=0, **SMALL).fit(X_tr[:256], y_tr[:256])
    assert any("interrupted" in str(w.message) for w in caught)
    assert m.history_["interrupted"] is True
    out = m.sample(2, labels=[1, 2], num_inference_steps=3, random_state=0)
    assert out.shape == (2, 64) and np.isfinite(out).all()


def test_save_load_round_trip(small_model, digits, tmp_path):
    X_tr, _, y_tr, _ = digits
    m = small_model
    m.fit_classifier(X_tr[:128], y_tr[:128], epochs=1)
    path = tmp_path / "diffusion.safetensors"
    m.save(path)
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(200)
    loaded = DiffusionModel.load(path, device="cpu")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.get_params().items()}
    loaded_params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in loaded.get_params().items()}
    assert loaded_params == {**params, "device": "cpu"}
    assert list(loaded.classes_) == list(m.classes_) and loaded.image_shape_ == m.image_shape_
    for (k, a), (_, b) in zip(m.module_.state_dict().items(), loaded.module_.state_dict().items()):
        assert torch.equal(a, b), k
    kw = dict(labels=[3, 4, 5], num_inference_steps=4, random_state=5, guidance_scale=2.0)
    np.testing.assert_array_equal(m.sample(3, **kw), loaded.sample(3, **kw))
    kw.update(classifier_scale=1.0)
    np.testing.assert_array_equal(m.sample(3, **kw), loaded.sample(3, **kw))
    from fastlearn.diffusion import DDIMScheduler
    with pytest.raises(ValueError, match="not a DiffusionModel|holds a"):
        from fastlearn.nn import VAE
        VAE.load(path)
    assert isinstance(loaded.make_scheduler("ddim"), DDIMScheduler)


def test_bad_inputs(small_model, digits):
    X_tr, _, y_tr, _ = digits
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DiffusionModel(epochs=1, **SMALL).fit(X_tr[:10] * 16)
    X_nan = X_tr[:10].copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError):
        DiffusionModel(epochs=1, **SMALL).fit(X_nan)
    with pytest.raises(ValueError, match="square"):
        DiffusionModel(epochs=1, **SMALL).fit(X_tr[:10, :60])
    with pytest.raises(ValueError, match="image_shape"):
        DiffusionModel((1, 4, 4), epochs=1, **SMALL).fit(X_tr[:10])
    with pytest.raises(ValueError, match="labels"):
        DiffusionModel(epochs=1, **SMALL).fit(X_tr[:10], y_tr[:9])
    with pytest.raises(ValueError, match="p_uncond"):
        DiffusionModel(p_uncond=1.5, **SMALL).fit(X_tr[:10])
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionModel(beta_schedule="nope", **SMALL).fit(X_tr[:10])
    m = small_model
    with pytest.raises(ValueError, match="n_samples"):
        m.sample(0)
    with pytest.raises(ValueError, match="not among the fitted classes"):
        m.sample(2, labels=[1, 11])
    with pytest.raises(ValueError, match="entries for n_samples"):
        m.sample(3, labels=[1, 2])
    with pytest.raises(ValueError, match="needs labels"):
        m.sample(2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="scheduler"):
        m.sample(2, labels=[1, 2], scheduler="euler")
    with pytest.raises(ValueError, match="eta"):
        m.sample(2, labels=[1, 2], scheduler="ddpm", eta=0.5)
    fresh = DiffusionModel(epochs=1, random_state=0, **SMALL).fit(X_tr[:16], y_tr[:16])
    with pytest.raises(ValueError, match="fit_classifier"):
        fresh.sample(2, labels=[1, 2], classifier_scale=1.0)
    with pytest.raises(ValueError, match="not fitted on"):
        fresh.fit_classifier(X_tr[:4], np.array([1, 2, 3, 99]))


@pytest.mark.slow
def test_guidance_raises_judge_accuracy(digits):
    """Trains 12 epochs (about 1.5 min on one busy core) and checks that the digit judge
    recognises class-conditional samples, and more often with classifier-free guidance (the
    demo's 15-epoch model: 0.97 unguided, 1.00 at w = 2, 3 and 5)."""
    from fastlearn.nn.judge import default_judge

    X_tr, _, y_tr, _ = digits
    m = DiffusionModel(epochs=12, random_state=0, device="cpu").fit(X_tr, y_tr)
    judge = default_judge()
    labels = np.arange(200) % 10
    acc = {}
    for w in (1.0, 3.0):
        images = m.sample(200, labels=labels, guidance_scale=w, num_inference_steps=20, random_state=0)
        acc[w] = judge.evaluate(images, labels)["accuracy"]["generated"]
    assert acc[1.0] > 0.8, acc
    assert acc[3.0] > acc[1.0] and acc[3.0] >= 0.97, acc
