"""Benchmark cases of the representations ops: softmax, log_softmax (forward and backward)
against torch's own, and one_hot against torch.nn.functional.one_hot."""

from __future__ import annotations

import torch

from fastlearn.bench.core import Case


def _softmax_case(rows, cols, log, quick, device="cpu", preallocated=True):
    """preallocated: both libraries write into an existing tensor (out=), so the time is the
    kernel's; otherwise each call allocates its output, and first-touch page faults of fresh
    memory (the same for both) dominate at large sizes."""
    import fastlearn.ops as flops

    def setup():
        torch.manual_seed(0)
        return torch.randn(rows, cols, device=device), torch.empty(rows, cols, device=device)

    fl = flops.log_softmax if log else flops.softmax
    ref = torch.log_softmax if log else torch.softmax
    name = "log_softmax" if log else "softmax"
    if preallocated:
        run_fl, run_ref = (lambda a: fl(a[0], -1, out=a[1])), (lambda a: ref(a[0], -1, out=a[1]))
    else:
        run_fl, run_ref = (lambda a: fl(a[0], -1)), (lambda a: ref(a[0], -1))
    return Case(
        name=f"{name} fwd" + ("" if preallocated else " (new output)"), shape=f"{rows}x{cols} f32", setup=setup,
        fastlearn=run_fl, baseline=run_ref, baseline_name=f"torch.{name}", bytes=2 * rows * cols * 4,
        bound="memory", device=device, quick=quick, notes="floor: read x once, write y once",
    )


def _softmax_bwd_case(rows, cols, quick, device="cpu"):
    import fastlearn.ops as flops

    def setup():
        torch.manual_seed(0)
        x = torch.randn(rows, cols, device=device)
        g = torch.randn(rows, cols, device=device)
        xf = x.clone().requires_grad_()
        xt = x.clone().requires_grad_()
        return xf, flops.softmax(xf, -1), xt, torch.softmax(xt, -1), g

    def fl(inp):
        xf, yf, _, _, g = inp
        return torch.autograd.grad(yf, xf, g, retain_graph=True)

    def base(inp):
        _, _, xt, yt, g = inp
        return torch.autograd.grad(yt, xt, g, retain_graph=True)

    return Case(name="softmax bwd", shape=f"{rows}x{cols} f32", setup=setup, fastlearn=fl, baseline=base,
                baseline_name="torch.softmax backward", bytes=3 * rows * cols * 4, device=device, quick=quick,
                notes="floor: read grad and y, write grad_x")


def cases(quick: bool = False) -> list[Case]:
    total = (32 << 20) if quick else (64 << 20)  # floats: 128 MiB quick, 256 MiB full (beyond L3)
    out = []
    for cols in (1024, 4096, 16384, 65536):
        out.append(_softmax_case(total // cols, cols, False, quick=True))
    out.append(_softmax_case(total // 4096, 4096, True, quick=True))
    out.append(_softmax_case(total // 4096, 4096, False, quick=True, preallocated=False))
    out.append(_softmax_bwd_case(total // 4096, 4096, quick=True))
    out.append(_softmax_case(32, 1000, False, quick=True, preallocated=False))  # small: call overhead dominates

    n = 1 << 18 if quick else 1 << 20

    def oh_setup():
        torch.manual_seed(0)
        return torch.randint(0, 100, (n,))

    import fastlearn.ops as flops

    out.append(Case(name="one_hot", shape=f"{n} labels x 100", setup=oh_setup,
                    fastlearn=lambda y: flops.one_hot(y, 100),
                    baseline=lambda y: torch.nn.functional.one_hot(y, 100),
                    baseline_name="F.one_hot", bytes=n * 8 + n * 100 * 8, quick=True))
    if torch.cuda.is_available():
        for cols in (1024, 8192, 65536):
            out.append(_softmax_case((256 << 20) // cols, cols, False, quick=True, device="cuda"))
        out.append(_softmax_bwd_case((256 << 20) // 8192, 8192, quick=True, device="cuda"))
        for rows, cols in ((32, 1000), (4096, 1024)):  # small: the call's host time counts
            out.append(_softmax_case(rows, cols, False, quick=True, preallocated=False, device="cuda"))
    return out
