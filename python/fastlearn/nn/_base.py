"""What the neural estimators share: training hyperparameters, input validation (NumPy arrays or
tensors in, the same kind out), running the Trainer, and save/load without pickle."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from fastlearn.nn.training import History, Trainer, load_checkpoint, resolve_device, save_checkpoint

TRAINING_CONSTRAINTS = {
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 0.9, closed="both")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
    "device": [StrOptions({"auto", "cpu", "cuda"})],
    "verbose": ["boolean"],
}


def _seed_from(random_state) -> int:
    """An int seed from sklearn's random_state convention (None -> fresh, int -> itself)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    return int(random_state)


class NeuralEstimator(BaseEstimator):
    """Base of Autoencoder, VAE and GAN. Subclasses set ``_module_class`` and implement
    ``_build_module(n_features)`` and ``_module_config()`` (the JSON needed to rebuild it)."""

    # -- inputs and outputs -----------------------------------------------------------------
    def _draw_latent(self, n_samples, random_state):
        """z ~ N(0, I) of shape (n_samples, latent_dim) for ``sample``, seeded by random_state."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
        g = torch.Generator().manual_seed(_seed_from(random_state))
        return torch.randn(int(n_samples), int(self.latent_dim), generator=g)

    def _device(self):
        return resolve_device(self.device)

    def _validate(self, X, reset: bool):
        """Validated float32 ndarray, and how to return results (tensor and its device, or dtype)."""
        like = None
        if isinstance(X, torch.Tensor):
            like = ("tensor", X.device)
            X = X.detach().cpu().numpy()
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
        if like is None:
            like = ("numpy", X.dtype)
        return np.array(X, dtype=np.float32, copy=True), like

    def _output(self, t: torch.Tensor, like):
        kind, info = like
        if kind == "tensor":
            return t.detach().to(info)
        return t.detach().cpu().numpy().astype(info, copy=False)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(X).to(self._device())

    # -- training -----------------------------------------------------------------------------
    def _train(self, module, X: np.ndarray, **trainer_kw) -> History:
        seed = _seed_from(self.random_state)
        kw = dict(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                  weight_decay=getattr(self, "weight_decay", 0.0),
                  validation_fraction=getattr(self, "validation_fraction", 0.0),
                  patience=getattr(self, "patience", 10), seed=seed, device=self.device, progress=self.verbose)
        kw.update(trainer_kw)
        trainer = Trainer(**kw)
        history = trainer.fit(module, torch.from_numpy(X))
        self.history_ = history.to_dict()
        self.n_iter_ = history.n_epochs
        self.loss_curve_ = list(history.metrics.get("loss", []))
        return history

    def _build(self, n_features: int):
        seed = _seed_from(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(n_features)
        return module.to(self._device())

    # -- persistence (safetensors + JSON, no pickle) ------------------------------------------
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (one safetensors file; config as JSON inside it)."""
        check_is_fitted(self)
        config = {"class": type(self).__name__, "params": _jsonable(self.get_params()),
                  "n_features_in": int(self.n_features_in_), "fitted": self._fitted_config(),
                  "history": self.history_}
        save_checkpoint(path, self.module_.state_dict(), config)

    @classmethod
    def load(cls, path, device: str = "auto"):
        """Read a model written by ``save``; ``device`` picks where it runs ("auto", "cpu", "cuda")."""
        state, config = load_checkpoint(path)
        if config.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {config.get('class')!r}, not a {cls.__name__}; "
                             f"load it with fastlearn.nn.{config.get('class')}.load.")
        params = dict(config["params"])
        for k, v in params.items():
            if isinstance(v, list):
                params[k] = tuple(v)
        params["device"] = device
        est = cls(**params)
        est.n_features_in_ = config["n_features_in"]
        est._restore_fitted(config["fitted"])
        est.module_ = est._build_module(est.n_features_in_)
        est.module_.load_state_dict(state)
        est.module_.to(est._device()).eval()
        est.history_ = config["history"]
        est.n_iter_ = est.history_["n_epochs"]
        est.loss_curve_ = list(est.history_["metrics"].get("loss", []))
        return est

    def _fitted_config(self) -> dict:
        return {}

    def _restore_fitted(self, fitted: dict) -> None:
        pass

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.random.RandomState) or isinstance(v, np.random.Generator):
            v = None
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        out[k] = v
    return out
