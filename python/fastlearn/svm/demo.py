"""Demos of the svm domain: `fastlearn demo svm-compare` fits fastlearn's SVC and
scikit-learn's SVC on the same data and prints time, accuracy and support vector counts."""

from __future__ import annotations

import argparse
import time


def compare(argv: list[str]) -> int:
    """Fit fastlearn.svm.SVC and sklearn.svm.SVC on one data set and compare them."""
    import numpy as np
    import sklearn.svm as sk
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    from fastlearn.svm import SVC

    parser = argparse.ArgumentParser(prog="fastlearn demo svm-compare")
    parser.add_argument("--data", choices=["digits", "make_classification"], default="make_classification")
    parser.add_argument("--n", type=int, default=10000, help="samples for make_classification")
    parser.add_argument("--features", type=int, default=32)
    args = parser.parse_args(argv)
    if args.data == "digits":
        X, y = datasets.load_digits(return_X_y=True)
    else:
        X, y = datasets.make_classification(n_samples=args.n, n_features=args.features, random_state=0)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0)
    rows = []
    for name, est in (("fastlearn SVC", SVC(verbose=True)), ("sklearn SVC", sk.SVC())):
        t0 = time.perf_counter()
        est.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = float(np.mean(est.predict(X_te) == y_te))
        rows.append((name, fit_s, time.perf_counter() - t0, acc, int(est.n_support_.sum())))
    print(f"{'':16}{'fit s':>10}{'predict s':>12}{'accuracy':>10}{'n_SV':>8}")
    for name, fit_s, pred_s, acc, nsv in rows:
        print(f"{name:16}{fit_s:10.3f}{pred_s:12.3f}{acc:10.4f}{nsv:8d}")
    print(f"fit speedup: {rows[1][1] / rows[0][1]:.2f}x")
    return 0


DEMOS = {"svm-compare": compare}
