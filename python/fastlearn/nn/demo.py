"""Demos of the generative models (``fastlearn demo autoencoder|vae|gan``): each trains on
scikit-learn's digits (and the GAN on a 1-D two-mode target too), prints its numbers and writes
PNGs (matplotlib, Agg) into ``--out``. Each runs in a few minutes on a 2-core CPU."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _args(argv, name, epochs):
    p = argparse.ArgumentParser(prog=f"fastlearn demo {name}")
    p.add_argument("--out", default=f"demo-out/{name}", help="directory for the PNGs (created)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--progress", action="store_true", help="show tqdm bars")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    return a


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(ax_grid, images, title=None):
    for ax, img in zip(ax_grid.ravel(), images):
        ax.imshow(np.asarray(img).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in ax_grid.ravel()[len(images):]:
        ax.axis("off")


def autoencoder(argv: list[str]) -> int:
    """Autoencoder as lossy compression: held-out reconstruction error against latent size (PNG)."""
    from sklearn.decomposition import PCA

    from fastlearn.nn import Autoencoder
    from fastlearn.nn.datasets import load_digit_images

    a = _args(argv, "autoencoder", 60)
    plt = _plt()
    X_tr, X_te, _, _ = load_digit_images(a.seed)
    sizes = [1, 2, 4, 8, 16, 32]
    ae_err, pca_err, models = [], [], {}
    for k in sizes:
        t = time.perf_counter()
        ae = Autoencoder(k, hidden_layer_sizes=(128,), epochs=a.epochs, random_state=a.seed, device=a.device,
                         verbose=a.progress).fit(X_tr)
        models[k] = ae
        ae_err.append(float(ae.reconstruction_error(X_te).mean()))
        pca = PCA(k).fit(X_tr)
        pca_err.append(float(np.mean((pca.inverse_transform(pca.transform(X_te)) - X_te) ** 2)))
        print(f"latent {k:2d}: held-out MSE autoencoder {ae_err[-1]:.4f}  PCA {pca_err[-1]:.4f}  "
              f"({ae.n_iter_} epochs, {time.perf_counter() - t:.1f} s)")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(sizes, ae_err, "o-", label="autoencoder (MLP 64-128-k)")
    ax.plot(sizes, pca_err, "s--", label="PCA (linear, k components)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("latent size k")
    ax.set_ylabel("held-out reconstruction MSE")
    ax.set_title("digits: compression vs reconstruction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "autoencoder_error_vs_latent.png"), dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(len(sizes) + 1, 10, figsize=(8, 0.85 * (len(sizes) + 1)))
    _grid(axes[0], X_te[:10])
    axes[0, 0].set_ylabel("input", rotation=0, ha="right", fontsize=8)
    for row, k in enumerate(sizes, 1):
        _grid(axes[row], np.clip(models[k].inverse_transform(models[k].transform(X_te[:10])), 0, 1))
        axes[row, 0].set_ylabel(f"k={k}", rotation=0, ha="right", fontsize=8)
    fig.savefig(os.path.join(a.out, "autoencoder_reconstructions.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {a.out}/autoencoder_error_vs_latent.png and autoencoder_reconstructions.png")
    return 0


def vae(argv: list[str]) -> int:
    """VAE on digits: held-out ELBO, anomaly AUROC, a grid of samples and interpolation strips (PNG)."""
    from sklearn.metrics import roc_auc_score

    from fastlearn.nn import VAE
    from fastlearn.nn.datasets import letter_images, load_digit_images
    from fastlearn.nn.judge import default_judge

    a = _args(argv, "vae", 100)
    plt = _plt()
    X_tr, X_te, _, _ = load_digit_images(a.seed)
    t = time.perf_counter()
    model = VAE(8, epochs=a.epochs, random_state=a.seed, device=a.device, verbose=a.progress).fit(X_tr)
    print(f"trained in {time.perf_counter() - t:.1f} s ({model.n_iter_} epochs)")
    print(f"held-out ELBO {model.score(X_te):.2f} nats/image; importance-sampled log p(x) (K=200) "
          f"{np.mean(model.log_likelihood(X_te, n_samples=200)):.2f}")
    rng = np.random.default_rng(a.seed)
    real = model.anomaly_score(X_te)
    for name, other in (("uniform noise", rng.uniform(size=(300, 64)).astype(np.float32)),
                        ("letters", letter_images(300, random_state=a.seed))):
        bad = model.anomaly_score(other)
        auroc = roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(bad))], np.r_[real, bad])
        print(f"anomaly AUROC, held-out digits vs {name}: {auroc:.3f}")
    samples, _ = model.sample(100, random_state=a.seed)
    print(default_judge().evaluate(samples))
    fig, axes = plt.subplots(10, 10, figsize=(6, 6))
    _grid(axes, samples)
    fig.suptitle("VAE samples (decoder means, z ~ N(0, I))")
    fig.savefig(os.path.join(a.out, "vae_samples.png"), dpi=120)
    plt.close(fig)
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    fig, axes = plt.subplots(len(pairs), 12, figsize=(8, 0.8 * len(pairs)))
    for row, (i, j) in enumerate(pairs):
        strip = model.interpolate(X_te[i], X_te[j], n_steps=10)
        _grid(axes[row], [X_te[i], *strip, X_te[j]])
    fig.suptitle("interpolation through the latent space (outer columns: the inputs)")
    fig.savefig(os.path.join(a.out, "vae_interpolation.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {a.out}/vae_samples.png and vae_interpolation.png")
    return 0


def gan(argv: list[str]) -> int:
    """GAN: the four-panel 1-D picture (data, generator density, D -> 1/2) and digits (PNGs)."""
    from scipy.stats import ks_2samp

    from fastlearn.nn import GAN
    from fastlearn.nn.datasets import load_digit_images, two_mode_1d, two_mode_density
    from fastlearn.nn.judge import default_judge

    a = _args(argv, "gan", 150)
    plt = _plt()
    import torch

    # 1-D: snapshots of the generator's density and the discriminator's output during training
    X = two_mode_1d(1024, random_state=a.seed)
    grid = np.linspace(-4, 4, 401, dtype=np.float32).reshape(-1, 1)
    snap_at = sorted({0, a.epochs // 10, a.epochs // 3, a.epochs - 1})
    snaps = {}

    def snapshot(trainer, epoch, values):
        if epoch in snap_at:
            module = gan_1d_module[0]
            module.eval()
            with torch.no_grad():
                z = torch.randn(20000, module.latent_dim, generator=torch.Generator().manual_seed(1))
                g = module.generate(z.to(trainer.device)).cpu().numpy()[:, 0]
                d = torch.sigmoid(module.discriminate(torch.from_numpy(grid).to(trainer.device))).cpu().numpy()
            module.train()
            snaps[epoch] = (g, d)

    gan_1d_module = []

    class _Capture(GAN):
        def _build(self, n_features):
            m = super()._build(n_features)
            gan_1d_module.append(m)
            return m

    t = time.perf_counter()
    g1 = _Capture(4, generator_hidden_sizes=(64, 64), discriminator_hidden_sizes=(64, 64), epochs=a.epochs,
                  batch_size=128, learning_rate=1e-3, random_state=a.seed, device=a.device,
                  verbose=a.progress).fit(X, callbacks=[snapshot])
    S, _ = g1.sample(4000, random_state=a.seed + 1)
    ks = ks_2samp(S[:, 0], two_mode_1d(4000, random_state=a.seed + 2)[:, 0]).statistic
    h = g1.history_["metrics"]
    print(f"1-D two-mode target: KS distance {ks:.3f} between 4000 generated and 4000 target draws; "
          f"final D(x) {h['D(x)'][-1]:.3f}, D(G(z)) {h['D(G(z))'][-1]:.3f} ({time.perf_counter() - t:.1f} s)")
    fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
    for ax, (epoch, (g, d)), tag in zip(axes, sorted(snaps.items()), "abcd"):
        ax.plot(grid[:, 0], two_mode_density(grid[:, 0]), "k:", label="data density")
        ax.hist(g, bins=120, range=(-4, 4), density=True, color="tab:green", alpha=0.5, label="generator density")
        ax.plot(grid[:, 0], d, "b--", label="D(x)")
        ax.axhline(0.5, color="gray", lw=0.5)
        ax.set_title(f"({tag}) after epoch {epoch + 1}")
        ax.set_xlabel("x")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "gan_1d_four_panels.png"), dpi=120)
    plt.close(fig)

    # digits
    X_tr, _, _, _ = load_digit_images(a.seed)
    t = time.perf_counter()
    g2 = GAN(16, epochs=a.epochs, learning_rate=5e-4, random_state=a.seed, device=a.device,
             verbose=a.progress).fit(X_tr)
    print(f"digits GAN trained in {time.perf_counter() - t:.1f} s")
    samples, _ = g2.sample(300, random_state=a.seed)
    print(default_judge().evaluate(samples))
    fig, axes = plt.subplots(10, 10, figsize=(6, 6))
    _grid(axes, samples[:100])
    fig.suptitle("GAN samples on digits")
    fig.savefig(os.path.join(a.out, "gan_digits.png"), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, hist in (("1-D", h), ("digits", g2.history_["metrics"])):
        ax.plot(hist["D(x)"], label=f"D(x), {key}")
        ax.plot(hist["D(G(z))"], "--", label=f"D(G(z)), {key}")
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "gan_discriminator_outputs.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {a.out}/gan_1d_four_panels.png, gan_digits.png and gan_discriminator_outputs.png")
    return 0


DEMOS = {"autoencoder": autoencoder, "vae": vae, "gan": gan}
