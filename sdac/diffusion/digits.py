"""The built-in model: a small unconditional diffusers UNet2DModel trained on scikit-learn's 8x8 digits.

Choices (see docs/diffusion.md):
  * images stay 8x8 (the data's native size, no interpolation artefacts; 4x cheaper than 16x16),
    pixel values 0..16 mapped linearly to [-1, 1];
  * the hardware's activation functions are used in training: every SiLU becomes nn.Hardswish
    (exactly x*relu6(x+3)/6, the device's hard SiLU) and any GELU the hard GeLU x*relu6(1.702x+3)/6;
  * quantization-aware weights: for the last part of training every Conv2d/Linear weight is
    fake-quantized to int4 symmetric per output channel (scale = absmax/7, straight-through
    gradient), and the exported weights are snapped onto that grid, so the W4 weights the
    accelerator uses are exactly the trained ones (`sdac quantize` recomputes the same grid);
  * the DDIM/DDPM schedule is diffusers' default (1000 steps, linear betas 1e-4..0.02), epsilon prediction.

Needs torch and diffusers (the `torch` extra); the rest of sdac does not import this module.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .ddim import DDIM, DDIMConfig

IMAGE_SIZE = 8


@dataclass
class DigitsConfig:
    block_out_channels: tuple[int, ...] = (40, 80)
    layers_per_block: int = 1
    norm_num_groups: int = 10
    add_attention: bool = True          # one self-attention block in the mid block (4x4 tokens, 1 head)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    qat_from: float = 0.6               # fraction of training after which weights are fake-quantized to int4
    seed: int = 0
    scheduler: dict = field(default_factory=lambda: DDIMConfig().to_dict())


# ------------------------------------------------------------------ data

def load_digits_images() -> np.ndarray:
    """scikit-learn's 1797 8x8 digits as float32 (N, 1, 8, 8) in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0) * 2.0 - 1.0
    return x[:, None], d.target.astype(np.int64)


# ------------------------------------------------------------ activations

class HardGELU(nn.Module):
    """The device's hard GeLU: x * relu6(1.702 x + 3) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(1.702 * x + 3.0, 0.0, 6.0) / 6.0


def use_hard_activations(model: nn.Module) -> int:
    """Replace every nn.SiLU by nn.Hardswish and every nn.GELU by HardGELU, in place. Returns the count."""
    n = 0
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.SiLU):
                setattr(mod, cname, nn.Hardswish())
                n += 1
            elif isinstance(child, nn.GELU):
                setattr(mod, cname, HardGELU())
                n += 1
    return n


class GroupNorm4DAttnProcessor:
    """diffusers' self-attention, with the GroupNorm applied to the (B, C, H, W) map before flattening.

    The same math as AttnProcessor2_0 (GroupNorm statistics do not depend on the layout), but the
    exported graph has the usual 4-D GroupNorm pattern (as in the resnets) instead of a GroupNorm on
    (B, C, H*W), and an explicit softmax(q k^T * d^-1/2) v.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 4:
            raise ValueError("GroupNorm4DAttnProcessor: self-attention on a 4-D map only")
        residual = hidden_states
        b, c, h, w = hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states)
        x = hidden_states.reshape(b, c, h * w).transpose(1, 2)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        d = q.shape[-1] // attn.heads
        q = q.reshape(b, -1, attn.heads, d).transpose(1, 2)
        k = k.reshape(b, -1, attn.heads, d).transpose(1, 2)
        v = v.reshape(b, -1, attn.heads, d).transpose(1, 2)
        p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (d ** -0.5), dim=-1)
        y = torch.matmul(p, v).transpose(1, 2).reshape(b, h * w, attn.heads * d)
        y = attn.to_out[1](attn.to_out[0](y))
        y = y.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            y = y + residual
        return y / attn.rescale_output_factor


def build_unet(cfg: DigitsConfig) -> nn.Module:
    from diffusers import UNet2DModel
    n = len(cfg.block_out_channels)
    model = UNet2DModel(
        sample_size=IMAGE_SIZE, in_channels=1, out_channels=1,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
        norm_num_groups=cfg.norm_num_groups, add_attention=cfg.add_attention, attention_head_dim=None,
    )
    use_hard_activations(model)
    from diffusers.models.attention_processor import Attention
    for m in model.modules():
        if isinstance(m, Attention):
            m.set_processor(GroupNorm4DAttnProcessor())
    return model


# --------------------------------------------------------- int4 weights

def int4_fake_quant(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int4 per output channel (dim 0 of torch Conv2d/Linear weights), scale = absmax/7."""
    absmax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8)
    scale = (absmax / 7.0).reshape(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / scale), -7, 7) * scale
    return w + (q - w).detach()  # straight-through estimator


class _Int4Weight(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return int4_fake_quant(w)


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def enable_weight_qat(model: nn.Module) -> None:
    for m in quantized_layers(model):
        if not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", _Int4Weight())


def snap_weights(model: nn.Module) -> None:
    """Make the int4 fake quantization permanent: weights become q * scale exactly."""
    for m in quantized_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        with torch.no_grad():
            m.weight.copy_(int4_fake_quant(m.weight))


# --------------------------------------------------------------- training

def train(cfg: DigitsConfig, log=print) -> tuple[nn.Module, dict]:
    """Train on 1 CPU thread with fixed seeds. Returns (model in eval mode, stats)."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    images, _ = load_digits_images()
    data = torch.from_numpy(images)
    sched = DDIM(DDIMConfig.from_dict(cfg.scheduler))
    acp = torch.from_numpy(sched.alphas_cumprod.astype(np.float32))
    n_train = sched.config.num_train_timesteps

    model = build_unet(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)

    def lr_at(i: int) -> float:
        if i < cfg.warmup:
            return cfg.lr * (i + 1) / cfg.warmup
        p = (i - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    qat_step = int(cfg.qat_from * cfg.steps)
    losses: list[float] = []
    t0 = time.time()
    for i in range(cfg.steps):
        if i == qat_step:
            enable_weight_qat(model)
            opt = torch.optim.AdamW(model.parameters(), lr=lr_at(i), weight_decay=1e-4)
            log(f"step {i}: int4 weight fake quantization on")
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        idx = torch.from_numpy(rng.integers(0, len(data), cfg.batch_size))
        x0 = data[idx]
        t = torch.from_numpy(rng.integers(0, n_train, cfg.batch_size))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        a = acp[t].reshape(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.mean((model(xt, t).sample - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (i + 1) % 250 == 0 or i == cfg.steps - 1:
            log(f"step {i + 1}/{cfg.steps}  loss {np.mean(losses[-250:]):.4f}  {time.time() - t0:.0f}s")
    snap_weights(model)
    model.eval()
    stats = {"final_loss": float(np.mean(losses[-250:])), "train_seconds": round(time.time() - t0, 1),
             "n_params": int(sum(p.numel() for p in model.parameters()))}
    return model, stats


# ----------------------------------------------------------------- export

class _Export(nn.Module):
    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep).sample


INPUT_NAMES = ("sample", "timestep")
OUTPUT_NAME = "out_sample"


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> None:
    """Float ONNX: inputs sample float32 (1,1,8,8), timestep float32 (1,); output out_sample (1,1,8,8)."""
    import onnx
    sample = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    timestep = torch.tensor([500.0])
    torch.onnx.export(_Export(model.eval()), (sample, timestep), str(path), input_names=list(INPUT_NAMES),
                      output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False, do_constant_folding=True)
    fold_constants(path)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)


def fold_constants(path: str | Path) -> None:
    """Fold the exporter's shape arithmetic (Shape/Gather/Concat on static shapes) into constants.

    Uses onnxscript's optimizer (constant folding, dead code; keeps standard ops such as HardSwish);
    without onnxscript the model is left as exported (onnxruntime runs it either way).
    """
    import onnx
    try:
        from onnxscript import optimizer
    except ImportError:
        return
    m = optimizer.optimize(onnx.load(str(path)))
    onnx.save(m, str(path))


def write_model_info(path: str | Path, cfg: DigitsConfig, stats: dict, onnx_name: str) -> None:
    info = {
        "format": "sdac-model-info", "version": 1,
        "model": onnx_name,
        "description": "unconditional UNet2DModel on scikit-learn 8x8 digits, hard SiLU (Hardswish), "
                       "int4-grid weights (QAT), pixels in [-1, 1]",
        "inputs": {"sample": [1, 1, IMAGE_SIZE, IMAGE_SIZE], "timestep": [1]},
        "outputs": {OUTPUT_NAME: [1, 1, IMAGE_SIZE, IMAGE_SIZE]},
        "prediction_type": "epsilon",
        "scheduler": cfg.scheduler,
        "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
                     if k != "scheduler"},
        "stats": stats,
        "torch": torch.__version__,
    }
    Path(path).write_text(json.dumps(info, indent=2) + "\n")
