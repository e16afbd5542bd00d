"""The digit judge: the Fréchet distance against SciPy's matrix square root, the classifier's
held-out accuracy, bounds that order real < generated-like < noise, determinism, bad input."""

import numpy as np
import pytest
import scipy.linalg

from fastlearn.nn.judge import NOT_A_DIGIT, DigitJudge, default_judge, frechet_distance


def _fd_reference(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * covmean)


def test_frechet_distance_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.5
    assert frechet_distance(a, b) == pytest.approx(_fd_reference(a, b), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # a pure shift adds its squared length
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0, 0, 0, 0])) == pytest.approx(5.0, rel=1e-8)
    with pytest.raises(ValueError, match="same number of columns"):
        frechet_distance(a, b[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_judge_accuracy_and_bounds(digits):
    X_tr, X_te, _, y_te = digits
    judge = default_judge()
    assert judge.accuracy_ > 0.95
    assert np.mean(judge.predict(X_te) == y_te) == judge.accuracy_
    noise = np.random.default_rng(0).uniform(size=(200, 64))
    assert np.mean(judge.predict(noise) == NOT_A_DIGIT) > 0.9
    report = judge.evaluate(X_te[:200], labels=y_te[:200])
    assert report.n_samples == 200 and sum(report.class_histogram) == 200
    for name, v in report.scores.items():
        assert set(v) == {"generated", "real", "noise"}, name
    # real images scored as "generated" match the real bound closely and are far from noise
    fd = report["frechet distance"]
    assert fd["generated"] < 3 * fd["real"] < 0.05 * fd["noise"]
    assert report["accuracy"]["generated"] > 0.95 > report["accuracy"]["noise"]
    assert report["recognised (p>=0.9)"]["noise"] < 0.05
    # a blurred digit set sits between the bounds
    blurred = 0.5 * X_te[:200] + 0.5 * X_te[:200].mean()
    fd_blur = judge.evaluate(blurred)["frechet distance"]["generated"]
    assert fd["generated"] < fd_blur < fd["noise"]
    assert "frechet distance" in str(report)


def test_judge_is_deterministic(digits):
    a = DigitJudge(random_state=0, epochs=3).fit()
    b = DigitJudge(random_state=0, epochs=3).fit()
    X = digits[1][:20]
    assert np.array_equal(a.features(X), b.features(X))


def test_judge_bad_input():
    judge = default_judge()
    with pytest.raises(ValueError, match="64 pixels"):
        judge.evaluate(np.zeros((5, 63)))
    with pytest.raises(ValueError, match="NaN"):
        judge.evaluate(np.full((5, 64), np.nan))
    with pytest.raises(ValueError, match="0 images"):
        judge.evaluate(np.zeros((0, 64)))
    with pytest.raises(ValueError, match="labels"):
        judge.evaluate(np.zeros((5, 64)), labels=[1, 2])
    with pytest.raises(RuntimeError, match="not trained"):
        DigitJudge().features(np.zeros((2, 64)))
    # 8x8 images are accepted as such
    assert judge.features(np.zeros((3, 8, 8))).shape == (3, 64)
