"""Generative adversarial networks, trained by the alternating minibatch algorithm of our notes:
for each iteration, k discriminator ascent steps (each on a fresh minibatch of data and of noise)
on log D(x) + log(1 - D(G(z))), then one generator step, either on the original minimax loss
log(1 - D(G(z))) or on the non-saturating loss -log D(G(z)). D(x) and D(G(z)) are recorded."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fastlearn.nn._base import NeuralEstimator
from fastlearn.nn._nets import build_decoder, build_encoder, check_layer_sizes, infer_image_shape
from fastlearn.nn.training import adam

__all__ = ["GAN", "GANModule", "discriminator_loss", "generator_loss"]


def discriminator_loss(logits_real, logits_fake):
    """-[mean log D(x) + mean log(1 - D(G(z)))] with D = sigmoid(logits): the negative of the
    value the discriminator ascends. log sigmoid(l) = -softplus(-l); log(1 - sigmoid(l)) = -softplus(l)."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def generator_loss(logits_fake, kind: str = "non_saturating"):
    """What the generator minimises: "minimax": mean log(1 - D(G(z))) (saturates when D wins);
    "non_saturating": -mean log D(G(z)) (same fixed point, strong gradients early on)."""
    if kind == "minimax":
        return -F.softplus(logits_fake).mean()
    if kind == "non_saturating":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"loss must be 'minimax' or 'non_saturating', got {kind!r}.")


class GANModule(nn.Module):
    """Generator G: (n, latent_dim) -> (n, F) and discriminator D: (n, F) -> (n,) logits, with the
    Trainer's ``training_step`` implementing the alternating algorithm."""

    def __init__(self, n_features: int, latent_dim: int, architecture: str = "mlp",
                 generator_hidden_sizes=(128, 128), discriminator_hidden_sizes=(128, 128),
                 conv_channels=(32, 64), image_shape=None, output_activation: str = "linear",
                 loss: str = "non_saturating", k: int = 1, learning_rate: float = 2e-4, beta1: float = 0.5,
                 ema_decay: float = 0.0):
        super().__init__()
        shape = infer_image_shape(n_features, image_shape) if architecture == "conv" else None
        self.latent_dim, self.loss_kind, self.k = latent_dim, loss, int(k)
        self.learning_rate, self.beta1 = float(learning_rate), float(beta1)
        self.output_activation = output_activation
        # DCGAN conventions: batch norm and ReLU in G, LeakyReLU in D (batch norm in its conv stack)
        self.generator = build_decoder(architecture, latent_dim, n_features, tuple(reversed(generator_hidden_sizes)),
                                       conv_channels, shape, activation="relu", norm=True)
        self.discriminator = build_encoder(architecture, n_features, 1, discriminator_hidden_sizes, conv_channels,
                                           shape, activation="leaky_relu", norm=architecture == "conv")
        # an exponential moving average of the generator's weights damps the oscillation of the
        # game; samples outside training come from it (ema_decay = 0: the last weights)
        self.ema_decay = float(ema_decay)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if self.ema_decay > 0 else None
        self._d_steps = 0

    def generate(self, z, average: bool | None = None):
        """z: n x latent -> n x F; ``average`` (default: when not training) uses the EMA generator."""
        if average is None:
            average = not self.training
        net = self.generator_ema if (average and self.generator_ema is not None) else self.generator
        out = net(z)
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    @torch.no_grad()
    def _update_ema(self):
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p, 1.0 - self.ema_decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    def discriminate(self, x):  # x: n x F -> n logits
        return self.discriminator(x).squeeze(-1)

    def forward(self, z):
        return self.generate(z)

    def configure_optimizers(self, trainer):
        betas = (self.beta1, 0.999)
        return {"discriminator": adam(self.discriminator.parameters(), lr=self.learning_rate, betas=betas),
                "generator": adam(self.generator.parameters(), lr=self.learning_rate, betas=betas)}

    def training_step(self, batch, trainer):
        """One discriminator ascent step on this minibatch; every k-th call also one generator step."""
        x = batch[0]
        m = x.shape[0]
        with trainer.autocast():
            fake = self.generate(torch.randn(m, self.latent_dim, device=x.device)).detach()
            logits_real, logits_fake = self.discriminate(x), self.discriminate(fake)
            d_loss = discriminator_loss(logits_real.float(), logits_fake.float())
        trainer.backward_step(d_loss, trainer.optimizers["discriminator"])
        values = {"loss": d_loss.detach(), "d_loss": d_loss.detach(),
                  "D(x)": torch.sigmoid(logits_real.detach().float()).mean(),
                  "D(G(z))": torch.sigmoid(logits_fake.detach().float()).mean()}
        self._d_steps += 1
        if self._d_steps % self.k == 0:
            with trainer.autocast():
                logits = self.discriminate(self.generate(torch.randn(m, self.latent_dim, device=x.device)))
                g_loss = generator_loss(logits.float(), self.loss_kind)
            trainer.backward_step(g_loss, trainer.optimizers["generator"])
            if self.generator_ema is not None:
                self._update_ema()
            values["g_loss"] = g_loss.detach()
        return values

    def loss(self, x):
        """The discriminator's loss on real x and an equal number of generated rows."""
        fake = self.generate(torch.randn(x.shape[0], self.latent_dim, device=x.device))
        return discriminator_loss(self.discriminate(x), self.discriminate(fake))


class GAN(NeuralEstimator):
    """Generative adversarial network (MLP, or a small DCGAN for images as flat rows).

    Parameters
    ----------
    latent_dim : size of the noise z ~ N(0, I) fed to the generator.
    architecture : "mlp" or "conv" (DCGAN-style; rows are square images or ``image_shape``).
    generator_hidden_sizes, discriminator_hidden_sizes : MLP widths.
    conv_channels, image_shape : for architecture="conv".
    loss : "non_saturating" (the generator maximises log D(G(z))) or "minimax" (it minimises
        log(1 - D(G(z))), the original game).
    k : discriminator steps per generator step.
    ema_decay : samples come from an exponential moving average of the generator's weights
        with this decay per generator step (0: the last weights).
    output_activation : "sigmoid" (data in [0, 1]), "linear", or "auto" (sigmoid when X is in [0, 1]).
    epochs, batch_size, learning_rate, beta1 : training (Adam with betas (beta1, 0.999)).
    random_state, device, verbose : as for Autoencoder.

    Attributes
    ----------
    module_ (GANModule), output_activation_, n_features_in_, n_iter_, history_ (per epoch:
    "d_loss", "g_loss", "D(x)", "D(G(z))").
    """

    _parameter_constraints = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "architecture": [StrOptions({"mlp", "conv"})],
        "generator_hidden_sizes": ["array-like"],
        "discriminator_hidden_sizes": ["array-like"],
        "conv_channels": ["array-like"],
        "image_shape": ["array-like", None],
        "loss": [StrOptions({"non_saturating", "minimax"})],
        "k": [Interval(Integral, 1, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="left")],
        "output_activation": [StrOptions({"auto", "sigmoid", "linear"})],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "beta1": [Interval(Real, 0, 1, closed="left")],
        "random_state": ["random_state"],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "verbose": ["boolean"],
    }

    def __init__(self, latent_dim=16, *, architecture="mlp", generator_hidden_sizes=(128, 128),
                 discriminator_hidden_sizes=(128, 128), conv_channels=(32, 64), image_shape=None,
                 loss="non_saturating", k=1, ema_decay=0.0, output_activation="auto", epochs=100, batch_size=64,
                 learning_rate=2e-4, beta1=0.5, random_state=None, device="auto", verbose=False):
        self.latent_dim = latent_dim
        self.architecture = architecture
        self.generator_hidden_sizes = generator_hidden_sizes
        self.discriminator_hidden_sizes = discriminator_hidden_sizes
        self.conv_channels = conv_channels
        self.image_shape = image_shape
        self.loss = loss
        self.k = k
        self.ema_decay = ema_decay
        self.output_activation = output_activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.beta1 = beta1
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _build_module(self, n_features):
        return GANModule(n_features, int(self.latent_dim), self.architecture,
                         check_layer_sizes("generator_hidden_sizes", self.generator_hidden_sizes),
                         check_layer_sizes("discriminator_hidden_sizes", self.discriminator_hidden_sizes),
                         check_layer_sizes("conv_channels", self.conv_channels), self.image_shape,
                         self.output_activation_, self.loss, int(self.k), float(self.learning_rate), float(self.beta1),
                         float(self.ema_decay))

    def fit(self, X, y=None, callbacks=None):
        """Train on rows of X (ndarray or tensor). ``callbacks``: functions f(trainer, epoch, values)
        called after each epoch (e.g. to take snapshots)."""
        self._validate_params()
        X, _ = self._validate(X, reset=True)
        if X.shape[0] < 2:
            raise ValueError(f"GAN needs at least 2 samples (batch norm in the generator), got n_samples = {X.shape[0]}.")
        in_unit = X.min() >= 0.0 and X.max() <= 1.0
        if self.output_activation == "auto":
            self.output_activation_ = "sigmoid" if in_unit else "linear"
        else:
            self.output_activation_ = self.output_activation
        self.module_ = self._build(X.shape[1])
        self._train(self.module_, X, validation_fraction=0.0, callbacks=callbacks,
                    batch_size=min(int(self.batch_size), max(2, X.shape[0])))
        return self

    def _train(self, module, X, **kw):
        # batches of one row would break the generator's batch norm: drop a trailing single row
        n, b = X.shape[0], min(int(kw.get("batch_size", self.batch_size)), X.shape[0])
        if n % b == 1:
            X = X[:-1]
        return super()._train(module, X, **kw)

    def _fitted_config(self):
        return {"output_activation": self.output_activation_}

    def _restore_fitted(self, fitted):
        self.output_activation_ = fitted["output_activation"]

    @torch.no_grad()
    def sample(self, n_samples=1, random_state=None):
        """Generate ``n_samples`` rows: G(z) with z ~ N(0, I); returns (X (n_samples, F) float64, z)."""
        z = self._draw_latent(n_samples, random_state)
        self.module_.eval()
        x = self.module_.generate(z.to(self._device()))
        return x.cpu().double().numpy(), z.double().numpy()

    @torch.no_grad()
    def discriminate(self, X):
        """D(x): the discriminator's probability that each row is real, (n_samples,)."""
        check_is_fitted(self)
        X, like = self._validate(X, reset=False)
        self.module_.eval()
        return self._output(torch.sigmoid(self.module_.discriminate(self._tensor(X))), like)
