"""The shared training loop of fastlearn's neural models, and their checkpoint format.

A model is a plain ``torch.nn.Module`` with ``loss(*batch) -> Tensor | (Tensor, dict)``; it may
also define ``training_step(batch, trainer) -> dict`` (GANs: several optimizers) and
``configure_optimizers(trainer) -> dict[str, Optimizer]``. ``Trainer.fit`` adds the rest:
device, mixed precision, shuffled minibatches, a validation split with early stopping, a tqdm
bar with the live loss, seeding, Ctrl-C that keeps the best weights, safetensors checkpoints
with a JSON config, and a history of metrics.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Trainer", "History", "resolve_device", "save_checkpoint", "load_checkpoint", "as_tensor"]


# --------------------------------------------------------------------------------------------
# devices and inputs


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" -> cuda when a GPU is usable, else cpu; "cuda" without a GPU raises and says why."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str) and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA GPU (this torch build or "
                           "machine has none); use device='cpu' or device='auto'.")
    return dev


def as_tensor(x: Any, name: str, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """An ndarray or tensor as a float tensor on ``device``; rejects NaN/inf with the argument's name."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if t.is_complex():
        raise TypeError(f"{name} must be real, got a complex array.")
    t = t.to(device=device, dtype=dtype)
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity; remove or impute those values first.")
    return t


# --------------------------------------------------------------------------------------------
# checkpoints: one safetensors file, tensors + a JSON config in its metadata (no pickle)

_CONFIG_KEY = "fastlearn_config"


def save_checkpoint(path, state_dict: dict[str, torch.Tensor], config: dict | None = None) -> None:
    """Write ``state_dict`` (tensors) and ``config`` (anything JSON can hold) to ``path``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {_CONFIG_KEY: json.dumps(config or {}, default=_json_default)}
    save_file(tensors, str(path), metadata=meta)


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read what ``save_checkpoint`` wrote: (state_dict, config)."""
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        for k in f.keys():
            state[k] = f.get_tensor(k)
    if _CONFIG_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file without a fastlearn config; it was not written by "
                         "fastlearn's save().")
    return state, json.loads(meta[_CONFIG_KEY])


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.device):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint config")


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class History:
    """Per-epoch metrics (``metrics["loss"]``, ``metrics["val_loss"]``, and whatever the model
    reports), the best epoch (0-based) and its validation loss, and how training ended."""

    metrics: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    best_loss: float = math.inf
    n_epochs: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    seconds: float = 0.0

    def append(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.metrics.setdefault(k, []).append(float(v))

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "best_epoch": self.best_epoch, "best_loss": self.best_loss,
                "n_epochs": self.n_epochs, "stopped_early": self.stopped_early,
                "interrupted": self.interrupted, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


def _check_real(name, value, low, high=math.inf, low_open=False):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < low or value > high or (low_open and value == low):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")


SMALL_MODEL_PARAMS = 1_000_000


_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(params, *, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    """torch's Adam (AdamW when ``weight_decay`` > 0), fused when every parameter is a CPU or CUDA
    float tensor: one kernel a parameter per step in place of about ten tensor ops. On the CPU,
    for the digits VAE's MLP shape (~100k parameters in 12 tensors): 189 us a step against 867
    us for the default (one tensor at a time); its training epoch ~25% faster. The result equals
    the default's to a few units in the last place (the fused kernel rounds in another order)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_ADAM_DTYPES for p in params)
    cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


class Trainer:
    """Minibatch training of a module exposing ``loss(*batch)``.

    Parameters
    ----------
    epochs : passes over the training data (the iteration bound).
    batch_size : minibatch size (clipped to the number of training rows).
    learning_rate, weight_decay : for the default optimizer, Adam(W).
    validation_fraction : share of rows held out for early stopping and best-weight selection
        (0 disables both: the last epoch's weights are kept).
    patience : epochs without a validation improvement of ``min_delta`` before stopping.
    seed : seeds the split, the shuffling and torch's global RNG during training (restored after).
    device : "auto", "cpu" or "cuda".
    mixed_precision : "auto" (bf16 autocast on CUDA, off on CPU where it rarely helps), True, False.
    progress : show a tqdm bar with the live loss.
    max_grad_norm : clip gradients to this norm (None: no clipping).
    checkpoint_path : also write the best weights here (safetensors) whenever they improve.
    callbacks : functions ``f(trainer, epoch, values)`` called after every epoch.
    max_time : stop (as early stopping does) after the epoch that passes this many seconds.
    num_threads : torch intra-op threads during training on CPU. "auto": 1 for models under
        ``SMALL_MODEL_PARAMS`` trained parameters (per-op thread synchronisation costs more than it
        saves on small layers, many times more on a busy machine), else unchanged. Restored after.
    """

    def __init__(self, epochs: int = 50, batch_size: int = 64, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, validation_fraction: float = 0.1, patience: int = 10,
                 min_delta: float = 0.0, seed: int | None = 0, device: str = "auto",
                 mixed_precision: str | bool = "auto", progress: bool = False,
                 max_grad_norm: float | None = None, checkpoint_path=None,
                 callbacks: list[Callable] | None = None, max_time: float | None = None,
                 num_threads: int | str | None = "auto"):
        _check_int("epochs", epochs, 1)
        _check_int("batch_size", batch_size, 1)
        _check_real("learning_rate", learning_rate, 0.0, low_open=True)
        _check_real("weight_decay", weight_decay, 0.0)
        _check_real("validation_fraction", validation_fraction, 0.0, 0.9)
        _check_int("patience", patience, 1)
        _check_real("min_delta", min_delta, 0.0)
        if seed is not None:
            _check_int("seed", seed, 0)
        if mixed_precision not in ("auto", True, False):
            raise ValueError(f"mixed_precision must be 'auto', True or False, got {mixed_precision!r}.")
        if max_grad_norm is not None:
            _check_real("max_grad_norm", max_grad_norm, 0.0, low_open=True)
        if max_time is not None:
            _check_real("max_time", max_time, 0.0, low_open=True)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.validation_fraction, self.patience, self.min_delta = float(validation_fraction), int(patience), float(min_delta)
        self.seed, self.device = seed, resolve_device(device)
        self.mixed_precision, self.progress, self.max_grad_norm = mixed_precision, progress, max_grad_norm
        self.checkpoint_path, self.callbacks, self.max_time = checkpoint_path, list(callbacks or []), max_time
        if not (num_threads is None or num_threads == "auto"):
            _check_int("num_threads", num_threads, 1)
        self.num_threads = num_threads
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scaler = None
        self.step = 0  # optimizer steps taken (all optimizers together count once per batch)

    # -- pieces a model's own training_step uses ------------------------------------------
    def autocast(self):
        """The autocast context of this run (a no-op when mixed precision is off)."""
        if not self._amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params=None) -> None:
        """zero_grad, backward (scaled under fp16), optional clipping, optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.max_grad_norm is not None:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params or _opt_params(optimizer), self.max_grad_norm)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params or _opt_params(optimizer), self.max_grad_norm)
            optimizer.step()

    # -- the loop -------------------------------------------------------------------------
    def fit(self, module: torch.nn.Module, *data, validation_data: tuple | None = None) -> History:
        """Train ``module`` on tensors ``data`` (rows first; e.g. ``X`` or ``X, y``), in place.

        Returns the History; the module ends holding the best weights seen (lowest validation
        loss, or the last epoch when there is no validation split), also after Ctrl-C.
        """
        if not data:
            raise ValueError("Trainer.fit needs at least one data tensor (rows first).")
        if not hasattr(module, "loss") and not hasattr(module, "training_step"):
            raise TypeError(f"{type(module).__name__} has no loss(*batch) method; the Trainer needs one "
                            "(or a training_step(batch, trainer)).")
        data = tuple(d if isinstance(d, torch.Tensor) else torch.as_tensor(np.asarray(d)) for d in data)
        n = data[0].shape[0]
        if any(d.shape[0] != n for d in data):
            raise ValueError(f"all data tensors need the same number of rows, got {[d.shape[0] for d in data]}.")
        if n == 0:
            raise ValueError("Trainer.fit got 0 rows; pass at least one sample.")

        rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        threads = self.num_threads
        if threads == "auto":
            # Trained parameters only: frozen copies (an EMA of the weights) add no per-op work.
            n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
            threads = 1 if (self.device.type == "cpu" and n_params < SMALL_MODEL_PARAMS) else None
        old_threads = torch.get_num_threads()
        try:
            if threads is not None:
                torch.set_num_threads(int(threads))
            with torch.random.fork_rng(devices=rng_devices, enabled=self.seed is not None):
                if self.seed is not None:
                    torch.manual_seed(self.seed)
                return self._fit(module, data, validation_data, n)
        finally:
            torch.set_num_threads(old_threads)

    def _fit(self, module, data, validation_data, n):
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        gen = torch.Generator().manual_seed(seed)
        if validation_data is not None:
            train = tuple(d.to(self.device) for d in data)
            val = tuple((v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(self.device)
                        for v in validation_data)
        elif self.validation_fraction > 0 and n >= 2:
            n_val = min(max(1, int(round(n * self.validation_fraction))), n - 1)
            perm = torch.randperm(n, generator=gen)
            val = tuple(d[perm[:n_val]].to(self.device) for d in data)
            train = tuple(d[perm[n_val:]].to(self.device) for d in data)
        else:
            train, val = tuple(d.to(self.device) for d in data), None
        n_train = train[0].shape[0]
        batch_size = min(self.batch_size, n_train)

        module.to(self.device)
        self._amp = (self.mixed_precision is True) or (self.mixed_precision == "auto" and self.device.type == "cuda")
        self._amp_dtype = torch.bfloat16
        if self._amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self._amp_dtype = torch.float16
            self.scaler = torch.amp.GradScaler("cuda")
        if hasattr(module, "configure_optimizers"):
            self.optimizers = dict(module.configure_optimizers(self))
        else:
            self.optimizers = {"model": adam(module.parameters(), lr=self.learning_rate,
                                             weight_decay=self.weight_decay)}

        history = History()
        best_state = None
        bad_epochs = 0
        t_start = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.epochs, desc=type(module).__name__, unit="epoch", file=sys.stderr, leave=False)
        epoch = 0
        try:
            for epoch in range(self.epochs):
                module.train()
                perm = torch.randperm(n_train, generator=gen).to(self.device)
                sums: dict[str, float] = {}
                counts: dict[str, int] = {}  # per metric: a model may report some only on some steps
                for start in range(0, n_train, batch_size):
                    idx = perm[start:start + batch_size]
                    batch = tuple(d[idx] for d in train)
                    values = self._train_batch(module, batch)
                    m = idx.shape[0]
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * m
                        counts[k] = counts.get(k, 0) + m
                    self.step += 1
                    if bar is not None and "loss" in values:
                        bar.set_postfix(loss=f"{float(values['loss']):.4g}", refresh=False)
                epoch_values = {k: v / counts[k] for k, v in sums.items()}
                if "loss" in epoch_values and not math.isfinite(epoch_values["loss"]):
                    raise RuntimeError(f"training diverged: the loss became {epoch_values['loss']} in epoch "
                                       f"{epoch}; lower learning_rate or set max_grad_norm.")
                if val is not None:
                    epoch_values["val_loss"] = self.evaluate(module, *val, batch_size=max(batch_size, 256))
                history.append(epoch_values)
                history.n_epochs = epoch + 1
                monitored = epoch_values.get("val_loss", epoch_values.get("loss", math.nan))
                if val is None:
                    best_state, history.best_epoch, history.best_loss = None, epoch, monitored
                elif monitored < history.best_loss - self.min_delta:
                    history.best_loss, history.best_epoch = monitored, epoch
                    best_state = copy.deepcopy(module.state_dict())
                    bad_epochs = 0
                    if self.checkpoint_path is not None:
                        save_checkpoint(self.checkpoint_path, best_state, {"epoch": epoch, "val_loss": monitored})
                else:
                    bad_epochs += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in epoch_values.items() if k in ("loss", "val_loss")})
                for cb in self.callbacks:
                    cb(self, epoch, epoch_values)
                if val is not None and bad_epochs >= self.patience:
                    history.stopped_early = True
                    break
                if self.max_time is not None and time.perf_counter() - t_start > self.max_time:
                    history.stopped_early = True
                    break
        except KeyboardInterrupt:
            history.interrupted = True
            warnings.warn(f"training interrupted in epoch {epoch}; keeping the best weights seen "
                          f"(epoch {history.best_epoch}).", RuntimeWarning, stacklevel=3)
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None:
            module.load_state_dict(best_state)
        if val is None and self.checkpoint_path is not None and history.n_epochs:
            save_checkpoint(self.checkpoint_path, module.state_dict(), {"epoch": history.best_epoch})
        module.eval()
        history.seconds = time.perf_counter() - t_start
        return history

    def _train_batch(self, module, batch) -> dict:
        if hasattr(module, "training_step"):
            return module.training_step(batch, self)
        with self.autocast():
            out = module.loss(*batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        self.backward_step(loss, self.optimizers["model"], None)
        values = {"loss": loss.detach()}
        values.update(extra)
        return values

    @torch.no_grad()
    def evaluate(self, module, *data, batch_size: int = 256) -> float:
        """Mean of ``module.loss`` over rows of ``data``, in eval mode."""
        was_training = module.training
        module.eval()
        total, count = 0.0, 0
        n = data[0].shape[0]
        for start in range(0, n, batch_size):
            batch = tuple(d[start:start + batch_size] for d in data)
            with self.autocast():
                out = module.loss(*batch)
            loss = out[0] if isinstance(out, tuple) else out
            total += float(loss) * batch[0].shape[0]
            count += batch[0].shape[0]
        module.train(was_training)
        return total / count


def _opt_params(optimizer):
    return [p for g in optimizer.param_groups for p in g["params"]]
