"""W4A8 post-training quantization: QDQ model in onnxruntime vs the float model, the per-step table."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ort = pytest.importorskip("onnxruntime")

from sdac.compiler.reference import sqnr_db  # noqa: E402
from sdac.diffusion import DIGITS_ONNX  # noqa: E402
from sdac.errors import SdacError  # noqa: E402
from sdac.quant.calibrate import tensor_roles  # noqa: E402
from sdac.quant.ptq import quantize_file, scheduler_for  # noqa: E402
from sdac.quant.qdq import (quantize_weight, read_table, step_models, validate_table,  # noqa: E402
                            with_step_scales)

pytestmark = pytest.mark.xdist_group("digits_quant")
STEPS = 5


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    per = quantize_file(DIGITS_ONNX, d / "m.qdq.onnx", steps=STEPS, samples=3, seed=1)
    static = quantize_file(DIGITS_ONNX, d / "s.qdq.onnx", steps=STEPS, samples=3, seed=1, static=True,
                           calibration=per.calibration)
    return per, static


def _run(path_or_bytes, x, t):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes), so,
                             providers=["CPUExecutionProvider"])
    return s.run(None, {"sample": x, "timestep": np.array([t], np.float32)})[0]


def test_quantize_weight_int4_per_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.arange(1, 7)[:, None, None, None]
    q, s = quantize_weight(w, axis=0, bits=4)
    assert q.dtype == np.int8 and q.min() >= -7 and q.max() <= 7
    assert s.shape == (6,)
    assert np.all(np.abs(q).reshape(6, -1).max(1) == 7)          # every channel uses the full range
    err = np.abs(q * s[:, None, None, None] - w).reshape(6, -1).max(1)
    assert np.all(err <= s / 2 + 1e-6)
    q8, s8 = quantize_weight(w.reshape(6, -1).T, axis=1, bits=8)  # (K, N): output channels last
    assert q8.max() <= 127 and q8.min() >= -127 and s8.shape == (6,)


def test_qdq_weights_are_int4_in_range(quantized):
    per, _ = quantized
    m = onnx.load(str(per.model_path))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 21
    inits = {i.name: i for i in m.graph.initializer}
    float_model = onnx.load(str(DIGITS_ONNX))
    float_inits = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer}
    n = 0
    for node in m.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_q4"):
            t = inits[node.input[0]]
            assert t.data_type == onnx.TensorProto.INT4
            q = numpy_helper.to_array(t).astype(np.int32)
            assert q.min() >= -7 and q.max() <= 7
            axis = next(a.i for a in node.attribute if a.name == "axis")
            scale = numpy_helper.to_array(inits[node.input[1]])
            assert scale.shape == (q.shape[axis],)
            # the trained weights are on the int4 grid already (QAT): dequantization gives them back
            shape = [1] * q.ndim
            shape[axis] = -1
            np.testing.assert_allclose(q * scale.reshape(shape), float_inits[node.output[0]], rtol=1e-5, atol=1e-7)
            n += 1
    assert n == per.n_weights and n > 20


def test_qdq_runs_and_tracks_float(quantized):
    """Static W4A8 QDQ in onnxruntime vs float on realistic x_t = noised real digits.

    Measured (this calibration, 3 images x 5 steps): ~30 dB for t >= 200, ~22 dB at t=50 and
    ~11 dB at t=10, where eps is a small residual and the activation noise dominates.
    """
    from sklearn.datasets import load_digits

    from sdac.diffusion.ddim import DDIM
    per, _ = quantized
    x0 = (load_digits().images[:4].astype(np.float32) / 16 * 2 - 1)[:, None]
    sched = DDIM()
    rng = np.random.default_rng(5)
    for t, bound in ((999, 25.0), (600, 25.0), (200, 24.0), (50, 16.0), (10, 7.0)):
        vals = []
        for k in range(len(x0)):
            x = sched.add_noise(x0[k:k + 1], rng.standard_normal((1, 1, 8, 8)).astype(np.float32), [t])
            ref = _run(DIGITS_ONNX, x, t)
            q = _run(per.model_path, x, t)
            assert q.shape == ref.shape
            vals.append(sqnr_db(ref, q))
        assert np.mean(vals) > bound, (t, vals)


def test_table_validates_and_per_step_scales_differ(quantized):
    per, static = quantized
    table = read_table(per.table_path)
    assert table["n_steps"] == STEPS and len(table["timesteps"]) == STEPS
    assert table["timesteps"] == sorted(table["timesteps"], reverse=True)
    m = onnx.load(str(per.model_path))
    quantized_names = {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}
    assert set(table["scales"]) == quantized_names
    # the input x_t shrinks from ~N(0,1) at t=T to the data range: its scale must change over steps
    s = np.array(table["scales"]["sample"])
    assert s.max() / s.min() > 1.2
    spread = [max(v) / min(v) for v in table["scales"].values()]
    assert sum(r > 1.1 for r in spread) > len(spread) // 4
    # the QDQ model's own (static) scale is the max over steps
    inits = {i.name: float(numpy_helper.to_array(i)) for i in m.graph.initializer if i.name.endswith("_scale")
             and not i.name.endswith("_wscale")}
    for name, v in table["scales"].items():
        assert inits[f"{name}_scale"] == pytest.approx(max(v), rel=1e-6)
    st = read_table(static.table_path)
    assert st["static"] and all(len(set(v)) == 1 for v in st["scales"].values())


def test_per_step_models_use_step_scales(quantized):
    per, _ = quantized
    table = read_table(per.table_path)
    m = onnx.load(str(per.model_path))
    last = with_step_scales(m, table, STEPS - 1)
    got = {i.name: float(numpy_helper.to_array(i)) for i in last.graph.initializer if not i.dims}
    for name, v in list(table["scales"].items())[:20]:
        assert got[f"{name}_scale"] == pytest.approx(v[-1], rel=1e-6)
    models = step_models(per.model_path, table)
    assert len(models) == STEPS
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32) * 0.5
    y = _run(models[-1], x, table["timesteps"][-1])
    assert np.all(np.isfinite(y))
    with pytest.raises(SdacError, match="outside"):
        with_step_scales(m, table, STEPS)


def test_activation_roles_keep_timestep_on_host():
    roles = tensor_roles(onnx.load(str(DIGITS_ONNX)))
    assert "sample" in roles.activations and "timestep" not in roles.activations
    assert "out_sample" in roles.activations
    assert any("time_proj" in n for n in roles.host)
    # the time MLP runs on the host in float; the device reads the per-resnet time projections
    assert any("time_embedding/linear_1" in n for n in roles.host)
    assert not any("time_embedding" in n for n in roles.activations)
    assert sum("time_emb_proj/Gemm_output_0" in n for n in roles.activations) >= 4


def test_refuses_overwrite_and_cli(tmp_path, quantized):
    from sdac.cli import main
    out = tmp_path / "c.qdq.onnx"
    assert main(["quantize", str(DIGITS_ONNX), "-o", str(out), "--steps", "2", "--samples", "1"]) == 0
    assert out.exists() and (tmp_path / "c.qdq.scales.json").exists()
    assert main(["quantize", str(DIGITS_ONNX), "-o", str(out), "--steps", "2", "--samples", "1"]) == 2
    with pytest.raises(SdacError, match="--force"):
        quantize_file(DIGITS_ONNX, out, steps=2, samples=1)
    assert main(["quantize", str(DIGITS_ONNX), "-o", str(out), "--steps", "2", "--samples", "1", "--force",
                 "--static"]) == 0
    assert read_table(tmp_path / "c.qdq.scales.json")["static"] is True
    assert main(["quantize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx")]) == 2


def test_scheduler_comes_from_sidecar():
    info = json.loads(DIGITS_ONNX.with_suffix(".json").read_text())
    assert scheduler_for(DIGITS_ONNX) == info["scheduler"]


@pytest.mark.parametrize("bad, msg", [
    ({"format": "x"}, "format"),
    ({"format": "sdac-step-scales", "version": 2}, "version"),
    ({"format": "sdac-step-scales", "version": 1, "n_steps": 2, "timesteps": [1]}, "timesteps"),
    ({"format": "sdac-step-scales", "version": 1, "n_steps": 2, "timesteps": [9, 1], "scales": {"a": [1.0]}}, "a:"),
    ({"format": "sdac-step-scales", "version": 1, "n_steps": 1, "timesteps": [1], "scales": {"a": [0.0]}}, "> 0"),
])
def test_validate_table_rejects(bad, msg):
    with pytest.raises(SdacError, match=msg):
        validate_table(bad, "t.json")


def test_conditional_batch2_model_calibrates(tmp_path):
    """A toy conditional model with batch 2 (guidance pairs): calibration sees both rows."""
    import onnx as _onnx
    from onnx import TensorProto, helper

    from sdac.cli import main
    g = helper.make_graph(
        [helper.make_node("Conv", ["sample", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "cond"], ["out"])],
        "cond", [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [2, 1, 4, 4]),
                 helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1]),
                 helper.make_tensor_value_info("cond", TensorProto.FLOAT, [2, 1, 1, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 1, 4, 4])],
        [numpy_helper.from_array(np.full((1, 1, 3, 3), 0.05, np.float32), "w")])
    _onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "c.onnx"))
    np.savez(tmp_path / "cond.npz", cond=np.array([0.0, 5.0], np.float32).reshape(2, 1, 1, 1))
    out = tmp_path / "c.qdq.onnx"
    assert main(["quantize", str(tmp_path / "c.onnx"), "-o", str(out), "--steps", "3", "--samples", "2",
                 "--cond", str(tmp_path / "cond.npz"), "--guidance", "2"]) == 0
    table = read_table(tmp_path / "c.qdq.scales.json")
    assert min(table["scales"]["cond"]) == pytest.approx(5.0 / 127, rel=1e-6)
    assert max(table["scales"]["out_float"]) >= 5.0 / 127   # the conditional row (out >= 5 - |conv|) was seen
    assert main(["quantize", str(tmp_path / "c.onnx"), "-o", str(tmp_path / "d.onnx"), "--steps", "2"]) == 2


@pytest.mark.parametrize("shape", [(3, 5), (4, 3, 3, 3), (7,)])
def test_int4_initializer_packing_equals_onnx_helper(shape):
    from onnx import TensorProto, helper

    from sdac.quant.qdq import _int_tensor
    q = np.random.default_rng(2).integers(-7, 8, shape).astype(np.int8)
    ours = _int_tensor("w", q, 4)
    ref = helper.make_tensor("w", TensorProto.INT4, q.shape, q.flatten().tolist())
    assert ours.data_type == TensorProto.INT4 and list(ours.dims) == list(shape)
    assert np.array_equal(numpy_helper.to_array(ours).astype(np.int8), q)
    assert np.array_equal(numpy_helper.to_array(ours).astype(np.int8), numpy_helper.to_array(ref).astype(np.int8))


def test_in_graph_absmax_equals_exposed_tensors(tmp_path, monkeypatch):
    """Calibration's in-graph max|x| outputs equal numpy on the whole exposed tensors, also when the
    instrumented model goes to onnxruntime as a file with external data (as SD-v1.5 in float32 must)."""
    from sdac.quant import calibrate as C
    proto = onnx.load(str(DIGITS_ONNX))
    names = tensor_roles(proto).activations
    rng = np.random.default_rng(4)
    feed = {"sample": rng.normal(0, 1, (1, 1, 8, 8)).astype(np.float32), "timestep": np.array([300], np.float32)}
    whole = _run_feed(C.expose(proto, names).SerializeToString(), feed, names)
    ref = np.array([np.max(np.abs(whole[n])) for n in names])
    small = _run_feed(C.expose_absmax(proto, names).SerializeToString(), feed,
                      [C.ABSMAX_PREFIX + n for n in names])
    assert np.array_equal(np.array([small[C.ABSMAX_PREFIX + n] for n in names]), ref)
    monkeypatch.setattr(C, "MAX_INLINE_BYTES", 0)
    path = C.session_model(C.expose_absmax(proto, names), str(tmp_path))
    assert isinstance(path, str) and (tmp_path / "calibrate.data").exists()
    big = _run_feed(path, feed, [C.ABSMAX_PREFIX + n for n in names])
    assert all(big[k] == small[k] for k in small)


def _run_feed(model, feed, names):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return dict(zip(names, s.run(names, feed)))


def test_external_data_model_quantizes_like_the_inline_one(tmp_path):
    """A float model whose weights are in an external-data file: calibration runs onnxruntime on the file
    (linked, not loaded here), the QDQ model holds its data, and both outputs equal the inline model's."""
    m = onnx.load(str(DIGITS_ONNX))
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    onnx.save(m, str(tmp_path / "a" / "m.onnx"))
    onnx.save(m, str(tmp_path / "b" / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    sched = scheduler_for(DIGITS_ONNX)
    ra = quantize_file(tmp_path / "a" / "m.onnx", tmp_path / "a" / "q.onnx", steps=2, samples=1, scheduler=sched)
    rb = quantize_file(tmp_path / "b" / "m.onnx", tmp_path / "b" / "q.onnx", steps=2, samples=1, scheduler=sched)
    assert np.array_equal(ra.calibration.absmax, rb.calibration.absmax)
    assert read_table(ra.table_path)["scales"] == read_table(rb.table_path)["scales"]
    qa, qb = onnx.load(str(ra.model_path)), onnx.load(str(rb.model_path))
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in qb.graph.initializer)
    ia = {i.name: numpy_helper.to_array(i) for i in qa.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in qb.graph.initializer}
    assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)


def _half(m: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 export of a float32 model (as exporters write it): weights, constants, types, Cast targets."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    half = lambda t: numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)  # noqa: E731
    for i, t in enumerate(m.graph.initializer):
        if t.data_type == F32:
            m.graph.initializer[i].CopyFrom(half(t))
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if vi.type.tensor_type.elem_type == F32:
            vi.type.tensor_type.elem_type = F16
    for nd in m.graph.node:
        for a in nd.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F32:
                a.t.CopyFrom(half(a.t))
            elif a.name == "to" and a.i == F32:
                a.i = F16
    return m


def test_float16_model_quantizes_through_its_float32_copy(tmp_path):
    """A float16 export (common for diffusion UNets) is widened to float32 (exactly: the copy's weights are
    the float16 values) and quantized like a float32 model."""
    from sdac.quant.fp16 import float16_tensors, float32_copy
    m32 = onnx.load(str(DIGITS_ONNX))
    src = tmp_path / "half.onnx"
    onnx.save(_half(m32), str(src))
    assert float16_tensors(onnx.load(str(src))) and not float16_tensors(m32)
    copy = onnx.load(str(float32_copy(src, tmp_path / "work")))
    assert not float16_tensors(copy)
    for a, b in zip(m32.graph.initializer, copy.graph.initializer):
        want = numpy_helper.to_array(a)
        if want.dtype == np.float32:
            want = want.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(numpy_helper.to_array(b), want)
    import onnxruntime as ort
    feed = {"sample": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32),
            "timestep": np.array([500], np.int64)}
    names = {i.name: i for i in m32.graph.input}
    feed = {k: v.astype(np.float32) if names[k].type.tensor_type.elem_type == 1 else v
            for k, v in feed.items() if k in names}
    got = ort.InferenceSession(copy.SerializeToString()).run(None, feed)[0]
    want = ort.InferenceSession(m32.SerializeToString()).run(None, feed)[0]
    assert sqnr_db(want, got) > 40         # the weights rounded to float16, the arithmetic float32
    res = quantize_file(src, tmp_path / "q.onnx", steps=2, samples=1, scheduler=scheduler_for(DIGITS_ONNX))
    ref = quantize_file(DIGITS_ONNX, tmp_path / "r.onnx", steps=2, samples=1)
    assert res.n_weights == ref.n_weights and res.n_activations == ref.n_activations
