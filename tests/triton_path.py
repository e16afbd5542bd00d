"""Helpers of the tests of the estimators' GPU paths (mixture, cluster): where the Triton
kernels run, and the private switch that sends an estimator down that path."""

import torch

# Triton runs where the kernels can: on the GPU when there is one, else on CPU tensors under
# the interpreter (conftest sets TRITON_INTERPRET=1 there).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def T(a, **kw):
    """A tensor on the device the Triton kernels run on."""
    return torch.tensor(a, device=DEVICE, **kw)


def on_triton(est):
    """``est`` forced onto its GPU path (the Triton kernels) whatever its ``device``."""
    est._backend = "triton"
    return est
