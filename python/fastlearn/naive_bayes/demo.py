"""Demo of naive_bayes: every classifier against scikit-learn's on the digits."""

from __future__ import annotations

import numpy as np


def naive_bayes(argv: list[str]) -> int:
    """Naive Bayes on the digits: accuracy and the largest predict_proba gap to scikit-learn."""
    import sklearn.naive_bayes as sknb
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import fastlearn.naive_bayes as flnb

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    for name in flnb.__all__:
        a, b = Xtr, Xte
        if name == "CategoricalNB":
            a, b = (Xtr // 4).astype(int), (Xte // 4).astype(int)
        ours = getattr(flnb, name)(**({"min_categories": 5} if name == "CategoricalNB" else {})).fit(a, ytr)
        ref = getattr(sknb, name)(**({"min_categories": 5} if name == "CategoricalNB" else {})).fit(a, ytr)
        gap = np.abs(ours.predict_proba(b) - ref.predict_proba(b)).max()
        print(f"{name:14s} test accuracy {ours.score(b, yte):.4f}   max |proba - sklearn| = {gap:.1e}")
    return 0


DEMOS = {"naive-bayes": naive_bayes}
