"""The ONNX MAC counter (benchmarks/macs.py) against an independent count from torch forward hooks
on a tiny UNet2DConditionModel (same code paths as SD-v1.5: 3x3/1x1 convs, stride-2 convs,
linear layers, self- and cross-attention)."""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _macs_module():
    spec = importlib.util.spec_from_file_location("bench_macs", ROOT / "benchmarks" / "macs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod       # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _tiny_unet(torch):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(40, 80), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=20,
                                cross_attention_dim=60, attention_head_dim=2).eval()


def _torch_count(torch, unet, args) -> dict:
    """Reference: MACs from module hooks (conv/linear weights, attention from the Attention modules)."""
    from diffusers.models.attention_processor import Attention
    count = {"conv3x3": 0, "conv1x1": 0, "linear": 0, "attention": 0}
    calls = []

    def conv(m, i, o):
        k = "conv3x3" if m.kernel_size == (3, 3) else "conv1x1"
        count[k] += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, i, o):
        count["linear"] += o.numel() * m.in_features

    def attn(m, args, kwargs, o):
        x = args[0] if args else kwargs["hidden_states"]
        ctx = kwargs.get("encoder_hidden_states")
        ctx = x if ctx is None else ctx
        b, t, s, inner = x.shape[0], x.shape[-2], ctx.shape[-2], m.to_q.out_features
        count["attention"] += 2 * b * t * s * inner       # Q K^T and P V
        calls.append(m)

    hooks = []
    for m in unet.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, Attention):
            hooks.append(m.register_forward_hook(attn, with_kwargs=True))
    with torch.no_grad():
        unet(*args, return_dict=False)
    for h in hooks:
        h.remove()
    return count, len(calls)


def test_onnx_mac_count_matches_torch_hooks(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    unet = _tiny_unet(torch)
    rng = np.random.default_rng(0)
    args = (torch.from_numpy(rng.standard_normal((1, 4, 8, 8)).astype(np.float32)),
            torch.tensor([10.0]), torch.from_numpy(rng.standard_normal((1, 8, 60)).astype(np.float32)))
    ref, n_attn = _torch_count(torch, unet, args)

    class W(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = unet

        def forward(self, s, t, e):
            return self.m(s, t, e, return_dict=False)[0]
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(W().eval(), args, str(path), input_names=["sample", "timestep", "encoder_hidden_states"],
                          output_names=["out"], opset_version=17, dynamo=False)
    mc = _macs_module().count_macs(path)
    assert mc.by_category["other"] == 0
    for k, v in ref.items():
        assert mc.by_category[k] == v, (k, mc.by_category[k], v)
    assert mc.total == sum(ref.values()) > 0
    assert n_attn == 8                             # 4 transformer blocks (down, mid, 2 up), self + cross each
    assert mc.nodes["attention"] == 2 * n_attn     # Q K^T and P V per attention
