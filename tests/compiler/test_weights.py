"""Weights held out of memory (sdac/compiler/weights.py): int4 unpacking, lazy views, QuantWeight, and
compiles from external data that read each weight only when needed and give the same bundle."""
import collections

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sdac.bundle import bundle_bytes
from sdac.compiler import frontend
from sdac.compiler import weights as W
from sdac.compiler.driver import compile_model
from sdac.compiler.frontend import load_model
from sdac.compiler.passes import PassContext, run_passes

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 1001])
def test_unpack_int4_matches_onnx(signed, n):
    v = RNG.integers(-8, 8, n) if signed else RNG.integers(0, 16, n)
    t = numpy_helper.from_array(v.astype(ml_dtypes.int4 if signed else ml_dtypes.uint4), "w")
    ref = numpy_helper.to_array(t).astype(np.int8 if signed else np.uint8)
    assert np.array_equal(ref, v)
    got = W.unpack_int4(np.frombuffer(t.raw_data, np.uint8), n, signed)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    if signed:      # and back: the same bytes as onnx writes
        assert W.pack_int4(v.reshape(1, -1)).tobytes() == t.raw_data


def test_lazy_views_equal_numpy_and_do_not_read():
    a = RNG.integers(-7, 8, (6, 5, 3, 3)).astype(np.int8)
    reads = collections.Counter()

    class Src:
        def read(self):
            reads["n"] += 1
            return a
    lz = W.LazyArray(Src(), a.shape, a.dtype)
    v = lz[:, :, 1, 2].T
    w = lz.transpose(2, 3, 1, 0).reshape(9, 30)
    assert v.shape == (5, 6) and w.shape == (9, 30) and np.shape(v) == (5, 6) and np.size(w) == 270
    assert reads["n"] == 0
    assert np.array_equal(np.asarray(v), a[:, :, 1, 2].T)
    assert np.array_equal(np.asarray(w), a.transpose(2, 3, 1, 0).reshape(9, 30))
    assert np.array_equal(lz * 2, a * 2) and np.array_equal(np.abs(lz), np.abs(a))
    assert lz.max() == a.max() and np.array_equal(lz.astype(np.float32), a.astype(np.float32))
    assert np.array_equal(np.asarray(lz.cast(np.int32).map(lambda x: x + 1)), a.astype(np.int32) + 1)
    assert reads["n"] == 7


def test_quant_weight_keeps_the_channel_axis_through_views():
    q = RNG.integers(-8, 8, (4, 6, 1, 1)).astype(np.int8)
    s = RNG.uniform(0.01, 0.1, 4).astype(np.float32)
    qw = W.QuantWeight(q, s, 0, "int4")
    dense = q.astype(np.float32) * s[:, None, None, None]
    assert np.array_equal(np.asarray(qw), dense)
    v = qw[:, :, 0, 0].T
    assert isinstance(v, W.QuantWeight) and v.axis == 1 and v.shape == (6, 4)
    assert np.array_equal(np.asarray(v), dense[:, :, 0, 0].T)
    assert np.array_equal(np.asarray(v.codes), q[:, :, 0, 0].T)
    assert not isinstance(qw[1], W.QuantWeight)      # indexing the channel axis gives plain values
    assert np.array_equal(qw[1], dense[1])


def _qdq_conv(wq, ws):
    cout, cin = wq.shape[:2]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["Wq", "ws"], ["Wd"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xd", "Wd"], ["c"], name="Conv", pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("QuantizeLinear", ["c", "s2"], ["cq"], name="q_c"),
             helper.make_node("DequantizeLinear", ["cq", "s2"], ["y"], name="dq_c")]
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(wq.astype(ml_dtypes.int4), "Wq"),
             numpy_helper.from_array(ws, "ws"), numpy_helper.from_array(np.float32(0.1), "s2")]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def test_int4_minus_8_channels_are_requantized_like_the_dense_rule():
    wq = RNG.integers(-7, 8, (20, 20, 3, 3)).astype(np.int8)
    wq[3, 0, 1, 1] = -8
    wq[17, 5, 0, 2] = -8
    ws = RNG.uniform(0.01, 0.03, 20).astype(np.float32)
    with pytest.warns(UserWarning, match="-8 in 2 output channels"):
        k, = run_passes(load_model(_qdq_conv(wq, ws)), PassContext()).kernels
    # the rule, on the dense float weights: those channels get scale absmax / 7, codes round(w / scale)
    w = (wq.astype(np.float32) * ws[:, None, None, None]).astype(np.float64)
    s2 = ws.astype(np.float64)
    s2[[3, 17]] = np.abs(w[[3, 17]]).reshape(2, -1).max(axis=1) / 7
    q2 = np.clip(np.round(w / s2[:, None, None, None]), -7, 7)
    assert np.array_equal(k.weights.scale, s2.astype(np.float32))
    assert np.array_equal(np.asarray(k.weights.q), q2.astype(np.int8))
    assert np.array_equal(np.asarray(k.weights.q)[[0, 1, 2, 4]], wq[[0, 1, 2, 4]])


@pytest.fixture
def small_external(monkeypatch):
    monkeypatch.setattr(W, "SMALL_EXTERNAL", 1024)   # every weight of the small model stays on disk
    reads = collections.Counter()
    orig = W.ExternalData.read

    def counting(self):
        reads[self.offset] += 1
        return orig(self)
    monkeypatch.setattr(W.ExternalData, "read", counting)
    return reads


def test_external_data_compile_equals_inline_and_reads_each_weight_at_most_twice(build_model, tmp_path,
                                                                                   small_external):
    m = onnx.load(build_model("unet_cond")[0])
    (tmp_path / "inline").mkdir()
    (tmp_path / "ext").mkdir()
    onnx.save(m, str(tmp_path / "inline" / "m.onnx"))
    onnx.save(m, str(tmp_path / "ext" / "m.onnx"), save_as_external_data=True, location="m.data",
              size_threshold=0)
    a = compile_model(str(tmp_path / "inline" / "m.onnx"))
    assert not small_external
    b = compile_model(str(tmp_path / "ext" / "m.onnx"))
    assert small_external, "no weight was read from the external-data file"
    # form_kernels checks the codes once, the lowering packs them once; no pass reads all weights
    assert max(small_external.values()) <= 2, small_external.most_common(3)
    assert bundle_bytes(a.bundle) == bundle_bytes(b.bundle)


def test_missing_external_data_file_is_an_error_naming_it(tmp_path, build_model):
    m = onnx.load(build_model("conv_gn_silu")[0])
    onnx.save(m, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()
    with pytest.raises(Exception, match="m.data"):
        load_model(str(tmp_path / "m.onnx"))
