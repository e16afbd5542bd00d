"""Drop-in PyTorch ops, registered as ``torch.ops.fastlearn.*`` with CPU (C++), GPU
(Triton or CUDA), fake and autograd kernels. Each keeps the signature and semantics of the
PyTorch function it replaces. Every public module here lists its ops in ``__all__``; they
are gathered below, so adding an op family needs no edit to this file."""

import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
for _mod in _pkgutil.iter_modules(__path__):
    if _mod.name.startswith("_"):
        continue
    _module = _importlib.import_module(f"{__name__}.{_mod.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
