"""DDIM host math against diffusers' DDIMScheduler (the independent reference)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from sdac.diffusion.ddim import DDIM, DDIMConfig  # noqa: E402
from sdac.errors import SdacError  # noqa: E402

CONFIGS = [
    dict(beta_schedule="linear", timestep_spacing="leading", clip_sample=True, set_alpha_to_one=True),
    dict(beta_schedule="linear", timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
         steps_offset=1, clip_sample=False, set_alpha_to_one=False),
    dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace", clip_sample=True, clip_sample_range=1.5),
    dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=200, timestep_spacing="trailing",
         clip_sample=True, set_alpha_to_one=True),
    # SD-2's 768-pixel models predict v
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
         steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction"),
    dict(beta_schedule="linear", timestep_spacing="trailing", clip_sample=True, prediction_type="v_prediction"),
    dict(beta_schedule="linear", timestep_spacing="linspace", clip_sample=True, prediction_type="sample"),
]


def _pair(cfg: dict):
    ref = diffusers.DDIMScheduler(**cfg)
    ours = DDIM(DDIMConfig.from_dict(cfg))
    return ref, ours


@pytest.mark.parametrize("cfg", CONFIGS)
def test_tables_match(cfg):
    ref, ours = _pair(cfg)
    # torch.linspace rounds differently from numpy in the last float32 bit
    np.testing.assert_allclose(ours.betas, ref.betas.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=2e-6, atol=0)
    # given the same betas, the cumulative products are bit-identical
    same = diffusers.DDIMScheduler(**{**cfg, "trained_betas": ours.betas})
    np.testing.assert_array_equal(ours.alphas_cumprod, same.alphas_cumprod.numpy())
    assert float(ours.final_alpha_cumprod) == pytest.approx(float(ref.final_alpha_cumprod), abs=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [1, 7, 10, 50])
def test_timesteps_match(cfg, n):
    ref, ours = _pair(cfg)
    ref.set_timesteps(n)
    np.testing.assert_array_equal(ours.set_timesteps(n), ref.timesteps.numpy())


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("ref_dtype", ["float32", "float64"])
def test_trajectory_matches(cfg, eta, ref_dtype):
    """A whole sampling loop with a fake eps model, same noise on both sides.

    diffusers evaluates in float32 by default; with eta=1 and the cosine schedule the
    direction term sqrt(1 - a_prev - sigma^2) cancels catastrophically in float32 (errors
    ~3e-5), so the tight comparison is against diffusers run in float64 (its tables cast
    to float64), and the float32 run is compared at float32 accuracy.
    """
    ours = DDIM(DDIMConfig.from_dict(cfg))
    # same betas on both sides (torch.linspace differs from numpy's in the last bit, which the
    # 1/sqrt(alpha_cumprod) at t ~ T amplifies); the tables are compared in test_tables_match
    ref = diffusers.DDIMScheduler(**{**cfg, "trained_betas": ours.betas})
    tdt = torch.float64 if ref_dtype == "float64" else torch.float32
    ref.alphas_cumprod = ref.alphas_cumprod.to(tdt)
    ref.final_alpha_cumprod = ref.final_alpha_cumprod.to(tdt)
    tol = dict(rtol=1e-6, atol=1e-6) if ref_dtype == "float64" else dict(rtol=1e-5, atol=5e-5 if eta else 2e-6)
    n = 12
    ref.set_timesteps(n)
    ours.set_timesteps(n)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    for t in ours.timesteps:
        # deterministic "model": depends on x and t, large enough to exercise clipping
        eps = (np.tanh(x * 1.3) + 0.01 * t / 100.0).astype(np.float32)
        noise = rng.standard_normal(x.shape).astype(np.float32)
        xn, x0 = ours.step(eps, int(t), x, eta=eta, variance_noise=noise)
        out = ref.step(torch.from_numpy(eps).to(tdt), int(t), torch.from_numpy(x).to(tdt), eta=eta,
                       variance_noise=torch.from_numpy(noise).to(tdt) if eta > 0 else None)
        np.testing.assert_allclose(x0, out.pred_original_sample.numpy(), **tol)
        np.testing.assert_allclose(xn, out.prev_sample.numpy(), **tol)
        x = out.prev_sample.numpy().astype(np.float32)  # continue from the same state: no compounding


def test_generator_noise_is_used():
    s = DDIM()
    s.set_timesteps(10)
    x = np.zeros((1, 1, 4, 4), np.float32)
    a, _ = s.step(x, int(s.timesteps[0]), x, eta=1.0, generator=np.random.default_rng(0))
    b, _ = s.step(x, int(s.timesteps[0]), x, eta=1.0, generator=np.random.default_rng(0))
    c, _ = s.step(x, int(s.timesteps[0]), x, eta=1.0, generator=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_config_raises():
    with pytest.raises(SdacError, match="beta_schedule"):
        DDIM(DDIMConfig(beta_schedule="cubic"))
    with pytest.raises(SdacError, match="prediction_type 'velocity' not supported .*v_prediction"):
        DDIM(DDIMConfig(prediction_type="velocity"))
    s = DDIM()
    with pytest.raises(SdacError, match="set_timesteps"):
        s.step(np.zeros(1), 10, np.zeros(1))
    with pytest.raises(SdacError, match="steps"):
        s.set_timesteps(0)
