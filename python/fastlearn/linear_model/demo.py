"""Demos of linear_model: the perceptron against scikit-learn, and Bayesian linear regression
with an RBF basis and the evidence approximation (our notes' sinusoid example)."""

from __future__ import annotations

import time
import warnings

import numpy as np


def perceptron(argv: list[str]) -> int:
    """Perceptron fit on 100,000 x 100 data: fastlearn against scikit-learn (time, accuracy)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import Perceptron as SkPerceptron

    from fastlearn.linear_model import Perceptron

    n = int(argv[0]) if argv else 100_000
    for n_classes in (2, 5):
        X, y = make_classification(n, 100, n_informative=20, n_classes=n_classes, random_state=0)
        for name, cls in (("fastlearn", Perceptron), ("sklearn", SkPerceptron)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                est = cls(random_state=0).fit(X, y)
                dt = time.perf_counter() - t0
            print(f"{n_classes} classes  {name:9s} fit {dt:6.3f} s  epochs {est.n_iter_:3d}  "
                  f"train accuracy {est.score(X, y):.4f}")
    return 0


def bayes_regression(argv: list[str]) -> int:
    """Bayesian linear regression of sin(2 pi x) with 9 Gaussian basis functions (evidence)."""
    from fastlearn.linear_model import BayesianLinearRegression

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (25, 1))
    t = np.sin(2 * np.pi * x[:, 0]) + rng.normal(0, 0.2, 25)
    est = BayesianLinearRegression(basis="rbf", centers=np.linspace(0, 1, 9)[:, None], length_scale=0.1).fit(x, t)
    print(f"alpha = {est.alpha_:.4g}, beta = {est.beta_:.4g} (true 25), gamma = {est.gamma_:.3f} of 9, "
          f"log evidence = {est.log_evidence_:.3f}")
    xq = np.linspace(0, 1, 6)[:, None]
    mean, std = est.predict(xq, return_std=True)
    for xi, m, s in zip(xq[:, 0], mean, std):
        print(f"x = {xi:.2f}: {m:+.3f} +- {s:.3f}   (sin 2 pi x = {np.sin(2 * np.pi * xi):+.3f})")
    return 0


DEMOS = {"perceptron": perceptron, "bayes-regression": bayes_regression}
