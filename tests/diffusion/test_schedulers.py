"""DDPM and DDIM schedulers: every step against the float64 NumPy reference (sweep over schedules,
prediction types, spacings, clipping, thresholding, eta, variance types, steps_offset,
set_alpha_to_one, zero terminal SNR), the fused-step coefficient table against step(), DDIM
inversion round trips with the exact Gaussian-data denoiser, diffusers' outputs (when
diffusers is installed) and the documented differences, dtypes, and argument errors."""

import itertools
import math

import numpy as np
import pytest
import torch

from fastlearn.diffusion import DDIMScheduler, DDPMScheduler
from tests.diffusion import scheduler_reference as ref

N_TRAIN = 1000
# 7 steps: 'leading' spaced by 142, 'linspace' and 'trailing' unevenly spaced.
N_STEPS = 7
SCHEDULES = [("linear", False), ("scaled_linear", False), ("squaredcos_cap_v2", False), ("sigmoid", False),
             ("linear", True)]                                        # (name, rescale_betas_zero_snr)
SCHEDULE_IDS = ["linear", "scaled_linear", "cosine", "sigmoid", "linear-zero-snr"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
SPACINGS = ["leading", "trailing", "linspace"]
# clip / dynamic thresholding (ratio and max value chosen so that the threshold is active and
# differs from plain clipping)
X0_MODES = {"none": dict(clip_sample=False), "clip": dict(clip_sample=True, clip_sample_range=1.5),
            "threshold": dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=3.0)}


def assert_close(actual, expected, rtol=1e-6, what=""):
    actual = actual.detach().cpu().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    scale = max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3 * scale, err_msg=what)


def reference_table(schedule, zero_snr):
    betas = ref.betas(schedule, N_TRAIN)
    if zero_snr:
        betas = ref.rescale_zero_terminal_snr(betas)
    return ref.alpha_bar(betas)


def draws(seed, shape=(2, 3, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 for _ in range(3)]


def sweep_configs(schedule_index, prediction):
    name, zero_snr = SCHEDULES[schedule_index]
    if zero_snr and prediction == "epsilon":
        pytest.skip("zero terminal SNR with epsilon prediction is an error (tested below)")
    return name, zero_snr


@pytest.mark.parametrize("schedule_index", range(len(SCHEDULES)), ids=SCHEDULE_IDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_steps_match_reference(schedule_index, prediction, spacing):
    name, zero_snr = sweep_configs(schedule_index, prediction)
    ab = reference_table(name, zero_snr)
    # every x0 mode with (steps_offset, set_alpha_to_one) = (0, True) and (1, False)
    for (mode, x0_args), (offset, alpha_one) in itertools.product(X0_MODES.items(), [(0, True), (1, False)]):
        sched = DDIMScheduler(beta_schedule=name, prediction_type=prediction, timestep_spacing=spacing,
                              steps_offset=offset, set_alpha_to_one=alpha_one, rescale_betas_zero_snr=zero_snr,
                              **x0_args)
        sched.set_timesteps(N_STEPS)
        grid = ref.timesteps(N_TRAIN, N_STEPS, spacing, offset)
        assert sched.timesteps.tolist() == grid and sched.timesteps.dtype == torch.int64
        cfg = dict(sched.config)
        for k, t in enumerate(grid):
            x, m, z = draws(1000 * k + offset)
            for eta, clipped in [(0.0, False), (1.0, False), (0.5, True)]:
                out = sched.step(m, t, x, eta=eta, use_clipped_model_output=clipped, variance_noise=z)
                want_prev, want_x0 = ref.ddim_step(cfg, ab, grid, t, m.numpy(), x.numpy(), eta, z.numpy(), clipped)
                what = f"{mode} offset={offset} alpha_one={alpha_one} t={t} eta={eta} clipped={clipped}"
                assert_close(out.pred_original_sample, want_x0, what=what)
                assert_close(out.prev_sample, want_prev, what=what)


@pytest.mark.parametrize("schedule_index", range(len(SCHEDULES)), ids=SCHEDULE_IDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddpm_steps_match_reference(schedule_index, prediction, spacing):
    name, zero_snr = sweep_configs(schedule_index, prediction)
    ab = reference_table(name, zero_snr)
    variance_types = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
    # every x0 mode with every variance type; steps_offset alternates
    for i, ((mode, x0_args), variance_type) in enumerate(itertools.product(X0_MODES.items(), variance_types)):
        offset = i % 2
        sched = DDPMScheduler(beta_schedule=name, prediction_type=prediction, timestep_spacing=spacing,
                              steps_offset=offset, variance_type=variance_type, rescale_betas_zero_snr=zero_snr,
                              **x0_args)
        sched.set_timesteps(N_STEPS)
        grid = ref.timesteps(N_TRAIN, N_STEPS, spacing, offset)
        assert sched.timesteps.tolist() == grid
        cfg = dict(sched.config)
        for k, t in enumerate(grid):
            x, m, z = draws(1000 * k + offset)
            predicted_variance = None
            if variance_type == "learned":
                predicted_variance = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
            elif variance_type == "learned_range":
                predicted_variance = 2 * torch.rand(x.shape, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(k)) - 1
            output = m if predicted_variance is None else torch.cat([m, predicted_variance], dim=1)
            out = sched.step(output, t, x, variance_noise=z)
            want_prev, want_x0 = ref.ddpm_step(cfg, ab, grid, t, m.numpy(), x.numpy(), z.numpy(),
                                               None if predicted_variance is None else predicted_variance.numpy())
            what = f"{mode} offset={offset} variance={variance_type} t={t}"
            assert_close(out.pred_original_sample, want_x0, what=what)
            assert_close(out.prev_sample, want_prev, what=what)
            assert torch.isfinite(out.prev_sample).all()


def test_ddpm_full_schedule_without_set_timesteps():
    sched = DDPMScheduler(clip_sample=False)
    assert sched.timesteps.tolist() == list(range(999, -1, -1)) and sched.num_inference_steps is None
    ab = reference_table("linear", False)
    grid = list(range(999, -1, -1))
    for t in [999, 500, 1, 0]:
        x, m, z = draws(t)
        out = sched.step(m, t, x, variance_noise=z)
        want_prev, want_x0 = ref.ddpm_step(dict(sched.config), ab, grid, t, m.numpy(), x.numpy(), z.numpy())
        assert_close(out.prev_sample, want_prev)
        assert sched.previous_timestep(t) == t - 1


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n_steps", [1, 3, 10, 48, 61, 333, 1000])
def test_timesteps_match_reference(spacing, n_steps):
    for cls in (DDPMScheduler, DDIMScheduler):
        sched = cls(timestep_spacing=spacing)
        sched.set_timesteps(n_steps)
        got = sched.timesteps.tolist()
        assert got == ref.timesteps(N_TRAIN, n_steps, spacing)
        assert len(got) == n_steps and len(set(got)) == n_steps and 0 <= min(got) and max(got) < N_TRAIN
        assert sched.previous_timestep(got[-1]) == -1
        if n_steps > 1:
            assert sched.previous_timestep(got[0]) == got[1]


# --- the fused-step coefficient table ------------------------------------------------------

def fused_step(row, m, x, z, clip):
    """The fused step, written out in plain torch from the column definitions."""
    ax, am, ex, em, e0, p0, px, pe, sigma = row.tolist()
    x0 = ax * x + am * m
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    eps = ex * x + em * m + e0 * x0
    return p0 * x0 + px * x + pe * eps + sigma * z, x0


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_fused_coefficients_reproduce_step(prediction, clip, spacing):
    zero_snr = prediction == "v_prediction"
    schedulers = [DDPMScheduler(prediction_type=prediction, clip_sample=clip, variance_type=v, timestep_spacing=spacing,
                                rescale_betas_zero_snr=zero_snr)
                  for v in ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")]
    schedulers += [DDIMScheduler(prediction_type=prediction, clip_sample=clip, timestep_spacing=spacing,
                                 set_alpha_to_one=a, rescale_betas_zero_snr=zero_snr) for a in (True, False)]
    for sched in schedulers:
        sched.set_timesteps(N_STEPS)
        settings = [(0.0, False)] if isinstance(sched, DDPMScheduler) else [(0.0, False), (1.0, False), (1.0, True),
                                                                             (0.0, True)]
        assert sched.fused_supported() and sched.fused_clip == (1.0 if clip else None)
        for eta, clipped in settings:
            kwargs = {} if isinstance(sched, DDPMScheduler) else dict(eta=eta, use_clipped_model_output=clipped)
            table = sched.fused_coefficients(dtype=torch.float64, **kwargs)
            assert table.shape == (N_STEPS, 9) and table.dtype == torch.float64
            f32 = sched.fused_coefficients(**kwargs)
            assert f32.dtype == torch.float32 and torch.equal(f32, table.float())
            for k, t in enumerate(sched.timesteps):
                x, m, z = draws(k)
                out = sched.step(m, t, x, variance_noise=z, **kwargs)
                prev, x0 = fused_step(table[k], m, x, z, sched.fused_clip)
                what = f"{type(sched).__name__} {dict(sched.config)} eta={eta} clipped={clipped} t={int(t)}"
                assert_close(x0, out.pred_original_sample.numpy(), rtol=1e-10, what=what)
                assert_close(prev, out.prev_sample.numpy(), rtol=1e-10, what=what)
            if isinstance(sched, DDIMScheduler):
                assert torch.all(table[:, 6] == 0)                   # px
            else:
                assert torch.all(table[:, [2, 3, 4, 7]] == 0) and table[-1, 8] == 0


def test_fused_unsupported_configurations():
    sched = DDPMScheduler(variance_type="learned_range")
    assert not sched.fused_supported()
    with pytest.raises(NotImplementedError, match="scheduler.step"):
        sched.fused_coefficients()
    sched = DDIMScheduler(thresholding=True)
    sched.set_timesteps(10)
    assert not sched.fused_supported(0.0) and sched.fused_clip is None
    with pytest.raises(NotImplementedError, match="thresholding"):
        sched.fused_coefficients()
    sched = DDIMScheduler()
    sched.set_timesteps(10)
    assert sched.fused_supported(1.0) and not sched.fused_supported(-1.0)
    with pytest.raises(ValueError, match="eta"):
        DDPMScheduler().fused_coefficients(eta=1.0)


# --- DDIM inversion -------------------------------------------------------------------------

MU, S = 0.3, 0.5


def gaussian_eps(sched, x, t):
    return ref.gaussian_data_eps(x, float(sched.alphas_cumprod[t]), MU, S)


def test_gaussian_denoiser_is_the_posterior_mean_of_the_noise():
    # check the analytic predictor by Monte Carlo: regress eps on x_t
    g = torch.Generator().manual_seed(0)
    ab = 0.4
    x0 = MU + S * torch.randn(400_000, generator=g, dtype=torch.float64)
    eps = torch.randn(400_000, generator=g, dtype=torch.float64)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    slope, intercept = np.polyfit(xt.numpy(), eps.numpy(), 1)
    analytic_slope = ref.gaussian_data_eps(1.0, ab, MU, S) - ref.gaussian_data_eps(0.0, ab, MU, S)
    assert abs(slope - analytic_slope) < 5e-3 and abs(intercept - ref.gaussian_data_eps(0.0, ab, MU, S)) < 5e-3


def round_trip(n_steps, spacing="leading", refine=0):
    sched = DDIMScheduler(clip_sample=False, timestep_spacing=spacing)
    sched.set_timesteps(n_steps)
    x0 = MU + S * torch.randn(8, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = x0.clone()
    for t in reversed(sched.timesteps.tolist()):
        source = x
        x = sched.inversion_step(gaussian_eps(sched, source, t), t, source).next_sample
        for _ in range(refine):  # fixed point: evaluate the model at the x being solved for
            x = sched.inversion_step(gaussian_eps(sched, x, t), t, source).next_sample
    latent = x
    for t in sched.timesteps.tolist():
        x = sched.step(gaussian_eps(sched, x, t), t, x).prev_sample
    return float((x - x0).norm() / x0.norm()), latent


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_inversion_round_trip(spacing):
    # The plain inversion evaluates the model at the less noisy sample: first-order accurate, the
    # relative round-trip error is < 0.06 at 50 steps and halves when the steps double.
    err50, latent = round_trip(50, spacing)
    err100, _ = round_trip(100, spacing)
    assert err50 < 0.06 and err100 < 0.03 and 1.8 < err50 / err100 < 2.2
    assert abs(float(latent.std()) - 1.0) < 0.05                        # the latent looks like N(0, 1) noise
    # With the model evaluated at the solved-for x (fixed point), inversion is the exact inverse
    # of step: the round trip is exact to rounding.
    err_exact, _ = round_trip(50, spacing, refine=30)
    assert err_exact < 1e-9


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_inversion_step_inverts_step_for_a_fixed_output(prediction):
    sched = DDIMScheduler(clip_sample=False, prediction_type=prediction, timestep_spacing="trailing",
                          rescale_betas_zero_snr=prediction == "v_prediction")
    sched.set_timesteps(13)
    for t in sched.timesteps.tolist():
        x, m, _ = draws(t)
        prev = sched.step(m, t, x).prev_sample
        back = sched.inversion_step(m, t, prev)
        if prediction == "epsilon":
            assert_close(back.next_sample, x.numpy(), rtol=1e-10)
            assert torch.equal(back.prev_sample, back.next_sample) and back[0] is back.next_sample
        else:
            # v is converted at the source level: compare with the reference formula
            ab = sched.alphas_cumprod.numpy()
            grid = sched.timesteps.tolist()
            k = grid.index(t)
            a_src = ab[grid[k + 1]] if k + 1 < len(grid) else 1.0
            x0 = ref.predicted_x0("v_prediction", m.numpy(), prev.numpy(), a_src)
            eps = ref.predicted_eps("v_prediction", m.numpy(), prev.numpy(), a_src)
            assert_close(back.next_sample, math.sqrt(ab[t]) * x0 + math.sqrt(1 - ab[t]) * eps, rtol=1e-10)


def test_inversion_with_sample_prediction_from_clean_level_raises():
    sched = DDIMScheduler(prediction_type="sample")
    sched.set_timesteps(10)
    x, m, _ = draws(0)
    with pytest.raises(ValueError, match="set_alpha_to_one=False"):
        sched.inversion_step(m, sched.timesteps[-1], x)
    sched = DDIMScheduler(prediction_type="sample", set_alpha_to_one=False)
    sched.set_timesteps(10)
    assert torch.isfinite(sched.inversion_step(m, sched.timesteps[-1], x).next_sample).all()


# --- zero terminal SNR ----------------------------------------------------------------------

def test_zero_snr_with_epsilon_raises():
    for cls in (DDPMScheduler, DDIMScheduler):
        with pytest.raises(ValueError, match="v_prediction"):
            cls(rescale_betas_zero_snr=True)
        with pytest.raises(ValueError, match="prediction_type='epsilon'"):
            cls(trained_betas=[0.1] * 9 + [1.0], num_train_timesteps=10)


def test_zero_snr_v_prediction_first_step_from_pure_noise():
    sched = DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing",
                          clip_sample=False)
    sched.set_timesteps(10)
    assert sched.timesteps[0] == 999 and float(sched.alphas_cumprod[999]) == 0.0
    x, v, _ = draws(3)
    out = sched.step(v, 999, x)
    # at alpha_bar = 0: x0 = -v, eps = x
    assert_close(out.pred_original_sample, -v.numpy(), rtol=1e-12)
    ab_prev = float(sched.alphas_cumprod[sched.timesteps[1]])
    assert_close(out.prev_sample, (-math.sqrt(ab_prev) * v + math.sqrt(1 - ab_prev) * x).numpy(), rtol=1e-12)
    ddpm = DDPMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
    ddpm.set_timesteps(10)
    assert torch.isfinite(ddpm.step(v, 999, x, generator=torch.Generator().manual_seed(0)).prev_sample).all()


# --- noising ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_add_noise_and_velocity(dtype):
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, noise, _ = (d.to(dtype) for d in draws(5))
    t = torch.tensor([0, 999])
    ab = ref.alpha_bar(ref.betas("scaled_linear", N_TRAIN, 0.00085, 0.012))[t.numpy()].reshape(2, 1, 1, 1)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    noisy = sched.add_noise(x0, noise, t)
    assert noisy.dtype == dtype
    assert_close(noisy, np.sqrt(ab) * x0.double().numpy() + np.sqrt(1 - ab) * noise.double().numpy(), rtol=rtol)
    v = sched.get_velocity(x0, noise, t)
    assert_close(v, np.sqrt(ab) * noise.double().numpy() - np.sqrt(1 - ab) * x0.double().numpy(), rtol=rtol)
    # a single timestep broadcasts; the v target inverts through the scheduler's x0 recovery
    single = sched.add_noise(x0, noise, 500)
    assert_close(single, sched.add_noise(x0, noise, torch.tensor([500, 500])).double().numpy(), rtol=1e-15)
    assert sched.scale_model_input(x0, 3) is x0 and sched.init_noise_sigma == 1.0


def test_v_target_recovers_x0_through_step():
    sched = DDIMScheduler(prediction_type="v_prediction", clip_sample=False)
    sched.set_timesteps(20)
    x0, noise, _ = draws(9)
    t = int(sched.timesteps[4])
    xt = sched.add_noise(x0, noise, torch.tensor([t, t]))
    v = sched.get_velocity(x0, noise, torch.tensor([t, t]))
    assert_close(sched.step(v, t, xt).pred_original_sample, x0.numpy(), rtol=1e-12)


# --- dtypes and devices -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_low_precision_steps_keep_their_dtype(dtype, rtol):
    sched = DDIMScheduler(clip_sample=False, prediction_type="v_prediction")
    sched.set_timesteps(10)
    x, m, z = draws(4)
    for t in sched.timesteps.tolist():
        want = sched.step(m, t, x, eta=1.0, variance_noise=z).prev_sample
        got = sched.step(m.to(dtype), t, x.to(dtype), eta=1.0, variance_noise=z.to(dtype)).prev_sample
        assert got.dtype == dtype
        # error of the rounded inputs plus one rounding of the output
        scale = float(want.abs().max())
        assert float((got.double() - want).abs().max()) < rtol * 4 * scale


def test_timestep_tensors_and_devices():
    sched = DDIMScheduler()
    sched.set_timesteps(10, device="cpu")
    assert sched.timesteps.device.type == "cpu"
    x, m, _ = draws(1)
    a = sched.step(m, sched.timesteps[0], x).prev_sample
    b = sched.step(m, int(sched.timesteps[0]), x).prev_sample
    c = sched.step(m, np.int64(sched.timesteps[0]), x, return_dict=False)[0]
    assert torch.equal(a, b) and torch.equal(a, c)


def test_generators():
    sched = DDPMScheduler()
    sched.set_timesteps(10)
    x, m, _ = draws(2)
    t = int(sched.timesteps[0])
    a = sched.step(m, t, x, generator=torch.Generator().manual_seed(4)).prev_sample
    b = sched.step(m, t, x, generator=torch.Generator().manual_seed(4)).prev_sample
    assert torch.equal(a, b)
    gens = [torch.Generator().manual_seed(4), torch.Generator().manual_seed(5)]
    c = sched.step(m, t, x, generator=gens).prev_sample
    d = sched.step(m[1:], t, x[1:], generator=torch.Generator().manual_seed(5)).prev_sample
    assert torch.equal(c[1], d[0]) and not torch.equal(c[1], a[1])
    with pytest.raises(ValueError, match="one per sample"):
        sched.step(m, t, x, generator=gens * 2)
    with pytest.raises(ValueError, match="not both"):
        sched.step(m, t, x, generator=gens[0], variance_noise=torch.zeros_like(x))


@pytest.mark.cuda
def test_cuda_steps_match_cpu():
    for sched in (DDPMScheduler(clip_sample=False), DDIMScheduler(prediction_type="v_prediction")):
        sched.set_timesteps(10, device="cuda")
        assert sched.timesteps.device.type == "cuda"
        x, m, z = draws(6)
        for t in sched.timesteps:
            kwargs = dict(eta=1.0) if isinstance(sched, DDIMScheduler) else {}
            want = sched.step(m, t, x, variance_noise=z, **kwargs).prev_sample
            got = sched.step(m.cuda().float(), t, x.cuda().float(), variance_noise=z.cuda().float(), **kwargs)
            assert got.prev_sample.device.type == "cuda" and got.prev_sample.dtype == torch.float32
            assert float((got.prev_sample.double().cpu() - want).abs().max()) < 1e-4 * float(want.abs().max())
        table = sched.fused_coefficients(device="cuda")
        assert table.device.type == "cuda" and table.dtype == torch.float32
        noisy = sched.add_noise(x.cuda(), z.cuda(), torch.tensor([3, 700], device="cuda"))
        assert torch.allclose(noisy.cpu(), sched.add_noise(x, z, torch.tensor([3, 700])))
    th = DDIMScheduler(thresholding=True, sample_max_value=3.0, dynamic_thresholding_ratio=0.9)
    th.set_timesteps(10)
    x, m, _ = draws(7)
    t = int(th.timesteps[0])
    assert torch.allclose(th.step(m.cuda(), t, x.cuda()).prev_sample.cpu(), th.step(m, t, x).prev_sample)


# --- config -----------------------------------------------------------------------------------

def test_config_round_trip(tmp_path):
    sched = DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction", steps_offset=1)
    assert sched.config.steps_offset == 1 and sched.config["beta_schedule"] == "scaled_linear"
    with pytest.raises(AttributeError, match="read-only"):
        sched.config.steps_offset = 2
    sched.save_pretrained(tmp_path)
    again = DDIMScheduler.from_pretrained(tmp_path)
    assert dict(again.config) == dict(sched.config)
    ddpm = DDPMScheduler.from_config(sched.config, variance_type="fixed_large")
    assert ddpm.config.prediction_type == "v_prediction" and ddpm.variance_type == "fixed_large"
    assert torch.equal(ddpm.alphas_cumprod, sched.alphas_cumprod) and sched.alphas_cumprod.dtype == torch.float64
    with pytest.raises(TypeError, match="set_alpha_to_one"):
        DDPMScheduler.from_config(sched.config, set_alpha_to_one=True)
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        DDIMScheduler.from_pretrained(tmp_path / "missing")
    assert len(sched) == 1000


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(beta_schedule="cosin"), ValueError, "valid names"),
    (dict(beta_start=0.0), ValueError, "beta_start must lie in"),
    (dict(beta_end=1.0), ValueError, "beta_end must lie in"),
    (dict(trained_betas=[0.1, 0.2]), ValueError, "num_train_timesteps=len"),
    (dict(trained_betas=[0.1, -0.2], num_train_timesteps=2), ValueError, "trained_betas must lie in"),
    (dict(trained_betas=[1.0, 0.2], num_train_timesteps=2), ValueError, "the last may be 1"),
    (dict(trained_betas=[[0.1, 0.2]], num_train_timesteps=2), ValueError, "1-D"),
    (dict(trained_betas=[0.1, float("nan")], num_train_timesteps=2), ValueError, "NaN"),
    (dict(prediction_type="eps"), ValueError, "'epsilon', 'v_prediction', 'sample'"),
    (dict(timestep_spacing="even"), ValueError, "leading"),
    (dict(clip_sample_range=-1.0), ValueError, "clip_sample_range"),
    (dict(clip_sample="yes"), TypeError, "clip_sample"),
    (dict(dynamic_thresholding_ratio=1.5), ValueError, "dynamic_thresholding_ratio"),
    (dict(steps_offset=-1), ValueError, "steps_offset"),
    (dict(num_train_timesteps=1), ValueError, "num_train_timesteps"),
    (dict(rescale_betas_zero_snr=True), ValueError, "alpha_bar_T = 0"),
])
@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_bad_constructor_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


def test_bad_variance_type():
    with pytest.raises(ValueError, match="fixed_small"):
        DDPMScheduler(variance_type="small")


def test_bad_set_timesteps_and_step():
    sched = DDIMScheduler()
    x, m, _ = draws(0)
    with pytest.raises(ValueError, match="call set_timesteps"):
        sched.step(m, 999, x)
    with pytest.raises(ValueError, match="cannot exceed num_train_timesteps=1000"):
        sched.set_timesteps(1001)
    with pytest.raises(ValueError, match="num_inference_steps must be"):
        sched.set_timesteps(0)
    with pytest.raises(ValueError, match="steps_offset"):
        DDIMScheduler(steps_offset=5).set_timesteps(1000)
    sched.set_timesteps(10)
    with pytest.raises(ValueError, match="not in this scheduler's timesteps"):
        sched.step(m, 999, x)
    with pytest.raises(ValueError, match="single timestep"):
        sched.step(m, sched.timesteps[:2], x)
    with pytest.raises(ValueError, match="integer timestep"):
        sched.step(m, 900.5, x)
    with pytest.raises(ValueError, match="must match"):
        sched.step(m[:, :2], 900, x)
    with pytest.raises(TypeError, match="floating-point"):
        sched.step(m.long(), 900, x)
    with pytest.raises(ValueError, match="variance_noise must be a tensor of shape"):
        sched.step(m, 900, x, eta=1.0, variance_noise=torch.zeros(3))
    with pytest.raises(ValueError, match="eta must be"):
        sched.step(m, 900, x, eta=-0.5)
    with pytest.raises(ValueError, match="eta=3.0 is too large"):
        sched.step(m, 900, x, eta=3.0)
    ddpm = DDPMScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="twice the channels"):
        ddpm.step(m, 999, x)
    with pytest.raises(ValueError, match="strictly descending"):
        ddpm.set_timesteps(timesteps=[10, 20])
    with pytest.raises(ValueError, match="must lie in"):
        sched.add_noise(x, m, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="one per sample"):
        sched.add_noise(x, m, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="shape of original_samples"):
        sched.add_noise(x, m[:1], 3)
    with pytest.raises(TypeError, match="integers"):
        sched.add_noise(x, m, torch.tensor([0.5, 1.0]))


# --- diffusers ----------------------------------------------------------------------------------

def diffusers_pair(ours, theirs_cls, **kwargs):
    """A diffusers scheduler with our float64 tables (diffusers builds them in float32), so the
    steps are compared in float64."""
    theirs = theirs_cls(**kwargs)
    theirs.betas = ours.betas.clone()
    theirs.alphas = ours.alphas.clone()
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()
    if hasattr(theirs, "final_alpha_cumprod"):
        theirs.final_alpha_cumprod = ours.final_alpha_cumprod.clone()
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    return theirs


@pytest.mark.parametrize("cls_name", ["DDPMScheduler", "DDIMScheduler"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_matches_diffusers_tables(cls_name, schedule):
    diffusers = pytest.importorskip("diffusers")
    for zero_snr in (False, True):
        ours = globals()[cls_name](beta_schedule=schedule, rescale_betas_zero_snr=zero_snr, prediction_type="sample")
        theirs = getattr(diffusers, cls_name)(beta_schedule=schedule, rescale_betas_zero_snr=zero_snr,
                                              prediction_type="sample")
        # diffusers' tables are float32: agreement to float32 rounding. Its zero-SNR rescale takes
        # ratios of float32 alpha_bars: betas off by up to 3e-6 absolute where alpha_bar is tiny,
        # and up to 4e-3 relative on the smallest betas; ours are float64.
        np.testing.assert_allclose(theirs.betas.double().numpy(), ours.betas.numpy(), rtol=2e-6,
                                   atol=1e-5 if zero_snr else 1e-9)
        np.testing.assert_allclose(theirs.alphas_cumprod.double().numpy(), ours.alphas_cumprod.numpy(),
                                   rtol=5e-5, atol=1e-7)
    # diffusers' DDPM "sigmoid" is GeoDiff's, ours is named geodiff_sigmoid
    theirs = diffusers.DDPMScheduler(beta_schedule="sigmoid")
    np.testing.assert_allclose(theirs.betas.double().numpy(), DDPMScheduler(beta_schedule="geodiff_sigmoid").betas,
                               rtol=2e-6)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_matches_diffusers_timesteps(spacing):
    diffusers = pytest.importorskip("diffusers")
    for cls_name, n, offset in itertools.product(["DDPMScheduler", "DDIMScheduler"], [1, 7, 10, 50, 250, 1000],
                                                 [0, 1]):
        if spacing == "leading" and n == 1000 and offset:
            continue
        ours = globals()[cls_name](timestep_spacing=spacing, steps_offset=offset)
        theirs = getattr(diffusers, cls_name)(timestep_spacing=spacing, steps_offset=offset)
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        assert ours.timesteps.tolist() == theirs.timesteps.tolist(), (cls_name, n, offset)


def test_matches_diffusers_trailing_timesteps_documented_difference():
    diffusers = pytest.importorskip("diffusers")
    # diffusers builds 'trailing' grids with a float arange: 61 steps give 62 timesteps ending in -1
    ours, theirs = DDIMScheduler(timestep_spacing="trailing"), diffusers.DDIMScheduler(timestep_spacing="trailing")
    ours.set_timesteps(61)
    theirs.set_timesteps(61)
    assert len(theirs.timesteps) == 62 and int(theirs.timesteps[-1]) == -1
    assert len(ours.timesteps) == 61 and int(ours.timesteps[-1]) >= 0
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()[:61]


def _diffusers_step_configs(spacings, modes):
    """Every spacing x prediction type x x0 mode (x0 modes cycled when ``modes`` is False), with
    steps_offset alternating; yields (i, constructor arguments)."""
    mode_names = list(X0_MODES)
    combos = (itertools.product(spacings, PREDICTIONS, mode_names) if modes
              else ((sp, pr, mode_names[i % 3]) for i, (sp, pr) in enumerate(itertools.product(spacings, PREDICTIONS))))
    for i, (spacing, prediction, mode) in enumerate(combos):
        yield i, dict(timestep_spacing=spacing, prediction_type=prediction, steps_offset=i % 2, **X0_MODES[mode])


@pytest.mark.parametrize("schedule_index", range(len(SCHEDULES)), ids=SCHEDULE_IDS)
def test_matches_diffusers_ddim(schedule_index):
    diffusers = pytest.importorskip("diffusers")
    name, zero_snr = SCHEDULES[schedule_index]
    if name == "sigmoid":
        pytest.skip("diffusers' DDIMScheduler has no sigmoid schedule")
    for i, kwargs in _diffusers_step_configs(["leading", "trailing"], modes=True):
        if zero_snr and kwargs["prediction_type"] == "epsilon":
            continue
        for alpha_one in [i % 3 != 0]:
            args = dict(beta_schedule=name, rescale_betas_zero_snr=zero_snr, set_alpha_to_one=alpha_one, **kwargs)
            ours = DDIMScheduler(**args)
            theirs = diffusers_pair(ours, diffusers.DDIMScheduler, **args)
            n = 7 if kwargs["timestep_spacing"] == "leading" else 10   # evenly spaced grids
            ours.set_timesteps(n)
            theirs.set_timesteps(n)
            for k, t in enumerate(ours.timesteps):
                x, m, z = draws(k)
                for eta, clipped in [(0.0, False), (1.0, False), (0.7, True)]:
                    a = ours.step(m, t, x, eta=eta, use_clipped_model_output=clipped, variance_noise=z)
                    b = theirs.step(m, t, x, eta=eta, use_clipped_model_output=clipped, variance_noise=z)
                    what = f"{args} eta={eta} clipped={clipped} t={int(t)}"
                    assert_close(a.pred_original_sample, b.pred_original_sample.numpy(), what=what)
                    assert_close(a.prev_sample, b.prev_sample.numpy(), what=what)


def test_matches_diffusers_ddim_linspace_documented_difference():
    diffusers = pytest.importorskip("diffusers")
    args = dict(timestep_spacing="linspace", clip_sample=False)
    ours = DDIMScheduler(**args)
    theirs = diffusers_pair(ours, diffusers.DDIMScheduler, **args)
    ours.set_timesteps(3)
    theirs.set_timesteps(3)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist() == [999, 500, 0]
    ab = ours.alphas_cumprod.numpy()
    x, m, _ = draws(1)
    for t, ours_prev, theirs_prev in [(999, 500, 666), (500, 0, 167)]:
        a = ours.step(m, t, x).prev_sample
        b = theirs.step(m, t, x).prev_sample
        cfg = dict(ours.config)
        # ours moves to the next grid timestep ...
        want, _ = ref.ddim_step(cfg, ab, [t, ours_prev], t, m.numpy(), x.numpy())
        assert_close(a, want)
        # ... diffusers to t - 1000 // 3, a level the loop never evaluates the model at
        want_theirs, _ = ref.ddim_step(cfg, ab, [t, theirs_prev], t, m.numpy(), x.numpy())
        assert_close(b, want_theirs)
        assert float((a - b).abs().max()) > 1e-2
    # the final step: both go to the final alpha (t=0 - 333 < 0)
    assert_close(ours.step(m, 0, x).prev_sample, theirs.step(m, 0, x).prev_sample.numpy())


@pytest.mark.parametrize("schedule_index", range(len(SCHEDULES)), ids=SCHEDULE_IDS)
def test_matches_diffusers_ddpm(schedule_index):
    diffusers = pytest.importorskip("diffusers")
    name, zero_snr = SCHEDULES[schedule_index]
    if name == "sigmoid":
        pytest.skip("diffusers' DDPM 'sigmoid' is GeoDiff's; compared in test_matches_diffusers_tables")
    variance_types = ["fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"]
    for i, kwargs in _diffusers_step_configs(SPACINGS, modes=False):
        if zero_snr and kwargs["prediction_type"] == "epsilon":
            continue
        for variance_type in [variance_types[i % len(variance_types)], variance_types[(i + 2) % len(variance_types)]]:
            args = dict(beta_schedule=name, rescale_betas_zero_snr=zero_snr, variance_type=variance_type, **kwargs)
            ours = DDPMScheduler(**args)
            theirs = diffusers_pair(ours, diffusers.DDPMScheduler, **args)
            ours.set_timesteps(7)
            theirs.set_timesteps(7)
            assert ours.timesteps.tolist() == theirs.timesteps.tolist()
            for k, t in enumerate(ours.timesteps):
                if k == len(ours.timesteps) - 1 and int(t) > 0:
                    continue  # diffusers adds noise on this final step: documented difference, below
                x, m, _ = draws(k)
                if variance_type.startswith("learned"):
                    v = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
                    m = torch.cat([m, v if variance_type == "learned" else 2 * v - 1], dim=1)
                a = ours.step(m, t, x, generator=torch.Generator().manual_seed(k))
                b = theirs.step(m, t, x, generator=torch.Generator().manual_seed(k))
                what = f"{args} t={int(t)}"
                assert_close(a.pred_original_sample, b.pred_original_sample.numpy(), what=what)
                assert_close(a.prev_sample, b.prev_sample.numpy(), what=what)


def test_matches_diffusers_ddpm_documented_differences():
    diffusers = pytest.importorskip("diffusers")
    x, m, _ = draws(2)
    # 1. fixed_large_log: diffusers takes sqrt(log beta) -> NaN; ours uses std = sqrt(beta)
    args = dict(variance_type="fixed_large_log", clip_sample=False)
    ours = DDPMScheduler(**args)
    theirs = diffusers_pair(ours, diffusers.DDPMScheduler, **args)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    t = int(ours.timesteps[0])
    assert torch.isnan(theirs.step(m, t, x, generator=torch.Generator().manual_seed(0)).prev_sample).all()
    got = ours.step(m, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    fixed_large = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
    fixed_large.set_timesteps(10)
    assert_close(got, fixed_large.step(m, t, x, generator=torch.Generator().manual_seed(0)).prev_sample.numpy())
    # 2. the final step adds no noise; diffusers adds noise whenever its timestep is > 0
    args = dict(variance_type="fixed_large", clip_sample=False, timestep_spacing="trailing")
    ours = DDPMScheduler(**args)
    theirs = diffusers_pair(ours, diffusers.DDPMScheduler, **args)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    t = int(ours.timesteps[-1])
    assert t == 99
    a = ours.step(m, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    b = theirs.step(m, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    beta = 1 - float(ours.alphas_cumprod[t])
    assert_close(b, (a + math.sqrt(beta) * z).numpy())


def test_matches_diffusers_add_noise_velocity_and_loads_its_config(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ours = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    theirs = diffusers_pair(ours, diffusers.DDPMScheduler, beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012)
    x0, noise, _ = draws(3)
    t = torch.tensor([5, 800])
    assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t).numpy())
    assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t).numpy())
    # a config saved by diffusers loads here (unknown keys are ignored)
    source = diffusers.DDIMScheduler(beta_schedule="scaled_linear", steps_offset=1, clip_sample=False)
    source.save_config(tmp_path)
    loaded = DDIMScheduler.from_pretrained(tmp_path)
    assert loaded.config.steps_offset == 1 and loaded.config.beta_schedule == "scaled_linear"
    assert not loaded.config.clip_sample
    assert DDPMScheduler.from_config(source.config).config.steps_offset == 1
    # diffusers' "sigmoid" is GeoDiff's: a diffusers config keeps its meaning here
    geodiff = diffusers.DDPMScheduler(beta_schedule="sigmoid")
    geodiff.save_config(tmp_path / "geodiff")
    for loaded in (DDPMScheduler.from_pretrained(tmp_path / "geodiff"), DDPMScheduler.from_config(geodiff.config)):
        assert loaded.config.beta_schedule == "geodiff_sigmoid"
        np.testing.assert_allclose(loaded.betas.numpy(), geodiff.betas.double().numpy(), rtol=2e-6)


def test_half_precision_thresholding_matches_float64():
    sched = DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=3.0,
                          prediction_type="sample")
    sched.set_timesteps(10)
    x, m, z = draws(8)
    t = int(sched.timesteps[2])
    want = sched.step(m, t, x, variance_noise=z).pred_original_sample
    got = sched.step(m.half(), t, x.half(), variance_noise=z.half()).pred_original_sample
    assert got.dtype == torch.float16
    assert float((got.double() - want).abs().max()) < 4e-3
    cfg = dict(sched.config)
    ref_x0 = ref.dynamic_threshold(m.numpy(), cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
    assert_close(want, ref_x0, rtol=1e-12)
    assert float(want.abs().max()) <= 1.0 + 1e-12 and float(want.abs().max()) > 0.99
