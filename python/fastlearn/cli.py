"""The ``fastlearn`` command: ``info``, ``bench`` (the main job) and ``demo``.

Demos are found, not listed here: any module ``fastlearn.<domain>.demo`` that defines
``DEMOS = {"name": function}`` adds ``fastlearn demo name``; the function takes the remaining
command-line arguments (a list of str), returns an exit code, and its docstring's first line
is the help text.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


def _cmd_info(args) -> int:
    from fastlearn._info import format_info, info

    d = info()
    print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    return 0


def _fmt_time(s):
    if s is None:
        return "-"
    for unit, f in (("s", 1), ("ms", 1e3), ("us", 1e6)):
        if s * f >= 1 or unit == "us":
            return f"{s * f:.3g} {unit}"
    return f"{s:.3g} s"


def format_table(rows: list[dict]) -> str:
    head = ["group", "case", "shape", "fastlearn", "baseline", "base time", "speedup", "of peak", "of copy"]
    body = []
    for r in rows:
        frac, copy = r.get("fraction_of_peak"), r.get("fraction_of_copy")
        body.append([
            r["group"], r["name"], r["shape"], _fmt_time(r["fastlearn_s"]), r["baseline"] or "-",
            _fmt_time(r["baseline_s"]), f"{r['speedup']:.2f}x" if r.get("speedup") else "-",
            f"{100 * frac:.0f}% {r['bound'][:3]}" if frac else "-", f"{100 * copy:.0f}%" if copy else "-",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("speedup")]
    labels = [f"{r['name']} {r['shape']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ax.barh(range(len(rows)), [r["speedup"] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over the baseline (log scale; > 1 is faster)")
    ax.set_title("fastlearn bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_bench(args) -> int:
    import platform

    import torch
    from tqdm import tqdm

    import fastlearn
    from fastlearn.bench.core import QUICK_ROUNDS, ROUNDS, discover, machine_peaks, run_case

    if args.threads:
        fastlearn.set_num_threads(args.threads)
    rounds = args.rounds if args.rounds is not None else (QUICK_ROUNDS if args.quick else ROUNDS)
    if rounds < 1:
        print(f"--rounds is {rounds}; it must be at least 1", file=sys.stderr)
        return 2
    cases = discover(quick=args.quick, pattern=args.filter, device=args.device)
    if not cases:
        what = f"{args.filter!r}" if args.filter else "the selection"
        print(f"no benchmark case matches {what} (device: {args.device or 'any'})", file=sys.stderr)
        return 2
    peaks = machine_peaks("cpu")
    rows = []
    try:
        for case in tqdm(cases, desc="bench", unit="case", file=sys.stderr, disable=args.no_progress):
            rows.append(run_case(case, min_time=args.min_time, rounds=rounds))
            if args.no_progress:  # a log: one line per finished case, so a killed run keeps them
                print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: showing the {len(rows)} finished case(s)", file=sys.stderr)
    print(format_table(rows))
    print(f"\nCPU peaks measured now: {peaks['bandwidth'] / 1e9:.1f} GB/s copy (read + write), "
          f"{peaks['flops_float32'] / 1e9:.0f} GFLOP/s f32 and {peaks['flops_float64'] / 1e9:.0f} GFLOP/s f64 "
          f"matrix product; {fastlearn.get_num_threads()} threads.")
    if any(r["device"] != "cpu" for r in rows):
        g = machine_peaks("cuda")
        print(f"GPU peaks measured now ({torch.cuda.get_device_name(0)}): {g['bandwidth'] / 1e9:.0f} GB/s copy, "
              f"{g['flops_float32'] / 1e12:.1f} TFLOP/s f32, {g['flops_bfloat16'] / 1e12:.0f} TFLOP/s bf16 "
              f"matrix product.")
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                "torch": torch.__version__, "fastlearn": fastlearn.__version__,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "threads": fastlearn.get_num_threads(), "peaks": {"cpu": peaks}}
        if torch.cuda.is_available():
            meta["peaks"]["cuda"] = machine_peaks("cuda")
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        _plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def find_demos() -> dict:
    import fastlearn

    demos = {}
    for mod in pkgutil.iter_modules(fastlearn.__path__):
        if not mod.ispkg or mod.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"fastlearn.{mod.name}.demo")
        except ModuleNotFoundError as e:
            if e.name == f"fastlearn.{mod.name}.demo":
                continue
            raise
        demos.update(getattr(module, "DEMOS", {}))
    return demos


def _cmd_demo(args) -> int:
    demos = find_demos()
    if not args.name or args.name not in demos:
        if args.name:
            print(f"unknown demo {args.name!r}", file=sys.stderr)
        print("demos:")
        for name, fn in sorted(demos.items()):
            print(f"  {name:14s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0 if not args.name else 2
    return int(demos[args.name](args.rest) or 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastlearn", description="fastlearn: fast ML kernels and models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what was built and what runs here")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("bench", help="fastlearn against the library you would otherwise use")
    p.add_argument("--quick", action="store_true", help="the quick subset (under two minutes on 2 cores)")
    p.add_argument("--filter", metavar="PATTERN", help="only cases whose group, name or shape contains PATTERN")
    p.add_argument("--device", choices=("cpu", "cuda"), help="only the cases that run on this device")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="also write a bar chart of the speedups (PNG)")
    p.add_argument("--min-time", type=float, default=0.15, help="seconds per timing batch (default 0.15)")
    p.add_argument("--rounds", type=int, help="alternating timing rounds a case (default 7; 3 with --quick)")
    p.add_argument("--threads", type=int, help="threads for fastlearn and torch (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("demo", help="run a demo (list them with no name)")
    p.add_argument("name", nargs="?")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
