"""Host-side integer helpers of the launch configurations. Since Triton 3.4,
``triton.next_power_of_2`` and ``triton.cdiv`` are ConstexprFunction wrappers that cost about
5 us a call on the host, and a small op's launch configuration calls them several times."""


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
