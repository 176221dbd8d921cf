"""Small test models: torch modules with seeded random weights, exported to ONNX and quantized.

``build(name, weights="int4", cache_dir=None) -> (qdq_path, float_path)`` exports the
model with ``torch.onnx.export`` and quantizes it with onnxruntime's
``quantize_static`` (QDQ, symmetric int8 activations, int4 or int8 weights per output
channel) on a seeded random calibration set. Files are cached in ``cache_dir``
(default: a per-process temporary directory). ``sample_inputs(name)`` gives seeded
inputs. Channel counts are multiples of 20 (the default line width L).

Models: conv3x3, conv_gn_silu, resnet (ResNet block with time embedding), attention,
transformer (LN, self-attention, cross-attention, GeGLU feed-forward), unet (a tiny
diffusers UNet2DModel with attention), unet_noattn, unet_cond (a tiny UNet2DConditionModel),
unet_xl (SDXL's structure at toy size: linear projections, stacked transformer blocks, text_time
conditioning).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

_CACHE: str | None = None
B = 1


def _cache_dir() -> str:
    global _CACHE
    if _CACHE is None:
        _CACHE = tempfile.mkdtemp(prefix="sdac-models-")
    return _CACHE


def _torch():
    import torch
    torch.set_num_threads(1)
    return torch


def _int4_friendly(module) -> None:
    """Make each output channel's largest |weight| positive (random weights, any sign is as good).

    onnxruntime's symmetric int4 uses [-8, 7] with scale absmax/7.5; when the extreme value is
    positive the negative side never reaches -8, so the QDQ model already fits the [-7, 7] of the
    hardware and compiles exactly.
    """
    torch = _torch()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w = m.weight.view(m.weight.shape[0], -1)
                i = w.abs().argmax(dim=1)
                sign = torch.sign(w[torch.arange(w.shape[0]), i])
                w.mul_(sign[:, None])


def _tame(module) -> None:
    """Shrink the last layer of every residual branch (like the zero-initialised output convolutions
    of diffusion codebases): a randomly initialised deep UNet is otherwise chaotic under int8
    quantization (a 1e-4 change of the input moves its QDQ output to ~20 dB SQNR), which no
    reference comparison can see through; a trained model is not like that."""
    torch = _torch()
    with torch.no_grad():
        for name, m in module.named_modules():
            if name.endswith(("conv2", "to_out.0", "proj_out", "ff.net.2")) and hasattr(m, "weight"):
                m.weight.mul_(0.25)


# ------------------------------------------------------------------ modules

def _conv3x3():
    torch = _torch()
    return torch.nn.Conv2d(20, 40, 3, padding=1), {"x": (B, 20, 8, 8)}


def _conv_gn_silu():
    torch = _torch()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(20, 40, 3, padding=1)
            self.norm = torch.nn.GroupNorm(4, 40)

        def forward(self, x):
            return torch.nn.functional.silu(self.norm(self.conv(x)))
    return M(), {"x": (B, 20, 8, 8)}


def _resnet():
    torch = _torch()
    from diffusers.models.resnet import ResnetBlock2D

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = ResnetBlock2D(in_channels=40, out_channels=80, temb_channels=60, groups=20)

        def forward(self, x, temb):
            return self.block(x, temb)
    return M(), {"x": (B, 40, 8, 8), "temb": (B, 60)}


def _attention():
    torch = _torch()
    from diffusers.models.attention_processor import Attention

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attention(40, heads=2, dim_head=20, norm_num_groups=20, residual_connection=True,
                                  bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)

        def forward(self, x):
            return self.attn(x)
    return M(), {"x": (B, 40, 8, 8)}


def _transformer():
    torch = _torch()
    from diffusers.models.attention import BasicTransformerBlock

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = BasicTransformerBlock(40, 2, 20, cross_attention_dim=60, activation_fn="geglu")

        def forward(self, x, ctx):
            return self.block(x, encoder_hidden_states=ctx)
    return M(), {"x": (B, 64, 40), "ctx": (B, 8, 60)}


def _unet(attention: bool = True):
    from diffusers import UNet2DModel
    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    m = UNet2DModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(40, 80),
                    down_block_types=down, up_block_types=up, norm_num_groups=20, attention_head_dim=20)
    return _Wrap(m), {"sample": (B, 4, 16, 16), "timestep": (B,)}


def _unet_cond():
    from diffusers import UNet2DConditionModel
    m = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                             block_out_channels=(40, 80), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=20,
                             cross_attention_dim=60, attention_head_dim=2)
    return _Wrap(m, cond=True), {"sample": (B, 4, 8, 8), "timestep": (B,), "encoder_hidden_states": (B, 8, 60)}


def _unet_xl():
    """SDXL's structure at toy size: no attention at the first level, linear projections into and out of the
    transformers, heads per block, two stacked transformer blocks at the second level
    (transformer_layers_per_block), and the "text_time" conditioning: a pooled text embedding and six size /
    crop ids, embedded and added to the time embedding (on the host, with the timestep's)."""
    from diffusers import UNet2DConditionModel
    torch = _torch()
    m = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                             block_out_channels=(40, 80), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=20,
                             cross_attention_dim=60, attention_head_dim=(2, 4), use_linear_projection=True,
                             transformer_layers_per_block=(1, 2), addition_embed_type="text_time",
                             addition_time_embed_dim=20, projection_class_embeddings_input_dim=60 + 6 * 20)

    class W(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
            cond = {"text_embeds": text_embeds, "time_ids": time_ids}
            return self.m(sample, timestep, encoder_hidden_states, added_cond_kwargs=cond, return_dict=False)[0]
    return W(), {"sample": (B, 4, 8, 8), "timestep": (B,), "encoder_hidden_states": (B, 8, 60),
                 "text_embeds": (B, 60), "time_ids": (B, 6)}


def _Wrap(m, cond: bool = False):
    torch = _torch()

    class W(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep, encoder_hidden_states=None):
            if cond:
                return self.m(sample, timestep, encoder_hidden_states, return_dict=False)[0]
            return self.m(sample, timestep, return_dict=False)[0]
    return W()


BUILDERS = {"conv3x3": _conv3x3, "conv_gn_silu": _conv_gn_silu, "resnet": _resnet, "attention": _attention,
            "transformer": _transformer, "unet": _unet, "unet_noattn": lambda: _unet(False),
            "unet_cond": _unet_cond, "unet_xl": _unet_xl}


def input_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return _build_module(name)[1]


def sample_inputs(name: str, seed: int = 0, shapes=None) -> dict[str, np.ndarray]:
    """Seeded inputs (timesteps are integers 0..999 as float)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in (shapes or input_shapes(name)).items():
        if k == "timestep":
            out[k] = rng.integers(0, 1000, size=s).astype(np.float32)
        else:
            out[k] = rng.standard_normal(s).astype(np.float32)
    return out


_MODULES: dict = {}


def _build_module(name: str):
    if name not in _MODULES:
        if name not in BUILDERS:
            raise KeyError(f"unknown test model {name!r}; known: {sorted(BUILDERS)}")
        torch = _torch()
        torch.manual_seed(0)
        m, shapes = BUILDERS[name]()
        m.eval()
        _tame(m)
        _int4_friendly(m)
        _MODULES[name] = (m, shapes)
    return _MODULES[name]


def export_float(name: str, cache_dir: str | None = None) -> str:
    import warnings
    torch = _torch()
    d = cache_dir or _cache_dir()
    path = os.path.join(d, f"{name}.float.onnx")
    if os.path.exists(path):
        return path
    m, shapes = _build_module(name)
    args = tuple(torch.from_numpy(v) for v in sample_inputs(name, shapes=shapes).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, args, path, input_names=list(shapes), output_names=["out"], opset_version=17,
                          dynamo=False)
    return path


class _Calib:
    def __init__(self, name: str, n: int, seed: int):
        self.items = [sample_inputs(name, seed=seed + i) for i in range(n)]

    def get_next(self):
        return self.items.pop(0) if self.items else None


def build(name: str, weights: str = "int4", cache_dir: str | None = None, n_calib: int = 4) -> tuple[str, str]:
    """(QDQ model path, float model path) of test model ``name``; cached."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    d = cache_dir or _cache_dir()
    fpath = export_float(name, d)
    qpath = os.path.join(d, f"{name}.qdq-{weights}.onnx")
    if os.path.exists(qpath):
        return qpath, fpath

    class Reader(CalibrationDataReader):
        def __init__(self, *a):
            self.c = _Calib(*a)

        def get_next(self):
            return self.c.get_next()
    wtype = {"int4": QuantType.QInt4, "int8": QuantType.QInt8}[weights]
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(fpath, qpath, Reader(name, n_calib, 100), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=wtype, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return qpath, fpath
