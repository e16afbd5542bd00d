"""What SVC and SVR share: parameter constraints, input handling (NumPy arrays and torch
tensors), the call into the C++ SMO solver with progress and Ctrl-C, the float64 decision
values at predict time, device selection, and saving/loading without pickle."""

from __future__ import annotations

import json
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from fastlearn import _C
from fastlearn._buffer import view
from fastlearn._info import one_blas_thread
from fastlearn.svm._kernels import KERNEL_CODES, chunks, kernel_matrix, resolve_gamma

# device="auto" sends a fit to the GPU from this many samples on (below it the CPU solver
# with its cache wins: a GPU iteration costs a few kernel launches, ~20-50 us).
GPU_MIN_SAMPLES = 20000


def as_numpy(x):
    """(array-like, the torch device it came from or None): tensors are moved to host memory."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy(), x.device
    return x, None


def to_output(values: np.ndarray, device):
    """Return predictions as the caller passed X: a tensor on its device, or an ndarray."""
    if device is None or values.dtype.kind not in "biuf":
        return values
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


class _Progress:
    """tqdm over the sub-problems when verbose; the C++ solver calls it every few thousand
    iterations (and after each sub-problem), which is also where Ctrl-C gets through."""

    def __init__(self, total: int, verbose: bool, desc: str):
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="problem")

    def __call__(self, done: int, iterations: int) -> None:
        if self.bar is None:
            return
        if iterations < 0:
            self.bar.update(done - self.bar.n)
        else:
            self.bar.set_postfix(iterations=iterations)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class BaseSVM(BaseEstimator):
    _parameter_constraints: dict = {
        "kernel": [StrOptions({"linear", "poly", "rbf", "sigmoid", "precomputed"}), callable],
        "degree": [Interval(Integral, 0, None, closed="left")],
        "gamma": [StrOptions({"scale", "auto"}), Interval(Real, 0.0, None, closed="left")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "tol": [Interval(Real, 0.0, None, closed="neither")],
        "C": [Interval(Real, 0.0, None, closed="neither")],
        "shrinking": ["boolean"],
        "cache_size": [Interval(Real, 0, None, closed="neither")],
        "verbose": ["verbose"],
        "max_iter": [Interval(Integral, -1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        tags.input_tags.sparse = False
        return tags

    # ---- fit helpers -------------------------------------------------------------------
    def _validate_fit_data(self, X, y, sample_weight):
        X, self._input_device = as_numpy(X)
        y, _ = as_numpy(y)
        sample_weight, _ = as_numpy(sample_weight)
        if callable(self.kernel):
            from sklearn.utils.validation import check_consistent_length

            check_consistent_length(X, y)
            y = np.asarray(y)
        else:
            X, y = validate_data(self, X, y, dtype=np.float64, order="C", accept_sparse=False)
        n = len(y) if callable(self.kernel) else X.shape[0]
        if self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise ValueError(f"Precomputed matrix must be a square matrix. Input is a {X.shape[0]}x{X.shape[1]} "
                             "matrix; pass the Gram matrix K(X_train, X_train).")
        if sample_weight is None:
            sample_weight = np.ones(n, dtype=np.float64)
        else:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if sample_weight.shape[0] != n:
                raise ValueError(f"sample_weight and X have incompatible shapes: {sample_weight.shape} vs "
                                 f"({n}, ...); pass one weight per sample.")
            if not np.isfinite(sample_weight).all():
                raise ValueError("sample_weight contains NaN or infinity; pass finite weights.")
        return X, y, sample_weight

    def _training_matrix(self, X) -> np.ndarray:
        """The float32 matrix the C++ solver reads: the features, or the Gram matrix."""
        if callable(self.kernel):
            K = np.asarray(self.kernel(X, X), dtype=np.float64)
            n = K.shape[0]
            if K.shape != (n, n):
                raise ValueError(f"the kernel callable must return a square matrix for kernel(X, X), got {K.shape}.")
            if not np.isfinite(K).all():
                raise ValueError("the kernel callable returned NaN or infinity.")
            return K
        return X

    def _solver_args(self):
        kernel = "precomputed" if callable(self.kernel) else self.kernel
        return dict(kernel=KERNEL_CODES[kernel], gamma=float(self._gamma), coef0=float(self.coef0),
                    degree=int(self.degree), tol=float(self.tol), shrinking=bool(self.shrinking),
                    max_iter=int(self.max_iter), cache_mb=float(self.cache_size))

    def _use_gpu(self, n_samples: int) -> bool:
        from fastlearn._info import cuda_available

        if self.device == "cpu":
            return False
        named_kernel = not (callable(self.kernel) or self.kernel == "precomputed")
        if self.device == "cuda":
            if not named_kernel:
                raise RuntimeError(f"{type(self).__name__}(device='cuda'): precomputed and callable kernels run on "
                                   "the CPU only; use device='cpu' or 'auto'.")
            if not cuda_available():
                why = ("fastlearn was built without CUDA" if not _C.build_info()["cuda_built"]
                       else "torch sees no CUDA GPU")
                raise RuntimeError(f"{type(self).__name__}(device='cuda'): {why}; use device='cpu' or 'auto'.")
            return True
        return named_kernel and cuda_available() and n_samples >= GPU_MIN_SAMPLES

    def _warn_from_fit_status(self):
        if self.fit_status_ == 1:
            warnings.warn(f"Solver terminated early (max_iter={self.max_iter}).  Consider pre-processing your data "
                          "with StandardScaler or MinMaxScaler, or increase max_iter.", ConvergenceWarning)

    def _store_support(self, X, support):
        self.support_ = support.astype(np.int32)
        if self.kernel == "precomputed":
            self.support_vectors_ = np.empty((0, 0), dtype=np.float64)
        elif callable(self.kernel):
            self.support_vectors_ = X[support] if hasattr(X, "shape") else [X[i] for i in support]
        else:
            self.support_vectors_ = np.ascontiguousarray(X[support])

    # ---- predict helpers ---------------------------------------------------------------
    def _validate_for_predict(self, X):
        check_is_fitted(self)
        X, device = as_numpy(X)
        if not callable(self.kernel):
            X = validate_data(self, X, dtype=np.float64, order="C", accept_sparse=False, reset=False)
        if self.kernel == "precomputed" and X.shape[1] != self.shape_fit_[0]:
            raise ValueError(f"X.shape[1] = {X.shape[1]} should be equal to {self.shape_fit_[0]}, the number of "
                             "samples at training time; pass K(X_test, X_train).")
        return X, device

    def _sv_kernel(self, X, start: int, stop: int) -> np.ndarray:
        """K(X[start:stop], support vectors) in float64: (rows, n_SV)."""
        if self.kernel == "precomputed":
            return np.asarray(X[start:stop], dtype=np.float64)[:, self.support_]
        return kernel_matrix(X[start:stop], self.support_vectors_, self.kernel, self._gamma, self.coef0, self.degree)

    def _raw_decision(self, X, coef_fn, n_outputs: int) -> np.ndarray:
        """coef_fn(K_chunk) -> (rows, n_outputs) decision values, over row chunks of X.

        Products below ~0.5 GFLOP run on one BLAS thread: a few milliseconds either way on
        idle cores, but several times slower with threads when other processes share them."""
        n = X.shape[0] if hasattr(X, "shape") else len(X)
        out = np.empty((n, n_outputs), dtype=np.float64)
        d = X.shape[1] if hasattr(X, "shape") and len(X.shape) == 2 else 1
        small = 2.0 * n * max(1, len(self.support_)) * d < 5e8
        with one_blas_thread(when=small):
            for a, b in chunks(n, max(1, len(self.support_))):
                out[a:b] = coef_fn(self._sv_kernel(X, a, b))
        return out

    # ---- persistence without pickle ----------------------------------------------------
    _ARRAYS: tuple = ()
    _SCALARS: tuple = ()

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (safetensors: arrays, plus JSON metadata)."""
        from safetensors.numpy import save_file

        check_is_fitted(self)
        if callable(self.kernel):
            raise ValueError("a model with a callable kernel cannot be saved without pickle; refit it after "
                             "loading, or use a named kernel or kernel='precomputed'.")
        tensors = {}
        meta = {"class": type(self).__name__, "params": self.get_params(), "format": 1}
        for name in self._ARRAYS:
            value = getattr(self, name)
            arr = np.asarray(value)
            if arr.dtype.kind in "biuf":
                tensors[name] = np.ascontiguousarray(arr)
            else:
                meta.setdefault("json_arrays", {})[name] = arr.tolist()
        for name in self._SCALARS:
            value = getattr(self, name)
            meta[name] = value.item() if isinstance(value, np.generic) else value
        meta["shape_fit_"] = list(self.shape_fit_)
        if hasattr(self, "feature_names_in_"):
            meta["feature_names_in_"] = list(map(str, self.feature_names_in_))
        save_file(tensors, str(path), metadata={"fastlearn": json.dumps(meta)})

    @classmethod
    def load(cls, path):
        """Read a model written by ``save`` (no pickle involved)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads(f.metadata()["fastlearn"])
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        if meta["class"] != cls.__name__:
            raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}; use "
                             f"fastlearn.svm.{meta['class']}.load.")
        est = cls(**meta["params"])
        for name, value in arrays.items():
            setattr(est, name, value)
        for name, value in meta.get("json_arrays", {}).items():
            setattr(est, name, np.asarray(value))
        for name in cls._SCALARS:
            setattr(est, name, meta[name])
        est.shape_fit_ = tuple(meta["shape_fit_"])
        if "feature_names_in_" in meta:
            est.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        return est


def call_solver(fn, progress: _Progress, **kwargs):
    """Run a C++ fit driver; Ctrl-C inside it raises KeyboardInterrupt here."""
    try:
        return fn(progress=progress, **kwargs)
    finally:
        progress.close()


def fit_matrix_view(M: np.ndarray):
    """(float32 C-contiguous copy, its view) of the matrix the solver reads."""
    m32 = np.ascontiguousarray(M, dtype=np.float32)
    if not np.isfinite(m32).all():
        raise ValueError("X has values too large for the solver's float32 kernel (|x| > 3.4e38, or a Gram "
                         "matrix that overflows); scale the data first, e.g. with StandardScaler.")
    return m32, view(m32, "X")
