"""fastlearn: performance-first machine learning.

C++ (CPU), CUDA and Triton (GPU) kernels under scikit-learn-compatible estimators, PyTorch
modules and drop-in PyTorch ops. ``fastlearn.info()`` says what was built and what runs.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

import torch  # noqa: E402,F401  (loaded before _C: torch brings its own OpenMP and CUDA runtimes)

from fastlearn import _C  # noqa: E402  (the compiled kernels; import errors surface here)
from fastlearn._info import get_num_threads, info, set_num_threads  # noqa: E402


def __getattr__(name):
    # Domains (fastlearn.ops, fastlearn.svm, ...) load on first use so `import fastlearn`
    # stays cheap and adding a domain needs no edit here.
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"fastlearn.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"fastlearn.{name}":
                raise
    raise AttributeError(f"module 'fastlearn' has no attribute {name!r}")


__all__ = ["__version__", "info", "set_num_threads", "get_num_threads"]
