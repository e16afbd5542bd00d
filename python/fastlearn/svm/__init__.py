"""Support vector machines: SVC and SVR with scikit-learn's API on fastlearn's SMO solver
(C++ on the CPU, a batched working-set solver in CUDA on the GPU)."""

from fastlearn.svm._svc import SVC
from fastlearn.svm._svr import SVR

__all__ = ["SVC", "SVR", "load"]


def load(path):
    """Load an SVC or SVR saved with ``.save(path)`` (safetensors + JSON, no pickle)."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        kind = json.loads(f.metadata()["fastlearn"])["class"]
    classes = {"SVC": SVC, "SVR": SVR}
    if kind not in classes:
        raise ValueError(f"{path} does not hold a fastlearn SVC or SVR (found {kind!r}).")
    return classes[kind].load(path)
