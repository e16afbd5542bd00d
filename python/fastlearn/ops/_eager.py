"""When a call may skip the torch dispatcher: a plain CPU tensor, no autograd to record, no
tracing, no active torch function/dispatch mode. Then the public op function calls the very
same CPU kernel directly, saving tens of microseconds of dispatch on small inputs; in every
other case it goes through torch.ops.fastlearn.* so autograd, torch.compile, FakeTensor and
modes see the op."""

from __future__ import annotations

import torch


def direct_cpu_call_ok(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():  # first: Dynamo folds it to True and traces no further
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if type(t) is not torch.Tensor or t.device.type != "cpu" or (grad and t.requires_grad):
            return False
    return True
