"""The trained digits UNet (the demo model): quantize with per-step scales, compile, run on the golden model.

Inputs are real noisy digits at each step's timestep. Against onnxruntime on
the QDQ model carrying that step's scales the golden model reaches 30 dB
for t >= 300; at small t the UNet's output (the predicted noise of an almost
clean image) carries little signal and every quantized implementation drifts
(benchmarks/quality.py reports all steps). At every step the device is no
further from the float model than onnxruntime's own QDQ emulation is.
"""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sdac.compiler.driver import compile_model
from sdac.compiler.reference import sqnr_db
from sdac.diffusion.digits import load_digits_images
from sdac.quant.ptq import quantize_file
from sdac.quant.qdq import read_table, table_path, with_step_scales
from sdac.runtime.golden import run_bundle

MODEL = Path(__file__).resolve().parents[2] / "sdac" / "data" / "digits_unet.onnx"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    q = d / "digits.qdq.onnx"
    quantize_file(MODEL, q, steps=10, samples=8, seed=0)
    table = read_table(table_path(q))
    result = compile_model(str(q), step_scales=str(table_path(q)))
    return q, table, result


def test_per_step_golden_vs_onnxruntime(compiled):
    q, table, result = compiled
    images, _ = load_digits_images()
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    rng = np.random.default_rng(0)
    flt = ort.InferenceSession(str(MODEL))
    qdq = onnx.load(str(q))
    assert result.bundle.n_steps == table["n_steps"] == 10
    for step, t in enumerate(table["timesteps"]):
        x0 = images[rng.integers(len(images))][None]
        x = (np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * rng.standard_normal(x0.shape)).astype(np.float32)
        feeds = {"sample": x, "timestep": np.array([t], np.float32)}
        got = run_bundle(result.bundle, feeds, step=step)["out_sample"]
        ref = ort.InferenceSession(with_step_scales(qdq, table, step).SerializeToString()).run(None, feeds)[0]
        fl = flt.run(None, feeds)[0]
        if t >= 300:
            assert sqnr_db(ref, got) >= 30.0, f"step {step} (t={t}): {sqnr_db(ref, got):.1f} dB"
        assert sqnr_db(fl, got) >= sqnr_db(fl, ref) - 1.5, f"step {step} (t={t})"
