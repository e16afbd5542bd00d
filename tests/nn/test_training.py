"""The shared training loop: it solves a problem with a known answer, seeds, stops early on the
validation split, keeps the best weights after Ctrl-C, round-trips checkpoints exactly and
rejects bad settings."""

import math

import numpy as np
import pytest
import torch

from fastlearn.nn.training import History, Trainer, adam, load_checkpoint, save_checkpoint


class LinearRegression(torch.nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = torch.nn.Linear(d_in, d_out)

    def loss(self, x, y):
        return torch.mean((self.lin(x) - y) ** 2)


def _data(n=200, d=5, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, 2))
    y = (X @ w + 0.5 + noise * rng.standard_normal((n, 2))).astype(np.float32)
    return torch.from_numpy(X), torch.from_numpy(y)


def test_trainer_matches_least_squares():
    X, y = _data()
    model = LinearRegression(5, 2)
    hist = Trainer(epochs=300, batch_size=200, learning_rate=0.05, validation_fraction=0.0, seed=0,
                   device="cpu").fit(model, X, y)
    A = np.c_[X.numpy().astype(np.float64), np.ones(len(X))]
    coef, *_ = np.linalg.lstsq(A, y.numpy().astype(np.float64), rcond=None)
    np.testing.assert_allclose(model.lin.weight.detach().numpy().T, coef[:-1], atol=2e-3)
    np.testing.assert_allclose(model.lin.bias.detach().numpy(), coef[-1], atol=2e-3)
    assert hist.n_epochs == 300 and len(hist.metrics["loss"]) == 300
    assert hist.metrics["loss"][-1] < hist.metrics["loss"][0]


def test_seed_reproducible_and_global_rng_untouched():
    X, y = _data()
    weights = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        model = LinearRegression(5, 2)
        torch.manual_seed(123)
        before = torch.rand(1)
        torch.manual_seed(123)
        Trainer(epochs=3, batch_size=16, seed=seed, device="cpu").fit(model, X, y)
        assert torch.rand(1).item() == before.item()  # fit restored the caller's RNG
        weights.append(model.lin.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_threads_restored():
    X, y = _data()
    before = torch.get_num_threads()
    Trainer(epochs=1, device="cpu").fit(LinearRegression(5, 2), X, y)
    assert torch.get_num_threads() == before


def _overfitting_setup():
    # 12 parameters per output for 20 noisy rows: validation loss rises after a few epochs
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.standard_normal((20, 30)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((20, 1)).astype(np.float32))
    Xv = torch.from_numpy(rng.standard_normal((200, 30)).astype(np.float32))
    yv = torch.from_numpy(rng.standard_normal((200, 1)).astype(np.float32))
    torch.manual_seed(0)
    return LinearRegression(30, 1), X, y, Xv, yv


def test_early_stopping_restores_best_weights():
    model, X, y, Xv, yv = _overfitting_setup()
    trainer = Trainer(epochs=500, batch_size=20, learning_rate=0.05, patience=5, seed=0, device="cpu")
    hist = trainer.fit(model, X, y, validation_data=(Xv, yv))
    assert hist.stopped_early and hist.n_epochs < 500
    assert hist.n_epochs == hist.best_epoch + 1 + 5
    val = hist.metrics["val_loss"]
    assert hist.best_loss == min(val) == val[hist.best_epoch]
    # the module holds the best epoch's weights, not the last epoch's
    assert trainer.evaluate(model, Xv, yv) == pytest.approx(hist.best_loss, rel=1e-6)
    assert val[-1] > hist.best_loss


def test_interrupt_keeps_best_weights(tmp_path):
    model, X, y, Xv, yv = _overfitting_setup()

    def ctrl_c(trainer, epoch, values):
        if epoch == 30:
            raise KeyboardInterrupt

    ckpt = tmp_path / "best.safetensors"
    trainer = Trainer(epochs=500, batch_size=20, learning_rate=0.05, patience=1000, seed=0, device="cpu",
                      callbacks=[ctrl_c], checkpoint_path=ckpt)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        hist = trainer.fit(model, X, y, validation_data=(Xv, yv))
    assert hist.interrupted and hist.n_epochs == 31
    assert hist.best_epoch < 30
    assert trainer.evaluate(model, Xv, yv) == pytest.approx(hist.best_loss, rel=1e-6)
    state, config = load_checkpoint(ckpt)
    assert config["epoch"] == hist.best_epoch
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)


def test_checkpoint_roundtrip_exact(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net(torch.randn(8, 4))  # moves the batch-norm running statistics
    cfg = {"a": 1, "b": [1.5, "x"], "nested": {"k": None}}
    save_checkpoint(tmp_path / "m.safetensors", net.state_dict(), cfg)
    state, cfg2 = load_checkpoint(tmp_path / "m.safetensors")
    assert cfg2 == cfg
    assert state.keys() == net.state_dict().keys()
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype


def test_load_checkpoint_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not written by fastlearn"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_history_dict_roundtrip():
    X, y = _data()
    hist = Trainer(epochs=4, device="cpu").fit(LinearRegression(5, 2), X, y)
    assert set(hist.metrics) == {"loss", "val_loss"}
    assert History.from_dict(hist.to_dict()) == hist


def test_divergence_raises():
    class Diverges(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def loss(self, x):
            return (self.w * x).sum() * math.inf

    with pytest.raises(RuntimeError, match="diverged"):
        Trainer(epochs=3, device="cpu", validation_fraction=0.0).fit(Diverges(), torch.ones(4, 1))


@pytest.mark.parametrize("kw, match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1.5}, "batch_size"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"validation_fraction": 1.0}, "validation_fraction"), ({"patience": 0}, "patience"),
    ({"device": "tpu"}, "device"), ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"learning_rate": math.nan}, "learning_rate"), ({"num_threads": 0}, "num_threads"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        Trainer(**kw)


def test_bad_data():
    with pytest.raises(ValueError, match="same number of rows"):
        Trainer(device="cpu").fit(LinearRegression(5, 2), torch.zeros(4, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="0 rows"):
        Trainer(device="cpu").fit(LinearRegression(5, 2), torch.zeros(0, 5), torch.zeros(0, 2))
    with pytest.raises(TypeError, match="loss"):
        Trainer(device="cpu").fit(torch.nn.Linear(5, 2), torch.zeros(4, 5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is present")
def test_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        Trainer(device="cuda")


def test_progress_bar_and_cpu_mixed_precision(capsys):
    X, y = _data()
    model = LinearRegression(5, 2)
    hist = Trainer(epochs=30, batch_size=50, learning_rate=0.05, mixed_precision=True, progress=True,
                   device="cpu").fit(model, X, y)
    # bf16 autocast on CPU still trains (loss well below its start)
    assert hist.metrics["loss"][-1] < 0.2 * hist.metrics["loss"][0]
    assert "LinearRegression" in capsys.readouterr().err  # the tqdm bar, on stderr


def test_custom_training_step_metrics_averaged_per_key():
    class TwoSteps(LinearRegression):
        def training_step(self, batch, trainer):
            loss = self.loss(*batch)
            trainer.backward_step(loss, trainer.optimizers["model"])
            values = {"loss": loss.detach(), "always": torch.tensor(1.0)}
            if trainer.step % 2 == 0:
                values["sometimes"] = torch.tensor(3.0)
            return values

    X, y = _data(n=64)
    hist = Trainer(epochs=2, batch_size=16, validation_fraction=0.0, device="cpu").fit(TwoSteps(5, 2), X, y)
    # averaged over the batches that reported them, not diluted by those that did not
    assert hist.metrics["always"] == [1.0, 1.0] and hist.metrics["sometimes"] == [3.0, 3.0]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_is_torchs_fused_adam_and_steps_like_the_default(weight_decay):
    torch.manual_seed(0)
    start = [torch.randn(30, 20, dtype=torch.float64), torch.randn(20, dtype=torch.float64)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    runs = []
    for make in (lambda ps: adam(ps, lr=1e-2, weight_decay=weight_decay, betas=(0.8, 0.99)),
                 lambda ps: (torch.optim.AdamW if weight_decay else torch.optim.Adam)(
                     ps, lr=1e-2, weight_decay=weight_decay, betas=(0.8, 0.99), foreach=False)):
        ps = [p.clone().requires_grad_() for p in start]
        opt = make(ps)
        for g in grads:
            for p, gp in zip(ps, g):
                p.grad = gp.clone()
            opt.step()
        runs.append((opt, torch.cat([p.detach().flatten() for p in ps])))
    (ours, a), (_, b) = runs
    assert type(ours) is (torch.optim.AdamW if weight_decay else torch.optim.Adam)
    assert ours.defaults["fused"] is True and ours.defaults["betas"] == (0.8, 0.99)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(a, torch.cat([p.flatten() for p in start]))  # it moved


def test_trainer_default_optimizer_is_fused_adam():
    module = torch.nn.Linear(3, 1)
    module.loss = lambda x, y: ((module(x).squeeze(-1) - y) ** 2).mean()
    trainer = Trainer(epochs=1, batch_size=4, validation_fraction=0.0, device="cpu", progress=False)
    trainer.fit(module, torch.randn(8, 3), torch.randn(8))
    assert trainer.optimizers["model"].defaults["fused"] is True

