"""Drop-in PyTorch ops, registered as ``torch.ops.fastlearn.*`` with CPU (C++), GPU
(Triton or CUDA), fake and autograd kernels. Each keeps the signature and semantics of the
PyTorch function it replaces."""

from fastlearn.ops.one_hot import one_hot
from fastlearn.ops.softmax import log_softmax, softmax

__all__ = ["softmax", "log_softmax", "one_hot"]
