"""Naive Bayes against scikit-learn's own classifiers: predict_proba within 1e-10 on digits,
iris, wine and random counts, in one fit and in partial_fit chunks, plus errors, save/load
and check_estimator."""

import numpy as np
import pytest
import sklearn.naive_bayes as sknb
import torch
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastlearn.naive_bayes as flnb

NAMES = ["GaussianNB", "MultinomialNB", "ComplementNB", "BernoulliNB", "CategoricalNB"]


def _counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    X = rng.poisson(lam=1.0 + y[:, None] * np.linspace(0, 1, 20)[None, :], size=(300, 20)).astype(np.float64)
    return X, y


DATASETS = {
    "digits": lambda: load_digits(return_X_y=True),
    "iris": lambda: load_iris(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "counts": _counts,
}


def _data(dataset, name):
    X, y = DATASETS[dataset]()
    if name == "CategoricalNB":  # category codes 0..4 per feature
        X = np.floor(X / np.maximum(X.max(0), 1e-12) * 4).astype(np.int64)
    return X, y


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_predict_proba_matches_sklearn(name, dataset):
    X, y = _data(dataset, name)
    ref = getattr(sknb, name)().fit(X, y)
    est = getattr(flnb, name)().fit(X, y)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(est.predict(X), ref.predict(X))
    np.testing.assert_allclose(est.class_count_, ref.class_count_)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_partial_fit_chunks_match_sklearn(name, dataset):
    X, y = _data(dataset, name)
    classes = np.unique(y)
    ref, est = getattr(sknb, name)(), getattr(flnb, name)()
    for idx in np.array_split(np.random.default_rng(1).permutation(len(y)), 5):
        ref.partial_fit(X[idx], y[idx], classes=classes)
        est.partial_fit(X[idx], y[idx], classes=classes)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-10)


def test_partial_fit_chunks_equal_one_fit():
    X, y = load_iris(return_X_y=True)
    full = flnb.MultinomialNB().fit(X, y)
    inc = flnb.MultinomialNB()
    for idx in np.array_split(np.arange(len(y)), 3):
        inc.partial_fit(X[idx], y[idx], classes=np.unique(y))
    np.testing.assert_allclose(inc.feature_log_prob_, full.feature_log_prob_, rtol=1e-13)
    g_full = flnb.GaussianNB(var_smoothing=0.0).fit(X, y)
    g_inc = flnb.GaussianNB(var_smoothing=0.0)
    for idx in np.array_split(np.random.default_rng(0).permutation(len(y)), 7):
        g_inc.partial_fit(X[idx], y[idx], classes=np.unique(y))
    np.testing.assert_allclose(g_inc.theta_, g_full.theta_, rtol=1e-12)
    np.testing.assert_allclose(g_inc.var_, g_full.var_, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_sample_weight_and_priors_match_sklearn(name):
    X, y = _data("wine", name)
    w = np.random.default_rng(2).uniform(0.1, 3.0, len(y))
    prior_kw = {"priors": [0.2, 0.5, 0.3]} if name == "GaussianNB" else {"class_prior": [0.2, 0.5, 0.3]}
    for kw in ({}, prior_kw):
        ref = getattr(sknb, name)(**kw).fit(X, y, sample_weight=w)
        est = getattr(flnb, name)(**kw).fit(X, y, sample_weight=w)
        np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["MultinomialNB", "ComplementNB", "BernoulliNB", "CategoricalNB"])
def test_alpha_fit_prior_norm_match_sklearn(name):
    X, y = _data("counts", name)
    extra = [{"norm": True}] if name == "ComplementNB" else []
    for kw in [{"alpha": 0.3}, {"fit_prior": False}, {"alpha": 0.0, "force_alpha": True}] + extra:
        ref = getattr(sknb, name)(**kw).fit(X, y)
        est = getattr(flnb, name)(**kw).fit(X, y)
        np.testing.assert_allclose(est.predict_log_proba(X), ref.predict_log_proba(X), rtol=1e-10, atol=1e-10)


def test_alpha_floor_warns_like_sklearn():
    X, y = _counts()
    with pytest.warns(UserWarning, match="alpha too small"):
        est = flnb.MultinomialNB(alpha=0.0, force_alpha=False).fit(X, y)
    ref = sknb.MultinomialNB(alpha=1e-10, force_alpha=True).fit(X, y)
    np.testing.assert_allclose(est.feature_log_prob_, ref.feature_log_prob_, rtol=1e-12)


def test_predict_log_proba_stable_for_extreme_inputs():
    X, y = load_iris(return_X_y=True)
    est = flnb.GaussianNB().fit(X, y)
    far = X[:5] * 1e4  # likelihoods underflow to 0 in linear space
    lp = est.predict_log_proba(far)
    assert np.all(np.isfinite(lp))
    ref = sknb.GaussianNB().fit(X, y).predict_log_proba(far)
    np.testing.assert_allclose(lp, ref, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, rtol=1e-12)


def test_gaussian_joint_log_likelihood_closed_form():
    X, y = load_wine(return_X_y=True)
    est = flnb.GaussianNB().fit(X, y)
    from scipy.stats import norm

    ref = np.stack([np.log(est.class_prior_[k]) + norm.logpdf(X, est.theta_[k], np.sqrt(est.var_[k])).sum(1)
                    for k in range(3)], 1)
    np.testing.assert_allclose(est.predict_joint_log_proba(X), ref, rtol=1e-12)
    # float32 input is read as float64 by the kernel
    np.testing.assert_allclose(est.predict_joint_log_proba(X.astype(np.float32)),
                               est.predict_joint_log_proba(X.astype(np.float32).astype(np.float64)), rtol=1e-12)


def test_torch_tensor_input():
    X, y = load_iris(return_X_y=True)
    est = flnb.GaussianNB().fit(torch.from_numpy(X), torch.from_numpy(y))
    ref = sknb.GaussianNB().fit(X, y)
    np.testing.assert_allclose(est.predict_proba(torch.from_numpy(X)), ref.predict_proba(X), atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_roundtrip(name, tmp_path):
    X, y = _data("wine", name)
    est = getattr(flnb, name)().fit(X, y)
    path = str(tmp_path / "model.safetensors")
    est.save(path)
    back = getattr(flnb, name).load(path)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    back.partial_fit(X[:10], y[:10])  # the counts survive, so learning continues
    with pytest.raises(ValueError, match="holds a"):
        flnb.GaussianNB.load(path) if name != "GaussianNB" else flnb.MultinomialNB.load(path)


def test_errors():
    X, y = _counts()
    with pytest.raises(ValueError, match="Negative values"):
        flnb.MultinomialNB().fit(-X, y)
    with pytest.raises(ValueError, match="Negative values"):
        flnb.ComplementNB().fit(-X, y)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    for name in NAMES:
        with pytest.raises(ValueError, match="NaN"):
            getattr(flnb, name)().fit(Xn, y)
    est = flnb.GaussianNB().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="only one class"):
        flnb.GaussianNB().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="only one class"):
        flnb.MultinomialNB().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="sum of the priors"):
        flnb.GaussianNB(priors=[0.5, 0.6, 0.1, 0.1]).fit(X, y)
    with pytest.raises(ValueError, match="classes must be passed"):
        flnb.MultinomialNB().partial_fit(X, y)
    with pytest.raises(ValueError, match="do not exist"):
        flnb.GaussianNB().partial_fit(X, y, classes=[0, 1, 2])
    cat = flnb.CategoricalNB().fit(np.array([[0], [1], [1], [0]]), [0, 1, 1, 0])
    with pytest.raises(ValueError, match="min_categories"):
        cat.predict(np.array([[5]]))
    with pytest.raises(ValueError, match="alpha"):
        flnb.MultinomialNB(alpha=-1.0).fit(X, y)


@parametrize_with_checks([getattr(flnb, n)() for n in NAMES])
def test_sklearn_compatible(estimator, check):
    check(estimator)
