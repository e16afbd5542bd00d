"""The autoencoder as lossy compression: an encoder to ``latent_dim`` numbers and a decoder back,
trained on mean squared reconstruction error. ``AutoencoderModule`` is the plain torch module;
``Autoencoder`` is the scikit-learn transformer around it (fit / transform / inverse_transform)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fastlearn.nn._base import TRAINING_CONSTRAINTS, NeuralEstimator
from fastlearn.nn._nets import build_decoder, build_encoder, check_layer_sizes, infer_image_shape

__all__ = ["Autoencoder", "AutoencoderModule"]


class AutoencoderModule(nn.Module):
    """encoder: (n, n_features) -> (n, latent_dim); decoder back. ``loss(x)``: mean squared error."""

    def __init__(self, n_features: int, latent_dim: int, architecture: str = "mlp",
                 hidden_layer_sizes=(128,), conv_channels=(16, 32), image_shape=None):
        super().__init__()
        shape = infer_image_shape(n_features, image_shape) if architecture == "conv" else None
        self.encoder = build_encoder(architecture, n_features, latent_dim, hidden_layer_sizes, conv_channels, shape)
        self.decoder = build_decoder(architecture, latent_dim, n_features, hidden_layer_sizes, conv_channels, shape)

    def encode(self, x):  # n x n_features -> n x latent_dim
        return self.encoder(x)

    def decode(self, z):  # n x latent_dim -> n x n_features
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))

    def loss(self, x):
        return torch.mean((self(x) - x) ** 2)


class Autoencoder(TransformerMixin, NeuralEstimator):
    """Autoencoder with an MLP or convolutional encoder/decoder and a ``latent_dim``-sized code.

    Parameters
    ----------
    latent_dim : size of the code (the compression).
    architecture : "mlp", or "conv" for images given as flat rows (square, or ``image_shape``).
    hidden_layer_sizes : MLP widths of the encoder (the decoder mirrors them).
    conv_channels : channels of the stride-2 convolutions (architecture="conv").
    image_shape : (height, width) of each row's image; None: square.
    epochs, batch_size, learning_rate, weight_decay, validation_fraction, patience : training
        (Adam; the weights with the lowest validation loss are kept; early stopping after
        ``patience`` epochs without improvement).
    random_state : seed of initialisation, split and shuffling (int for reproducible fits).
    device : "auto", "cpu" or "cuda".
    verbose : show a progress bar with the live loss.

    Attributes
    ----------
    module_ : the trained AutoencoderModule (a plain torch module).
    n_features_in_, n_iter_ (epochs run), loss_curve_, history_ (all metrics, best epoch, ...).
    """

    _parameter_constraints = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "architecture": [StrOptions({"mlp", "conv"})],
        "hidden_layer_sizes": ["array-like"],
        "conv_channels": ["array-like"],
        "image_shape": ["array-like", None],
        **TRAINING_CONSTRAINTS,
    }

    def __init__(self, latent_dim=8, *, architecture="mlp", hidden_layer_sizes=(128,), conv_channels=(16, 32),
                 image_shape=None, epochs=100, batch_size=64, learning_rate=1e-3, weight_decay=0.0,
                 validation_fraction=0.1, patience=10, random_state=None, device="auto", verbose=False):
        self.latent_dim = latent_dim
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
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _build_module(self, n_features):
        return AutoencoderModule(n_features, int(self.latent_dim), self.architecture,
                                 check_layer_sizes("hidden_layer_sizes", self.hidden_layer_sizes),
                                 check_layer_sizes("conv_channels", self.conv_channels), self.image_shape)

    def fit(self, X, y=None):
        """Train on rows of X (ndarray or tensor, n_samples x n_features)."""
        self._validate_params()
        X, _ = self._validate(X, reset=True)
        self.module_ = self._build(X.shape[1])
        self._train(self.module_, X)
        return self

    @torch.no_grad()
    def transform(self, X):
        """Codes of X: (n_samples, latent_dim)."""
        check_is_fitted(self)
        X, like = self._validate(X, reset=False)
        self.module_.eval()
        return self._output(self.module_.encode(self._tensor(X)), like)

    @torch.no_grad()
    def inverse_transform(self, X):
        """Decode codes (n_samples, latent_dim) back to (n_samples, n_features)."""
        check_is_fitted(self)
        like = ("tensor", X.device) if isinstance(X, torch.Tensor) else ("numpy", np.float64)
        Z = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != int(self.latent_dim):
            raise ValueError(f"inverse_transform expects codes of shape (n_samples, {int(self.latent_dim)}), "
                             f"got {Z.shape}.")
        if not np.isfinite(Z).all():
            raise ValueError("inverse_transform: X contains NaN or infinity.")
        if like[0] == "numpy" and np.asarray(X).dtype in (np.float32, np.float64):
            like = ("numpy", np.asarray(X).dtype)
        self.module_.eval()
        return self._output(self.module_.decode(self._tensor(Z.astype(np.float32))), like)

    @torch.no_grad()
    def reconstruction_error(self, X):
        """Mean squared reconstruction error of each row: (n_samples,)."""
        check_is_fitted(self)
        X, like = self._validate(X, reset=False)
        self.module_.eval()
        x = self._tensor(X)
        err = ((self.module_(x) - x) ** 2).mean(dim=1)
        return self._output(err, like)

    def score(self, X, y=None):
        """Negative mean reconstruction error (higher is better)."""
        return -float(np.mean(np.asarray(self.reconstruction_error(X), dtype=np.float64)))
