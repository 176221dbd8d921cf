"""DDIM scheduler math on the host (numpy, float).

The same formulas as diffusers' ``DDIMScheduler`` (prediction_type "epsilon",
"v_prediction" as SD-2's 768-pixel models use, or "sample"; no dynamic
thresholding): the board runs the UNet, the host runs this between
steps, in float. ``betas`` and ``alphas_cumprod`` are float32 like diffusers'
(so the tables agree bit for bit); the update itself is evaluated in float64
and returned as float32.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import SdacError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")     # what the UNet's output is


@dataclass
class DDIMConfig:
    """The subset of diffusers' DDIMScheduler config the host needs (same names, same defaults)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"

    @classmethod
    def from_dict(cls, d: dict) -> "DDIMConfig":
        """Build from a (diffusers-style) config dict; unknown keys are ignored."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def make_betas(cfg: DDIMConfig) -> np.ndarray:
    """float32 [num_train_timesteps], as diffusers computes them."""
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "linear":
        # torch.linspace(float32) == float32(start + i * step) computed in float64 then rounded, for these sizes
        return np.linspace(cfg.beta_start, cfg.beta_end, n, dtype=np.float64).astype(np.float32)
    if cfg.beta_schedule == "scaled_linear":
        root = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=np.float64).astype(np.float32)
        return (root * root).astype(np.float32)
    if cfg.beta_schedule == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                        dtype=np.float32)
    raise SdacError(f"DDIM: unknown beta_schedule {cfg.beta_schedule!r} (one of {', '.join(BETA_SCHEDULES)})")


@dataclass
class DDIM:
    """DDIM sampler state: call ``set_timesteps(n)`` then ``step(...)`` once per timestep."""

    config: DDIMConfig = field(default_factory=DDIMConfig)

    def __post_init__(self):
        cfg = self.config
        if cfg.prediction_type not in PREDICTION_TYPES:
            raise SdacError(f"DDIM: prediction_type {cfg.prediction_type!r} not supported (one of "
                            f"{', '.join(PREDICTION_TYPES)})")
        if cfg.timestep_spacing not in SPACINGS:
            raise SdacError(f"DDIM: unknown timestep_spacing {cfg.timestep_spacing!r} (one of {', '.join(SPACINGS)})")
        self.betas = make_betas(cfg)
        # as torch does it: float32 alphas, product accumulated in float64, stored as float32
        self.alphas = (np.float32(1.0) - self.betas).astype(np.float32)
        self.alphas_cumprod = np.cumprod(self.alphas.astype(np.float64)).astype(np.float32)
        self.final_alpha_cumprod = 1.0 if cfg.set_alpha_to_one else float(self.alphas_cumprod[0])
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(cfg.num_train_timesteps)[::-1].astype(np.int64)

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """Choose the inference timesteps (descending int64), as diffusers does for each spacing."""
        cfg = self.config
        n_train = cfg.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise SdacError(f"DDIM: number of steps {num_inference_steps} must be in 1..{n_train}")
        self.num_inference_steps = num_inference_steps
        if cfg.timestep_spacing == "linspace":
            ts = np.linspace(0, n_train - 1, num_inference_steps).round()[::-1].astype(np.int64)
        elif cfg.timestep_spacing == "leading":
            ratio = n_train // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].astype(np.int64) + cfg.steps_offset
        else:  # trailing
            ratio = n_train / num_inference_steps
            ts = np.round(np.arange(n_train, 0, -ratio)).astype(np.int64) - 1
        self.timesteps = ts.copy()
        return self.timesteps

    def _alpha_prev(self, prev_t: int) -> float:
        return float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else float(self.final_alpha_cumprod)

    def prev_timestep(self, t: int) -> int:
        # diffusers' rule, for every spacing (it is what makes "trailing" end at alpha_prev = final)
        return int(t) - self.config.num_train_timesteps // self.num_inference_steps

    def variance(self, t: int) -> float:
        """sigma_t^2 / eta^2 (formula 16 of the DDIM paper)."""
        prev_t = self.prev_timestep(t)
        a_t = float(self.alphas_cumprod[int(t)])
        a_prev = self._alpha_prev(prev_t)
        return (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)

    def step(self, model_output: np.ndarray, t: int, x: np.ndarray, eta: float = 0.0,
             generator: np.random.Generator | None = None,
             variance_noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One DDIM update x_t -> x_{t-1} from the UNet's output (the noise, v or x0: the config's
        prediction_type). Returns (prev_sample, pred_original_sample), float32.

        With eta > 0 the added noise is ``variance_noise`` if given, else drawn from ``generator``
        (standard normal, the shape of ``model_output``).
        """
        if self.num_inference_steps is None:
            raise SdacError("DDIM: call set_timesteps(n) before step()")
        cfg = self.config
        out = np.asarray(model_output, np.float64)
        x = np.asarray(x, np.float64)
        prev_t = self.prev_timestep(t)
        a_t = float(self.alphas_cumprod[int(t)])
        a_prev = self._alpha_prev(prev_t)
        beta_t = 1 - a_t
        if cfg.prediction_type == "epsilon":
            x0, eps = (x - beta_t ** 0.5 * out) / a_t ** 0.5, out
        elif cfg.prediction_type == "v_prediction":      # v = sqrt(a) eps - sqrt(1 - a) x0
            x0, eps = a_t ** 0.5 * x - beta_t ** 0.5 * out, a_t ** 0.5 * out + beta_t ** 0.5 * x
        else:                                            # sample: the UNet predicts x0
            x0, eps = out, (x - a_t ** 0.5 * out) / beta_t ** 0.5
        if cfg.clip_sample:
            x0 = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        std = eta * self.variance(t) ** 0.5
        direction = max(1 - a_prev - std ** 2, 0.0) ** 0.5 * eps
        prev = a_prev ** 0.5 * x0 + direction
        if eta > 0:
            if variance_noise is None:
                if generator is None:
                    raise SdacError("DDIM: eta > 0 needs a generator or variance_noise")
                variance_noise = generator.standard_normal(eps.shape)
            prev = prev + std * np.asarray(variance_noise, np.float64)
        return prev.astype(np.float32), x0.astype(np.float32)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Forward process q(x_t | x_0) for training: sqrt(a_t) x0 + sqrt(1 - a_t) noise (t per batch item)."""
        a = self.alphas_cumprod[np.asarray(t, np.int64)].astype(np.float64)
        a = a.reshape(-1, *([1] * (np.ndim(x0) - 1)))
        return (np.sqrt(a) * x0 + np.sqrt(1 - a) * noise).astype(np.float32)
