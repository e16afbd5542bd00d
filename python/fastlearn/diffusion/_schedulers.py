"""DDPM and DDIM schedulers, drop-in for diffusers' (same constructor arguments and defaults,
same methods), with float64 schedule tables and coefficients, and the coefficient table that
the fused step op ``fastlearn.ops.diffusion_step`` consumes (``fused_coefficients``).

Where these differ from diffusers (each difference is a diffusers defect; see the docstrings):
DDIM takes its previous timestep from the timestep grid itself; 'trailing' grids are computed
exactly; DDPM adds no noise on the final step; DDPM's "fixed_large_log" std is exp(log(beta)/2)
(diffusers takes the square root of a log and returns NaN); tables are float64, not float32."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np
import torch

from fastlearn.diffusion._schedules import SCHEDULE_NAMES, _check_betas, betas_for_schedule, rescale_zero_terminal_snr

__all__ = ["DDPMScheduler", "DDIMScheduler", "SchedulerOutput", "DDIMInversionOutput", "SchedulerConfig"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# diffusers clamps the posterior variance here before taking its log.
_MIN_VARIANCE = 1e-20


class SchedulerOutput:
    """What ``step`` returns: ``prev_sample`` (x at the previous timestep) and
    ``pred_original_sample`` (the predicted x0, after clipping/thresholding). Indexable like
    diffusers' outputs: ``out[0]``, ``out["prev_sample"]``, ``out.to_tuple()``."""

    __slots__ = ("prev_sample", "pred_original_sample")
    _fields = ("prev_sample", "pred_original_sample")

    def __init__(self, prev_sample, pred_original_sample):
        self.prev_sample = prev_sample
        self.pred_original_sample = pred_original_sample

    def to_tuple(self):
        return tuple(getattr(self, f) for f in self._fields)

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self):
        return len(self._fields)

    def __repr__(self):
        shapes = ", ".join(f"{f}={tuple(getattr(self, f).shape)}" for f in self._fields)
        return f"{type(self).__name__}({shapes})"


DDPMSchedulerOutput = SchedulerOutput
DDIMSchedulerOutput = SchedulerOutput


class DDIMInversionOutput(SchedulerOutput):
    """What ``DDIMScheduler.inversion_step`` returns: ``next_sample`` (x at the noisier timestep)
    and ``pred_original_sample``. ``prev_sample`` is an alias of ``next_sample`` so that loops
    written for diffusers' DDIMInverseScheduler run unchanged."""

    __slots__ = ()
    _fields = ("next_sample", "pred_original_sample")

    @property
    def next_sample(self):
        return self.prev_sample


class SchedulerConfig(Mapping):
    """The constructor arguments, read-only; keys and attributes (``config.num_train_timesteps``)."""

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"scheduler config has no entry {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("the scheduler config is read-only; build a new scheduler with "
                             "Scheduler.from_config(config, **changes).")

    def __repr__(self):
        return f"SchedulerConfig({self._values!r})"


# --- argument checks ---------------------------------------------------------------------

def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; valid values: {', '.join(map(repr, choices))}.")
    return value


def _check_positive(name, value, upper=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value!r}.")
    return float(value)


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}).")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return int(value)


def _round_half_even_ratio(numerator, denominator):
    """round(numerator / denominator) with ties to even (numpy's rule), exactly, for ints >= 0."""
    q, r = divmod(numerator, denominator)
    if 2 * r > denominator or (2 * r == denominator and q % 2 == 1):
        q += 1
    return q


class _DiscreteScheduler:
    """What DDPM and DDIM share: the tables, the timestep grid, noising, x0 recovery, clipping and
    thresholding, the config. Subclasses define the step and its coefficients."""

    order = 1
    init_noise_sigma = 1.0
    _ARGS: tuple = ()

    def _setup(self, args):
        self._config = SchedulerConfig(args)
        n = _check_int("num_train_timesteps", args["num_train_timesteps"], 2)
        trained = args["trained_betas"]
        if trained is not None:
            betas = _check_betas(trained, "trained_betas", allow_last_one=True)
            if betas.shape[0] != n:
                raise ValueError(f"trained_betas has {betas.shape[0]} entries but num_train_timesteps={n}; "
                                 f"pass num_train_timesteps=len(trained_betas).")
            trained_list = betas.tolist()
            args = dict(args, trained_betas=trained_list)
            self._config = SchedulerConfig(args)
        else:
            if not isinstance(args["beta_schedule"], str) or args["beta_schedule"] not in SCHEDULE_NAMES:
                raise ValueError(f"unknown beta_schedule {args['beta_schedule']!r}; valid names: "
                                 f"{', '.join(SCHEDULE_NAMES)} (or pass trained_betas).")
            betas = betas_for_schedule(args["beta_schedule"], n, args["beta_start"], args["beta_end"])
        _check_bool("clip_sample", args["clip_sample"])
        _check_positive("clip_sample_range", args["clip_sample_range"])
        _check_int("steps_offset", args["steps_offset"], 0, n - 1)
        _check_choice("prediction_type", args["prediction_type"], PREDICTION_TYPES)
        _check_bool("thresholding", args["thresholding"])
        _check_positive("dynamic_thresholding_ratio", args["dynamic_thresholding_ratio"], upper=1.0)
        _check_positive("sample_max_value", args["sample_max_value"])
        _check_choice("timestep_spacing", args["timestep_spacing"], TIMESTEP_SPACINGS)
        if _check_bool("rescale_betas_zero_snr", args["rescale_betas_zero_snr"]):
            betas = rescale_zero_terminal_snr(betas)
        self.betas = torch.from_numpy(betas)                          # float64 [T]
        self.alphas = 1.0 - self.betas                                # float64 [T]
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)       # float64 [T]
        self._ab = self.alphas_cumprod.numpy()
        if self._ab[-1] == 0.0 and args["prediction_type"] == "epsilon":
            raise ValueError(
                "zero terminal SNR (rescale_betas_zero_snr=True, or trained_betas ending in 1) cannot be used with "
                "prediction_type='epsilon': x0 = (x_T - sqrt(1 - alpha_bar_T) eps) / sqrt(alpha_bar_T) divides by "
                "alpha_bar_T = 0. Use prediction_type='v_prediction' (as Lin et al. 2024 do) or 'sample'.")
        self.one = torch.tensor(1.0, dtype=torch.float64)
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._set_grid(np.arange(n - 1, -1, -1, dtype=np.int64), None)
        self._table_cache = {}

    # --- config ------------------------------------------------------------------------

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @classmethod
    def from_config(cls, config, **overrides):
        """A scheduler from another's config (this library's or diffusers'): keys this class does
        not take (``_class_name``, DDPM's ``variance_type`` for DDIM, ...) are ignored, as in
        diffusers; ``overrides`` replace entries. A diffusers config's ``beta_schedule="sigmoid"``
        (GeoDiff's) becomes ``"geodiff_sigmoid"``: here "sigmoid" is Chen (2023)'s."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping (a scheduler's .config or a dict), got {type(config).__name__}.")
        unknown = set(overrides) - set(cls._ARGS)
        if unknown:
            raise TypeError(f"{cls.__name__} takes no argument(s) {sorted(unknown)}; valid: {', '.join(cls._ARGS)}.")
        from_diffusers = "_diffusers_version" in config or type(config).__module__.split(".")[0] == "diffusers"
        values = {k: v for k, v in dict(config).items() if k in cls._ARGS}
        if from_diffusers and values.get("beta_schedule") == "sigmoid":
            values["beta_schedule"] = "geodiff_sigmoid"
        values.update(overrides)
        return cls(**values)

    def save_pretrained(self, directory):
        """Write ``scheduler_config.json`` (diffusers' file name and layout) into ``directory``."""
        os.makedirs(directory, exist_ok=True)
        data = {"_class_name": type(self).__name__, **dict(self.config)}
        with open(os.path.join(directory, "scheduler_config.json"), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)

    @classmethod
    def from_pretrained(cls, directory, subfolder=None):
        """Read ``scheduler_config.json`` from a local directory (a saved diffusers pipeline's
        ``scheduler/`` folder works). No downloads."""
        path = os.path.join(directory, subfolder) if subfolder else directory
        file = os.path.join(path, "scheduler_config.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no scheduler_config.json in {path!r} (only local directories are read; "
                                    f"this library downloads nothing).")
        with open(file) as f:
            return cls.from_config(json.load(f))

    def __len__(self):
        return self.config.num_train_timesteps

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "trained_betas")
        return f"{type(self).__name__}({args})"

    # --- the timestep grid -------------------------------------------------------------

    def _set_grid(self, grid, device):
        self._grid = grid                                              # int64 [S], descending
        self._index = {int(t): i for i, t in enumerate(grid.tolist())}
        self.timesteps = torch.from_numpy(grid.copy()).to(device if device is not None else "cpu")

    def _spaced_grid(self, num_inference_steps):
        n = self.config.num_train_timesteps
        steps = num_inference_steps
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            grid = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            ratio = n // steps
            grid = (np.arange(steps, dtype=np.int64) * ratio)[::-1] + self.config.steps_offset
            if grid[0] >= n:
                raise ValueError(f"steps_offset={self.config.steps_offset} with {steps} 'leading' steps of "
                                 f"{ratio} reaches timestep {grid[0]} >= num_train_timesteps={n}; lower "
                                 f"steps_offset or num_inference_steps.")
        else:  # trailing: round(n - k n / steps) - 1, k = 0..steps-1, computed exactly in integers
            grid = np.array([_round_half_even_ratio(n * (steps - k), steps) - 1 for k in range(steps)],
                            dtype=np.int64)
        return np.ascontiguousarray(grid)

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        """Choose the inference grid: ``num_inference_steps`` timesteps spaced by
        ``config.timestep_spacing`` (diffusers' three rules), or an explicit descending list
        ``timesteps``. ``self.timesteps`` becomes an int64 tensor on ``device``.

        'trailing' is round(T - k T / S) - 1 for k = 0..S-1, rounded exactly (ties to even) in
        integers; diffusers builds it with a float arange, which returns S + 1 timesteps ending
        in -1 for some S (61 of 1000, for one) and can round exact halves the other way."""
        n = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both.")
            grid = np.asarray(timesteps.detach().cpu() if isinstance(timesteps, torch.Tensor) else timesteps)
            if grid.ndim != 1 or grid.size == 0 or grid.dtype.kind not in "iu":
                raise ValueError(f"timesteps must be a non-empty 1-D sequence of ints, got {grid!r}.")
            grid = grid.astype(np.int64)
            if np.any(np.diff(grid) >= 0):
                raise ValueError(f"timesteps must be strictly descending, got {grid.tolist()}.")
            if grid[0] >= n or grid[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {n - 1}] (num_train_timesteps={n}), got "
                                 f"{grid.tolist()}.")
            self.custom_timesteps = True
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps (or timesteps).")
            steps = _check_int("num_inference_steps", num_inference_steps, 1)
            if steps > n:
                raise ValueError(f"num_inference_steps={steps} cannot exceed num_train_timesteps={n}: the model "
                                 f"was trained on {n} timesteps only.")
            grid = self._spaced_grid(steps)
            self.custom_timesteps = False
        self.num_inference_steps = int(grid.shape[0])
        self._set_grid(grid, device)
        self._table_cache = {}

    def _lookup(self, timestep):
        """(t, index in the grid) of a timestep given as int or one-element tensor."""
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise ValueError(f"timestep must be a single timestep, got a tensor of shape {tuple(timestep.shape)}.")
            value = timestep.item()
        elif isinstance(timestep, (numbers.Integral, numbers.Real)) and not isinstance(timestep, bool):
            value = timestep
        else:
            raise TypeError(f"timestep must be an int or a one-element tensor, got {type(timestep).__name__}.")
        if not float(value).is_integer():
            raise ValueError(f"timestep must be an integer timestep of the schedule, got {value!r}.")
        t = int(value)
        index = self._index.get(t)
        if index is None:
            shown = self._grid.tolist()
            shown = shown if len(shown) <= 12 else shown[:6] + ["..."] + shown[-3:]
            raise ValueError(f"timestep {t} is not in this scheduler's timesteps {shown}; step with the entries "
                             f"of scheduler.timesteps (call set_timesteps first).")
        return t, index

    def previous_timestep(self, timestep):
        """The timestep after ``timestep`` in the grid (the one ``step`` moves to); -1 after the last."""
        _, index = self._lookup(timestep)
        return int(self._grid[index + 1]) if index + 1 < len(self._grid) else -1

    # --- noising -----------------------------------------------------------------------

    def _check_timesteps_tensor(self, timesteps, device):
        n = self.config.num_train_timesteps
        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.as_tensor(timesteps)
        if timesteps.dtype.is_floating_point or timesteps.dtype.is_complex or timesteps.dtype == torch.bool:
            if not (timesteps.dtype.is_floating_point and bool(torch.all(timesteps == timesteps.round()))):
                raise TypeError(f"timesteps must be integers, got dtype {timesteps.dtype}.")
        timesteps = timesteps.to(device=device, dtype=torch.int64)
        # The range check reads one bool back from the device (a sync on CUDA); it is skipped
        # only while a CUDA graph is being captured, where a read-back is not allowed.
        capturing = timesteps.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if timesteps.numel() and not capturing and bool(((timesteps < 0) | (timesteps >= n)).any()):
            raise ValueError(f"timesteps must lie in [0, {n - 1}] (num_train_timesteps={n}); got values from "
                             f"{int(timesteps.min())} to {int(timesteps.max())}.")
        return timesteps

    def _sqrt_tables(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._table_cache:
            sqrt_ab = torch.sqrt(self.alphas_cumprod)
            sqrt_1m = torch.sqrt(1.0 - self.alphas_cumprod)
            self._table_cache[key] = (sqrt_ab.to(device, dtype), sqrt_1m.to(device, dtype))
        return self._table_cache[key]

    def _gathered(self, samples, timesteps, name):
        if not isinstance(samples, torch.Tensor) or samples.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating-point tensor, got "
                            f"{getattr(samples, 'dtype', type(samples).__name__)}.")
        timesteps = self._check_timesteps_tensor(timesteps, samples.device)
        sqrt_ab, sqrt_1m = self._sqrt_tables(samples.device, samples.dtype)
        a = sqrt_ab[timesteps].flatten()
        b = sqrt_1m[timesteps].flatten()
        if a.shape[0] not in (1, samples.shape[0] if samples.ndim else 1):
            raise ValueError(f"timesteps has {a.shape[0]} entries; give one per sample along dim 0 of {name} "
                             f"(shape {tuple(samples.shape)}) or a single timestep.")
        shape = (-1,) + (1,) * max(samples.ndim - 1, 0)
        return a.reshape(shape) if samples.ndim else a[0], b.reshape(shape) if samples.ndim else b[0]

    def add_noise(self, original_samples, noise, timesteps):
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; ``timesteps`` has one entry per
        sample (dim 0) or is a single timestep. Coefficients are taken in float64, then cast."""
        if not isinstance(noise, torch.Tensor) or noise.shape != getattr(original_samples, "shape", None):
            raise ValueError(f"noise must be a tensor of the shape of original_samples "
                             f"{tuple(getattr(original_samples, 'shape', ()))}, got {getattr(noise, 'shape', noise)!r}.")
        a, b = self._gathered(original_samples, timesteps, "original_samples")
        return a * original_samples + b * noise.to(original_samples.dtype)

    def get_velocity(self, sample, noise, timesteps):
        """The v-prediction target v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0, where
        ``sample`` is x0 (diffusers' naming)."""
        if not isinstance(noise, torch.Tensor) or noise.shape != getattr(sample, "shape", None):
            raise ValueError(f"noise must be a tensor of the shape of sample "
                             f"{tuple(getattr(sample, 'shape', ()))}, got {getattr(noise, 'shape', noise)!r}.")
        a, b = self._gathered(sample, timesteps, "sample")
        return a * noise.to(sample.dtype) - b * sample

    def scale_model_input(self, sample, timestep=None):
        """Identity (DDPM and DDIM do not scale the model input); here for drop-in loops."""
        return sample

    # --- pieces of a step --------------------------------------------------------------

    def _x0_coefficients(self, ab):
        """(ax, am) with x0 = ax x + am m for the configured prediction type at alpha_bar = ab."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return 1.0 / math.sqrt(ab), -math.sqrt(1.0 - ab) / math.sqrt(ab)
        if kind == "sample":
            return 0.0, 1.0
        return math.sqrt(ab), -math.sqrt(1.0 - ab)  # v_prediction

    def _threshold(self, x0):
        """Dynamic thresholding (Saharia et al. 2022, Imagen): per sample, s = the
        dynamic_thresholding_ratio quantile of |x0|, clamped to [1, sample_max_value]; x0 is clamped
        to [-s, s] and divided by s."""
        if x0.ndim < 1 or x0.numel() == 0:
            raise ValueError("thresholding needs a batch of samples (a tensor with at least one dimension).")
        flat = x0.reshape(x0.shape[0], -1).abs()                       # batch x features
        count = flat.shape[1]
        position = self.config.dynamic_thresholding_ratio * (count - 1)
        low = int(math.floor(position))
        frac = position - low
        lower = torch.kthvalue(flat, low + 1, dim=1).values
        upper = torch.kthvalue(flat, min(low + 2, count), dim=1).values if frac > 0 else lower
        s = lower + frac * (upper - lower)                             # linear interpolation: np.quantile's rule
        s = torch.clamp(s, min=1.0, max=self.config.sample_max_value)
        s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    def _clip_or_threshold(self, x0):
        if self.config.thresholding:
            return self._threshold(x0)
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            return x0.clamp(-r, r)
        return x0

    @property
    def fused_clip(self):
        """The clamp range the fused step applies to x0, or None (no clipping)."""
        if self.config.clip_sample and not self.config.thresholding:
            return float(self.config.clip_sample_range)
        return None

    def _check_step_inputs(self, model_output, sample, allow_double_channels=False):
        for name, value in (("model_output", model_output), ("sample", sample)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
            if value.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                                f"got {value.dtype}.")
        if model_output.device != sample.device:
            raise ValueError(f"model_output is on {model_output.device} but sample is on {sample.device}; "
                             f"move them to one device.")
        if model_output.shape != sample.shape:
            doubled = (allow_double_channels and model_output.ndim == sample.ndim >= 2
                       and model_output.shape[1] == 2 * sample.shape[1]
                       and model_output.shape[2:] == sample.shape[2:] and model_output.shape[0] == sample.shape[0])
            if not doubled:
                extra = (" (or twice the channels along dim 1 for variance_type 'learned'/'learned_range')"
                         if allow_double_channels else "")
                raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample has shape "
                                 f"{tuple(sample.shape)}; they must match{extra}.")

    @staticmethod
    def _compute_dtype(dtype):
        # Half precision is computed in float32 and cast back: the x0 recovery divides by
        # sqrt(alpha_bar), which amplifies half-precision rounding.
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    @staticmethod
    def _draw_noise(shape, like, generator, variance_noise):
        if variance_noise is not None:
            if generator is not None:
                raise ValueError("pass either generator or variance_noise, not both.")
            if not isinstance(variance_noise, torch.Tensor) or tuple(variance_noise.shape) != tuple(shape):
                raise ValueError(f"variance_noise must be a tensor of shape {tuple(shape)}, got "
                                 f"{getattr(variance_noise, 'shape', variance_noise)!r}.")
            return variance_noise.to(like.device, like.dtype)
        # As diffusers' randn_tensor: a CPU generator draws on the CPU, a list holds one generator
        # per batch entry.
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        if len(generators) == 1:
            generators, batched = generators, False
        elif len(generators) != shape[0]:
            raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}; pass one per sample.")
        else:
            batched = True
        draw_device = like.device
        for g in generators:
            if g is not None and not isinstance(g, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator (or a list of them), got {type(g).__name__}.")
            if g is not None and g.device.type != like.device.type:
                if g.device.type != "cpu":
                    raise ValueError(f"generator is on {g.device} but the sample is on {like.device}.")
                draw_device = torch.device("cpu")
        if not batched:
            return torch.randn(shape, generator=generators[0], device=draw_device, dtype=like.dtype).to(like.device)
        one = (1,) + tuple(shape[1:])
        parts = [torch.randn(one, generator=g, device=draw_device, dtype=like.dtype) for g in generators]
        return torch.cat(parts, dim=0).to(like.device)

    def _fused_rows_to_tensor(self, rows, device, dtype):
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype}.")
        table = torch.tensor(rows, dtype=torch.float64)                  # steps x 9
        return table.to(device=device if device is not None else "cpu", dtype=dtype)


class DDPMScheduler(_DiscreteScheduler):
    """Denoising diffusion probabilistic models (Ho et al. 2020): ancestral sampling with the
    posterior q(x_{t'} | x_t, x0) between consecutive grid timesteps t > t'.

    Takes diffusers' DDPMScheduler arguments with its defaults; tables and coefficients are
    float64, the step computes in the sample's dtype (float32 for half precision) and returns it.

    Differences from diffusers (both defects there):
    - No noise is added on the final step (the one that returns x0), as in Ho et al.'s
      Algorithm 2; diffusers adds noise whenever the last timestep is > 0 (steps_offset, or
      'trailing' spacing), which with 'fixed_large' puts noise of std sqrt(1 - alpha_bar) into x0.
    - variance_type='fixed_large_log' gives std = exp(log(beta_t) / 2); diffusers takes the
      square root of log(beta_t) < 0 and returns NaN.
    ``beta_schedule='sigmoid'`` is Chen (2023)'s; diffusers' DDPM "sigmoid" is
    ``'geodiff_sigmoid'`` here. variance_type='learned' reads the extra output channels as the
    variance itself (diffusers' convention); 'learned_range' as an interpolation weight in [-1, 1]
    between the log posterior variance and log beta (Nichol & Dhariwal 2021).
    """

    _ARGS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "variance_type",
             "clip_sample", "prediction_type", "thresholding", "dynamic_thresholding_ratio", "clip_sample_range",
             "sample_max_value", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        self.variance_type = variance_type
        self._setup({k: v for k, v in locals().items() if k in self._ARGS})

    def _levels(self, index):
        """(alpha_bar_t, alpha_bar_prev) for grid entry ``index``; alpha_bar_prev = 1 after the last."""
        t = int(self._grid[index])
        ab_t = float(self._ab[t])
        ab_prev = float(self._ab[self._grid[index + 1]]) if index + 1 < len(self._grid) else 1.0
        return ab_t, ab_prev

    def _row(self, index):
        """[ax, am, ex, em, e0, p0, px, pe, sigma] for grid entry ``index`` (sigma of the fixed types)."""
        ab_t, ab_prev = self._levels(index)
        ax, am = self._x0_coefficients(ab_t)
        beta_prod = 1.0 - ab_t
        current_alpha = ab_t / ab_prev
        current_beta = 1.0 - current_alpha
        p0 = math.sqrt(ab_prev) * current_beta / beta_prod
        px = math.sqrt(current_alpha) * (1.0 - ab_prev) / beta_prod
        last = index + 1 == len(self._grid)
        kind = self.variance_type
        if last:
            sigma = 0.0
        elif kind in ("fixed_small", "fixed_small_log"):
            sigma = math.sqrt(max((1.0 - ab_prev) / beta_prod * current_beta, _MIN_VARIANCE))
        elif kind in ("fixed_large", "fixed_large_log"):
            sigma = math.sqrt(current_beta)
        else:
            sigma = float("nan")  # learned: comes from the model
        return [ax, am, 0.0, 0.0, 0.0, p0, px, 0.0, sigma]

    def fused_supported(self, eta=0.0) -> bool:
        """Whether ``fastlearn.ops.diffusion_step`` can run this scheduler's step (eta is DDIM's;
        ignored here): not with thresholding (a per-sample quantile) or learned variances."""
        return not self.config.thresholding and self.variance_type not in ("learned", "learned_range")

    def fused_coefficients(self, device=None, dtype=torch.float32, eta=0.0, use_clipped_model_output=False):
        """Tensor[len(timesteps), 9]: per entry of ``self.timesteps`` the columns
        [ax, am, ex, em, e0, p0, px, pe, sigma] of x0 = ax x + am m (then clamp if clip_sample),
        prev = p0 x0 + px x + sigma z (DDPM has pe = ex = em = e0 = 0; eta and
        use_clipped_model_output are DDIM's and must stay at their defaults)."""
        if self.config.thresholding:
            raise NotImplementedError("the fused step has no dynamic thresholding; use scheduler.step() "
                                      "(fused_supported() is False).")
        if self.variance_type in ("learned", "learned_range"):
            raise NotImplementedError(f"variance_type={self.variance_type!r} takes its variance from the model "
                                      f"output; the fused step has no such input. Use scheduler.step().")
        if eta != 0.0 or use_clipped_model_output:
            raise ValueError("eta and use_clipped_model_output are DDIM arguments; DDPM takes neither.")
        rows = [self._row(i) for i in range(len(self._grid))]
        return self._fused_rows_to_tensor(rows, device, dtype)

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
        """One ancestral step x_t -> x_{t'} (t' the next grid timestep). ``model_output`` is the
        model's prediction (epsilon, v or x0 per prediction_type; with twice the channels along
        dim 1 for learned variances). Noise comes from ``generator`` (torch.randn, as diffusers),
        or is given as ``variance_noise``; the final step adds none."""
        learned = self.variance_type in ("learned", "learned_range")
        self._check_step_inputs(model_output, sample, allow_double_channels=learned)
        t, index = self._lookup(timestep)
        predicted_variance = None
        if learned:
            if model_output.shape == sample.shape:
                raise ValueError(f"variance_type={self.variance_type!r} needs model_output with twice the channels "
                                 f"of sample along dim 1 (prediction, then variance); got {tuple(model_output.shape)}.")
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        out_dtype = sample.dtype
        dtype = self._compute_dtype(out_dtype)
        x = sample.to(dtype)
        m = model_output.to(dtype)
        ax, am, _, _, _, p0, px, _, sigma = self._row(index)
        x0 = self._clip_or_threshold(ax * x + am * m)
        prev = p0 * x0 + px * x
        if index + 1 < len(self._grid):
            noise = self._draw_noise(m.shape, m, generator, variance_noise)
            if self.variance_type == "learned":
                std = predicted_variance.to(dtype) ** 0.5
            elif self.variance_type == "learned_range":
                ab_t, ab_prev = self._levels(index)
                current_beta = 1.0 - ab_t / ab_prev
                min_log = math.log(max((1.0 - ab_prev) / (1.0 - ab_t) * current_beta, _MIN_VARIANCE))
                max_log = math.log(current_beta)
                frac = (predicted_variance.to(dtype) + 1.0) / 2.0
                std = torch.exp(0.5 * (frac * max_log + (1.0 - frac) * min_log))
            else:
                std = sigma
            prev = prev + std * noise
        elif variance_noise is not None:
            self._draw_noise(m.shape, m, generator, variance_noise)  # still check its shape
        prev, x0 = prev.to(out_dtype), x0.to(out_dtype)
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev, x0)


class DDIMScheduler(_DiscreteScheduler):
    """Denoising diffusion implicit models (Song et al. 2021), eq. 12: from x_t,
    x_{t'} = sqrt(alpha_bar_t') x0 + sqrt(1 - alpha_bar_t' - sigma^2) eps + sigma z with
    sigma = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_t')).
    eta = 0 is the deterministic DDIM map, eta = 1 DDPM's posterior.

    Takes diffusers' DDIMScheduler arguments with its defaults; tables and coefficients are
    float64, the step computes in the sample's dtype (float32 for half precision) and returns it.

    Difference from diffusers: the previous timestep t' is the next entry of ``timesteps``
    (after the last entry, alpha_bar_t' = final_alpha_cumprod). diffusers uses
    t - num_train_timesteps // num_inference_steps, which is a different timestep whenever the
    grid is not evenly spaced: 'linspace' spacing (1000 training steps, 3 inference steps: the grid
    is 999, 500, 0; diffusers moves the sample from 999 to the noise level of 666 and from 500 to
    167, so the model is next evaluated at 500 and at 0 on samples that are at other levels) and
    'trailing' spacing when num_train_timesteps is not a multiple of num_inference_steps. With
    'leading' spacing, and evenly divisible 'trailing', both agree.

    ``inversion_step`` runs the eta = 0 map backwards (DDIM inversion).
    """

    _ARGS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "clip_sample",
             "set_alpha_to_one", "steps_offset", "prediction_type", "thresholding", "dynamic_thresholding_ratio",
             "clip_sample_range", "sample_max_value", "timestep_spacing", "rescale_betas_zero_snr")

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0, timestep_spacing: str = "leading",
                 rescale_betas_zero_snr: bool = False):
        _check_bool("set_alpha_to_one", set_alpha_to_one)
        self._setup({k: v for k, v in locals().items() if k in self._ARGS})
        self.final_alpha_cumprod = self.one.clone() if set_alpha_to_one else self.alphas_cumprod[0].clone()
        self._final_ab = float(self.final_alpha_cumprod)

    def _require_grid(self):
        if self.num_inference_steps is None:
            raise ValueError("DDIMScheduler: call set_timesteps(num_inference_steps) before stepping.")

    def _levels(self, index):
        t = int(self._grid[index])
        ab_t = float(self._ab[t])
        ab_prev = float(self._ab[self._grid[index + 1]]) if index + 1 < len(self._grid) else self._final_ab
        return ab_t, ab_prev

    def _variance(self, ab_t, ab_prev):
        return (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)

    def _row(self, index, eta, use_clipped_model_output):
        ab_t, ab_prev = self._levels(index)
        ax, am = self._x0_coefficients(ab_t)
        beta_prod = 1.0 - ab_t
        kind = self.config.prediction_type
        if use_clipped_model_output:
            # epsilon re-derived from the clipped x0 (as in GLIDE)
            ex, em, e0 = 1.0 / math.sqrt(beta_prod), 0.0, -math.sqrt(ab_t) / math.sqrt(beta_prod)
        elif kind == "epsilon":
            ex, em, e0 = 0.0, 1.0, 0.0
        elif kind == "sample":
            # from the unclipped x0 = m, as diffusers does
            ex, em, e0 = 1.0 / math.sqrt(beta_prod), -math.sqrt(ab_t) / math.sqrt(beta_prod), 0.0
        else:  # v_prediction: eps = sqrt(ab) v + sqrt(1 - ab) x
            ex, em, e0 = math.sqrt(beta_prod), math.sqrt(ab_t), 0.0
        std = eta * math.sqrt(self._variance(ab_t, ab_prev))
        direction = 1.0 - ab_prev - std * std
        if direction < 0.0:
            if direction < -1e-12:
                raise ValueError(f"eta={eta} is too large at timestep {int(self._grid[index])}: "
                                 f"1 - alpha_bar_prev - sigma^2 = {direction:.3g} < 0. Use 0 <= eta <= 1.")
            direction = 0.0
        return [ax, am, ex, em, e0, math.sqrt(ab_prev), 0.0, math.sqrt(direction), std]

    @staticmethod
    def _check_eta(eta):
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta!r}.")
        return float(eta)

    def fused_supported(self, eta=0.0) -> bool:
        """Whether ``fastlearn.ops.diffusion_step`` can run this scheduler's step: not with
        dynamic thresholding (a per-sample quantile)."""
        try:
            self._check_eta(eta)
        except ValueError:
            return False
        return not self.config.thresholding

    def fused_coefficients(self, device=None, dtype=torch.float32, eta=0.0, use_clipped_model_output=False):
        """Tensor[len(timesteps), 9]: per entry of ``self.timesteps`` the columns
        [ax, am, ex, em, e0, p0, px, pe, sigma] of x0 = ax x + am m (then clamp if clip_sample),
        eps = ex x + em m + e0 x0, prev = p0 x0 + px x + pe eps + sigma z (DDIM: px = 0,
        p0 = sqrt(alpha_bar_prev), pe = sqrt(1 - alpha_bar_prev - sigma^2), sigma = eta * std)."""
        self._require_grid()
        eta = self._check_eta(eta)
        _check_bool("use_clipped_model_output", use_clipped_model_output)
        if self.config.thresholding:
            raise NotImplementedError("the fused step has no dynamic thresholding; use scheduler.step() "
                                      "(fused_supported() is False).")
        rows = [self._row(i, eta, use_clipped_model_output) for i in range(len(self._grid))]
        return self._fused_rows_to_tensor(rows, device, dtype)

    def step(self, model_output, timestep, sample, eta=0.0, use_clipped_model_output=False, generator=None,
             variance_noise=None, return_dict=True):
        """One DDIM step x_t -> x_{t'} (t' the next entry of ``timesteps``). ``eta`` > 0 adds noise
        of std eta * sigma_t from ``generator`` or ``variance_noise``; ``use_clipped_model_output``
        re-derives epsilon from the clipped/thresholded x0."""
        self._require_grid()
        self._check_step_inputs(model_output, sample)
        eta = self._check_eta(eta)
        _check_bool("use_clipped_model_output", use_clipped_model_output)
        t, index = self._lookup(timestep)
        out_dtype = sample.dtype
        dtype = self._compute_dtype(out_dtype)
        x = sample.to(dtype)
        m = model_output.to(dtype)
        ax, am, ex, em, e0, p0, _, pe, std = self._row(index, eta, use_clipped_model_output)
        x0 = self._clip_or_threshold(ax * x + am * m)
        eps = ex * x + em * m + e0 * x0 if (ex, em, e0) != (0.0, 1.0, 0.0) else m
        prev = p0 * x0 + pe * eps
        if eta > 0:
            noise = self._draw_noise(m.shape, m, generator, variance_noise)
            prev = prev + std * noise
        prev, x0 = prev.to(out_dtype), x0.to(out_dtype)
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev, x0)

    def inversion_step(self, model_output, timestep, sample, return_dict=True):
        """DDIM inversion: the eta = 0 map run backwards, from x at the level after ``timestep`` in
        ``timesteps`` (the clean level, alpha_bar = final_alpha_cumprod, when ``timestep`` is the
        last entry) to x at ``timestep``. Iterate ``for t in reversed(scheduler.timesteps)``.

        ``model_output`` is the model evaluated at (``sample``, ``timestep``) — the usual
        approximation, since the x at ``timestep`` is what is being computed. The output is
        converted to (x0, eps) at the sample's own level, without clipping, and moved to the
        target level: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. For
        prediction_type='epsilon' this is the exact inverse of ``step(model_output, timestep, .)``
        with eta = 0 and no clipping. prediction_type='sample' cannot start from the clean level
        with set_alpha_to_one=True (epsilon is 0/0 there)."""
        self._require_grid()
        self._check_step_inputs(model_output, sample)
        t, index = self._lookup(timestep)
        ab_t = float(self._ab[t])
        ab_src = float(self._ab[self._grid[index + 1]]) if index + 1 < len(self._grid) else self._final_ab
        kind = self.config.prediction_type
        if kind == "sample" and ab_src >= 1.0:
            raise ValueError("inversion from the clean level (alpha_bar = 1) needs prediction_type 'epsilon' or "
                             "'v_prediction': with 'sample' the noise is 0/0 there. Use set_alpha_to_one=False.")
        out_dtype = sample.dtype
        dtype = self._compute_dtype(out_dtype)
        x = sample.to(dtype)
        m = model_output.to(dtype)
        ax, am = self._x0_coefficients(ab_src)
        x0 = ax * x + am * m
        if kind == "epsilon":
            eps = m
        elif kind == "sample":
            eps = (x - math.sqrt(ab_src) * m) / math.sqrt(1.0 - ab_src)
        else:
            eps = math.sqrt(ab_src) * m + math.sqrt(1.0 - ab_src) * x
        nxt = math.sqrt(ab_t) * x0 + math.sqrt(1.0 - ab_t) * eps
        nxt, x0 = nxt.to(out_dtype), x0.to(out_dtype)
        if not return_dict:
            return nxt, x0
        return DDIMInversionOutput(nxt, x0)
