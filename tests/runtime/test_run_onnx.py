"""End to end: a QDQ ONNX conv compiled by `sdac compile`, run by `sdac run`, against onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper as nh

from sdac.cli import main


def qdq_conv_model(rng, C=8, CO=12, H=6):
    wq = rng.integers(-7, 8, (CO, C, 3, 3)).astype(np.int8)
    inits = [nh.from_array(wq, "wq"), nh.from_array((rng.uniform(0.5, 1.5, CO) / 40).astype(np.float32), "ws"),
             nh.from_array(np.zeros(CO, np.int8), "wz"), nh.from_array(rng.normal(0, 0.1, CO).astype(np.float32), "b"),
             nh.from_array(np.float32(0.05), "xs"), nh.from_array(np.int8(0), "z"),
             nh.from_array(np.float32(0.04), "ys")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "z"], ["y"])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, H])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CO, H, H])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_compiled_qdq_conv_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    model = qdq_conv_model(rng)
    onnx.save(model, tmp_path / "conv.onnx")
    x = rng.normal(0, 1.5, (1, 8, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["compile", str(tmp_path / "conv.onnx"), "-o", str(tmp_path / "conv.sdab"), "-q"]) == 0
    assert main(["run", str(tmp_path / "conv.sdab"), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        y = z["y"]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # int4 weights are exact, so the only difference is the fixed-point requantization: at most one step
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 0.04 * 1.01
    assert 10 * np.log10((ref ** 2).sum() / ((y - ref) ** 2).sum()) >= 40
