"""Noise schedules against the float64 reference (written from the papers' equations), the zero
terminal SNR rescale's defining properties, the SNR helpers, and argument errors."""

import math

import numpy as np
import pytest
import torch

from fastlearn.diffusion import (SCHEDULE_NAMES, alphas_cumprod, betas_for_schedule, log_snr,
                                 rescale_zero_terminal_snr, snr)
from tests.diffusion import scheduler_reference as ref


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("n", [10, 1000])
def test_schedule_matches_reference(name, n):
    betas = betas_for_schedule(name, n, 1e-4, 0.02)
    assert betas.dtype == np.float64 and betas.shape == (n,)
    # 1 - ratio of two alpha_bars near 1: absolute rounding ~1e-16
    np.testing.assert_allclose(betas, ref.betas(name, n, 1e-4, 0.02), rtol=1e-12, atol=1e-15)
    assert np.all((betas > 0) & (betas < 1))


def test_schedule_shapes_behave_as_published():
    n = 1000
    lin = betas_for_schedule("linear", n, 1e-4, 0.02)
    assert lin[0] == 1e-4 and abs(lin[-1] - 0.02) < 1e-15
    scaled = betas_for_schedule("scaled_linear", n, 0.00085, 0.012)
    assert abs(scaled[0] - 0.00085) < 1e-15 and abs(scaled[-1] - 0.012) < 1e-15
    assert np.all(np.diff(np.sqrt(scaled)) > 0) and np.allclose(np.diff(np.sqrt(scaled), 2), 0, atol=1e-15)
    cos = betas_for_schedule("cosine", n)
    np.testing.assert_array_equal(cos, betas_for_schedule("squaredcos_cap_v2", n))
    assert cos[-1] == 0.999                                            # the cap
    # alpha_bar of the cosine schedule is cos^2(((t/T + s) / (1 + s)) pi / 2) / f(0), closed form
    t = np.arange(1, n + 1)
    f = np.cos((t / n + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(alphas_cumprod(cos)[:-1], f[:-1], rtol=1e-10)
    # Chen's sigmoid: alpha_bar at t = 1/2 is (v_end - 1/2) / (v_end - v_start) for start = -end
    sig = betas_for_schedule("sigmoid", n)
    v_end = 1 / (1 + math.exp(-3.0))
    np.testing.assert_allclose(alphas_cumprod(sig)[n // 2 - 1], (v_end - 0.5) / (2 * v_end - 1), rtol=1e-10)
    # its start/end/tau parameters: alpha_bar at t = k/T is gamma(k/T) of Chen's Algorithm 1
    steep = betas_for_schedule("sigmoid", n, sigmoid_start=0.0, sigmoid_end=3.0, sigmoid_tau=0.5)
    k = np.array([1, 100, 250, 500, 900])

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    gamma = (sigmoid(6.0) - sigmoid(3.0 * k / n / 0.5)) / (sigmoid(6.0) - 0.5)
    np.testing.assert_allclose(alphas_cumprod(steep)[k - 1], gamma, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "sigmoid"])
def test_rescale_zero_terminal_snr(name):
    betas = betas_for_schedule(name, 1000, 0.00085, 0.012)
    out = rescale_zero_terminal_snr(betas)
    np.testing.assert_allclose(out, ref.rescale_zero_terminal_snr(betas), rtol=1e-10, atol=1e-15)
    ab_old, ab_new = alphas_cumprod(betas), alphas_cumprod(out)
    assert out[-1] == 1.0 and ab_new[-1] == 0.0                        # zero terminal SNR, exactly
    assert abs(ab_new[0] - ab_old[0]) < 1e-15                          # first unchanged
    # sqrt(alpha_bar) is an affine map of the old one
    a, b = np.polyfit(np.sqrt(ab_old), np.sqrt(ab_new), 1)
    np.testing.assert_allclose(np.sqrt(ab_new), a * np.sqrt(ab_old) + b, atol=1e-12)
    assert np.all((out[:-1] > 0) & (out[:-1] < 1))
    assert snr(ab_new)[-1] == 0.0 and log_snr(ab_new)[-1] == -np.inf


def test_snr_helpers_numpy_and_torch():
    betas = betas_for_schedule("linear", 1000)
    ab = alphas_cumprod(betas)
    np.testing.assert_allclose(ab, ref.alpha_bar(betas), rtol=1e-13)
    np.testing.assert_allclose(snr(ab), ab / (1 - ab), rtol=1e-14)
    np.testing.assert_allclose(log_snr(ab), np.log(ab / (1 - ab)), rtol=1e-12)
    assert np.all(np.diff(log_snr(ab)) < 0)
    tb = torch.tensor(betas, dtype=torch.float32)
    tab = alphas_cumprod(tb)
    assert isinstance(tab, torch.Tensor) and tab.dtype == torch.float64
    np.testing.assert_allclose(log_snr(tab).numpy(), log_snr(alphas_cumprod(tb.double().numpy())), rtol=1e-13)
    # log_snr stays accurate where alpha_bar is close to 1 (log1p, not log(1 - x))
    assert abs(log_snr(np.array([1 - 1e-12]))[0] - math.log((1 - 1e-12) / 1e-12)) < 1e-3


@pytest.mark.parametrize("call,exc,match", [
    (lambda: betas_for_schedule("cosin", 1000), ValueError, "valid names: linear, scaled_linear"),
    (lambda: betas_for_schedule("linear", 1000, 0.0, 0.02), ValueError, "beta_start must lie in"),
    (lambda: betas_for_schedule("linear", 1000, 1e-4, 1.5), ValueError, "beta_end must lie in"),
    (lambda: betas_for_schedule("linear", 1000, 1e-4, float("nan")), ValueError, "beta_end must be a finite"),
    (lambda: betas_for_schedule("linear", 1), ValueError, "at least 2"),
    (lambda: betas_for_schedule("linear", 10.0), TypeError, "num_train_timesteps must be an int"),
    (lambda: betas_for_schedule("sigmoid", 100, sigmoid_start=3, sigmoid_end=-3), ValueError, "sigmoid_end"),
    (lambda: betas_for_schedule("sigmoid", 100, sigmoid_tau=0), ValueError, "sigmoid_tau"),
    (lambda: betas_for_schedule("cosine", 100, cosine_s=-1), ValueError, "cosine_s"),
    (lambda: rescale_zero_terminal_snr([0.1, 1.2]), ValueError, "betas must lie in"),
    (lambda: rescale_zero_terminal_snr([[0.1, 0.2]]), ValueError, "1-D"),
    (lambda: rescale_zero_terminal_snr([0.1, float("inf")]), ValueError, "NaN or inf"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
