"""Compile the Triton kernels for an NVIDIA GPU on a machine without one, and report what each
launch configuration costs the GPU: registers a thread, local memory (register spills or
local arrays) and the instructions that touch it, shared memory, and whether it compiles.

Triton's interpreter (how the tests run the kernels here) checks a kernel's arithmetic, not
whether it compiles for a real GPU, fits its shared memory, or spills registers; this does, with
Triton's own compiler and the ptxas/cuobjdump that ship in the Triton wheel, for the launch
configurations the package really makes:

  1. the launches are recorded: the package's launchers run on CPU tensors under the
     interpreter, and every distinct (kernel, argument types, constexprs, num_warps) is kept;
  2. a subprocess without TRITON_INTERPRET compiles each one for the target (sm_90: H100)
     from the kernel files themselves (no torch needed there, so ``--python`` may name another
     environment's interpreter, e.g. one with the Triton version of the GPU machine).

Usage:
  python bench/gpu/compile_report.py                 # the GPU bench shapes (E-step, k-means)
  python bench/gpu/compile_report.py --pytest -m triton tests/mixture   # every launch of a test run
  python bench/gpu/compile_report.py --variants      # the E-step variants of sweep.py estep_split
  options: --arch 90, --python PATH, --json FILE

The bench shapes are recorded without running the kernels (only the launch is needed), so
they cost no interpreter time at N = 1,000,000.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel is decorated

H100_SHARED_BYTES = 232448  # 227 KiB: the most shared memory one block may opt in to on sm_90

_DTYPES = {"float32": "fp32", "float64": "fp64", "float16": "fp16", "bfloat16": "bf16", "int64": "i64",
           "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "i1"}


def _is_constexpr(annotation):
    return getattr(annotation, "__name__", annotation) == "constexpr" or (
        isinstance(annotation, str) and annotation.endswith("constexpr"))


def describe_launch(fn, args, kwargs):
    """One launch as plain data: argument types (Triton signature strings), the constexprs,
    the arguments Triton's launcher would mark 16-divisible, and the compile options. Integers
    equal to 1 become constexprs, as Triton's launcher specialises them."""
    import torch

    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args))
    bound.update({k: v for k, v in kwargs.items() if k in params})
    types, const, aligned = {}, {}, []
    for name, p in params.items():
        if name not in bound:
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"{fn.__name__}: no value for argument {name!r}")
            const[name] = p.default
            continue
        v = bound[name]
        if _is_constexpr(p.annotation):
            const[name] = v if isinstance(v, (bool, int, float, str, type(None))) else "dtype:" + str(v)
        elif isinstance(v, torch.Tensor):
            types[name] = "*" + _DTYPES[str(v.dtype).removeprefix("torch.")]
            if v.data_ptr() % 16 == 0:
                aligned.append(name)
        elif isinstance(v, bool):
            types[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                const[name] = 1
            else:
                types[name] = "i32" if -2**31 <= v < 2**31 else "i64"
                if v % 16 == 0:
                    aligned.append(name)
        elif isinstance(v, float):
            types[name] = "fp32"
        elif v is None:
            const[name] = None
        else:
            raise TypeError(f"{fn.__name__}: argument {name!r} of type {type(v).__name__}")
    options = {k: kwargs[k] for k in ("num_warps", "num_stages", "maxnreg") if k in kwargs}
    return dict(module=fn.__module__.rsplit(".", 1)[-1], name=fn.__name__, types=types, const=const,
                aligned=aligned, options=options)


@contextlib.contextmanager
def record(launches: dict, execute: bool = True):
    """Record every interpreted Triton launch into ``launches`` (key: the launch as JSON).
    With execute=False the kernels do not run (outputs stay as allocated)."""
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        d = describe_launch(self.fn, args, kwargs)
        launches.setdefault(json.dumps(d, sort_keys=True, default=str), d)
        if execute:
            return run(self, *args, grid=grid, warmup=warmup, **kwargs)
        return None

    InterpretedFunction.run = recording_run
    try:
        yield launches
    finally:
        InterpretedFunction.run = run


_WORKER = r'''
import importlib.util, json, os, re, subprocess, sys, tempfile
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

kernel_dir, arch = sys.argv[1], int(sys.argv[2])
spec = importlib.util.spec_from_file_location("flk", os.path.join(kernel_dir, "__init__.py"),
                                              submodule_search_locations=[kernel_dir])
pkg = importlib.util.module_from_spec(spec)
sys.modules["flk"] = pkg
spec.loader.exec_module(pkg)
tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
for line in sys.stdin:
    d = json.loads(line)
    res = dict(d, ok=False, triton=triton.__version__)
    try:
        fn = getattr(importlib.import_module("flk." + d["module"]), d["name"])
        names = fn.arg_names
        const = {k: (tl.dtype(v[6:]) if isinstance(v, str) and v.startswith("dtype:") else v)
                 for k, v in d["const"].items()}
        sig = {a: ("constexpr" if a in const else d["types"][a]) for a in names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()},
                        attrs={(names.index(a),): [["tt.divisibility", 16]] for a in d["aligned"]})
        ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=d["options"])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "k.cubin")
            with open(path, "wb") as f:
                f.write(ck.asm["cubin"])
            usage = subprocess.run([os.path.join(tools, "cuobjdump"), "--dump-resource-usage", path],
                                   capture_output=True, text=True).stdout
            sass = subprocess.run([os.path.join(tools, "nvdisasm"), path], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
        res.update(ok=True, regs=int(m.group(1)), stack=int(m.group(2)), shared=ck.metadata.shared,
                   num_warps=ck.metadata.num_warps, local_stores=len(re.findall(r"\bSTL\b", sass)),
                   local_loads=len(re.findall(r"\bLDL\b", sass)))
    except Exception as e:  # noqa: BLE001  (reported per launch: that is the point)
        # a CompilationError ends with the source line and a caret: keep the lines above them too
        lines = [l.strip() for l in str(e).strip().splitlines() if l.strip() and set(l.strip()) != {"^"}]
        cause = f" ({type(e.__cause__).__name__}: {str(e.__cause__)[:300]})" if e.__cause__ else ""
        res["error"] = f"{type(e).__name__}: {' | '.join(lines[-3:])[:400]}{cause}"
    print(json.dumps(res, default=str), flush=True)
'''


def compile_launches(launches, arch=90, python=None):
    """Compile each recorded launch for sm_<arch> in a subprocess without the interpreter;
    returns the launches with ok, regs, stack (bytes of local memory a thread), local_stores and
    local_loads (STL / LDL instructions in the SASS), shared (bytes), num_warps; or error."""
    from fastlearn.kernels import triton as kernels

    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset; 1 is its default
    lines = "".join(json.dumps(d, default=str) + "\n" for d in launches)
    proc = subprocess.run([python or sys.executable, "-c", _WORKER, os.path.dirname(kernels.__file__), str(arch)],
                          input=lines, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"the compile worker failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def bench_launches():
    """The launches of the GPU bench's E-step and k-means cases (N = 1,000,000 in the bench;
    the tile choice does not depend on N, so N = 4096 here), recorded without running."""
    import torch

    from fastlearn.cluster import _gpu as kgpu
    from fastlearn.mixture import _gpu

    launches = {}
    with record(launches, execute=False):
        for cov, D, K, dtype in (("full", 32, 16, torch.float32), ("full", 64, 16, torch.float32),
                                 ("full", 128, 8, torch.float32), ("full", 32, 64, torch.float32),
                                 ("full", 32, 16, torch.float64), ("full", 128, 8, torch.float64),
                                 ("tied", 32, 16, torch.float32), ("tied", 128, 8, torch.float64),
                                 ("diag", 32, 16, torch.float32), ("spherical", 32, 16, torch.float32)):
            N = 4096
            X = torch.randn(N, D, dtype=dtype)
            means = torch.randn(K, D, dtype=dtype)
            P = (torch.eye(D, dtype=dtype).expand(K, D, D).contiguous() if cov == "full" else
                 torch.eye(D, dtype=dtype) if cov == "tied" else torch.ones(K, D, dtype=dtype) if cov == "diag"
                 else torch.ones(K, dtype=dtype))
            log_w = torch.full((K,), -float(torch.log(torch.tensor(float(K)))), dtype=dtype)
            _gpu.estep(X, means, P, log_w, cov, stats=True)
            _gpu.estep(X, means, P, log_w, cov, log_norm=True, labels=True)
        split = dict(_gpu.ESTEP_FULL_OPTIONS)
        try:  # the split statistics (an option, not yet the default): its second launch
            _gpu.ESTEP_FULL_OPTIONS = dict(split, SPLIT=True)
            for D, dtype in ((32, torch.float32), (64, torch.float32), (32, torch.float64), (64, torch.float64)):
                X, K = torch.randn(4096, D, dtype=dtype), 16
                _gpu.estep(X, torch.randn(K, D, dtype=dtype), torch.eye(D, dtype=dtype).expand(K, D, D).contiguous(),
                           torch.full((K,), -float(torch.log(torch.tensor(float(K)))), dtype=dtype), "full", stats=True)
        finally:
            _gpu.ESTEP_FULL_OPTIONS = split
        for D, K in ((32, 16), (32, 64), (8, 64), (64, 256)):  # (32, 64): the GPU bench's KMeans
            X = torch.randn(4096, D)
            kgpu.assign(X, torch.randn(K, D), torch.ones(4096), stats=True)
    return list(launches.values())


def variant_launches():
    """The full-covariance E-step variants that bench/gpu/sweep.py estep_split times (float32,
    D=32, K=16), recorded without running: the fused kernel and its no-statistics first launch
    with and without all components' products (ALLK_J) over point blocks and warps, and the
    split statistics' second launch over point blocks, warps and the scatter's precision."""
    import torch

    from fastlearn.kernels.triton import gaussian_estep as tk
    from fastlearn.mixture import _gpu

    real_config, real_split, options = tk.launch_config, tk.split_stats_config, dict(_gpu.ESTEP_FULL_OPTIONS)
    D, K = 32, 16
    args = (torch.randn(4096, D), torch.randn(K, D), torch.eye(D).expand(K, D, D).contiguous(),
            torch.full((K,), -2.0), "full")
    launches = {}
    try:
        with record(launches, execute=False):
            for allk in (0, 32, 64, 128):
                for bn, warps, bj in ((32, 1, 16), (32, 2, 16), (32, 2, 32), (64, 2, 16), (64, 2, 32), (64, 4, 16),
                                      (64, 4, 32), (128, 4, 32), (128, 8, 32)):
                    if allk and bj != 32:
                        continue
                    tk.launch_config = (lambda *a, bn=bn, warps=warps, bj=bj, **k:
                                        (dict(real_config(*a, **k)[0], BLOCK_N=bn, num_warps=warps, BLOCK_J=bj), 2))
                    _gpu.ESTEP_FULL_OPTIONS = dict(options, SPLIT=False, ALLK_J=allk)
                    _gpu.estep(*args, stats=True)
                    _gpu.estep(*args, log_norm=True)
            tk.launch_config = real_config
            for allk in (0, 64):
                for prec in ("ieee", "tf32x3"):
                    for bn, warps in ((32, 1), (32, 2), (32, 4), (64, 2), (64, 4), (64, 8), (128, 4), (128, 8)):
                        tk.split_stats_config = (lambda *a, bn=bn, warps=warps, **k:
                                                 (dict(real_split(*a, **k)[0], BLOCK_N=bn, num_warps=warps), 2))
                        _gpu.ESTEP_FULL_OPTIONS = dict(options, SPLIT=True, ALLK_J=allk, PRECISION_S=prec)
                        _gpu.estep(*args, stats=True)
    finally:
        tk.launch_config, tk.split_stats_config, _gpu.ESTEP_FULL_OPTIONS = real_config, real_split, options
    return list(launches.values())


def pytest_launches(pytest_args):
    """Every distinct launch of a pytest run in this process (the tests run as usual)."""
    import pytest

    launches = {}

    class Recorder:
        def pytest_configure(self, config):
            self._cm = record(launches)
            self._cm.__enter__()

        def pytest_unconfigure(self, config):
            self._cm.__exit__(None, None, None)

    code = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args], plugins=[Recorder()])
    if code not in (0, 5):
        print(f"(pytest exited {code}; the launches it made are reported anyway)")
    return list(launches.values())


def _summary(r, shown=("COV", "STATS", "WRITE_LOG_NORM", "BLOCK_N", "BLOCK_D", "BLOCK_K", "BLOCK_J", "BLOCK",
                       "BLOCK_M", "ROWS", "INNER", "PRECISION", "PRECISION_S", "ALLK_J", "CENTERED")):
    consts = " ".join(f"{k}={r['const'][k]}" for k in shown if k in r["const"])
    x = r["types"].get("X") or r["types"].get("Q") or ""
    return f"{r['name']} {x} warps={r['options'].get('num_warps', 4)} {consts}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--python", help="the Python that compiles (its Triton is used); default: this one")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--variants", action="store_true",
                    help="the full-covariance E-step variants of sweep.py estep_split instead")
    ap.add_argument("--pytest", nargs=argparse.REMAINDER, help="record the launches of this pytest run instead")
    a = ap.parse_args(argv)
    launches = (pytest_launches(a.pytest) if a.pytest is not None else variant_launches() if a.variants
                else bench_launches())
    results = compile_launches(launches, arch=a.arch, python=a.python)
    bad = 0
    for r in sorted(results, key=lambda r: (r["name"], -(r.get("stack") or 0))):
        if not r["ok"]:
            bad += 1
            print(f"FAILS   {_summary(r)}: {r['error']}")
            continue
        flags = []
        if r["stack"]:
            flags.append(f"{r['stack']} B of local memory a thread, {r['local_stores']} STL / "
                         f"{r['local_loads']} LDL instructions (spills or local arrays)")
        if r["shared"] > H100_SHARED_BYTES:
            flags.append("shared memory over 227 KiB")
            bad += 1
        print(f"{'ok' if not flags else 'WARN':7s} {_summary(r)}: {r['regs']} registers, "
              f"{r['shared'] / 1024:.1f} KiB shared" + (f"; {'; '.join(flags)}" if flags else ""))
    print(f"{len(results)} launch configurations, sm_{a.arch}, Triton {results[0]['triton'] if results else '?'}: "
          f"{bad} fail, {sum(1 for r in results if r.get('stack'))} use local memory")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
