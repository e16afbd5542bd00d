"""Variational diffusion models (Kingma et al. 2021) in continuous time: log-SNR schedules
gamma(t) = -log SNR(t) (fixed linear, and a learned monotone network), the variational bound
of discrete data in three terms (prior KL, discrete reconstruction, continuous-time diffusion
loss), reported in bits per dimension, and ancestral sampling in discrete time.

    vdm = VDM(random_state=0).fit(load_digits().data)   # pixels 0..16
    vdm.bits_per_dim(X_test); images = vdm.sample(16, num_steps=200)
"""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from fastlearn.nn._base import TRAINING_CONSTRAINTS, NeuralEstimator, _seed_from

__all__ = ["LogSNRSchedule", "FixedLinearLogSNR", "LearnedLogSNR", "VDM", "VDMModule"]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# log-SNR schedules: gamma(t), t in [0, 1]; alpha_t^2 = sigmoid(-gamma), sigma_t^2 = sigmoid(gamma)


class LogSNRSchedule(nn.Module):
    """Base of the continuous-time schedules: ``forward(t) -> gamma(t)`` (elementwise, any
    shape), ``derivative`` / ``gamma_and_derivative`` by autograd, alpha^2 and sigma^2."""

    def gamma_and_derivative(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma(t), dgamma/dt) by autograd. When grad mode is on, both stay differentiable in
        the schedule's parameters (the diffusion loss is, through gamma')."""
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            t_ = t.detach().clone().requires_grad_(True)
            gamma = self(t_)
            (dgamma,) = torch.autograd.grad(gamma.sum(), t_, create_graph=keep_graph)
        if not keep_graph:
            gamma, dgamma = gamma.detach(), dgamma.detach()
        return gamma, dgamma

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_and_derivative(t)[1]

    def alpha2(self, t):
        return torch.sigmoid(-self(t))

    def sigma2(self, t):
        return torch.sigmoid(self(t))

    def shape_parameters(self) -> list[nn.Parameter]:
        """Parameters that change the shape of gamma between its endpoints (trained to lower the
        variance of the diffusion loss estimate)."""
        return []

    def endpoint_parameters(self) -> list[nn.Parameter]:
        """Parameters of gamma(0) and gamma(1) (trained on the bound itself)."""
        return []


class FixedLinearLogSNR(LogSNRSchedule):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t: VDM's fixed schedule (no parameters)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        _check_endpoints(gamma_min, gamma_max)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    @property
    def gamma_0(self) -> torch.Tensor:
        return torch.tensor(self.gamma_min)

    @property
    def gamma_1(self) -> torch.Tensor:
        return torch.tensor(self.gamma_max)

    def forward(self, t):
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


class _PositiveLinear(nn.Module):
    """Linear layer with weights softplus(w) > 0: a monotone increasing map (bias free)."""

    def __init__(self, n_in, n_out, weight_init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((n_out, n_in), float(weight_init)))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return F.linear(x, F.softplus(self.weight), self.bias)


class LearnedLogSNR(LogSNRSchedule):
    """VDM's learned schedule: the monotone network gamma~(t) = l1(t) + l3(sigmoid(l2(l1(t))))
    with positive weights, rescaled so that gamma(0) = gamma_0 and gamma(1) = gamma_1:

        gamma(t) = gamma_0 + (gamma_1 - gamma_0) (gamma~(t) - gamma~(0)) / (gamma~(1) - gamma~(0)).

    gamma_0 is a parameter and gamma_1 = gamma_0 + softplus(r) (so gamma_1 > gamma_0 always);
    both start at (gamma_min, gamma_max). ``hidden``: width of the sigmoid layer (paper: 1024).
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, hidden: int = 1024):
        super().__init__()
        _check_endpoints(gamma_min, gamma_max)
        if isinstance(hidden, bool) or not isinstance(hidden, Integral) or hidden < 1:
            raise ValueError(f"hidden must be an int >= 1, got {hidden!r}.")
        self.gamma_0_param = nn.Parameter(torch.tensor(float(gamma_min)))
        span = float(gamma_max - gamma_min)
        self.range_param = nn.Parameter(torch.tensor(span + math.log(-math.expm1(-span))))  # softplus^-1
        self.l1 = _PositiveLinear(1, 1, math.log(math.expm1(1.0)))   # slope 1 at init
        self.l2 = _PositiveLinear(1, hidden, 0.0)
        self.l3 = _PositiveLinear(hidden, 1, -4.0)                    # sigmoid part: about 20x the linear one
        with torch.no_grad():  # spread the sigmoids' centres over [0, 1] so the shape can bend anywhere
            self.l2.weight.add_(torch.randn(hidden, 1, generator=torch.Generator().manual_seed(0)) * 2.0)
            self.l2.bias.copy_(-torch.linspace(0.0, 1.0, hidden) * F.softplus(self.l2.weight[:, 0]))

    @property
    def gamma_0(self) -> torch.Tensor:
        return self.gamma_0_param

    @property
    def gamma_1(self) -> torch.Tensor:
        return self.gamma_0_param + F.softplus(self.range_param)

    def _unnormalised(self, t):  # t: ... -> ...
        h = self.l1(t.unsqueeze(-1))
        return (h + self.l3(torch.sigmoid(self.l2(h)))).squeeze(-1)

    def forward(self, t):
        ends = self._unnormalised(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        frac = (self._unnormalised(t) - ends[0]) / (ends[1] - ends[0])
        return self.gamma_0 + (self.gamma_1 - self.gamma_0) * frac

    def shape_parameters(self):
        return [*self.l1.parameters(), *self.l2.parameters(), *self.l3.parameters()]

    def endpoint_parameters(self):
        return [self.gamma_0_param, self.range_param]


def _check_endpoints(gamma_min, gamma_max):
    for name, v in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or abs(v) > 50:
            raise ValueError(f"{name} must be a finite number in [-50, 50] (a log-SNR), got {v!r}.")
    if not gamma_min < gamma_max:
        raise ValueError(f"gamma_min must be below gamma_max (gamma = -log SNR grows with t), got "
                         f"gamma_min={gamma_min}, gamma_max={gamma_max}.")


# --------------------------------------------------------------------------------------------
# the denoiser: a residual MLP on (z, embedding of the noise level [, class])


def fourier_embedding(s: torch.Tensor, dim: int) -> torch.Tensor:
    """s (n,) in about [0, 1] -> (n, dim) sines and cosines at geometric frequencies 1..1000."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, dtype=s.dtype, device=s.device))
    angles = s.unsqueeze(-1) * freqs * (2 * math.pi / 8)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class EpsMLP(nn.Module):
    """eps_hat(z, s [, label]): z (n, F), s (n,) the noise level scaled to about [0, 1], label
    (n,) in 0..n_classes (n_classes = "no label", for classifier-free guidance). ``n_outputs``
    (default F): width of the output (VDM's level parameterisation uses F x vocab_size)."""

    def __init__(self, n_features: int, hidden: int = 512, n_blocks: int = 3, embedding_dim: int = 64,
                 n_classes: int = 0, n_outputs: int | None = None):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.inp = nn.Linear(n_features, hidden)
        self.time = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label = nn.Embedding(n_classes + 1, hidden) if n_classes else None
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(n_blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, n_outputs or n_features))
        nn.init.zeros_(self.out[-1].weight)   # eps_hat = 0 at the start: a known, finite loss
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z, s, labels=None):  # z: n x F, s: n -> n x F
        e = self.time(fourier_embedding(s, self.embedding_dim))
        if self.label is not None:
            if labels is None:
                labels = torch.full((z.shape[0],), self.label.num_embeddings - 1, dtype=torch.long, device=z.device)
            e = e + self.label(labels)
        h = self.inp(z) + e
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


# --------------------------------------------------------------------------------------------
# the VDM as a torch module: its bound, its training step, its sampler


def antithetic_times(n: int, u: torch.Tensor) -> torch.Tensor:
    """Low-discrepancy times t_i = (u + i/n) mod 1, i = 0..n-1: one uniform u, n strata."""
    return torch.remainder(u + torch.arange(n, dtype=u.dtype, device=u.device) / n, 1.0)


def ancestral_step(z, eps_hat, gamma_t, gamma_s, noise):
    """One step z_t -> z_s (s < t) of p(z_s | z_t) = q(z_s | z_t, x = x_hat(z_t)):
    mean alpha_s/alpha_t (z_t - c sigma_t eps_hat), variance c sigma_s^2, c = 1 - SNR(t)/SNR(s)."""
    c = -torch.expm1(gamma_s - gamma_t)
    alpha_ratio = torch.sqrt(torch.sigmoid(-gamma_s) / torch.sigmoid(-gamma_t))
    sigma_t = torch.sqrt(torch.sigmoid(gamma_t))
    return alpha_ratio * (z - c * sigma_t * eps_hat) + torch.sqrt(c * torch.sigmoid(gamma_s)) * noise


class VDMModule(nn.Module):
    """The bound of discrete data x in {0..vocab_size-1}^F, scaled to f = 2x/(V-1) - 1:

      prior          KL(q(z_1 | x) || N(0, I)),  q(z_t | x) = N(alpha_t f, sigma_t^2 I)
      reconstruction -log p(x | z_0), p(x_j = k | z_0) ~ exp(-(z_0j/alpha_0 - f_k)^2 / (2 exp(gamma_0)))
      diffusion      0.5 E_{t~U(0,1), eps} [gamma'(t) ||eps - eps_hat(z_t, gamma_t)||^2]

    all in nats per example. The denoiser sees gamma_t scaled by the fixed reference range
    (gamma_min, gamma_max), so the model is the same function whatever shape the schedule has.

    ``parameterization``: "eps" (the network outputs eps_hat), or "levels" (default): the
    network outputs logits over the V levels of each feature, to which the exact per-feature
    log-likelihood -0.5 ((z_j - alpha_t l_k) / sigma_t)^2 of each level l_k is added; x_hat is
    the posterior mean level and eps_hat = (z_t - alpha_t x_hat) / sigma_t. At low noise the
    exact term snaps x_hat to the right level (the diffusion loss there, weighted by SNR, needs
    that precision); at high noise the network does the work. Any eps_hat gives a valid bound.
    """

    def __init__(self, n_features: int, vocab_size: int = 17, schedule: str = "learned", gamma_min: float = -13.3,
                 gamma_max: float = 5.0, hidden: int = 512, n_blocks: int = 3, embedding_dim: int = 64,
                 parameterization: str = "levels"):
        super().__init__()
        if parameterization not in ("eps", "levels"):
            raise ValueError(f"parameterization must be 'eps' or 'levels', got {parameterization!r}.")
        self.n_features, self.vocab_size = int(n_features), int(vocab_size)
        self.parameterization = parameterization
        self.gamma_ref = (float(gamma_min), float(gamma_max))
        if schedule == "learned":
            self.schedule = LearnedLogSNR(gamma_min, gamma_max)
        elif schedule == "fixed":
            self.schedule = FixedLinearLogSNR(gamma_min, gamma_max)
        else:
            raise ValueError(f"schedule must be 'learned' or 'fixed', got {schedule!r}.")
        n_out = n_features * self.vocab_size if parameterization == "levels" else n_features
        self.denoiser = EpsMLP(n_features, hidden, n_blocks, embedding_dim, n_outputs=n_out)

    # -- pieces -----------------------------------------------------------------------------
    def scale(self, x):  # integers 0..V-1 -> [-1, 1]
        return 2.0 * x / (self.vocab_size - 1) - 1.0

    def predict_eps(self, z, gamma):  # z: n x F, gamma: n
        lo, hi = self.gamma_ref
        out = self.denoiser(z, (gamma - lo) / (hi - lo))
        if self.parameterization == "eps":
            return out
        g = gamma.unsqueeze(-1)
        alpha, sigma = torch.sqrt(torch.sigmoid(-g)), torch.sqrt(torch.sigmoid(g))   # n x 1
        levels = self.scale(torch.arange(self.vocab_size, dtype=z.dtype, device=z.device))  # V
        exact = -0.5 * ((z.unsqueeze(-1) - alpha.unsqueeze(-1) * levels) / sigma.unsqueeze(-1)) ** 2  # n x F x V
        probs = torch.softmax(out.reshape(*z.shape, self.vocab_size) + exact, dim=-1)
        x_hat = probs @ levels                                                         # n x F
        return (z - alpha * x_hat) / sigma

    def prior_loss(self, f):
        """KL(N(alpha_1 f, sigma_1^2) || N(0, 1)) summed over features: (n,)."""
        g1 = self.schedule.gamma_1.to(f)
        var1 = torch.sigmoid(g1)
        mean2 = torch.sigmoid(-g1) * f * f
        return 0.5 * torch.sum(mean2 + var1 - 1.0 - torch.log(var1), dim=-1)

    def decoder_log_probs(self, z0_rescaled, gamma_0):
        """log p(x_j = k | z_0) for all k: (n, F, V), from z_0 / alpha_0."""
        levels = self.scale(torch.arange(self.vocab_size, dtype=z0_rescaled.dtype, device=z0_rescaled.device))
        logits = -0.5 * (z0_rescaled.unsqueeze(-1) - levels) ** 2 * torch.exp(-gamma_0)
        return torch.log_softmax(logits, dim=-1)

    def reconstruction_loss(self, x, f, eps0):
        """-log p(x | z_0) with z_0 / alpha_0 = f + exp(gamma_0 / 2) eps0: (n,)."""
        g0 = self.schedule.gamma_0.to(f)
        logp = self.decoder_log_probs(f + torch.exp(0.5 * g0) * eps0, g0)
        return -torch.gather(logp, -1, x.round().long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def diffusion_loss(self, f, t, eps):
        """The one-sample estimate 0.5 gamma'(t) ||eps - eps_hat(z_t, gamma_t)||^2: (n,)."""
        gamma, dgamma = self.schedule.gamma_and_derivative(t)
        gamma, dgamma = gamma.to(f), dgamma.to(f)
        z = torch.sqrt(torch.sigmoid(-gamma)).unsqueeze(-1) * f + torch.sqrt(torch.sigmoid(gamma)).unsqueeze(-1) * eps
        err = eps - self.predict_eps(z, gamma)
        return 0.5 * dgamma * torch.sum(err * err, dim=-1)

    def loss_terms(self, x, t=None, eps=None, eps0=None):
        """Per-example terms in nats: dict prior, reconstruction, diffusion, total (each (n,))."""
        f = self.scale(x)
        n = f.shape[0]
        if t is None:
            t = antithetic_times(n, torch.rand((), dtype=f.dtype, device=f.device))
        eps = torch.randn_like(f) if eps is None else eps
        eps0 = torch.randn_like(f) if eps0 is None else eps0
        prior = self.prior_loss(f)
        rec = self.reconstruction_loss(x, f, eps0)
        diff = self.diffusion_loss(f, t, eps)
        return {"prior": prior, "reconstruction": rec, "diffusion": diff, "total": prior + rec + diff}

    # -- training -------------------------------------------------------------------------------
    def _bpd(self, nats):
        return nats / (self.n_features * _LN2)

    def loss(self, x):
        """Mean bound in bits per dimension (and its terms): the Trainer's validation loss."""
        terms = self.loss_terms(x)
        extra = {k: self._bpd(v.mean()).detach() for k, v in terms.items() if k != "total"}
        return self._bpd(terms["total"].mean()), extra

    def configure_optimizers(self, trainer):
        """Adam; the schedule's parameters (a handful of numbers that the bound and the variance
        depend on strongly) learn ``SCHEDULE_LR_SCALE`` times faster than the denoiser."""
        opt_cls = torch.optim.AdamW if trainer.weight_decay > 0 else torch.optim.Adam
        schedule = list(self.schedule.parameters())
        ids = {id(p) for p in schedule}
        groups = [{"params": [p for p in self.parameters() if id(p) not in ids]}]
        if schedule:
            groups.append({"params": schedule, "lr": trainer.learning_rate * self.SCHEDULE_LR_SCALE,
                           "weight_decay": 0.0})
        return {"model": opt_cls(groups, lr=trainer.learning_rate, weight_decay=trainer.weight_decay)}

    SCHEDULE_LR_SCALE = 10.0

    def training_step(self, batch, trainer):
        """Denoiser and schedule endpoints descend the bound; the schedule's shape descends the
        mean square of the diffusion-loss estimate (its variance: the mean does not depend on
        the shape), as in VDM."""
        x = batch[0]
        opt = trainer.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        terms = self.loss_terms(x)
        loss = self._bpd(terms["total"].mean())
        shape = [p for p in self.schedule.shape_parameters() if p.requires_grad]
        if shape:
            second_moment = self._bpd(terms["diffusion"]).pow(2).mean()
            shape_grads = torch.autograd.grad(second_moment, shape, retain_graph=True)
        loss.backward()
        for p, g in zip(shape, shape_grads if shape else ()):
            p.grad = g
        if trainer.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), trainer.max_grad_norm)
        opt.step()
        values = {"loss": loss.detach()}
        values.update({k: self._bpd(v.mean()).detach() for k, v in terms.items() if k != "total"})
        return values

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, num_steps: int, generator: torch.Generator, progress: bool = False):
        """Ancestral sampling on the grid t_i = i / num_steps, then x ~ p(x | z_0): (n, F) integers."""
        p = next(self.parameters())
        z = torch.randn(n, self.n_features, generator=generator, dtype=p.dtype).to(p.device)
        steps = range(num_steps, 0, -1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="VDM sample", leave=False)
        for i in steps:
            t = torch.full((n,), i / num_steps, dtype=p.dtype, device=p.device)
            s = torch.full((n,), (i - 1) / num_steps, dtype=p.dtype, device=p.device)
            g_t, g_s = self.schedule(t), self.schedule(s)
            noise = torch.randn(z.shape, generator=generator, dtype=p.dtype).to(p.device)
            z = ancestral_step(z, self.predict_eps(z, g_t), g_t.unsqueeze(-1), g_s.unsqueeze(-1), noise)
        g0 = self.schedule.gamma_0.to(z)
        alpha0 = torch.sqrt(torch.sigmoid(-g0))
        logp = self.decoder_log_probs(z / alpha0, g0)                        # n x F x V
        u = torch.rand(logp.shape, generator=generator, dtype=logp.dtype).to(logp.device)
        return torch.argmax(logp - torch.log(-torch.log(u.clamp_min(1e-30))), dim=-1)  # Gumbel-max draw


# --------------------------------------------------------------------------------------------
# the estimator


class VDM(NeuralEstimator):
    """Continuous-time variational diffusion model of discrete data (e.g. digits: 17 grey levels).

    Parameters
    ----------
    vocab_size : number of levels of each feature; X holds integers 0..vocab_size-1 (for
        scikit-learn's digits ``load_digits().data`` as is, vocab_size=17).
    schedule : "learned" (monotone network; endpoints trained on the bound, shape on the
        variance of the diffusion loss) or "fixed" (linear log-SNR).
    gamma_min, gamma_max : the schedule's endpoints (initial ones when learned): log-SNR
        gamma(0) and gamma(1), gamma = -log SNR.
    hidden, n_blocks, embedding_dim : the residual-MLP denoiser eps_hat(z_t, gamma_t).
    parameterization : "levels" (default: the network gives logits over the levels, combined
        with the exact per-feature likelihood; see VDMModule) or "eps" (plain eps prediction).
    epochs, batch_size, learning_rate, weight_decay, validation_fraction, patience,
    max_grad_norm, random_state, device, verbose : training (Adam; ``verbose`` shows a tqdm bar;
        Ctrl-C stops and keeps a usable model).
    n_eval_samples : t and eps draws per row for ``bits_per_dim`` / ``score``.

    ``score(X)`` is the negative bound in bits per dimension (higher is better);
    ``bits_per_dim(X)`` is the bound itself (an upper bound on -log2 p(x) per feature).

    Attributes
    ----------
    module_ : the VDMModule; gamma_0_, gamma_1_ : the schedule's endpoints after fitting;
    n_features_in_, n_iter_, loss_curve_ (bits/dim per epoch), history_.
    """

    _parameter_constraints = {
        "vocab_size": [Interval(Integral, 2, None, closed="left")],
        "schedule": [StrOptions({"learned", "fixed"})],
        "gamma_min": [Interval(Real, -50, 50, closed="both")],
        "gamma_max": [Interval(Real, -50, 50, closed="both")],
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "n_blocks": [Interval(Integral, 0, None, closed="left")],
        "embedding_dim": [Interval(Integral, 2, None, closed="left")],
        "parameterization": [StrOptions({"levels", "eps"})],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "n_eval_samples": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    def __init__(self, vocab_size=17, *, schedule="learned", gamma_min=-13.3, gamma_max=5.0, hidden=256, n_blocks=3,
                 embedding_dim=64, parameterization="levels", epochs=80, batch_size=128, learning_rate=2e-3, weight_decay=0.0,
                 validation_fraction=0.0, patience=20, max_grad_norm=1.0, n_eval_samples=64, random_state=None,
                 device="auto", verbose=False):
        self.vocab_size = vocab_size
        self.schedule = schedule
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max
        self.hidden = hidden
        self.n_blocks = n_blocks
        self.embedding_dim = embedding_dim
        self.parameterization = parameterization
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.n_eval_samples = n_eval_samples
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _build_module(self, n_features):
        return VDMModule(n_features, int(self.vocab_size), self.schedule, float(self.gamma_min), float(self.gamma_max),
                         int(self.hidden), int(self.n_blocks), int(self.embedding_dim), self.parameterization)

    def _check_levels(self, X):
        if X.shape[0] == 0:
            raise ValueError("X has 0 rows; pass at least one sample.")
        V = int(self.vocab_size)
        if np.any(X != np.round(X)) or X.min() < 0 or X.max() > V - 1:
            raise ValueError(f"X must hold integer levels 0..{V - 1} (vocab_size={V}), found values in "
                             f"[{X.min():.4g}, {X.max():.4g}]" + (" that are not all integers" if np.any(X != np.round(X))
                                                                  else "") +
                             "; for digits scaled to [0, 1] pass X * 16, or set vocab_size to the number of levels.")

    def fit(self, X, y=None):
        """Train on rows of X (integer levels 0..vocab_size-1) by minimising the bound."""
        self._validate_params()
        _check_endpoints(self.gamma_min, self.gamma_max)
        X, _ = self._validate(X, reset=True)
        self._check_levels(X)
        self.module_ = self._build(X.shape[1])
        self._train(self.module_, X, max_grad_norm=self.max_grad_norm)
        self._set_endpoints()
        return self

    def _set_endpoints(self):
        self.gamma_0_ = float(self.module_.schedule.gamma_0.detach())
        self.gamma_1_ = float(self.module_.schedule.gamma_1.detach())

    def _restore_fitted(self, fitted):
        pass

    @classmethod
    def load(cls, path, device: str = "auto"):
        est = super().load(path, device=device)
        est._set_endpoints()
        return est

    # -- the bound ------------------------------------------------------------------------------
    @torch.no_grad()
    def bound_terms(self, X, n_samples=None, random_state=0):
        """Mean prior, reconstruction and diffusion terms and their total, in bits per dimension,
        in float64 with ``n_samples`` (default ``n_eval_samples``) stratified t per row
        (t_k = (u + k/K) mod 1) and fresh eps for each; seeded, so repeatable."""
        check_is_fitted(self)
        if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, Integral)
                                      or n_samples < 1):
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
        K = int(self.n_eval_samples if n_samples is None else n_samples)
        X, _ = self._validate(X, reset=False)
        self._check_levels(X)
        module = copy.deepcopy(self.module_).double().eval()
        dev = self._device()
        g = torch.Generator().manual_seed(_seed_from(random_state))
        x_all = torch.from_numpy(X).double()
        sums = {"prior": 0.0, "reconstruction": 0.0, "diffusion": 0.0}
        rows = max(1, 8192 // K)
        self._accumulate_terms(module, x_all, K, rows, g, dev, sums)  # all torch threads (see sample)
        D = X.shape[1] * _LN2 * X.shape[0]
        out = {k: v / D for k, v in sums.items()}
        out["total"] = sum(out.values())
        return out

    @staticmethod
    def _accumulate_terms(module, x_all, K, rows, g, dev, sums):
        for start in range(0, x_all.shape[0], rows):
            x = x_all[start:start + rows]
            n = x.shape[0]
            xk = x.repeat_interleave(K, 0).to(dev)                             # (n K) x F
            u = torch.rand(n, 1, generator=g, dtype=torch.float64)
            t = torch.remainder(u + torch.arange(K, dtype=torch.float64) / K, 1.0).reshape(-1).to(dev)
            eps = torch.randn(xk.shape, generator=g, dtype=torch.float64).to(dev)
            eps0 = torch.randn(xk.shape, generator=g, dtype=torch.float64).to(dev)
            terms = module.loss_terms(xk, t, eps, eps0)
            for k in sums:
                sums[k] += float(terms[k].sum()) / K

    def bits_per_dim(self, X, n_samples=None, random_state=0) -> float:
        """The variational bound on -log2 p(x) per feature, averaged over rows of X."""
        return self.bound_terms(X, n_samples, random_state)["total"]

    def score(self, X, y=None):
        """Negative bits per dimension (higher is better)."""
        return -self.bits_per_dim(X)

    # -- generation -----------------------------------------------------------------------------
    def sample(self, n_samples=1, num_steps=200, random_state=None):
        """Ancestral sampling with ``num_steps`` discrete steps from t=1 to 0, then x ~ p(x | z_0):
        (n_samples, n_features) float64 array of integer levels 0..vocab_size-1."""
        check_is_fitted(self)
        for name, v in (("n_samples", n_samples), ("num_steps", num_steps)):
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}.")
        g = torch.Generator().manual_seed(_seed_from(random_state))
        self.module_.eval()
        # All of torch's threads, also for small models: unlike training (the Trainer's one-thread
        # rule), sampling's batched forwards gain from them (2 cores, hidden=128: 256 samples of
        # 100 steps 0.97 s on one thread against 0.64-0.79 s; bound_terms 3.0 against 1.9 s).
        x = self.module_.sample(int(n_samples), int(num_steps), g, progress=bool(self.verbose))
        return x.cpu().double().numpy()
