"""The built-in digits model: hardware activations, int4-grid weights, the shipped ONNX, sample quality."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sdac.compiler.reference import hard_gelu, hard_silu
from sdac.diffusion import DIGITS_INFO, DIGITS_ONNX

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)

from sdac.diffusion import digits  # noqa: E402


def test_hard_activations_are_the_devices():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    np.testing.assert_allclose(torch.nn.Hardswish()(x).numpy(), hard_silu(x.numpy()), atol=1e-12)
    np.testing.assert_allclose(digits.HardGELU()(x).numpy(), hard_gelu(x.numpy()), atol=1e-12)


def test_no_smooth_activation_left(monkeypatch):
    cfg = digits.DigitsConfig(block_out_channels=(20, 40), norm_num_groups=4)
    model = digits.build_unet(cfg)
    assert not any(isinstance(m, (torch.nn.SiLU, torch.nn.GELU)) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Hardswish) for m in model.modules()) > 5

    def boom(*a, **k):
        raise AssertionError("functional smooth activation called")
    monkeypatch.setattr(torch.nn.functional, "silu", boom)
    monkeypatch.setattr(torch.nn.functional, "gelu", boom)
    model(torch.zeros(2, 1, 8, 8), torch.tensor([3, 500])).sample


def test_snap_weights_puts_them_on_the_int4_grid():
    torch.manual_seed(0)
    model = digits.build_unet(digits.DigitsConfig(block_out_channels=(20, 40), norm_num_groups=4))
    digits.enable_weight_qat(model)
    digits.snap_weights(model)
    for m in digits.quantized_layers(model):
        w = m.weight.detach().numpy().reshape(m.weight.shape[0], -1)
        s = np.abs(w).max(1, keepdims=True) / 7
        q = w / s
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)


def test_shipped_model_io_and_ops():
    m = onnx.load(str(DIGITS_ONNX))
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    assert ins == {"sample": [1, 1, 8, 8], "timestep": [1]}
    assert outs == {"out_sample": [1, 1, 8, 8]}
    ops = {n.op_type for n in m.graph.node}
    assert "HardSwish" in ops and not ops & {"Sigmoid", "Erf", "Tanh", "Shape"}
    assert DIGITS_ONNX.stat().st_size < 8e6
    info = json.loads(DIGITS_INFO.read_text())
    assert info["scheduler"]["beta_schedule"] == "linear" and info["stats"]["final_loss"] < 0.1
    for init in m.graph.initializer:   # conv weights on the int4 grid (QAT + snap)
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.shape[2:] == (3, 3):
            s = np.abs(w.reshape(w.shape[0], -1)).max(1) / 7
            q = w.reshape(w.shape[0], -1) / s[:, None]
            np.testing.assert_allclose(q, np.round(q), atol=1e-3)


@pytest.fixture(scope="module")
def digit_classifier():
    from sklearn.linear_model import LogisticRegression
    x, y = digits.load_digits_images()
    return LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)


def test_samples_look_like_digits(digit_classifier):
    """Float model on onnxruntime, 10 DDIM steps: a classifier trained on real digits is confident."""
    from sdac.diffusion.sample import OrtUNet, sample_images
    info = json.loads(DIGITS_INFO.read_text())
    imgs = sample_images(OrtUNet(DIGITS_ONNX), info["scheduler"], n_images=24, steps=10, seed=7)
    assert imgs.shape == (24, 1, 8, 8)
    p = digit_classifier.predict_proba(np.clip(imgs, -1, 1).reshape(24, -1))
    assert p.max(1).mean() > 0.7, p.max(1)
    assert len(set(p.argmax(1))) >= 5      # not one mode
    # pure noise is not confidently a digit (the test can fail)
    noise = np.random.default_rng(0).uniform(-1, 1, (24, 64))
    assert digit_classifier.predict_proba(noise).max(1).mean() < p.max(1).mean()
