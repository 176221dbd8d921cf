"""Pattern tests of the frontend and the passes on small hand-written ONNX graphs (fast).

Each graph is a float model with a per-step scale table giving every activation a scale, so the
frontend quantizes the weights itself (int4 [-7, 7] per output channel)."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sdac.compiler import kernels as K
from sdac.compiler.frontend import load_model, read_step_scales
from sdac.compiler.hardref import GELU_ALPHA, GELU_BETA, hard_reference, run_kernel_graph
from sdac.compiler.ir import verify_graph
from sdac.compiler.passes import PassContext, pass_names, run_passes
from sdac.compiler.passes.explain import explain
from sdac.compiler.reference import hard_gelu, hard_silu, sqnr_db
from sdac.errors import CompileError, SdacError

RNG = np.random.default_rng(0)


def const(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32 if np.asarray(arr).dtype.kind == "f" else None), name)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def table(m, n_steps=1, scale=0.05, skip=()):
    names = [i.name for i in m.graph.input] + [o for n in m.graph.node for o in n.output]
    return {"format": "sdac-step-scales", "version": 1, "n_steps": n_steps, "timesteps": list(range(n_steps)),
            "scales": {t: [scale * (1 + 0.5 * s) for s in range(n_steps)] for t in names if t not in skip}}


def compile_(m, n_steps=1, skip=(), ctx=None, **kw):
    """The fusion structure: these tables give every tensor a scale, so by default (requant_inside) every
    intermediate of a group would also be rounded (test_default_rounds_where_the_table_quantizes)."""
    g = load_model(m, table(m, n_steps, skip=skip))
    kg = run_passes(g, ctx or PassContext(requant_inside=False), **kw)
    return g, kg


def ops_after(m, stop):
    g = load_model(m, table(m))
    run_passes(g, PassContext(), stop_after=stop)
    return sorted(g.op(n) for n in g.nodes() if g.op(n) not in ("Constant", "Input", "Output")), g


def w(*shape, s=0.2):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


# ---------------------------------------------------------------------------- canonicalization

def silu_nodes(x, y, p=""):
    return [helper.make_node("Sigmoid", [x], [p + "sig"], name=p + "Sigmoid"),
            helper.make_node("Mul", [x, p + "sig"], [y], name=p + "Mul")]


def gn_nodes(x, y, c, groups, p="gn_"):
    return [helper.make_node("Reshape", [x, p + "shape"], [p + "r"], name=p + "Reshape"),
            helper.make_node("InstanceNormalization", [p + "r", p + "ones", p + "zeros"], [p + "in"],
                             name=p + "InstanceNorm", epsilon=1e-5),
            helper.make_node("Shape", [x], [p + "xs"], name=p + "Shape"),
            helper.make_node("Reshape", [p + "in", p + "xs"], [p + "r2"], name=p + "Reshape_1"),
            helper.make_node("Mul", [p + "r2", p + "gamma"], [p + "m"], name=p + "Mul"),
            helper.make_node("Add", [p + "m", p + "beta"], [y], name=p + "Add")], [
        const(p + "shape", np.array([1, groups, -1], np.int64)), const(p + "ones", np.ones(groups)),
        const(p + "zeros", np.zeros(groups)), const(p + "gamma", 1 + w(c, 1, 1)), const(p + "beta", w(c, 1, 1))]


def conv_gn_silu_model(stride=1):
    gn, inits = gn_nodes("c", "g", 40, 4)
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], name="Conv", pads=[1, 1, 1, 1],
                              strides=[stride, stride], kernel_shape=[3, 3])] + gn + silu_nodes("g", "y")
    return model(nodes, [("x", [1, 20, 8, 8])], ["y"], [const("W", w(40, 20, 3, 3)), const("b", w(40))] + inits)


def test_silu_and_groupnorm_patterns():
    ops, g = ops_after(conv_gn_silu_model(), "canonicalize")
    assert ops == ["Conv", "GroupNorm", "Silu"]
    gn = g.node(g.nodes("GroupNorm")[0])
    assert gn["attrs"]["groups"] == 4 and gn["attrs"]["gamma"].shape == (40,)


def test_conv_gn_silu_fuses_into_one_ws_kernel_matching_onnxruntime():
    m = conv_gn_silu_model()
    g, kg = compile_(m)
    assert len(kg.kernels) == 1
    k = kg.kernels[0]
    assert k.kind == "conv3x3" and [type(e) for e in k.epilogue] == [K.Bias, K.Norm, K.Activation, K.Emit]
    assert k.dataflow == "ws" and "GroupNorm" in k.dataflow_reason
    assert k.weights.q.shape == (40, 20, 3, 3) and np.abs(k.weights.q).max() == 7
    x = RNG.standard_normal((1, 20, 8, 8)).astype(np.float32)
    # onnxruntime on the hard model with the same int4 weights
    m2 = hard_reference(m)
    wq = (k.weights.q * k.weights.scale[:, None, None, None]).astype(np.float32)
    for init in m2.graph.initializer:
        if init.name == "W":
            init.CopyFrom(const("W", wq))
    xq = np.clip(np.round(x / 0.05), -128, 127) * 0.05
    want = ort.InferenceSession(m2.SerializeToString()).run(None, {"x": xq.astype(np.float32)})[0]
    want = np.clip(np.round(want / 0.05), -128, 127) * 0.05
    got = run_kernel_graph(kg, {"x": x})["y"]
    assert sqnr_db(want, got) > 60


def test_default_rounds_where_the_table_quantizes():
    """By default a kernel also rounds its flowing value wherever the model quantizes it (kernels.Requant at
    tensors the scale table names); the fusion is otherwise the same."""
    m = conv_gn_silu_model()
    _, plain = compile_(m)
    _, faithful = compile_(m, ctx=PassContext())
    k0, k1 = plain.kernels[0], faithful.kernels[0]
    assert not any(isinstance(e, K.Requant) for e in k0.epilogue)
    assert [type(e) for e in k1.epilogue if not isinstance(e, K.Requant)] == [type(e) for e in k0.epilogue]
    rq = [e.tensor for e in k1.epilogue if isinstance(e, K.Requant)]
    assert rq and all(t in table(m)["scales"] for t in rq)


def test_groupnormalization_op_and_layernorm():
    c = 40
    nodes = [helper.make_node("GroupNormalization", ["x", "s", "b"], ["g"], name="GN", num_groups=4, epsilon=1e-5),
             helper.make_node("Conv", ["g", "W"], ["y"], name="Conv", kernel_shape=[1, 1])]
    m = model(nodes, [("x", [1, c, 4, 4])], ["y"], [const("s", np.ones(4)), const("b", np.zeros(4)),
                                                      const("W", w(20, c, 1, 1))], opset=18)
    ops, _ = ops_after(m, "canonicalize")
    assert ops == ["Conv", "GroupNorm"]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="MatMul"),
             helper.make_node("Add", ["h", "b"], ["r"], name="Add"),
             helper.make_node("Add", ["r", "x"], ["s"], name="Residual"),
             helper.make_node("LayerNormalization", ["s", "g", "be"], ["y"], name="LN", axis=-1, epsilon=1e-5)]
    m = model(nodes, [("x", [1, 16, 40])], ["y"], [const("W", w(40, 40)), const("b", w(40)),
                                                    const("g", np.ones(40)), const("be", np.zeros(40))])
    _, kg = compile_(m)
    k, = kg.kernels
    assert k.kind == "matmul" and [type(e) for e in k.epilogue] == [K.Bias, K.AddTensor, K.Norm, K.Emit]
    assert k.epilogue[2].kind == "ln" and k.dataflow == "os" and "LayerNorm" in k.dataflow_reason


def test_decomposed_layernorm_pattern():
    """LayerNorm as exported below opset 17: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="ln/ReduceMean", axes=[-1]),
             helper.make_node("Sub", ["x", "m"], ["d"], name="ln/Sub"),
             helper.make_node("Pow", ["d", "two"], ["p"], name="ln/Pow"),
             helper.make_node("ReduceMean", ["p"], ["v"], name="ln/ReduceMean_1", axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"], name="ln/Add"),
             helper.make_node("Sqrt", ["ve"], ["s"], name="ln/Sqrt"),
             helper.make_node("Div", ["d", "s"], ["n"], name="ln/Div"),
             helper.make_node("Mul", ["n", "g"], ["ng"], name="ln/Mul"),
             helper.make_node("Add", ["ng", "b"], ["y"], name="ln/Add_1")]
    gamma, beta = 1 + w(40), w(40)
    m = model(nodes, [("x", [1, 16, 40])], ["y"], [const("two", np.float32(2)), const("eps", np.float32(1e-5)),
                                                    const("g", gamma), const("b", beta)], opset=13)
    ops, g = ops_after(m, "check_canonical")
    assert ops == ["LayerNorm"]
    _, kg = compile_(m)
    k, = kg.kernels
    assert k.kind == "norm" and k.epilogue[0].kind == "ln" and np.allclose(k.epilogue[0].gamma, gamma)
    x = RNG.standard_normal((1, 16, 40)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": np.clip(np.round(x / 0.05), -128, 127) * 0.05})[0]
    got = run_kernel_graph(kg, {"x": x})["y"]
    assert sqnr_db(want, got) > 25   # the output's int8 rounding at scale 0.05


def gelu_nodes(x, y, p=""):
    return [helper.make_node("Div", [x, p + "sqrt2"], [p + "d"], name=p + "Div"),
            helper.make_node("Erf", [p + "d"], [p + "e"], name=p + "Erf"),
            helper.make_node("Add", [p + "e", p + "one"], [p + "a"], name=p + "Add"),
            helper.make_node("Mul", [x, p + "a"], [p + "m"], name=p + "Mul"),
            helper.make_node("Mul", [p + "m", p + "half"], [y], name=p + "Mul_1")], [
        const(p + "sqrt2", np.float32(np.sqrt(2))), const(p + "one", np.float32(1)), const(p + "half", np.float32(0.5))]


def test_geglu_pattern_split_and_slice():
    gelu, inits = gelu_nodes("gate", "gg", "gl_")
    for variant in ("split", "slice"):
        if variant == "split":
            cut = [helper.make_node("Split", ["h", "sp"], ["a", "gate"], name="Split", axis=-1)]
            ci = [const("sp", np.array([40, 40], np.int64))]
        else:
            cut = [helper.make_node("Slice", ["h", "s0", "s1", "ax"], ["a"], name="Slice"),
                   helper.make_node("Slice", ["h", "s1", "s2", "ax"], ["gate"], name="Slice_1")]
            ci = [const("s0", np.array([0], np.int64)), const("s1", np.array([40], np.int64)),
                  const("s2", np.array([80], np.int64)), const("ax", np.array([-1], np.int64))]
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj")] + cut + gelu + [
            helper.make_node("Mul", ["a", "gg"], ["y"], name="GeGLU")]
        m = model(nodes, [("x", [1, 16, 40])], ["y"], [const("W", w(40, 80))] + inits + ci, opset=18)
        _, kg = compile_(m)
        k, = kg.kernels
        assert [type(e) for e in k.epilogue] == [K.GeGLU, K.Emit], variant
        assert k.outputs[0].shape == (1, 16, 40)


def test_gemm_resize_concat_scale_and_identity():
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["u"], name="Resize", mode="nearest"),
             helper.make_node("Concat", ["u", "z"], ["c"], name="Concat", axis=1),
             helper.make_node("Identity", ["c"], ["i"], name="Identity"),
             helper.make_node("Div", ["i", "two"], ["y"], name="Div")]
    m = model(nodes, [("x", [1, 20, 4, 4]), ("z", [1, 20, 8, 8])], ["y"],
              [const("sc", np.array([1, 1, 2, 2], np.float32)), const("two", np.float32(2))])
    ops, _ = ops_after(m, "check_canonical")
    assert ops == ["Concat", "Scale", "Upsample"]
    _, kg = compile_(m)
    assert [k.kind for k in kg.kernels] == ["upsample", "concat", "norm"]
    assert isinstance(kg.kernels[2].epilogue[0], K.Scale) and kg.kernels[2].epilogue[0].factor == 0.5
    assert kg.kernels[1].outputs[0].shape == (1, 8, 8, 40)
    nodes = [helper.make_node("Gemm", ["v", "W", "b"], ["y"], name="Gemm", transB=1)]
    m = model(nodes, [("v", [2, 40])], ["y"], [const("W", w(20, 40)), const("b", w(20))])
    _, kg = compile_(m)
    k, = kg.kernels
    assert k.kind == "matmul" and k.weights.q.shape == (40, 20) and k.inputs[0].shape == (2, 40)


def attention_model(heads=2, t=16, c=40, scale_style="sdpa"):
    d = c // heads
    shp = lambda n: const(n, np.array([1, t, heads, d], np.int64))
    nodes = [helper.make_node("MatMul", ["x", f"W{n}"], [n], name=f"to_{n}") for n in "qkv"]
    for n in "qkv":
        nodes.append(helper.make_node("Reshape", [n, "hs"], [n + "r"], name=f"Reshape_{n}"))
        perm = [0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]
        nodes.append(helper.make_node("Transpose", [n + "r"], [n + "t"], name=f"Transpose_{n}", perm=perm))
    if scale_style == "sdpa":   # sqrt(scale) on both q and k^T, as torch exports scaled_dot_product_attention
        nodes += [helper.make_node("Mul", ["qt", "rs"], ["qs"], name="Mul_q"),
                  helper.make_node("Mul", ["kt", "rs"], ["ks"], name="Mul_k"),
                  helper.make_node("MatMul", ["qs", "ks"], ["s"], name="QK")]
    else:
        nodes += [helper.make_node("MatMul", ["qt", "kt"], ["s0"], name="QK"),
                  helper.make_node("Div", ["s0", "sq"], ["s"], name="Div")]
    nodes += [helper.make_node("Softmax", ["s"], ["p"], name="Softmax", axis=-1),
              helper.make_node("MatMul", ["p", "vt"], ["o"], name="PV"),
              helper.make_node("Transpose", ["o"], ["ot"], name="Transpose_o", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "os"], ["y"], name="Reshape_o")]
    inits = [const(f"W{n}", w(c, c)) for n in "qkv"] + [
        shp("hs"), const("os", np.array([1, t, c], np.int64)), const("rs", np.float32(d ** -0.25)),
        const("sq", np.float32(d ** 0.5))]
    return model(nodes, [("x", [1, t, c])], ["y"], inits)


@pytest.mark.parametrize("style", ["sdpa", "div"])
def test_attention_pattern_found_by_index_tracing(style):
    m = attention_model(scale_style=style)
    ops, g = ops_after(m, "fuse_attention")
    assert ops == ["Attention", "Linear", "Linear", "Linear"]
    a = g.node(g.nodes("Attention")[0])["attrs"]
    assert a["heads"] == 2 and np.isclose(a["sm_scale"], 20 ** -0.5)
    _, kg = compile_(m)
    att = [k for k in kg.kernels if k.kind == "attention"][0]
    assert att.heads == 2 and att.dataflow == "os"
    x = RNG.standard_normal((1, 16, 40)).astype(np.float32)
    got = run_kernel_graph(kg, {"x": x})["y"]
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    assert sqnr_db(want, got) > 12   # int4 weights, coarse int8 activations and probabilities vs float


def _onnx_attention_model(**attn_attrs):
    """q, k, v projections split into 2 heads and one ONNX Attention (opset 23), as torch.onnx.export writes
    scaled_dot_product_attention at opset 23."""
    nodes = [helper.make_node("MatMul", ["x", f"W{n}"], [n], name=f"to_{n}") for n in "qkv"]
    for n in "qkv":
        nodes += [helper.make_node("Reshape", [n, "hs"], [n + "r"], name=f"Reshape_{n}"),
                  helper.make_node("Transpose", [n + "r"], [n + "t"], name=f"Transpose_{n}", perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Attention", ["qt", "kt", "vt"], ["o"], name="sdpa", **attn_attrs),
              helper.make_node("Transpose", ["o"], ["ot"], name="Transpose_o", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "ms"], ["y"], name="Reshape_o")]
    inits = [const(f"W{n}", w(40, 40)) for n in "qkv"] + [const("hs", np.array([1, 16, 2, 20], np.int64)),
                                                           const("ms", np.array([1, 16, 40], np.int64))]
    return model(nodes, [("x", [1, 16, 40])], ["y"], inits, opset=23)


def test_onnx_attention_op_compiles_as_the_attention_pattern():
    m = _onnx_attention_model(scale=0.3)
    _, kg = compile_(m)
    att = [k for k in kg.kernels if k.kind == "attention"]
    assert len(att) == 1 and att[0].heads == 2 and att[0].sm_scale == pytest.approx(0.3)
    x = RNG.standard_normal((1, 16, 40)).astype(np.float32)
    got = run_kernel_graph(kg, {"x": x})["y"]
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    assert sqnr_db(want, got) > 12   # int4 weights, coarse int8 activations and probabilities vs float
    _, kg = compile_(_onnx_attention_model())                      # default scale: 1/sqrt(head dim)
    assert [k for k in kg.kernels if k.kind == "attention"][0].sm_scale == pytest.approx(20 ** -0.5)
    with pytest.raises(CompileError, match="'sdpa' .*causal"):
        compile_(_onnx_attention_model(is_causal=1))


def test_attention_with_wrong_head_layout_is_an_error():
    m = attention_model()
    for n in m.graph.node:
        if n.name == "Transpose_k":
            n.attribute[0].ints[:] = [0, 2, 1, 3]   # k not transposed: q k (not k^T) -> shapes fail
    for n in m.graph.node:
        if n.name == "Transpose_v":
            n.attribute[0].ints[:] = [0, 2, 3, 1]
    with pytest.raises(CompileError):
        compile_(m)


def test_time_embedding_goes_to_host_and_becomes_addvec():
    nodes = [helper.make_node("Unsqueeze", ["t", "ax0"], ["t2"], name="Unsqueeze"),
             helper.make_node("Mul", ["t2", "freq"], ["ph"], name="Mul"),
             helper.make_node("Sin", ["ph"], ["s"], name="Sin"),
             helper.make_node("Cos", ["ph"], ["co"], name="Cos"),
             helper.make_node("Concat", ["s", "co"], ["emb"], name="Concat", axis=-1),
             helper.make_node("Gemm", ["emb", "W1", "b1"], ["h1"], name="linear_1", transB=1)]
    nodes += silu_nodes("h1", "a1", "act_")
    nodes += [helper.make_node("Gemm", ["a1", "W2", "b2"], ["temb"], name="time_emb_proj", transB=1),
              helper.make_node("Unsqueeze", ["temb", "ax23"], ["tv"], name="Unsqueeze_1"),
              helper.make_node("Conv", ["x", "Wc", "bc"], ["c"], name="Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
              helper.make_node("Add", ["c", "tv"], ["y"], name="AddTemb")]
    inits = [const("ax0", np.array([1], np.int64)), const("ax23", np.array([2, 3], np.int64)),
             const("freq", np.exp(-np.arange(10)).astype(np.float32)), const("W1", w(40, 20)), const("b1", w(40)),
             const("W2", w(40, 40)), const("b2", w(40)), const("Wc", w(40, 20, 3, 3)), const("bc", w(40))]
    m = model(nodes, [("x", [1, 20, 8, 8]), ("t", [1])], ["y"], inits)
    g, kg = compile_(m)
    assert kg.host_prologue is not None
    host = onnx.load_model_from_string(kg.host_prologue)
    assert {n.op_type for n in host.graph.node} >= {"Sin", "Cos", "Gemm", "Sigmoid"}
    assert [o.name for o in host.graph.output] == ["temb"]
    k, = kg.kernels
    assert [type(e) for e in k.epilogue] == [K.Bias, K.AddVec, K.Emit] and k.epilogue[1].v.shape == (1, 40)
    text = explain(g)
    for name in ("Sin", "Cos", "linear_1", "act_Mul"):
        assert any(line.startswith(name) and "host prologue" in line for line in text.splitlines()), name
    assert any(line.startswith("AddTemb") and "kernel Conv" in line for line in text.splitlines())
    # numerics: the KernelGraph (with its host prologue) against onnxruntime on the hard model
    x = RNG.standard_normal((1, 20, 8, 8)).astype(np.float32)
    t = np.array([37.0], np.float32)
    got = run_kernel_graph(kg, {"x": x, "t": t})["y"]
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x, "t": t})[0]
    assert sqnr_db(want, got) > 15


def test_conditioning_vectors_beside_a_feature_map_go_to_host():
    """SDXL's pooled text embedding and size ids are per-sample vectors (rank 2) embedded together with the
    timestep: host inputs. A rank-2 input that only meets device tensors (a ResnetBlock's own temb input, a
    batch of vectors) stays on the device."""
    from sdac.compiler.passes.split_host import host_inputs
    ranks = {"sample": 4, "timestep": 1, "text_embeds": 2, "temb": 2}
    nodes = [(["text_embeds", "w"], ["p"]), (["timestep"], ["s"]), (["s", "p"], ["emb"]),   # joins the timestep
             (["temb"], ["h"]), (["h", "sample"], ["y"])]                                  # meets the feature map
    assert host_inputs(ranks, nodes, lambda t: t == "w") == {"timestep", "text_embeds"}
    assert host_inputs({"x": 2, "t": 1}, [(["x", "t"], ["y"])], lambda t: False) == {"t"}     # x is the data
    nodes = [helper.make_node("Unsqueeze", ["t", "ax0"], ["t2"], name="Unsqueeze"),
             helper.make_node("Mul", ["t2", "freq"], ["ph"], name="Mul"),
             helper.make_node("Sin", ["ph"], ["s"], name="Sin"),
             helper.make_node("Concat", ["s", "c"], ["emb"], name="Concat", axis=-1),
             helper.make_node("Gemm", ["emb", "W1", "b1"], ["temb"], name="linear_1", transB=1),
             helper.make_node("Unsqueeze", ["temb", "ax23"], ["tv"], name="Unsqueeze_1"),
             helper.make_node("Conv", ["x", "Wc", "bc"], ["cv"], name="Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Add", ["cv", "tv"], ["y"], name="AddTemb")]
    inits = [const("ax0", np.array([1], np.int64)), const("ax23", np.array([2, 3], np.int64)),
             const("freq", np.exp(-np.arange(10)).astype(np.float32)), const("W1", w(40, 26)), const("b1", w(40)),
             const("Wc", w(40, 20, 3, 3)), const("bc", w(40))]
    m = model(nodes, [("x", [1, 20, 8, 8]), ("t", [1]), ("c", [1, 16])], ["y"], inits)
    g, kg = compile_(m)
    host = onnx.load_model_from_string(kg.host_prologue)
    assert {i.name for i in host.graph.input} == {"t", "c"} and [o.name for o in host.graph.output] == ["temb"]
    assert "c" not in {kg.io_names.get(a.name, a.name) for a in kg.inputs}
    x, t = RNG.standard_normal((1, 20, 8, 8)).astype(np.float32), np.array([37.0], np.float32)
    c = RNG.standard_normal((1, 16)).astype(np.float32)
    got = run_kernel_graph(kg, {"x": x, "t": t, "c": c})["y"]
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x, "t": t, "c": c})[0]
    assert sqnr_db(want, got) > 15


def test_resnet_shortcut_and_residual_fusion_order():
    """The shortcut 1x1 conv runs first; the long branch's conv absorbs the residual add and the next GN+SiLU."""
    gn1, i1 = gn_nodes("c2s", "g", 40, 4, "gn2_")
    nodes = [helper.make_node("Conv", ["x", "Ws"], ["sc"], name="shortcut", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="conv1", pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("Conv", ["c1", "W2", "b2"], ["c2"], name="conv2", pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("Add", ["sc", "c2"], ["s"], name="residual"),
             helper.make_node("Div", ["s", "one"], ["c2s"], name="osf")] + gn1 + silu_nodes("g", "y", "a_")
    inits = [const("Ws", w(40, 20, 1, 1)), const("W1", w(40, 20, 3, 3)), const("b1", w(40)),
             const("W2", w(40, 40, 3, 3)), const("b2", w(40)), const("one", np.float32(1))] + i1
    m = model(nodes, [("x", [1, 20, 8, 8])], ["y", "c2s"], inits)
    _, kg = compile_(m)
    assert [k.name for k in kg.kernels] == ["shortcut", "conv1", "conv2"]
    assert [type(e) for e in kg.kernels[2].epilogue] == [K.Bias, K.AddTensor, K.Emit, K.Norm, K.Activation, K.Emit]
    assert {kg.io_names[a.name] for a in kg.outputs} == {"y", "c2s"}


def test_dataflow_override():
    m = conv_gn_silu_model()
    _, kg = compile_(m, ctx=PassContext(dataflow={"Conv": "os"}))
    assert kg.kernels[0].dataflow == "os" and "overridden" in kg.kernels[0].dataflow_reason
    with pytest.raises(SdacError, match="names no kernel"):
        compile_(m, ctx=PassContext(dataflow={"nope": "os"}))


# ---------------------------------------------------------------------------- errors

def test_unsupported_operator_names_node_and_op():
    nodes = [helper.make_node("TopK", ["x", "k"], ["y", "i"], name="my_topk", axis=-1)]
    m = model(nodes, [("x", [1, 4, 20])], ["y"], [numpy_helper.from_array(np.array([2], np.int64), "k")])
    with pytest.raises(CompileError, match=r"my_topk.*TopK"):
        load_model(m)


def test_unsupported_pattern_names_node_and_why():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="big_conv", kernel_shape=[5, 5], pads=[2] * 4)]
    m = model(nodes, [("x", [1, 20, 8, 8])], ["y"], [const("W", w(20, 20, 5, 5))])
    with pytest.raises(CompileError, match=r"big_conv.*Conv.*5x5"):
        compile_(m)
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="lonely_softmax", axis=-1)]
    m = model(nodes, [("x", [1, 4, 20])], ["y"])
    with pytest.raises(CompileError, match=r"lonely_softmax.*Softmax.*attention"):
        compile_(m)


def test_missing_scale_is_an_error_naming_the_tensor():
    m = conv_gn_silu_model()
    with pytest.raises(CompileError, match=r"'y'.*no quantization scale.*sdac quantize.*--step-scales"):
        compile_(m, skip=("y",))


WQ = RNG.integers(-7, 8, (20, 20, 3, 3)).astype(np.int8)


def qdq_conv_model(zero_point=0):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["Wq", "ws"], ["Wd"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xd", "Wd"], ["c"], name="Conv", pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("QuantizeLinear", ["c", "s2", "zp2"], ["cq"], name="q_c"),
             helper.make_node("DequantizeLinear", ["cq", "s2", "zp2"], ["y"], name="dq_c")]
    inits = [const("s", np.float32(0.05)), numpy_helper.from_array(np.array(zero_point, np.int8), "zp"),
             numpy_helper.from_array(WQ, "Wq"),
             const("ws", np.full(20, 0.01, np.float32)), const("s2", np.float32(0.1)),
             numpy_helper.from_array(np.array(0, np.int8), "zp2")]
    return model(nodes, [("x", [1, 20, 4, 4])], ["y"], inits)


def test_qdq_model_compiles_with_exact_weights():
    g = load_model(qdq_conv_model())
    kg = run_passes(g, PassContext())
    k, = kg.kernels
    assert np.array_equal(k.weights.q, onnx.numpy_helper.to_array(qdq_conv_model().graph.initializer[2]))
    assert np.allclose(k.weights.scale, 0.01) and np.isclose(k.inputs[0].scales[0], 0.05)
    assert kg.io_names[k.outputs[0].name] == "y"


def test_nonzero_zero_point_is_an_error_naming_the_node():
    with pytest.raises(CompileError, match=r"q_x.*non-zero zero point"):
        run_passes(load_model(qdq_conv_model(zero_point=3)), PassContext())


def test_unreadable_model_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(SdacError, match="bad.onnx"):
        load_model(str(bad))
    with pytest.raises(SdacError, match="no such file"):
        load_model(str(tmp_path / "missing.onnx"))


def test_bad_scale_table_is_an_error(tmp_path):
    p = tmp_path / "s.scales.json"
    p.write_text('{"format": "other"}')
    with pytest.raises(SdacError, match="sdac-step-scales"):
        read_step_scales(str(p))
    p.write_text('{"format": "sdac-step-scales", "version": 1, "n_steps": 2, "scales": {"x": [1.0]}}')
    with pytest.raises(SdacError, match="2 positive numbers"):
        read_step_scales(str(p))


# ---------------------------------------------------------------------------- infrastructure

def test_per_step_scales_reach_the_acts():
    _, kg = compile_(conv_gn_silu_model(), n_steps=3)
    assert kg.n_steps == 3
    assert all(a.scales.shape == (3,) for a in kg.inputs + kg.outputs)
    x = RNG.standard_normal((1, 20, 8, 8))
    y0 = run_kernel_graph(kg, {"x": x}, step=0)["y"]
    y2 = run_kernel_graph(kg, {"x": x}, step=2)["y"]
    assert not np.array_equal(y0, y2) and sqnr_db(y0, y2) > 20


def test_verify_graph_catches_broken_graphs():
    g = load_model(conv_gn_silu_model(), table(conv_gn_silu_model()))
    verify_graph(g)
    n = g.nodes("Conv")[0]
    g.node(n)["inputs"][0] = "nonexistent"          # port list and edges disagree
    with pytest.raises(CompileError, match="nonexistent"):
        verify_graph(g)
    g = load_model(conv_gn_silu_model(), table(conv_gn_silu_model()))
    a, b = g.nodes("Conv")[0], g.nodes("Sigmoid")[0]
    g.g.add_edge(b, a, key="cycle@9", tensor=g.tensors["y"], port=9)
    with pytest.raises(CompileError, match="cycle"):
        verify_graph(g)
    g = load_model(conv_gn_silu_model(), table(conv_gn_silu_model()))
    run_passes(g, PassContext(), stop_after="check_canonical")
    g.tensors[g.outputs(g.nodes("Silu")[0])[0]].shape = (1, 3)
    with pytest.raises(CompileError, match="Silu"):
        verify_graph(g)


def test_a_failing_pass_names_the_passes_that_ran():
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="lonely_softmax", axis=-1)]
    m = model(nodes, [("x", [1, 4, 20])], ["y"])
    with pytest.raises(CompileError, match=r"in pass check_canonical; passes already run: fold_qdq, fold_constants"):
        compile_(m)


def test_dump_after_writes_files(tmp_path):
    m = conv_gn_silu_model()
    ctx = PassContext(dump_dir=str(tmp_path))
    compile_(m, ctx=ctx, dump_after={"canonicalize", "form_kernels"})
    names = sorted(os.path.basename(p) for p in ctx.dumped)
    assert names == ["model.canonicalize.dot", "model.canonicalize.onnx", "model.form_kernels.txt"] or \
        len(names) == 3
    onnx_dump = [p for p in ctx.dumped if p.endswith(".onnx")][0]
    d = onnx.load(onnx_dump)
    assert {n.op_type for n in d.graph.node} == {"Conv", "GroupNorm", "Silu"}
    assert "digraph" in open([p for p in ctx.dumped if p.endswith(".dot")][0]).read()
    assert "conv3x3" in open([p for p in ctx.dumped if p.endswith(".txt")][0]).read()
    with pytest.raises(SdacError, match="unknown pass"):
        compile_(m, dump_after={"no_such_pass"})
    assert "form_kernels" in pass_names()


def test_deterministic():
    def sig(kg):
        return [(k.name, k.kind, [a.name for a in k.inputs], [type(e).__name__ for e in k.epilogue],
                 None if k.weights is None else k.weights.q.tobytes()) for k in kg.kernels]
    m = attention_model()
    assert sig(compile_(m)[1]) == sig(compile_(m)[1])


def test_hard_reference_activations_are_exact():
    gelu, inits = gelu_nodes("x", "g")
    nodes = silu_nodes("x", "s") + gelu
    m = model(nodes, [("x", [1, 200])], ["s", "g"], inits)
    r = hard_reference(m)
    assert sorted(n.op_type for n in r.graph.node) == ["HardSigmoid", "HardSwish", "Mul"]
    hs = [n for n in r.graph.node if n.op_type == "HardSigmoid"][0]
    assert np.isclose(helper.get_attribute_value(hs.attribute[0]), GELU_ALPHA) and GELU_BETA == 0.5
    x = np.linspace(-6, 6, 200, dtype=np.float32)[None]
    s, g = ort.InferenceSession(r.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(s, hard_silu(x.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(g, hard_gelu(x.astype(np.float64)), atol=1e-5)


def test_reference_command(tmp_path):
    from sdac.cli import main
    src = tmp_path / "m.onnx"
    onnx.save(conv_gn_silu_model(), str(src))
    assert main(["reference", str(src), "-o", str(tmp_path / "r.onnx")]) == 0
    assert any(n.op_type == "HardSwish" for n in onnx.load(str(tmp_path / "r.onnx")).graph.node)
    assert main(["reference", str(src), "-o", str(tmp_path / "r.onnx")]) == 2   # exists
    assert main(["reference", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "x.onnx")]) == 2
