"""Demo of stats: the variance of MLEs by simulation against the Cramér–Rao bound."""

from __future__ import annotations


def cramer_rao(argv: list[str]) -> int:
    """Simulated variance of MLEs against the Cramér–Rao bound as n grows."""
    import fastlearn.stats as fs

    for dist, params in (("gaussian", [0.0, 4.0]), ("poisson", [3.0]), ("exponential", [2.0]),
                         ("gamma", [2.5, 1.5])):
        for n in (10, 100, 1000):
            r = fs.simulate_variance(dist, params, n, n_trials=4000, random_state=0)
            print(f"{dist:12s} n={n:5d}  var(MLE) = {r.covariance.diagonal()}  bound = {r.bound.diagonal()}  "
                  f"bound/var = {r.efficiency.round(3)}")
    return 0


DEMOS = {"cramer-rao": cramer_rao}
