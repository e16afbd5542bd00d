"""GPU kernels shipped inside the wheel: ``fastlearn.kernels.triton.<name>``."""
