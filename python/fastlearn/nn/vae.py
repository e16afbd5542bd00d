"""The variational autoencoder: a Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))), the
reparameterisation z = mu + exp(logvar/2) * eps, a Bernoulli or Gaussian decoder p(x|z), and
ELBO = E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I)). The applications of our notes are
methods of ``VAE``: sample, anomaly_score, interpolate, transform, log_likelihood."""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fastlearn.nn._base import TRAINING_CONSTRAINTS, NeuralEstimator, _seed_from
from fastlearn.nn._nets import build_decoder, build_encoder, check_layer_sizes, infer_image_shape

__all__ = ["VAE", "VAEModule", "gaussian_kl", "bernoulli_log_likelihood", "gaussian_log_likelihood"]

_LOG_2PI = math.log(2 * math.pi)
_LOGVAR_RANGE = (-20.0, 10.0)   # keeps exp(logvar) finite in float32
_LOG_SIGMA_MIN = math.log(1e-2)  # decoder noise floor: constant pixels cannot drive log p(x|z) to +inf


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)."""
    return 0.5 * torch.sum(mu * mu + torch.exp(logvar) - 1.0 - logvar, dim=-1)


def bernoulli_log_likelihood(x, logits):
    """sum_j x_j log sigmoid(l_j) + (1 - x_j) log(1 - sigmoid(l_j)), per row (stable form)."""
    return -torch.sum(torch.nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                                           reduction="none"), dim=-1)


def gaussian_log_likelihood(x, mean, log_sigma):
    """sum_j log N(x_j; mean_j, exp(log_sigma_j)^2), per row."""
    z = (x - mean) * torch.exp(-log_sigma)
    return torch.sum(-0.5 * _LOG_2PI - log_sigma - 0.5 * z * z, dim=-1)


class VAEModule(nn.Module):
    """A VAE as a plain torch module. ``loss(x)`` is the negative beta-ELBO averaged over the batch."""

    def __init__(self, n_features: int, latent_dim: int, likelihood: str = "bernoulli", beta: float = 1.0,
                 architecture: str = "mlp", hidden_layer_sizes=(256, 128), conv_channels=(16, 32),
                 image_shape=None):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}.")
        shape = infer_image_shape(n_features, image_shape) if architecture == "conv" else None
        self.latent_dim, self.likelihood, self.beta = latent_dim, likelihood, float(beta)
        self.encoder = build_encoder(architecture, n_features, 2 * latent_dim, hidden_layer_sizes, conv_channels, shape)
        self.decoder = build_decoder(architecture, latent_dim, n_features, hidden_layer_sizes, conv_channels, shape)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(n_features))

    def encode(self, x):
        """x: n x F -> (mu, logvar), each n x latent_dim."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def decode(self, z):
        """z: ... x latent_dim -> decoder output ... x F (logits for Bernoulli, means for Gaussian)."""
        shape = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*shape, out.shape[-1])

    def decode_mean(self, z):
        """E[x | z]: sigmoid(logits) for Bernoulli, the mean for Gaussian."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def reparameterize(self, mu, logvar, eps=None):
        """z = mu + sigma * eps with eps ~ N(0, I) (or the given eps, broadcast against mu)."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def log_px_given_z(self, x, z):
        """log p(x | z) per row; z may carry leading sample dimensions (S x n x latent)."""
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(x, out)
        return gaussian_log_likelihood(x, out, self.log_sigma.clamp(min=_LOG_SIGMA_MIN))

    def elbo(self, x, eps=None):
        """(ELBO, E log p(x|z), KL) per row, with one reparameterised sample (or the given eps,
        shape S x n x latent or S x 1 x latent to average over S samples)."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu).unsqueeze(0)
        z = self.reparameterize(mu, logvar, eps)   # S x n x latent
        rec = self.log_px_given_z(x, z).mean(0)    # n
        kl = gaussian_kl(mu, logvar)               # n
        return rec - kl, rec, kl

    def loss(self, x):
        _, rec, kl = self.elbo(x)
        loss = -(rec - self.beta * kl).mean()
        return loss, {"reconstruction": -rec.mean().detach(), "kl": kl.mean().detach()}

    def forward(self, x):
        mu, _ = self.encode(x)
        return self.decode_mean(mu)

    def log_likelihood(self, x, eps):
        """Importance-sampled log p(x) per row with q(z|x) as proposal and K = eps.shape[0] samples:
        logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)                           # K x n x latent
        log_pz = torch.sum(-0.5 * _LOG_2PI - 0.5 * z * z, dim=-1)          # K x n
        log_qz = torch.sum(-0.5 * _LOG_2PI - 0.5 * logvar - 0.5 * eps * eps, dim=-1)  # K x n
        log_w = self.log_px_given_z(x, z) + log_pz - log_qz               # K x n
        return torch.logsumexp(log_w, dim=0) - math.log(eps.shape[0])


class VAE(TransformerMixin, NeuralEstimator):
    """Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    latent_dim : size of z.
    likelihood : "bernoulli" (X in [0, 1], e.g. pixel intensities), "gaussian" (a learned
        per-feature noise scale, floored at 0.01), or "auto" (bernoulli when X lies in [0, 1]).
    beta : weight of the KL term (beta-VAE; 1 is the ELBO).
    architecture, hidden_layer_sizes, conv_channels, image_shape : as for Autoencoder.
    epochs, batch_size, learning_rate, weight_decay, validation_fraction, patience,
    random_state, device, verbose : training, as for Autoencoder.
    n_mc_samples : Monte Carlo samples of z for ``score_samples`` (the ELBO estimate). The same
        seeded noise is used for every row, so scores are deterministic and row-independent.

    Attributes
    ----------
    module_ (VAEModule), likelihood_ (the decoder used), n_features_in_, n_iter_, loss_curve_,
    history_.
    """

    _parameter_constraints = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "likelihood": [StrOptions({"auto", "bernoulli", "gaussian"})],
        "beta": [Interval(Real, 0, None, closed="left")],
        "architecture": [StrOptions({"mlp", "conv"})],
        "hidden_layer_sizes": ["array-like"],
        "conv_channels": ["array-like"],
        "image_shape": ["array-like", None],
        "n_mc_samples": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    def __init__(self, latent_dim=8, *, likelihood="auto", beta=1.0, architecture="mlp",
                 hidden_layer_sizes=(256, 128), conv_channels=(16, 32), image_shape=None, epochs=100,
                 batch_size=64, learning_rate=1e-3, weight_decay=0.0, validation_fraction=0.1, patience=10,
                 n_mc_samples=16, random_state=None, device="auto", verbose=False):
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = beta
        self.architecture = architecture
        self.hidden_layer_sizes = hidden_layer_sizes
        self.conv_channels = conv_channels
        self.image_shape = image_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.n_mc_samples = n_mc_samples
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- fitting ---------------------------------------------------------------------------------
    def _build_module(self, n_features):
        return VAEModule(n_features, int(self.latent_dim), self.likelihood_, float(self.beta), self.architecture,
                         check_layer_sizes("hidden_layer_sizes", self.hidden_layer_sizes),
                         check_layer_sizes("conv_channels", self.conv_channels), self.image_shape)

    def fit(self, X, y=None):
        """Train on rows of X (ndarray or tensor) by maximising the (beta-)ELBO."""
        self._validate_params()
        X, _ = self._validate(X, reset=True)
        in_unit = bool(X.size) and X.min() >= 0.0 and X.max() <= 1.0
        if self.likelihood == "auto":
            self.likelihood_ = "bernoulli" if in_unit else "gaussian"
        else:
            self.likelihood_ = self.likelihood
        if self.likelihood_ == "bernoulli" and not in_unit:
            raise ValueError("likelihood='bernoulli' needs X in [0, 1] (found values in "
                             f"[{X.min():.3g}, {X.max():.3g}]); scale X (e.g. MinMaxScaler or divide by the "
                             "maximum intensity) or use likelihood='gaussian'.")
        self.module_ = self._build(X.shape[1])
        self._train(self.module_, X)
        return self

    def _fitted_config(self):
        return {"likelihood": self.likelihood_}

    def _restore_fitted(self, fitted):
        self.likelihood_ = fitted["likelihood"]

    # -- helpers ---------------------------------------------------------------------------------
    def _shared_eps(self, n_samples: int, seed_offset: int = 0) -> torch.Tensor:
        """n_samples x 1 x latent standard normal noise, the same for every row, seeded."""
        seed = (_seed_from(self.random_state) if isinstance(self.random_state, Integral) else 0) + seed_offset
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n_samples, 1, int(self.latent_dim), generator=g).to(self._device())

    def _scoring_input(self, X):
        X, like = self._validate(X, reset=False)
        if self.likelihood_ == "bernoulli" and X.size and (X.min() < 0.0 or X.max() > 1.0):
            raise ValueError("this VAE has a Bernoulli decoder: X must lie in [0, 1] to be scored; scale it "
                             "the way the training data was scaled.")
        return X, like

    def _float64_module(self) -> VAEModule:
        # likelihoods are scored in float64: a row's score then does not depend on which other
        # rows share its batch (float32 matmul blocking changes with the batch size)
        module = copy.deepcopy(self.module_).double()
        return module.eval()

    def _chunks(self, n, k):
        # rows per chunk so that k x rows x features stays around 16M floats
        step = max(1, (1 << 24) // max(1, k * self.n_features_in_))
        return range(0, n, step), step

    # -- the applications ------------------------------------------------------------------------
    @torch.no_grad()
    def transform(self, X):
        """Posterior means E[z | x]: features for other models, (n_samples, latent_dim)."""
        check_is_fitted(self)
        X, like = self._validate(X, reset=False)
        self.module_.eval()
        mu, _ = self.module_.encode(self._tensor(X))
        return self._output(mu, like)

    @torch.no_grad()
    def inverse_transform(self, Z):
        """Decoder means E[x | z] of latent codes Z (n_samples, latent_dim)."""
        check_is_fitted(self)
        like = ("tensor", Z.device) if isinstance(Z, torch.Tensor) else ("numpy", np.float64)
        Zn = Z.detach().cpu().numpy() if isinstance(Z, torch.Tensor) else np.asarray(Z, dtype=np.float64)
        if Zn.ndim != 2 or Zn.shape[1] != int(self.latent_dim):
            raise ValueError(f"inverse_transform expects codes of shape (n_samples, {self.latent_dim}), "
                             f"got {Zn.shape}.")
        if not np.isfinite(Zn).all():
            raise ValueError("inverse_transform: Z contains NaN or infinity.")
        self.module_.eval()
        return self._output(self.module_.decode_mean(self._tensor(Zn.astype(np.float32))), like)

    @torch.no_grad()
    def reconstruct(self, X):
        """decode(E[z|x]): the reconstruction of each row."""
        return self.inverse_transform(self.transform(X))

    @torch.no_grad()
    def sample(self, n_samples=1, random_state=None):
        """Generate: z ~ N(0, I), returns (decoder means E[x|z] (n_samples, F) float64, z)."""
        z = self._draw_latent(n_samples, random_state)
        self.module_.eval()
        x = self.module_.decode_mean(z.to(self._device()))
        return x.cpu().double().numpy(), z.double().numpy()

    @torch.no_grad()
    def score_samples(self, X):
        """ELBO of each row (a lower bound on log p(x)), averaged over ``n_mc_samples`` draws."""
        check_is_fitted(self)
        X, like = self._scoring_input(X)
        module = self._float64_module()
        eps = self._shared_eps(int(self.n_mc_samples)).double()
        x = self._tensor(X).double()
        starts, step = self._chunks(x.shape[0], eps.shape[0])
        out = torch.cat([module.elbo(x[s:s + step], eps)[0] for s in starts])
        return self._output(out, like)

    def score(self, X, y=None):
        """Mean ELBO per row (nats)."""
        return float(np.mean(np.asarray(self.score_samples(X), dtype=np.float64)))

    @torch.no_grad()
    def log_likelihood(self, X, n_samples=100):
        """Importance-sampled log p(x) per row with q(z|x) as proposal (K = ``n_samples`` draws;
        a tighter lower bound than the ELBO in expectation, exact as K grows)."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
        X, like = self._scoring_input(X)
        module = self._float64_module()
        eps = self._shared_eps(int(n_samples), seed_offset=1).double()
        x = self._tensor(X).double()
        starts, step = self._chunks(x.shape[0], eps.shape[0])
        out = torch.cat([module.log_likelihood(x[s:s + step], eps) for s in starts])
        return self._output(out, like)

    def anomaly_score(self, X, method="elbo", n_samples=100):
        """Higher = more anomalous: the negative ELBO (method="elbo") or the negative
        importance-sampled log-likelihood (method="iwae", ``n_samples`` draws)."""
        if method == "elbo":
            return -self.score_samples(X)
        if method == "iwae":
            return -self.log_likelihood(X, n_samples=n_samples)
        raise ValueError(f"method must be 'elbo' or 'iwae', got {method!r}.")

    @torch.no_grad()
    def interpolate(self, x_start, x_end, n_steps=8):
        """Decode the straight line between the posterior means of two inputs.

        ``x_start``, ``x_end``: single rows (F,) -> (n_steps, F); or (n, F) each -> (n, n_steps, F).
        The first and last steps are the reconstructions of the two inputs.
        """
        check_is_fitted(self)
        if isinstance(n_steps, bool) or not isinstance(n_steps, Integral) or n_steps < 2:
            raise ValueError(f"n_steps must be an int >= 2, got {n_steps!r}.")
        single = np.ndim(x_start) == 1
        a = x_start.reshape(1, -1) if single else x_start
        b = x_end.reshape(1, -1) if single else x_end
        if np.shape(a) != np.shape(b):
            raise ValueError(f"x_start and x_end need the same shape, got {np.shape(a)} and {np.shape(b)}.")
        za = torch.as_tensor(np.asarray(self.transform(a.detach().cpu() if isinstance(a, torch.Tensor) else a)))
        zb = torch.as_tensor(np.asarray(self.transform(b.detach().cpu() if isinstance(b, torch.Tensor) else b)))
        t = torch.linspace(0, 1, int(n_steps), dtype=za.dtype).reshape(1, -1, 1)
        z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t             # n x steps x latent
        x = self.module_.decode_mean(z.float().to(self._device()))      # n x steps x F
        x = x.cpu().double().numpy()
        if isinstance(x_start, torch.Tensor):
            x = torch.from_numpy(x).to(x_start.device)
        return x[0] if single else x
