"""Input conversion shared by the classic estimators: torch tensors (any device) become
NumPy arrays before scikit-learn's validation sees them; everything else passes through."""

from __future__ import annotations


def to_numpy(x):
    """A torch tensor as a NumPy array (detached, on the CPU); other inputs unchanged."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x
