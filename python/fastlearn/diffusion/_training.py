"""Training diffusion models on small images: ``DiffusionModel`` (a scikit-learn-style estimator
holding a class-conditional UNet, its EMA copy used for sampling, and the scheduler config),
the EMA of the weights with a decay warm-up, and a time-conditioned classifier of noisy images
x_t for classifier guidance.

    model = DiffusionModel(epochs=60, random_state=0).fit(X, y)     # X: n x 64 digits in [0, 1]
    images = model.sample(100, labels=np.arange(100) % 10, guidance_scale=3.0)
"""

from __future__ import annotations

import copy
import inspect
import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fastlearn.diffusion._schedules import SCHEDULE_NAMES
from fastlearn.diffusion._unet import UNet, _ResBlock, timestep_embedding
from fastlearn.nn._base import TRAINING_CONSTRAINTS, NeuralEstimator, _seed_from
from fastlearn.nn.training import SMALL_MODEL_PARAMS, Trainer, _check_int, _check_real, adam, resolve_device

__all__ = ["DiffusionModel", "ExponentialMovingAverage", "NoisyClassifier"]


# --------------------------------------------------------------------------------------------
# EMA of the weights


class ExponentialMovingAverage:
    """Shadow weights e <- d_n e + (1 - d_n) theta after the n-th optimizer step (n = 1, 2, ...),
    with d_n = min(decay, (1 + n) / (10 + n)) when ``warmup`` (early averages then forget the
    random initialisation quickly), else d_n = decay. Buffers are copied, not averaged.

    ``shadow`` is a module of the same class as the source, in eval mode, without gradients."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999, warmup: bool = True,
                 shadow: torch.nn.Module | None = None):
        _check_real("decay", decay, 0.0, 1.0)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow = shadow if shadow is not None else copy.deepcopy(module)
        self.shadow.eval().requires_grad_(False)
        self.num_updates = 0

    def decay_at(self, n: int) -> float:
        """d_n of the n-th update (n >= 1)."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.num_updates += 1
        d = self.decay_at(self.num_updates)
        shadow = [p for p in self.shadow.parameters()]
        params = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(shadow, params, 1.0 - d)
        for b_shadow, b in zip(self.shadow.buffers(), module.buffers()):
            b_shadow.copy_(b)


# --------------------------------------------------------------------------------------------
# the modules the Trainer trains


def _scheduler_from(config: dict, kind: str = "ddim"):
    from fastlearn.diffusion import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    return cls(num_train_timesteps=config["num_train_timesteps"], beta_schedule=config["beta_schedule"],
               prediction_type=config["prediction_type"], clip_sample=True, clip_sample_range=1.0,
               timestep_spacing="trailing")


class _DenoiserTraining(torch.nn.Module):
    """UNet + its EMA shadow; ``training_step`` draws t, noise and label dropout, takes the MSE to
    the epsilon (or v) target, an AdamW step, and updates the EMA."""

    def __init__(self, unet: UNet, ema_unet: UNet, schedule: dict, p_uncond: float, ema_decay: float):
        super().__init__()
        self.unet, self.ema_unet = unet, ema_unet
        self.schedule, self.p_uncond = dict(schedule), float(p_uncond)
        self.scheduler = _scheduler_from(self.schedule)
        self.ema = ExponentialMovingAverage(unet, ema_decay, warmup=True, shadow=ema_unet)

    def loss(self, x0, y=None):
        n = x0.shape[0]
        t = torch.randint(0, self.schedule["num_train_timesteps"], (n,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        if self.schedule["prediction_type"] == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        if y is not None and self.unet.num_classes is not None and self.p_uncond > 0:
            drop = torch.rand(n, device=x0.device) < self.p_uncond
            y = torch.where(drop, torch.full_like(y, self.unet.num_classes), y)
        return F.mse_loss(self.unet(x_t, t, y), target)

    def configure_optimizers(self, trainer):
        # AdamW as before (with no weight decay it is Adam)
        return {"model": adam(self.unet.parameters(), lr=trainer.learning_rate, weight_decay=trainer.weight_decay)}

    def training_step(self, batch, trainer):
        with trainer.autocast():
            loss = self.loss(*batch)
        trainer.backward_step(loss, trainer.optimizers["model"], list(self.unet.parameters()))
        self.ema.update(self.unet)
        return {"loss": loss.detach()}


class NoisyClassifier(torch.nn.Module):
    """A small time-conditioned classifier of noisy images: ``forward(x_t, t) -> logits``
    (B, num_classes); conv, residual blocks with the time embedding, a stride-2 downsampling,
    global average pooling and a linear head. Its gradient of log p(y | x_t, t) guides sampling."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, groups: int = 8):
        super().__init__()
        self.base_channels, self.num_classes = int(base_channels), int(num_classes)
        emb = 4 * base_channels
        self.time_mlp = torch.nn.Sequential(torch.nn.Linear(base_channels, emb), torch.nn.SiLU(),
                                            torch.nn.Linear(emb, emb))
        self.conv_in = torch.nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.block1 = _ResBlock(base_channels, base_channels, emb, groups, 0.0)
        self.down = torch.nn.Conv2d(base_channels, base_channels, 3, stride=2, padding=1)
        self.block2 = _ResBlock(base_channels, 2 * base_channels, emb, groups, 0.0)
        self.norm = torch.nn.GroupNorm(math.gcd(2 * base_channels, groups), 2 * base_channels)
        self.head = torch.nn.Linear(2 * base_channels, num_classes)

    def forward(self, x, t):
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        weight = self.time_mlp[0].weight
        emb = self.time_mlp(timestep_embedding(t, self.base_channels, dtype=weight.dtype).to(weight.dtype))
        h = self.block1(self.conv_in(x), emb)
        h = self.block2(self.down(h), emb)
        h = F.silu(self.norm(h)).mean(dim=(2, 3))                          # B x 2 base
        return self.head(h)


class _ClassifierTraining(torch.nn.Module):
    def __init__(self, classifier: NoisyClassifier, schedule: dict):
        super().__init__()
        self.classifier, self.schedule = classifier, dict(schedule)
        self.scheduler = _scheduler_from(self.schedule)

    def loss(self, x0, y):
        t = torch.randint(0, self.schedule["num_train_timesteps"], (x0.shape[0],), device=x0.device)
        x_t = self.scheduler.add_noise(x0, torch.randn_like(x0), t)
        return F.cross_entropy(self.classifier(x_t, t), y)


class _Holder(torch.nn.Module):
    """What ``DiffusionModel.module_`` holds (and save() writes): unet, ema_unet, classifier."""

    def __init__(self, unet, ema_unet, classifier=None):
        super().__init__()
        self.unet, self.ema_unet, self.classifier = unet, ema_unet, classifier


# --------------------------------------------------------------------------------------------
# the estimator


class DiffusionModel(NeuralEstimator):
    """A denoising diffusion model of small images (rows of C*H*W pixels in [0, 1]), optionally
    class-conditional with classifier-free guidance.

    Parameters
    ----------
    image_shape : (C, H, W) of a row; None: one square channel (64 -> 1 x 8 x 8).
    base_channels, channel_mults, num_res_blocks, attention : the UNet (see ``UNet``).
    num_train_timesteps, beta_schedule, prediction_type : the diffusion (scheduler arguments;
        prediction_type "epsilon" or "v_prediction").
    p_uncond : probability of replacing a label by the null label in training (classifier-free
        guidance needs the model to know both; 0 disables).
    ema_decay : decay of the EMA of the weights (with the warm-up (1 + n) / (10 + n)); the EMA
        weights are used for sampling.
    epochs, batch_size, learning_rate, weight_decay (AdamW), max_grad_norm (gradient clipping),
    random_state, device, verbose (tqdm progress) : training.

    Attributes
    ----------
    module_ (holds ``unet``, ``ema_unet`` and, after ``fit_classifier``, ``classifier``),
    classes_ (labels of y, or None when fitted without labels), image_shape_, n_features_in_,
    n_iter_, loss_curve_, history_, training_seconds_.
    """

    _parameter_constraints = {
        "image_shape": ["array-like", None],
        "base_channels": [Interval(Integral, 1, None, closed="left")],
        "channel_mults": ["array-like"],
        "num_res_blocks": [Interval(Integral, 1, None, closed="left")],
        "attention": ["boolean"],
        "num_train_timesteps": [Interval(Integral, 2, None, closed="left")],
        "beta_schedule": [StrOptions(set(SCHEDULE_NAMES))],
        "prediction_type": [StrOptions({"epsilon", "v_prediction"})],
        "p_uncond": [Interval(Real, 0, 1, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="both")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        **{k: v for k, v in TRAINING_CONSTRAINTS.items() if k not in ("validation_fraction", "patience")},
    }

    def __init__(self, image_shape=None, *, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                 attention=True, num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                 prediction_type="epsilon", p_uncond=0.1, ema_decay=0.995, epochs=60, batch_size=64,
                 learning_rate=2e-3, weight_decay=0.0, max_grad_norm=1.0, random_state=None, device="auto",
                 verbose=False):
        self.image_shape = image_shape
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.num_res_blocks = num_res_blocks
        self.attention = attention
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.p_uncond = p_uncond
        self.ema_decay = ema_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- shapes and config -------------------------------------------------------------------
    def _resolve_shape(self, n_features: int):
        if self.image_shape is None:
            side = int(round(math.sqrt(n_features)))
            if side * side != n_features:
                raise ValueError(f"rows of {n_features} pixels are not a square image; pass image_shape=(C, H, W).")
            return (1, side, side)
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) != 3 or any(s < 1 for s in shape) or shape[1] != shape[2]:
            raise ValueError(f"image_shape must be (channels, height, width) with height == width, got "
                             f"{self.image_shape!r}.")
        if shape[0] * shape[1] * shape[2] != n_features:
            raise ValueError(f"image_shape {shape} has {shape[0] * shape[1] * shape[2]} pixels but the rows have "
                             f"{n_features}; fix image_shape.")
        return shape

    def _schedule(self) -> dict:
        return {"num_train_timesteps": int(self.num_train_timesteps), "beta_schedule": self.beta_schedule,
                "prediction_type": self.prediction_type}

    def _unet(self, num_classes):
        c, h, _ = self.image_shape_
        return UNet(c, h, int(self.base_channels), tuple(int(m) for m in self.channel_mults),
                    int(self.num_res_blocks), num_classes, bool(self.attention))

    def _build_module(self, n_features):
        num_classes = None if self.classes_ is None else len(self.classes_)
        unet = self._unet(num_classes)
        ema = copy.deepcopy(unet)
        classifier = None
        if getattr(self, "_has_classifier", False):
            classifier = NoisyClassifier(self.image_shape_[0], len(self.classes_))
        return _Holder(unet, ema, classifier)

    def _fitted_config(self):
        return {"classes": None if self.classes_ is None else self.classes_.tolist(),
                "image_shape": list(self.image_shape_), "has_classifier": self.module_.classifier is not None,
                "training_seconds": self.training_seconds_}

    def _restore_fitted(self, fitted):
        self.classes_ = None if fitted["classes"] is None else np.asarray(fitted["classes"])
        self.image_shape_ = tuple(fitted["image_shape"])
        self._has_classifier = fitted["has_classifier"]
        self.training_seconds_ = fitted["training_seconds"]

    # -- fitting -----------------------------------------------------------------------------
    def _images(self, X, reset: bool) -> torch.Tensor:
        X, _ = self._validate(X, reset=reset)
        if X.shape[0] == 0:
            raise ValueError("X has 0 rows; pass at least one image.")
        if X.min() < 0.0 or X.max() > 1.0:
            raise ValueError(f"X must hold pixels in [0, 1] (found values in [{X.min():.3g}, {X.max():.3g}]); "
                             f"divide by the maximum intensity (16 for scikit-learn's digits) first.")
        if reset:
            self.image_shape_ = self._resolve_shape(X.shape[1])
        return torch.from_numpy(2.0 * X - 1.0).reshape(-1, *self.image_shape_)     # n x C x H x W in [-1, 1]

    def _labels(self, y, n: int) -> torch.Tensor:
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} labels for {n} images.")
        classes, idx = np.unique(y, return_inverse=True)
        return classes, torch.from_numpy(idx.astype(np.int64))

    def _trainer(self, epochs, progress, trained: torch.nn.Module):
        # the Trainer's thread rule, applied to the trained weights only (its "auto" would also
        # count the frozen EMA copy and move a small UNet onto all cores, much slower on a busy CPU)
        n_params = sum(p.numel() for p in trained.parameters())
        threads = 1 if (resolve_device(self.device).type == "cpu" and n_params < SMALL_MODEL_PARAMS) else None
        return Trainer(num_threads=threads, epochs=epochs, batch_size=int(self.batch_size), learning_rate=float(self.learning_rate),
                       weight_decay=float(self.weight_decay), validation_fraction=0.0,
                       seed=_seed_from(self.random_state), device=self.device, progress=progress,
                       max_grad_norm=None if self.max_grad_norm is None else float(self.max_grad_norm))

    def fit(self, X, y=None):
        """Train on rows of X (pixels in [0, 1], scaled to [-1, 1] inside), class-conditional when
        labels y are given. Ctrl-C stops training and keeps the model usable (EMA weights so far)."""
        self._validate_params()
        x = self._images(X, reset=True)
        if y is not None:
            self.classes_, labels = self._labels(y, x.shape[0])
        else:
            self.classes_, labels = None, None
        self._has_classifier = False
        seed = _seed_from(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            holder = self._build_module(x.shape[1])
        holder.to(self._device())
        training = _DenoiserTraining(holder.unet, holder.ema_unet, self._schedule(), float(self.p_uncond),
                                     float(self.ema_decay))
        data = (x,) if labels is None else (x, labels)
        history = self._trainer(int(self.epochs), self.verbose, holder.unet).fit(training, *data)
        self.module_ = holder.eval()
        self.history_ = history.to_dict()
        self.n_iter_ = history.n_epochs
        self.loss_curve_ = list(history.metrics.get("loss", []))
        self.training_seconds_ = float(history.seconds)
        return self

    def fit_classifier(self, X, y, epochs: int = 30):
        """Train the noisy classifier p(y | x_t, t) used by ``sample(classifier_scale=...)`` on
        images X and labels y (the same classes as the model's)."""
        check_is_fitted(self)
        _check_int("epochs", epochs, 1)
        if self.classes_ is None:
            raise ValueError("classifier guidance needs classes: this model was fitted without labels y.")
        x = self._images(X, reset=False)
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} images.")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown[:5].tolist()} that the model was not fitted on "
                             f"(classes_ = {self.classes_.tolist()}).")
        labels = torch.from_numpy(np.searchsorted(self.classes_, y).astype(np.int64))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(self.random_state) + 1)
            classifier = NoisyClassifier(self.image_shape_[0], len(self.classes_))
        classifier.to(self._device())
        self._trainer(int(epochs), self.verbose, classifier).fit(_ClassifierTraining(classifier, self._schedule()), x, labels)
        self.module_.classifier = classifier.eval()
        self._has_classifier = True
        return self

    # -- sampling ----------------------------------------------------------------------------
    def make_scheduler(self, kind: str = "ddim"):
        """A fresh DDIM or DDPM scheduler with this model's training schedule (x0 clipped to [-1, 1])."""
        if kind not in ("ddim", "ddpm"):
            raise ValueError(f"scheduler must be 'ddim' or 'ddpm', got {kind!r}.")
        return _scheduler_from(self._schedule(), kind)

    def _label_indices(self, labels, n: int):
        if labels is None:
            return None
        if self.classes_ is None:
            raise ValueError("this model was fitted without labels y; sample it with labels=None.")
        arr = np.asarray(labels).reshape(-1)
        if arr.shape[0] == 1 and n > 1:
            arr = np.repeat(arr, n)
        if arr.shape[0] != n:
            raise ValueError(f"labels has {arr.shape[0]} entries for n_samples={n}; give one label or one per sample.")
        unknown = np.setdiff1d(arr, self.classes_)
        if unknown.size:
            raise ValueError(f"labels {unknown[:5].tolist()} are not among the fitted classes_ "
                             f"{self.classes_.tolist()}.")
        return torch.from_numpy(np.searchsorted(self.classes_, arr).astype(np.int64))

    @torch.no_grad()
    def sample(self, n_samples=1, labels=None, *, guidance_scale=1.0, guidance_rescale=0.0, classifier_scale=0.0,
               num_inference_steps=50, scheduler="ddim", eta=None, random_state=None, progress=None,
               cuda_graph="auto"):
        """Generate ``n_samples`` images as rows of pixels in [0, 1] (float64 ndarray n x C*H*W)
        with the EMA weights.

        labels : None (unconditional: the null label, or an unconditional model), one label, or
            one per sample (values from ``classes_``).
        guidance_scale : classifier-free guidance weight w (1 = plain conditional sampling).
        classifier_scale : classifier guidance scale s (needs ``fit_classifier``; runs eagerly).
        scheduler : "ddim" or "ddpm" (ancestral), or a scheduler object.
        eta : DDIM's noise level; None = 1 for DDIM (none for DDPM). Stochastic sampling is the
            default because guidance needs it here: on digits (15-20 epochs), deterministic DDIM
            (eta = 0) at w = 3 let the judge recognise 58% of samples, DDIM eta = 1 and DDPM 100%.
        random_state : seeds the initial noise and the step noise (same seed, same images).
        """
        from fastlearn.diffusion._sampling import sample as run_sampler

        check_is_fitted(self)
        _check_int("n_samples", n_samples, 1)
        y = self._label_indices(labels, int(n_samples))
        if y is None and guidance_scale != 1.0:
            raise ValueError("guidance_scale != 1 needs labels (classifier-free guidance pushes toward a class).")
        classifier = None
        if classifier_scale:
            if y is None:
                raise ValueError("classifier_scale > 0 needs labels (the class to guide toward).")
            if self.module_.classifier is None:
                raise ValueError("classifier_scale > 0 needs a noisy classifier; call fit_classifier(X, y) first.")
            classifier = self.module_.classifier
        sched = self.make_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
        if eta is None:
            eta = 1.0 if "eta" in inspect.signature(sched.step).parameters else 0.0
        seed = _seed_from(random_state) % (2**62)
        device = self._device()
        x = run_sampler(self.module_.ema_unet, sched, (int(n_samples), *self.image_shape_), labels=y,
                        guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, classifier=classifier,
                        classifier_scale=classifier_scale, num_inference_steps=num_inference_steps, eta=eta,
                        seed=seed, device=device, cuda_graph=cuda_graph,
                        progress=self.verbose if progress is None else progress)
        x = ((x.float().clamp(-1.0, 1.0) + 1.0) / 2.0).reshape(int(n_samples), -1)
        return x.cpu().double().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags
