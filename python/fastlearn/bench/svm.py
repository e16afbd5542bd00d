"""Benchmark cases of the svm domain: SVC/SVR fit and predict against scikit-learn's SVC/SVR
(LIBSVM) on built-in data: digits, breast_cancer (scaled), diabetes, and make_classification
at 5k (quick), 20k and 50k samples with 32 features, RBF kernel, default C and gamma."""

from __future__ import annotations

from fastlearn.bench.core import Case


def _scaled(X):
    return (X - X.mean(0)) / X.std(0)


def _classification(n, d=32):
    from sklearn.datasets import make_classification

    def setup():
        return make_classification(n_samples=n, n_features=d, random_state=0)

    return setup


def _fit_case(name, shape, setup, quick, est="SVC", notes="", device="cpu"):
    import sklearn.svm as sk

    import fastlearn.svm as fsvm

    ours, ref = getattr(fsvm, est), getattr(sk, est)
    return Case(
        name=f"{est} fit {name}", shape=shape, setup=setup,
        fastlearn=lambda data: ours(device=device).fit(*data),
        baseline=lambda data: ref().fit(*data), baseline_name=f"sklearn {est}",
        quick=quick, device=device, notes=notes or "SMO work depends on the data (iterations x active set); no FLOP floor",
    )


def _predict_case(name, shape, setup, quick):
    import sklearn.svm as sk

    import fastlearn.svm as fsvm

    def fitted():
        X, y = setup()
        return X, fsvm.SVC(device="cpu").fit(X, y), sk.SVC().fit(X, y)

    return Case(
        name=f"SVC predict {name}", shape=shape, setup=fitted,
        fastlearn=lambda s: s[1].predict(s[0]), baseline=lambda s: s[2].predict(s[0]),
        baseline_name="sklearn SVC", quick=quick,
        notes="K(X, SV) by BLAS in float64, then one matrix-vector product per class pair",
    )


def cases(quick: bool = False) -> list[Case]:
    from sklearn import datasets

    def digits():
        return datasets.load_digits(return_X_y=True)

    def cancer():
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return _scaled(X), y

    def diabetes():
        X, y = datasets.load_diabetes(return_X_y=True)
        return _scaled(X), (y - y.mean()) / y.std()

    out = [
        _fit_case("digits", "1797x64, 10 classes", digits, quick=True,
                  notes="45 one-vs-one pairs share one kernel cache"),
        _fit_case("breast_cancer", "569x30 scaled", cancer, quick=True),
        _fit_case("make_classification", "5000x32", _classification(5000), quick=True),
        _fit_case("diabetes", "442x10 scaled", diabetes, quick=True, est="SVR"),
        _predict_case("digits", "1797x64", digits, quick=True),
    ]
    if not quick:
        out += [
            _fit_case("make_classification", "20000x32", _classification(20000), quick=False,
                      notes="the issue's 3x target: 2 cores, RBF, default C and gamma"),
            _fit_case("make_classification", "50000x32", _classification(50000), quick=False),
            _predict_case("make_classification", "20000x32", _classification(20000), quick=False),
        ]
    import torch

    if torch.cuda.is_available() and not quick:
        # The GPU target is 50x at n=100,000; scikit-learn needs tens of minutes there,
        # so the timed baseline runs at 50,000 and 100,000 is measured for fastlearn alone.
        out.append(_fit_case("make_classification", "50000x32 (GPU)", _classification(50000), quick=False,
                             device="cuda", notes="CUDA batched working-set SMO"))
        gpu_100k = _fit_case("make_classification", "100000x32 (GPU)", _classification(100000), quick=False,
                             device="cuda", notes="no baseline timed here (scikit-learn: tens of minutes)")
        gpu_100k.baseline = None
        out.append(gpu_100k)
    return out
