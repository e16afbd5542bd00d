"""Triton kernels (plain Python). Each module holds ``_name_kernel`` functions and a launcher
whose docstring gives the shapes. Import them only where Triton is installed."""
