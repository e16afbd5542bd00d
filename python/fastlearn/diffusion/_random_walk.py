"""The diffusion process in one dimension (Einstein's random walk): a particle jumps left with
probability p, right with q, else stays. Simulation of many particles at once, and the closed
forms: mean t (q - p), variance t (p + q - (q - p)^2), Gaussian in the limit of large t."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["RandomWalk", "random_walk", "random_walk_mean", "random_walk_variance", "plot_random_walk"]

# Largest positions array (entries) returned for "all times" without an explicit `times`.
_MAX_ALL_TIMES_ENTRIES = 20_000_000


class RandomWalk(NamedTuple):
    """``times`` (int64, [k]) and ``positions`` (int64, [k, n_particles]): row i holds every
    particle's position at ``times[i]``."""

    times: np.ndarray
    positions: np.ndarray


def _check_probabilities(p, q):
    for name, value in (("p", p), ("q", q)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite probability, got {value!r}.")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    if p + q > 1.0 + 1e-12:
        raise ValueError(f"p + q must be at most 1 (the rest is the probability of staying), got p={p}, q={q}.")
    return float(p), float(q)


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")
    return int(value)


def random_walk_mean(t, p, q, start=0):
    """E[X_t] = start + t (q - p)."""
    p, q = _check_probabilities(p, q)
    return start + np.asarray(t, dtype=np.float64) * (q - p)


def random_walk_variance(t, p, q):
    """Var[X_t] = t (p + q - (q - p)^2): t independent jumps of variance E[J^2] - E[J]^2."""
    p, q = _check_probabilities(p, q)
    return np.asarray(t, dtype=np.float64) * (p + q - (q - p) ** 2)


def random_walk(n_particles: int, n_steps: int, p: float, q: float, random_state=None, start: int = 0,
                times=None, progress: bool = False) -> RandomWalk:
    """Simulate ``n_particles`` independent walks of ``n_steps`` steps from ``start``.

    ``times``: the (sorted, distinct) times in [0, n_steps] at which to return positions. With
    ``times=None`` every time 0..n_steps is returned, which needs (n_steps + 1) * n_particles
    int64 entries and is refused above 20 million; pass ``times`` then. Between two requested
    times t_a < t_b the displacement is drawn exactly, without simulating each step: the numbers
    of left and right jumps among t_b - t_a steps are L ~ Binomial(t_b - t_a, p) and
    R | L ~ Binomial(t_b - t_a - L, q / (1 - p)), so the cost is O(n_particles * len(times)).
    ``random_state``: None, an int seed or a numpy Generator. ``progress`` shows a tqdm bar.
    """
    n_particles = _check_count("n_particles", n_particles, 1)
    n_steps = _check_count("n_steps", n_steps, 0)
    p, q = _check_probabilities(p, q)
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise TypeError(f"start must be an int position, got {start!r}.")
    rng = np.random.default_rng(random_state)
    if times is None:
        entries = (n_steps + 1) * n_particles
        if entries > _MAX_ALL_TIMES_ENTRIES:
            raise ValueError(f"returning all {n_steps + 1} times for {n_particles} particles needs {entries:,} "
                             f"positions ({entries * 8 / 2**20:.0f} MiB); pass times=[...] with the times you "
                             f"need (e.g. times=np.linspace(0, n_steps, 50, dtype=int)).")
        times = np.arange(n_steps + 1, dtype=np.int64)
    else:
        times = np.asarray(times)
        if times.ndim != 1 or times.size == 0 or times.dtype.kind not in "iu":
            raise ValueError(f"times must be a non-empty 1-D sequence of ints, got {times!r}.")
        times = times.astype(np.int64)
        if np.any(np.diff(times) <= 0) or times[0] < 0 or times[-1] > n_steps:
            raise ValueError(f"times must be strictly increasing and lie in [0, n_steps={n_steps}], "
                             f"got {times.tolist()[:10]}.")
    positions = np.empty((times.size, n_particles), dtype=np.int64)
    current = np.full(n_particles, start, dtype=np.int64)
    previous_time = 0
    # P(right | not left): R given L is binomial over the remaining steps.
    right_given_not_left = min(q / (1.0 - p), 1.0) if p < 1.0 else 0.0
    iterator = range(times.size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="random walk", unit="time")
    for i in iterator:
        gap = int(times[i]) - previous_time
        if gap == 1:
            u = rng.random(n_particles)
            current += np.where(u < p, -1, np.where(u < p + q, 1, 0))
        elif gap > 1:
            left = rng.binomial(gap, p, size=n_particles)
            right = rng.binomial(gap - left, right_given_not_left)
            current += right - left
        positions[i] = current
        previous_time = int(times[i])
    return RandomWalk(times, positions)


def plot_random_walk(walk: RandomWalk, p: float, q: float, start: int = 0, ax=None, n_paths: int = 20):
    """Plot a few particles' paths with the closed-form mean +- 2 standard deviations."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    t = walk.times
    ax.plot(t, walk.positions[:, :n_paths], lw=0.7, alpha=0.6)
    mean = random_walk_mean(t, p, q, start)
    sd = np.sqrt(random_walk_variance(t, p, q))
    ax.plot(t, mean, "k-", lw=1.5, label="mean t(q-p)")
    ax.fill_between(t, mean - 2 * sd, mean + 2 * sd, color="k", alpha=0.1, label="+-2 sd")
    ax.set_xlabel("t")
    ax.set_ylabel("position")
    ax.legend(loc="upper left")
    return ax
