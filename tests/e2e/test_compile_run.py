"""ONNX -> sdac compile -> golden model, against onnxruntime (issue #3 and #4 bounds).

Two honest references: onnxruntime on the same QDQ model with SiLU/GeLU
written as their hard forms (the hardware's functions; the golden model must
reach 30 dB SQNR against it), and onnxruntime on the original model (the cost
of the approximations, reported, not bounded).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sdac import models
from sdac.bundle import Bundle, read_bundle
from sdac.cli import main as sdac
from sdac.compiler.driver import compile_model
from sdac.compiler.hardref import hard_reference
from sdac.compiler.reference import sqnr_db
from sdac.runtime.golden import run_bundle
from sdac.runtime.prologue import device_inputs

MODELS = ["conv3x3", "conv_gn_silu", "resnet"]   # grows as the frontend covers more patterns


def _ort(model, feeds):
    sess = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString())
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


@pytest.fixture(scope="module", params=MODELS)
def compiled(request):
    qdq, flt = models.build(request.param)
    return request.param, qdq, flt, compile_model(qdq)


def test_golden_matches_hard_reference(compiled):
    name, qdq, flt, result = compiled
    b = result.bundle
    for seed in (1, 2):
        x = models.sample_inputs(name, seed=seed)
        got = run_bundle(b, device_inputs(b, x), step=0)
        out = next(iter(got.values()))
        hard = _ort(hard_reference(onnx.load(qdq)), x)
        db = sqnr_db(hard, out)
        assert db >= 30.0, f"{name}: golden vs hard-activation onnxruntime SQNR {db:.1f} dB"


def test_compile_is_deterministic(compiled):
    name, qdq, _, result = compiled
    again = compile_model(qdq)
    assert again.bundle.to_bytes() == result.bundle.to_bytes()


def test_cli_compile_and_run(tmp_path):
    qdq, _ = models.build("conv_gn_silu")
    out = tmp_path / "m.sdab"
    assert sdac(["compile", qdq, "-o", str(out), "-q"]) == 0
    b = read_bundle(out)
    assert isinstance(b, Bundle) and b.instrs[-1].op == "halt"
    assert sdac(["compile", qdq, "-o", str(out), "-q"]) == 2          # refuses to overwrite
    x = models.sample_inputs("conv_gn_silu", seed=3)
    np.savez(tmp_path / "in.npz", **x)
    assert sdac(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 0
    got = np.load(tmp_path / "o.npz")
    assert sqnr_db(_ort(hard_reference(onnx.load(qdq)), x), got[b.outputs[0].name]) >= 30.0


def test_cli_compile_bad_model(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert sdac(["compile", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx" in err and "Traceback" not in err
