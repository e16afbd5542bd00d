"""Latent diffusion: a diffusion model in the code space of fastlearn's Autoencoder. The codes
are standardised, a class-conditional MLP denoiser (label dropout for classifier-free
guidance) is trained on them in continuous time (VDM's linear log-SNR schedule, the plain
eps-MSE loss), and samples are drawn by ancestral steps and decoded to images.

    ld = LatentDiffusion(latent_dim=8, random_state=0).fit(X, y)      # X: n x 64 in [0, 1]
    images = ld.sample(100, labels=np.repeat(np.arange(10), 10), guidance_scale=3.0)
"""

from __future__ import annotations

import time
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from fastlearn.diffusion._vdm import EpsMLP, FixedLinearLogSNR, _check_endpoints, ancestral_step, antithetic_times
from fastlearn.nn._base import TRAINING_CONSTRAINTS, _jsonable, _seed_from
from fastlearn.nn.autoencoder import Autoencoder
from fastlearn.nn.training import Trainer, load_checkpoint, resolve_device, save_checkpoint

__all__ = ["LatentDiffusion", "LatentDenoiser"]


class LatentDenoiser(nn.Module):
    """eps_hat(z_t, gamma_t, label) on standardised codes, with its schedule and training loss.

    ``loss(z, labels=None)``: mean over the batch of ||eps - eps_hat||^2 / latent_dim at
    antithetic t ~ U(0, 1); each label is replaced by the "no label" token (index n_classes)
    with probability ``label_dropout``, so one network gives eps_c and eps_u.
    """

    def __init__(self, latent_dim: int, n_classes: int = 0, hidden: int = 256, n_blocks: int = 3,
                 embedding_dim: int = 32, gamma_min: float = -10.0, gamma_max: float = 8.0,
                 label_dropout: float = 0.1):
        super().__init__()
        self.latent_dim, self.n_classes, self.label_dropout = int(latent_dim), int(n_classes), float(label_dropout)
        self.schedule = FixedLinearLogSNR(gamma_min, gamma_max)
        self.net = EpsMLP(latent_dim, hidden, n_blocks, embedding_dim, n_classes=n_classes)

    def predict_eps(self, z, gamma, labels=None):  # z: n x d, gamma: n, labels: n (n_classes = none)
        lo, hi = self.schedule.gamma_min, self.schedule.gamma_max
        return self.net(z, (gamma - lo) / (hi - lo), labels if self.n_classes else None)

    def loss(self, z, labels=None):
        n = z.shape[0]
        t = antithetic_times(n, torch.rand((), dtype=z.dtype, device=z.device))
        gamma = self.schedule(t)
        eps = torch.randn_like(z)
        z_t = torch.sqrt(torch.sigmoid(-gamma)).unsqueeze(-1) * z + torch.sqrt(torch.sigmoid(gamma)).unsqueeze(-1) * eps
        if self.n_classes and labels is not None:
            labels = labels.long()
            if self.training and self.label_dropout > 0:
                drop = torch.rand(n, device=z.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.n_classes), labels)
        else:
            labels = None
        err = eps - self.predict_eps(z_t, gamma, labels)
        return torch.mean(err * err)

    @torch.no_grad()
    def sample(self, n, labels, guidance_scale, num_steps, generator, progress=False):
        """Ancestral steps t = 1 -> 0 on num_steps; eps = eps_u + w (eps_c - eps_u) when labels are
        given and w != 1. Returns the final x_hat = (z_0 - sigma_0 eps_hat) / alpha_0: n x d."""
        p = next(self.parameters())
        dev, dt = p.device, p.dtype
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=dt).to(dev)
        null = torch.full((n,), self.n_classes, dtype=torch.long, device=dev)
        guided = labels is not None and guidance_scale != 1.0

        def eps_hat(z, gamma):
            if labels is None:
                return self.predict_eps(z, gamma, null if self.n_classes else None)
            if not guided:
                return self.predict_eps(z, gamma, labels)
            both = self.predict_eps(torch.cat([z, z]), torch.cat([gamma, gamma]), torch.cat([labels, null]))
            eps_c, eps_u = both.chunk(2)
            return eps_u + guidance_scale * (eps_c - eps_u)

        steps = range(num_steps, 0, -1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="latent diffusion sample", leave=False)
        for i in steps:
            g_t = self.schedule(torch.full((n,), i / num_steps, dtype=dt, device=dev))
            g_s = self.schedule(torch.full((n,), (i - 1) / num_steps, dtype=dt, device=dev))
            noise = torch.randn(z.shape, generator=generator, dtype=dt).to(dev)
            z = ancestral_step(z, eps_hat(z, g_t), g_t.unsqueeze(-1), g_s.unsqueeze(-1), noise)
        g0 = self.schedule(torch.zeros(n, dtype=dt, device=dev))
        a0, s0 = torch.sqrt(torch.sigmoid(-g0)).unsqueeze(-1), torch.sqrt(torch.sigmoid(g0)).unsqueeze(-1)
        return (z - s0 * eps_hat(z, g0)) / a0


class LatentDiffusion(BaseEstimator):
    """Diffusion in the standardised code space of an Autoencoder, optionally class-conditional
    with classifier-free guidance.

    Parameters
    ----------
    autoencoder : a fastlearn.nn.Autoencoder, fitted (used as is) or not (a clone is fitted on
        X); None: ``Autoencoder(latent_dim, epochs=autoencoder_epochs)`` is fitted on X.
    latent_dim : code size when the autoencoder is built here (a given one keeps its own).
    autoencoder_epochs : epochs of the autoencoder built here.
    hidden, n_blocks, embedding_dim : the residual-MLP denoiser.
    label_dropout : probability of training a row without its label (classifier-free guidance).
    gamma_min, gamma_max : log-SNR (gamma = -log SNR) at t = 0 and t = 1, linear in between.
    epochs, batch_size, learning_rate, weight_decay, validation_fraction, patience,
    random_state, device, verbose : training of the denoiser (Adam; tqdm bar with ``verbose``;
        Ctrl-C keeps a usable model).

    Attributes
    ----------
    autoencoder_ (the fitted Autoencoder), latent_mean_, latent_scale_ (the standardisation),
    classes_ (labels seen by fit, or None), denoiser_ (LatentDenoiser), n_features_in_,
    loss_curve_, history_, fit_seconds_ (autoencoder and denoiser).
    """

    _parameter_constraints = {
        "autoencoder": [Autoencoder, None],
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "autoencoder_epochs": [Interval(Integral, 1, None, closed="left")],
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "n_blocks": [Interval(Integral, 0, None, closed="left")],
        "embedding_dim": [Interval(Integral, 2, None, closed="left")],
        "label_dropout": [Interval(Real, 0, 1, closed="left")],
        "gamma_min": [Interval(Real, -50, 50, closed="both")],
        "gamma_max": [Interval(Real, -50, 50, closed="both")],
        **TRAINING_CONSTRAINTS,
    }
    _parameter_constraints["device"] = [StrOptions({"auto", "cpu", "cuda"})]

    def __init__(self, autoencoder=None, latent_dim=8, *, autoencoder_epochs=100, hidden=256, n_blocks=3,
                 embedding_dim=32, label_dropout=0.1, gamma_min=-10.0, gamma_max=8.0, epochs=300, batch_size=128,
                 learning_rate=1e-3, weight_decay=0.0, validation_fraction=0.0, patience=20, random_state=None,
                 device="auto", verbose=False):
        self.autoencoder = autoencoder
        self.latent_dim = latent_dim
        self.autoencoder_epochs = autoencoder_epochs
        self.hidden = hidden
        self.n_blocks = n_blocks
        self.embedding_dim = embedding_dim
        self.label_dropout = label_dropout
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- fitting ----------------------------------------------------------------------------------
    def _fit_autoencoder(self, X, seed):
        if self.autoencoder is None:
            ae = Autoencoder(int(self.latent_dim), epochs=int(self.autoencoder_epochs), random_state=seed,
                             device=self.device, verbose=self.verbose)
            return ae.fit(X)
        try:
            check_is_fitted(self.autoencoder)
        except NotFittedError:
            return clone(self.autoencoder).fit(X)
        if self.autoencoder.n_features_in_ != X.shape[1]:
            raise ValueError(f"the given autoencoder was fitted on {self.autoencoder.n_features_in_} features but X "
                             f"has {X.shape[1]}; pass an autoencoder fitted on the same kind of data, or an "
                             "unfitted one.")
        return self.autoencoder

    def fit(self, X, y=None):
        """Fit (or take) the autoencoder, then the denoiser on its standardised codes of X
        (images as rows, e.g. digits in [0, 1]); ``y``: class labels for conditional sampling."""
        self._validate_params()
        _check_endpoints(self.gamma_min, self.gamma_max)
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        if y is None:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
        else:
            if isinstance(y, torch.Tensor):
                y = y.detach().cpu().numpy()
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        X = np.asarray(X, dtype=np.float32)
        seed = _seed_from(self.random_state)
        t0 = time.perf_counter()
        self.autoencoder_ = self._fit_autoencoder(X, seed)
        Z = np.asarray(self.autoencoder_.transform(X), dtype=np.float64)
        self.latent_mean_ = Z.mean(0)
        self.latent_scale_ = np.maximum(Z.std(0), 1e-6)
        Zs = torch.from_numpy(((Z - self.latent_mean_) / self.latent_scale_).astype(np.float32))
        data = (Zs,)
        if y is not None:
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            data = (Zs, torch.from_numpy(y_idx.astype(np.int64)))
        else:
            self.classes_ = None
        n_classes = 0 if self.classes_ is None else len(self.classes_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.denoiser_ = self._build_denoiser(n_classes)
        trainer = Trainer(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                          weight_decay=self.weight_decay, validation_fraction=self.validation_fraction,
                          patience=self.patience, seed=seed, device=self.device, progress=self.verbose)
        history = trainer.fit(self.denoiser_, *data)
        self.history_ = history.to_dict()
        self.n_iter_ = history.n_epochs
        self.loss_curve_ = list(history.metrics.get("loss", []))
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _build_denoiser(self, n_classes):
        return LatentDenoiser(int(self.autoencoder_.latent_dim), n_classes, int(self.hidden), int(self.n_blocks),
                              int(self.embedding_dim), float(self.gamma_min), float(self.gamma_max),
                              float(self.label_dropout))

    # -- generation -------------------------------------------------------------------------------
    def _label_indices(self, labels, n):
        if labels is None:
            return None
        if self.classes_ is None:
            raise ValueError("this model was fitted without y, so it cannot sample given labels; pass labels=None, "
                             "or fit with y.")
        lab = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
        if lab.ndim == 0:
            lab = np.full(n, lab.item())
        lab = lab.reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"labels has {lab.shape[0]} entries for n_samples={n}; pass one label per sample or "
                             "a single label for all.")
        idx = np.searchsorted(self.classes_, lab)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == lab):
            bad = lab[self.classes_[idx] != lab][:5]
            raise ValueError(f"labels {bad.tolist()} were not seen in fit; the classes are {self.classes_.tolist()}.")
        return torch.from_numpy(idx.astype(np.int64))

    @torch.no_grad()
    def sample_latents(self, n_samples=1, labels=None, guidance_scale=1.0, num_steps=100, random_state=None):
        """Codes in the autoencoder's space (un-standardised): (n_samples, latent_dim) float64."""
        check_is_fitted(self)
        for name, v in (("n_samples", n_samples), ("num_steps", num_steps)):
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}.")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, Real) or not np.isfinite(guidance_scale) \
                or not 0 <= guidance_scale <= 100:
            raise ValueError(f"guidance_scale must be a finite number in [0, 100] (1: plain conditional, >1: "
                             f"guided), got {guidance_scale!r}.")
        n = int(n_samples)
        idx = self._label_indices(labels, n)
        dev = resolve_device(self.device)
        self.denoiser_.to(dev).eval()
        g = torch.Generator().manual_seed(_seed_from(random_state))
        z = self.denoiser_.sample(n, None if idx is None else idx.to(dev), float(guidance_scale), int(num_steps), g,
                                  progress=bool(self.verbose))  # all torch threads (see VDM.sample)
        return z.double().cpu().numpy() * self.latent_scale_ + self.latent_mean_

    def sample(self, n_samples=1, labels=None, guidance_scale=1.0, num_steps=100, random_state=None):
        """Generate images: (n_samples, n_features) float64, clipped to [0, 1].

        labels : None (unconditional: the "no label" token) or class values (one per sample, or
            one for all). guidance_scale : w in eps_u + w (eps_c - eps_u); 1 is the plain
            conditional model, larger values trade diversity for fidelity to the label.
        """
        z = self.sample_latents(n_samples, labels, guidance_scale, num_steps, random_state)
        x = np.asarray(self.autoencoder_.inverse_transform(z), dtype=np.float64)
        return np.clip(x, 0.0, 1.0)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path) -> None:
        """One safetensors file: the autoencoder's and the denoiser's weights, config as JSON."""
        check_is_fitted(self)
        ae = self.autoencoder_
        state = {f"autoencoder.{k}": v for k, v in ae.module_.state_dict().items()}
        state.update({f"denoiser.{k}": v for k, v in self.denoiser_.state_dict().items()})
        state["latent_mean"] = torch.from_numpy(np.asarray(self.latent_mean_, dtype=np.float64))
        state["latent_scale"] = torch.from_numpy(np.asarray(self.latent_scale_, dtype=np.float64))
        params = self.get_params(deep=False)
        params["autoencoder"] = None
        config = {"class": type(self).__name__, "params": _jsonable(params),
                  "n_features_in": int(self.n_features_in_),
                  "classes": None if self.classes_ is None else self.classes_.tolist(),
                  "autoencoder": {"params": _jsonable(ae.get_params()), "n_features_in": int(ae.n_features_in_),
                                  "history": ae.history_},
                  "history": self.history_, "fit_seconds": self.fit_seconds_}
        save_checkpoint(path, state, config)

    @classmethod
    def load(cls, path, device: str = "auto"):
        """Read a model written by ``save``; ``device``: "auto", "cpu" or "cuda"."""
        state, config = load_checkpoint(path)
        if config.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {config.get('class')!r}, not a {cls.__name__}.")

        def params_of(d):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        ae_cfg = config["autoencoder"]
        ae = Autoencoder(**{**params_of(ae_cfg["params"]), "device": device})
        ae.n_features_in_ = ae_cfg["n_features_in"]
        ae.module_ = ae._build_module(ae.n_features_in_)
        ae.module_.load_state_dict({k[len("autoencoder."):]: v for k, v in state.items() if k.startswith("autoencoder.")})
        ae.module_.to(ae._device()).eval()
        ae.history_ = ae_cfg["history"]
        ae.n_iter_ = ae.history_["n_epochs"]
        ae.loss_curve_ = list(ae.history_["metrics"].get("loss", []))

        est = cls(**{**params_of(config["params"]), "device": device})
        est.n_features_in_ = config["n_features_in"]
        est.autoencoder_ = ae
        est.classes_ = None if config["classes"] is None else np.asarray(config["classes"])
        est.latent_mean_ = state["latent_mean"].numpy()
        est.latent_scale_ = state["latent_scale"].numpy()
        est.denoiser_ = est._build_denoiser(0 if est.classes_ is None else len(est.classes_))
        est.denoiser_.load_state_dict({k[len("denoiser."):]: v for k, v in state.items() if k.startswith("denoiser.")})
        est.denoiser_.to(resolve_device(device)).eval()
        est.history_ = config["history"]
        est.n_iter_ = est.history_["n_epochs"]
        est.loss_curve_ = list(est.history_["metrics"].get("loss", []))
        est.fit_seconds_ = config["fit_seconds"]
        return est
