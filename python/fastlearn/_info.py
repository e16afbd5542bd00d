"""fastlearn.info() and the thread knob: what was built, what can run now, how many threads."""

from __future__ import annotations

import contextlib
import os

import torch

from fastlearn import _C


def cuda_available() -> bool:
    """True when a GPU is usable now: torch sees one and _C was built with CUDA."""
    return torch.cuda.is_available() and bool(_C.build_info()["cuda_built"])


def triton_available() -> bool:
    """True when Triton imports (it may still run only under its interpreter)."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the platform
        return False
    return True


def triton_interpret() -> bool:
    """True when Triton kernels run under the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def info() -> dict:
    """What was built (CUDA, architectures, SIMD), what is usable now, and thread counts."""
    from threadpoolctl import threadpool_info

    import fastlearn

    built = dict(_C.build_info())
    triton_version = None
    if triton_available():
        import triton

        triton_version = triton.__version__
    pools = [
        {"api": p.get("internal_api"), "lib": os.path.basename(p.get("filepath", "")), "threads": p.get("num_threads")}
        for p in threadpool_info()
    ]
    return {
        "version": fastlearn.__version__,
        "build": built,
        "runtime": {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "gpu_present": torch.cuda.is_available(),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cuda_usable": cuda_available(),
            "cuda_devices_seen_by_C": _C.cuda_device_count() if built["cuda_built"] else 0,
            "triton": triton_version,
            "triton_interpret": triton_interpret(),
        },
        "threads": {
            "fastlearn": _C.get_num_threads(),
            "torch": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "pools": pools,
        },
    }


def set_num_threads(n: int) -> None:
    """Set the threads used by fastlearn's C++ kernels and by torch (one knob for both)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: argument 'n' must be an int, got {type(n).__name__}.")
    if n < 1:
        raise ValueError(f"set_num_threads: argument 'n' must be >= 1, got {n}.")
    _C.set_num_threads(n)
    torch.set_num_threads(n)


def get_num_threads() -> int:
    """Threads fastlearn's C++ kernels use."""
    return _C.get_num_threads()


def format_info(d: dict | None = None) -> str:
    d = info() if d is None else d
    lines = [f"fastlearn {d['version']}"]
    b, r, t = d["build"], d["runtime"], d["threads"]
    lines.append(f"  build    : {b['compiler']}, CPU {b['cpu_build']}, OpenMP {b['openmp']}")
    cuda = f"yes (CUDA {b['cuda_version']}, archs {b['cuda_archs']})" if b["cuda_built"] else "no"
    lines.append(f"  CUDA     : built {cuda}")
    lines.append(f"  CPU SIMD : {b['cpu_simd']} (widest clone this CPU runs)")
    gpu = r["gpu_name"] or "none"
    lines.append(f"  GPU      : {gpu}; CUDA path usable: {r['cuda_usable']}")
    tri = r["triton"] or "not installed"
    lines.append(f"  Triton   : {tri}{' (interpreter: TRITON_INTERPRET=1)' if r['triton_interpret'] else ''}")
    lines.append(f"  torch    : {r['torch']} (CUDA {r['torch_cuda']})")
    lines.append(f"  threads  : fastlearn {t['fastlearn']}, torch {t['torch']}, cpus {t['cpu_count']}")
    for p in t["pools"]:
        lines.append(f"             {p['api']:8s} {p['threads']:3d}  {p['lib']}")
    return "\n".join(lines)


_BLAS = None  # threadpoolctl controller over NumPy's and SciPy's BLAS, made on first use


def one_blas_thread(when: bool = True):
    """Context manager: NumPy's and SciPy's BLAS/LAPACK on one thread inside it (when ``when``;
    otherwise it changes nothing, for callers that limit small problems only).

    For the small dense algebra of the estimators' Python layer. On a 2-core machine two
    OpenBLAS pools (NumPy and SciPy each bring one) whose workers spin after every call share
    the cores with the next call: BayesianLinearRegression.fit at 5000 x 50 took 8.1 ms with
    two threads and 2.7 ms with one, and at 20000 x 400 280 ms against 185 ms. The controller is
    built once (threadpoolctl's ``threadpool_limits`` looks the libraries up on every call:
    ~1.7 ms, against ~40 us here)."""
    global _BLAS
    if not when:
        return contextlib.nullcontext()
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS before the libraries are listed)
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
