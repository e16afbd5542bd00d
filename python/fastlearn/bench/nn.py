"""Benchmark cases of fastlearn.nn: one training epoch of the Autoencoder and VAE modules through
fastlearn's Trainer against the plain PyTorch loop a user would write (same module, Adam,
shuffled minibatches), and the digit judge's evaluation of 300 images."""

from __future__ import annotations

import torch

from fastlearn.bench.core import Case, torch_threads


def _digits():
    from fastlearn.nn.datasets import load_digit_images

    return torch.from_numpy(load_digit_images(0)[0])  # 1257 x 64 in [0, 1]


def _plain_epoch(module, X, batch_size, threads=None):
    """The loop a user writes by hand: shuffle, minibatches, Adam, zero_grad/backward/step."""
    with torch_threads(threads):
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        perm = torch.randperm(X.shape[0])
        module.train()
        for start in range(0, X.shape[0], batch_size):
            xb = X[perm[start:start + batch_size]]
            out = module.loss(xb)
            loss = out[0] if isinstance(out, tuple) else out
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _train_case(kind, batch_size, baseline_threads, quick):
    from fastlearn.nn import AutoencoderModule, Trainer, VAEModule

    def setup():
        torch.manual_seed(0)
        X = _digits()
        if kind == "autoencoder":
            return AutoencoderModule(64, 8, hidden_layer_sizes=(128,)), X
        return VAEModule(64, 8, "bernoulli", hidden_layer_sizes=(256, 128)), X

    def fastlearn_epoch(inp):
        module, X = inp
        Trainer(epochs=1, batch_size=batch_size, validation_fraction=0.0, seed=None, device="cpu").fit(module, X)

    def baseline_epoch(inp):
        _plain_epoch(*inp, batch_size, baseline_threads)

    name = "default threads" if baseline_threads is None else f"{baseline_threads} thread"
    return Case(name=f"{kind} train epoch", shape=f"digits 1257x64 b{batch_size} ({name} baseline)", setup=setup,
                fastlearn=fastlearn_epoch, baseline=baseline_epoch, baseline_name=f"plain torch loop ({name})",
                quick=quick, notes="fastlearn's Trainer: small models on one intra-op thread, torch's fused Adam")


def _judge_case(quick):
    from fastlearn.nn.datasets import load_digit_images
    from fastlearn.nn.judge import default_judge

    def setup():
        judge = default_judge()
        return judge, load_digit_images(0)[1][:300]

    return Case(name="judge evaluate", shape="300 images + bounds", setup=setup,
                fastlearn=lambda inp: inp[0].evaluate(inp[1]), baseline=None, baseline_name="", quick=quick,
                notes="classifier scores and 3 Fréchet distances (generated, real, noise)")


def cases(quick: bool = False) -> list[Case]:
    return [
        _train_case("autoencoder", 64, None, quick=True),
        _train_case("autoencoder", 64, 1, quick=True),
        _train_case("vae", 64, None, quick=False),
        _train_case("vae", 64, 1, quick=False),
        _judge_case(quick=False),
    ]
