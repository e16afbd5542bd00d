"""Bad input gets scikit-learn-style errors that name the problem (never a crash or NaN)."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from fastlearn.svm import SVC, SVR

X = np.random.RandomState(0).randn(40, 3)
y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)


@pytest.mark.parametrize("Est", [SVC, SVR])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected(Est, bad):
    Xb = X.copy()
    Xb[3, 1] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        Est().fit(Xb, y)


def test_one_class():
    with pytest.raises(ValueError, match="greater than one; got 1 class"):
        SVC().fit(X, np.zeros(len(X)))


@pytest.mark.parametrize("Est", [SVC, SVR])
@pytest.mark.parametrize("params,match", [({"C": 0.0}, "'C' parameter"), ({"C": -1.0}, "'C' parameter"),
                                          ({"gamma": -0.5}, "'gamma' parameter"),
                                          ({"gamma": "large"}, "'gamma' parameter"),
                                          ({"tol": 0.0}, "'tol' parameter"), ({"cache_size": 0}, "'cache_size'"),
                                          ({"max_iter": -2}, "'max_iter'"), ({"kernel": "cubic"}, "'kernel'"),
                                          ({"device": "tpu"}, "'device'")])
def test_bad_hyperparameters(Est, params, match):
    with pytest.raises(ValueError, match=match):
        Est(**params).fit(X, y)


@pytest.mark.parametrize("Est", [SVC, SVR])
def test_wrong_feature_count_at_predict(Est):
    m = Est().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :2])


@pytest.mark.parametrize("Est", [SVC, SVR])
def test_empty_input(Est):
    with pytest.raises(ValueError, match="0 sample"):
        Est().fit(np.empty((0, 3)), np.empty(0))
    with pytest.raises(ValueError, match="0 feature"):
        Est().fit(np.empty((5, 0)), np.arange(5) % 2)


@pytest.mark.parametrize("Est", [SVC, SVR])
def test_not_fitted(Est):
    with pytest.raises(NotFittedError):
        Est().predict(X)


def test_precomputed_must_be_square():
    with pytest.raises(ValueError, match="square"):
        SVC(kernel="precomputed").fit(X, y)


def test_break_ties_with_ovo():
    m = SVC(decision_function_shape="ovo", break_ties=True).fit(X, y)
    with pytest.raises(ValueError, match="break_ties"):
        m.predict(X)


def test_all_zero_weights():
    with pytest.raises(ValueError, match="zero or negative weights"):
        SVC().fit(X, y, sample_weight=np.zeros(len(y)))


def test_iteration_bound_warns():
    Xh = np.random.RandomState(0).randn(300, 5)
    yh = (Xh[:, 0] * Xh[:, 1] > 0).astype(int)
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        m = SVC(max_iter=5).fit(Xh, yh)
    assert m.fit_status_ == 1 and m.n_iter_[0] == 5
    with pytest.warns(ConvergenceWarning):
        SVR(max_iter=3).fit(Xh, Xh[:, 0])


def test_cuda_without_gpu_says_why():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device='cpu'"):
        SVC(device="cuda").fit(X, y)
    with pytest.raises(RuntimeError, match="SVC only"):
        SVR(device="cuda").fit(X, y)


def test_huge_values_do_not_give_nan():
    Xh = X * 1e30
    with pytest.raises(ValueError, match="float32|large"):
        SVC(kernel="linear").fit(Xh, y)
