"""Benchmark cases of the classic estimators (issue 6) against scikit-learn: Perceptron fit,
the naive Bayes classifiers' fit and predict, and BayesianLinearRegression against
BayesianRidge. Same data, same process, interleaved by the runner."""

from __future__ import annotations

import warnings

import numpy as np

from fastlearn.bench.core import Case


def _quiet(fn):
    def call(inputs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(inputs)
    return call


def _perceptron_case(n, d, n_classes, quick, epochs=None):
    def setup():
        from sklearn.datasets import make_classification

        return make_classification(n, d, n_informative=d // 5, n_classes=n_classes, random_state=0)

    def fl(data):
        from fastlearn.linear_model import Perceptron

        # three seeds per call: the epoch count the stopping rule picks varies with the shuffle
        return [Perceptron(random_state=s, **kw).fit(*data) for s in range(3)]

    def base(data):
        from sklearn.linear_model import Perceptron

        return [Perceptron(random_state=s, **kw).fit(*data) for s in range(3)]

    kw = {} if epochs is None else {"max_iter": epochs, "tol": None}

    # One epoch reads X once per one-vs-rest problem; the epoch count is the stopping rule's.
    name = "Perceptron fit x3 seeds" if epochs is None else f"Perceptron fit x3 seeds, {epochs} epochs"
    return Case(name=name, shape=f"{n}x{d} f64, {n_classes} classes", setup=setup, fastlearn=_quiet(fl),
                baseline=_quiet(base), baseline_name="sklearn Perceptron", bytes=3 * n * d * 8 * (epochs or 1), quick=quick,
                notes="default tol stopping; epoch counts differ with the shuffle; floor = one pass over X")


def _gnb_predict_case(n, d, k, quick):
    def setup():
        from sklearn.naive_bayes import GaussianNB as SkGNB

        from fastlearn.naive_bayes import GaussianNB

        rng = np.random.default_rng(0)
        y = rng.integers(0, k, n)
        X = rng.normal(size=(n, d)) + y[:, None] * 0.1
        return X, GaussianNB().fit(X, y), SkGNB().fit(X, y)

    return Case(name="GaussianNB predict_proba", shape=f"{n}x{d} f64, {k} classes", setup=setup,
                fastlearn=lambda a: a[1].predict_proba(a[0]), baseline=lambda a: a[2].predict_proba(a[0]),
                baseline_name="sklearn GaussianNB", flops=3.0 * n * d * k, bytes=n * d * 8, quick=quick,
                bound="memory", dtype="float64")


def _nb_fit_case(name, n, d, k, quick):
    def setup():
        rng = np.random.default_rng(0)
        y = rng.integers(0, k, n)
        if name == "CategoricalNB":
            X = rng.integers(0, 5, size=(n, d))
        elif name == "GaussianNB":
            X = rng.normal(size=(n, d))
        else:
            X = rng.poisson(1.0, size=(n, d)).astype(np.float64)
        return X, y

    import sklearn.naive_bayes as sknb

    import fastlearn.naive_bayes as flnb

    return Case(name=f"{name} fit+predict_proba", shape=f"{n}x{d}, {k} classes", setup=setup,
                fastlearn=lambda a: getattr(flnb, name)().fit(*a).predict_proba(a[0]),
                baseline=lambda a: getattr(sknb, name)().fit(*a).predict_proba(a[0]),
                baseline_name=f"sklearn {name}", bytes=n * d * 8, quick=quick)


def _blr_case(n, d, quick):
    def setup():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(n, d))
        return X, X @ rng.normal(size=d) + 0.5 * rng.normal(size=n)

    def fl(a):
        from fastlearn.linear_model import BayesianLinearRegression

        return BayesianLinearRegression().fit(*a)

    def base(a):
        from sklearn.linear_model import BayesianRidge

        return BayesianRidge(alpha_1=1e-12, alpha_2=1e-12, lambda_1=1e-12, lambda_2=1e-12).fit(*a)

    return Case(name="BayesianLinearRegression fit (evidence)", shape=f"{n}x{d} f64", setup=setup,
                fastlearn=_quiet(fl), baseline=_quiet(base), baseline_name="sklearn BayesianRidge",
                flops=2.0 * n * d * d, bytes=n * d * 8, bound="compute", dtype="float64", quick=quick)


def cases(quick: bool = False) -> list[Case]:
    out = [
        _perceptron_case(10_000, 100, 2, quick=True),
        _perceptron_case(100_000, 100, 2, quick=False),
        _perceptron_case(100_000, 100, 5, quick=False),
        _perceptron_case(100_000, 100, 2, quick=False, epochs=10),
        _perceptron_case(100_000, 100, 5, quick=False, epochs=10),
        _gnb_predict_case(20_000, 50, 10, quick=True),
        _gnb_predict_case(200_000, 100, 10, quick=False),
        _blr_case(5_000, 50, quick=True),
        _blr_case(50_000, 100, quick=False),
    ]
    for name in ("GaussianNB", "MultinomialNB", "ComplementNB", "BernoulliNB", "CategoricalNB"):
        out.append(_nb_fit_case(name, 5_000, 30, 5, quick=name in ("MultinomialNB", "GaussianNB")))
    return out
