"""Benchmark cases and their runner, shared by ``fastlearn bench`` and ``pytest bench/``.

A domain adds a module ``fastlearn/bench/<domain>.py`` with ``cases(quick: bool) -> list[Case]``;
it is found automatically. Each case runs fastlearn and the library a user would otherwise
pick on the same inputs, in the same process, and states its work (FLOPs, bytes) so the
runner can report the fraction of the machine's measured peak it reaches.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Case:
    name: str                          # what is measured, e.g. "softmax fwd"
    shape: str                         # the problem, e.g. "4096x4096 f32"
    setup: Callable[[], Any]           # builds the inputs once; its result goes to both callables
    fastlearn: Callable[[Any], Any]    # the fastlearn call
    baseline: Callable[[Any], Any] | None  # the call a user would otherwise make (None: no baseline)
    baseline_name: str                 # e.g. "torch.softmax", "sklearn SVC"
    flops: float = 0.0                 # floating-point operations of one call
    bytes: float = 0.0                 # fewest bytes one call must move through memory
    bound: str = "memory"              # "memory" or "compute": the peak that sets the floor
    dtype: str = "float32"             # precision of the compute peak to compare with
    device: str = "cpu"
    quick: bool = True                 # part of `fastlearn bench --quick`
    group: str = ""                    # filled in with the module name
    notes: str = ""
    tags: dict = field(default_factory=dict)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` inside (None: left as they are), restored after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def measure(fn: Callable[[Any], Any], inputs: Any, device: str = "cpu", min_time: float = 0.15,
            repeats: int = 5, max_time: float = 20.0, best: bool = False) -> float:
    """Median seconds per call (the fastest batch's with ``best``, for peaks): warm up once,
    time one call, then ``repeats`` timed batches of enough calls to last ``min_time`` each
    (one call per batch when a call is slower than that). The batch size comes from the second
    call: the first one may compile (Triton, torch.compile), and sized from it the batches
    would be single calls, each paying the launch and the synchronisation that back-to-back
    calls overlap with the GPU's work."""
    number, batch = _calibrate(fn, inputs, device, min_time)
    repeats = max(1, min(repeats, int(max_time / max(batch, 1e-9))))
    samples = [_timed_batch(fn, inputs, device, number) for _ in range(repeats)]
    return min(samples) if best else statistics.median(samples)


def _calibrate(fn, inputs, device, min_time) -> tuple[int, float]:
    """Warm up once, time one call: (calls a batch of ``min_time`` takes, seconds of a batch)."""
    fn(inputs)
    _sync(device)
    t0 = time.perf_counter()
    fn(inputs)
    _sync(device)
    first = time.perf_counter() - t0
    number = max(1, int(min_time / max(first, 1e-7)))
    return number, first * number


def _timed_batch(fn, inputs, device, number) -> float:
    """Seconds per call of ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn(inputs)
    _sync(device)
    return (time.perf_counter() - t0) / number


_PEAKS: dict[str, dict] = {}


def machine_peaks(device: str = "cpu") -> dict:
    """Measured once per process: memory bandwidth (bytes read + written per second of a large
    copy) and matrix-product FLOP/s in float32 and float64 (bf16 too on GPU). Each is the best
    of 7 timed batches: a peak is what the machine can do, and on a shared machine a median
    caught a busy moment (one run measured 86 GFLOP/s f32 for 131-153 in others, and put
    EM iterations at 155% of it)."""
    if device in _PEAKS:
        return _PEAKS[device]
    if device == "cpu":
        n = 64 << 20  # 256 MiB of float32: far beyond any cache
        src = torch.randn(n // 4 * 4 // 4)
        dst = torch.empty_like(src)
        t = measure(lambda _: dst.copy_(src), None, repeats=7, best=True)
        bw = 2 * src.numel() * 4 / t
        peaks = {"bandwidth": bw}
        for dt, size in (("float32", 1536), ("float64", 1024)):
            a = torch.randn(size, size, dtype=getattr(torch, dt))
            b = torch.randn(size, size, dtype=getattr(torch, dt))
            t = measure(lambda _: a @ b, None, repeats=7, best=True)
            peaks[f"flops_{dt}"] = 2 * size**3 / t
    else:
        n = 1 << 28
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        t = measure(lambda _: dst.copy_(src), None, device=device, repeats=7, best=True)
        peaks = {"bandwidth": 2 * n * 4 / t}
        for dt in ("float32", "float64", "bfloat16"):
            size = 8192 if dt != "float64" else 4096
            a = torch.randn(size, size, device=device, dtype=getattr(torch, dt))
            t = measure(lambda _: a @ a, None, device=device, repeats=7, best=True)
            peaks[f"flops_{dt}"] = 2 * size**3 / t
    _PEAKS[device] = peaks
    return peaks


def discover(quick: bool = False, pattern: str | None = None, device: str | None = None) -> list[Case]:
    """All cases of all fastlearn.bench modules (``quick`` keeps those marked quick;
    ``pattern`` keeps those whose group, name or shape contains it, case-insensitively;
    ``device`` ("cpu" or "cuda") keeps the cases that run there)."""
    import fastlearn.bench as pkg

    cases: list[Case] = []
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name in ("core", "cli") or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"fastlearn.bench.{mod.name}")
        if not hasattr(module, "cases"):
            continue
        for case in module.cases(quick=quick):
            case.group = case.group or mod.name
            cases.append(case)
    if quick:
        cases = [c for c in cases if c.quick]
    if pattern:
        p = pattern.lower()
        cases = [c for c in cases if p in f"{c.group} {c.name} {c.shape}".lower()]
    if device:
        cases = [c for c in cases if c.device.split(":")[0] == device]
    return [c for c in cases if c.device == "cpu" or torch.cuda.is_available()]


def measure_interleaved(fns: list[Callable[[Any], Any]], inputs: Any, device: str = "cpu",
                        min_time: float = 0.15, repeats: int = 7, max_time: float = 20.0,
                        pause: float = 0.0) -> list[list[float]]:
    """Seconds per call of each of ``fns`` in ``repeats`` rounds, each round one timed batch of
    every function (the order reversed every other round): on a shared machine the speed moves
    by tens of percent within seconds, and functions timed minutes apart would be compared
    under different loads. ``pause`` seconds pass before each timed batch (see run_case).
    Returns one list of per-round samples per function. Warm-up and batch sizes as in
    :func:`measure`."""
    numbers = []
    for fn in fns:
        number, batch = _calibrate(fn, inputs, device, min_time)
        repeats = max(1, min(repeats, int(max_time / max(batch, 1e-9))))
        numbers.append(number)
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            if pause:
                time.sleep(pause)
            samples[i].append(_timed_batch(fns[i], inputs, device, numbers[i]))
    return samples


# Seconds of idle before each timed CPU batch. A library's worker threads keep spinning for a
# while after its call returns (OpenBLAS, under NumPy and scikit-learn: about 2^28 cycles,
# ~0.1 s); a batch started inside that window shares the cores with them. Measured: a
# GaussianMixture EM iteration right after scikit-learn's took 71-109 ms, 34-55 ms after 0.2 s
# of idle, 36-39 ms with OpenBLAS on one thread.
CPU_PAUSE = 0.15

# A memory-bound CPU case moving at least this many bytes is also compared with a copy of as
# many bytes (half read, half written) timed in the same rounds: the fraction of bandwidth it
# reaches under the load the machine has at that moment.
COPY_REFERENCE_BYTES = 128 << 20
# The copy moves at most this many bytes; its time is scaled up to the case's bytes (a case
# that re-reads its data over epochs counts gigabytes it never holds at once).
COPY_REFERENCE_MAX = 512 << 20


def _copy_reference(nbytes: float):
    """(copy function, factor from its time to the time of a copy of ``nbytes``)."""
    moved = min(int(nbytes), COPY_REFERENCE_MAX)
    src = torch.ones(moved // 8)  # float32 elements: as many read as written
    dst = torch.empty_like(src)
    return (lambda _: dst.copy_(src)), nbytes / (src.numel() * 8)


# Alternating rounds a case gets: 7 by default, 3 in `fastlearn bench --quick` (which must end
# within two minutes on 2 cores; with 7 rounds it took about three).
ROUNDS = 7
QUICK_ROUNDS = 3


def run_case(case: Case, min_time: float = 0.15, rounds: int = ROUNDS) -> dict:
    """Time one case and report it. fastlearn, the baseline and (for large memory-bound CPU
    cases) a copy of the same bytes run in ``rounds`` alternating rounds in one process; the
    speedup is the median of the rounds' ratios, each ratio taken within one round."""
    if rounds < 1:
        raise ValueError(f"run_case: rounds is {rounds}; it must be at least 1.")
    inputs = case.setup()
    fns = [case.fastlearn]
    if case.baseline:
        fns.append(case.baseline)
    copy = case.device == "cpu" and case.bound == "memory" and case.bytes >= COPY_REFERENCE_BYTES
    if copy:
        copy_fn, copy_scale = _copy_reference(case.bytes)
        fns.append(copy_fn)
    samples = measure_interleaved(fns, inputs, case.device, min_time=min_time, repeats=rounds,
                                  pause=CPU_PAUSE if case.device == "cpu" else 0.0)
    fl = samples[0]
    t_fl = statistics.median(fl)
    t_base = statistics.median(samples[1]) if case.baseline else None
    speedup = statistics.median(b / f for b, f in zip(samples[1], fl)) if case.baseline else None
    of_copy = statistics.median(c * copy_scale / f for c, f in zip(samples[-1], fl)) if copy else None
    peaks = machine_peaks("cpu" if case.device == "cpu" else case.device)
    floor = 0.0
    if case.bytes:
        floor = max(floor, case.bytes / peaks["bandwidth"])
    if case.flops:
        floor = max(floor, case.flops / peaks.get(f"flops_{case.dtype}", peaks["flops_float32"]))
    return {
        "group": case.group, "name": case.name, "shape": case.shape, "device": case.device,
        "fastlearn_s": t_fl, "baseline": case.baseline_name, "baseline_s": t_base,
        "speedup": speedup, "rounds": len(fl),
        "flops": case.flops, "bytes": case.bytes, "bound": case.bound,
        "floor_s": floor or None, "fraction_of_peak": (floor / t_fl) if floor else None,
        "copy_s": statistics.median(samples[-1]) * copy_scale if copy else None, "fraction_of_copy": of_copy,
        "notes": case.notes,
    }
