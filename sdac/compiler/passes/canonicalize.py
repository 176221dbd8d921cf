"""canonicalize: the op patterns torch.onnx.export writes for diffusers UNets -> sdac's canonical ops.

  Mul(x, Sigmoid(x)), HardSwish(x)                    -> Silu(x)       (the device computes the hard form)
  x * 0.5 * (1 + Erf(x / sqrt 2)), Gelu(x)           -> Gelu(x)       (hard form on the device)
  Split/Slice(y) halves a, g; Mul(a, Gelu(g))        -> GeGLU(y)
  Reshape(B,G,-1) InstanceNorm Reshape [Mul Add]     -> GroupNorm(x; groups, eps, gamma, beta)
  GroupNormalization                                  -> GroupNorm
  LayerNormalization (last axis)                      -> LayerNorm
  MatMul(x, W) [Add b], Gemm                          -> Linear(x, W[K,N], b)
  Conv 3x3 (stride 1|2, pad 1) or 1x1                 -> Conv (checked)
  Resize nearest x2                                   -> Upsample
  Concat on the channel axis                          -> Concat
  Add(x, per-channel constant)                        -> Bias
  Mul/Div by a scalar constant                        -> Scale
  Identity, Dropout, Cast float->float                -> removed
  ONNX Attention (opset 23; torch's exporter writes it for scaled_dot_product_attention)
                                                      -> MatMul(q, k^T), Scale, Softmax, MatMul(p, v)
Attention (MatMul/Softmax/MatMul with Reshape/Transpose) is the next pass, fuse_attention;
check_canonical then rejects whatever is left with the node, its op type and why.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import CANONICAL_OPS, Graph
from ..weights import QuantWeight


def _only_consumer(graph: Graph, t: str) -> str | None:
    cs = graph.consumers(t)
    return cs[0][0] if len(cs) == 1 and graph.op(cs[0][0]) != "Output" else None


def _scalar(graph: Graph, t: str) -> float | None:
    v = graph.const(t)
    if v is None or np.size(v) != 1:      # np.size: a weight (LazyArray) is not read
        return None
    return float(np.asarray(v).reshape(()))


def _other(graph: Graph, n: str, t: str) -> str:
    ins = graph.inputs(n)
    return ins[1] if ins[0] == t else ins[0]


def _fail(graph: Graph, n: str, why: str):
    raise CompileError(f"{graph.source}: {graph.describe(n)}: {why}")


# ---------------------------------------------------------------- simple rewrites

def remove_identities(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes():
        op = graph.op(n)
        if op in ("Identity", "Dropout") or (op == "Cast" and graph.tensors[graph.inputs(n)[0]].dtype == "float32"
                                            and graph.node(n)["attrs"].get("to") == 1):
            if graph.const(graph.inputs(n)[0]) is None:
                graph.alias(n)
                changed = True
    return changed


def silu(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("Sigmoid"):
        if n not in graph.g:
            continue
        x, s = graph.inputs(n)[0], graph.outputs(n)[0]
        m = _only_consumer(graph, s)
        if m and graph.op(m) == "Mul" and _other(graph, m, s) == x:
            graph.rewrite([n, m], "Silu", [x], graph.outputs(m)[0], name=graph.node(m)["name"])
            changed = True
    for n in graph.nodes("HardSwish"):
        graph.rewrite([n], "Silu", [graph.inputs(n)[0]], graph.outputs(n)[0])
        changed = True
    return changed


def gelu(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("Gelu"):
        if graph.node(n)["attrs"].get("approximate", "none") not in ("none", "tanh"):
            _fail(graph, n, "unknown Gelu approximation")
        graph.rewrite([n], "Gelu", [graph.inputs(n)[0]], graph.outputs(n)[0])
        changed = True
    for e in graph.nodes("Erf"):
        if e not in graph.g:
            continue
        d = graph.producer(graph.inputs(e)[0])
        if d is None or graph.op(d) not in ("Div", "Mul"):
            continue
        x = graph.inputs(d)[0]
        c = _scalar(graph, graph.inputs(d)[1])
        if c is None or not np.isclose(c if graph.op(d) == "Div" else 1 / c, np.sqrt(2), rtol=1e-3):
            continue
        a = _only_consumer(graph, graph.outputs(e)[0])
        if not a or graph.op(a) != "Add" or not np.isclose(_scalar(graph, _other(graph, a, graph.outputs(e)[0])) or 0, 1):
            continue
        # two Muls: by x and by 0.5, in either order
        t, chain, has_x, half = graph.outputs(a)[0], [d, e, a], False, False
        for _ in range(2):
            m = _only_consumer(graph, t)
            if not m or graph.op(m) != "Mul":
                break
            o = _other(graph, m, t)
            if o == x and not has_x:
                has_x = True
            elif _scalar(graph, o) is not None and np.isclose(_scalar(graph, o), 0.5) and not half:
                half = True
            else:
                break
            chain.append(m)
            t = graph.outputs(m)[0]
        if has_x and half:
            graph.rewrite(chain, "Gelu", [x], t, name=graph.node(chain[-1])["name"])
            changed = True
    return changed


def geglu(graph: Graph) -> bool:
    changed = False
    for g_ in graph.nodes("Gelu"):
        if g_ not in graph.g:
            continue
        gate = graph.inputs(g_)[0]
        p = graph.producer(gate)
        m = _only_consumer(graph, graph.outputs(g_)[0])
        if p is None or not m or graph.op(m) != "Mul":
            continue
        a = _other(graph, m, graph.outputs(g_)[0])
        pa = graph.producer(a)
        if graph.op(p) == "Split" and pa == p and graph.outputs(p) == [a, gate]:
            y = graph.inputs(p)[0]
            axis = graph.node(p)["attrs"].get("axis", 0)
            if axis not in (-1, len(graph.shape(y)) - 1):
                continue
            graph.rewrite([p, g_, m], "GeGLU", [y], graph.outputs(m)[0], name=graph.node(m)["name"],
                          attrs={"gate_scales": graph.tensors[graph.outputs(g_)[0]].scales})
            changed = True
        elif graph.op(p) == "Slice" and pa is not None and graph.op(pa) == "Slice" and \
                graph.inputs(p)[0] == graph.inputs(pa)[0]:
            y = graph.inputs(p)[0]
            c = graph.shape(y)[-1]
            if graph.shape(a)[-1] * 2 != c:
                continue
            sa = graph.const(graph.inputs(pa)[1])
            sg = graph.const(graph.inputs(p)[1])
            if sa is None or sg is None or int(np.ravel(sa)[0]) != 0 or int(np.ravel(sg)[0]) != c // 2:
                continue
            graph.rewrite([pa, p, g_, m], "GeGLU", [y], graph.outputs(m)[0], name=graph.node(m)["name"],
                          attrs={"gate_scales": graph.tensors[graph.outputs(g_)[0]].scales})
            changed = True
    return changed


def _per_channel(graph: Graph, t: str, c: int, x_rank: int, ch_axis: int | None = None) -> np.ndarray | None:
    """A constant that broadcasts along the channel axis only -> [C]; else None.

    The channel axis of x is 1 for rank 4 (NCHW) and the last axis otherwise, unless given."""
    v = graph.const(t)
    if v is None or np.size(v) not in (1, c):
        return None
    v = np.asarray(v, np.float32)
    if v.size == 1:
        return np.full(c, float(v.reshape(())), np.float32)
    if ch_axis is None:
        ch_axis = 1 if x_rank == 4 else x_rank - 1
    big = [i for i, s in enumerate(v.shape) if s != 1]
    if v.size != c or len(big) != 1 or x_rank - v.ndim + big[0] != ch_axis % x_rank:
        return None
    return v.reshape(c)


def group_norm(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("InstanceNormalization"):
        r1 = graph.producer(graph.inputs(n)[0])
        if r1 is None or graph.op(r1) != "Reshape":
            continue
        x = graph.inputs(r1)[0]
        xs = graph.shape(x)
        groups = graph.shape(graph.outputs(r1)[0])[1]
        sc, bi = graph.const(graph.inputs(n)[1]), graph.const(graph.inputs(n)[2])
        if sc is None or bi is None or not np.allclose(sc, 1) or not np.allclose(bi, 0):
            _fail(graph, n, "InstanceNormalization with a non-trivial per-group affine is not a GroupNorm pattern")
        r2 = _only_consumer(graph, graph.outputs(n)[0])
        if not r2 or graph.op(r2) != "Reshape" or graph.shape(graph.outputs(r2)[0]) != xs:
            continue
        c = xs[1]
        if len(xs) not in (3, 4):
            continue
        chain, t = [r1, n, r2], graph.outputs(r2)[0]
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        # where the model rounds inside the pattern (QDQ scales of the normalized value and of its
        # product with gamma): form_kernels keeps them with requant_inside
        inner = {"norm_scales": graph.tensors[graph.outputs(n)[0]].scales}
        m = _only_consumer(graph, t)
        if m and graph.op(m) == "Mul" and (g := _per_channel(graph, _other(graph, m, t), c, len(xs), 1)) is not None:
            gamma, chain, t = g, chain + [m], graph.outputs(m)[0]
            inner["gamma_scales"] = graph.tensors[t].scales
            a = _only_consumer(graph, t)
            if a and graph.op(a) == "Add" and (b := _per_channel(graph, _other(graph, a, t), c, len(xs), 1)) is not None:
                beta, chain, t = b, chain + [a], graph.outputs(a)[0]
        if len(xs) == 3:   # GroupNorm on (B, C, T): this tensor has its channels on axis 1
            graph.tensors[x].ch_axis = graph.tensors[t].ch_axis = 1
        graph.rewrite(chain, "GroupNorm", [x], t, name=graph.node(n)["name"].rsplit("/", 1)[0] or None,
                      attrs={"groups": int(groups), "eps": float(graph.node(n)["attrs"].get("epsilon", 1e-5)),
                             "gamma": gamma, "beta": beta, **inner})
        changed = True
    for n in graph.nodes("GroupNormalization"):
        d = graph.node(n)
        x = d["inputs"][0]
        c = graph.shape(x)[1]
        groups = int(d["attrs"]["num_groups"])
        sc, bi = graph.const(d["inputs"][1]), graph.const(d["inputs"][2])
        if sc is None or bi is None:
            _fail(graph, n, "GroupNormalization scale and bias must be constants")
        sc, bi = np.ravel(sc).astype(np.float32), np.ravel(bi).astype(np.float32)
        if sc.size == groups and c != groups:   # opset 18: per group
            sc, bi = np.repeat(sc, c // groups), np.repeat(bi, c // groups)
        graph.rewrite([n], "GroupNorm", [x], d["outputs"][0],
                      attrs={"groups": groups, "eps": float(d["attrs"].get("epsilon", 1e-5)), "gamma": sc, "beta": bi})
        changed = True
    return changed


def layer_norm(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("LayerNormalization"):
        d = graph.node(n)
        x = d["inputs"][0]
        r = len(graph.shape(x))
        if d["attrs"].get("axis", -1) not in (-1, r - 1):
            _fail(graph, n, "LayerNormalization over more than the last axis is not supported")
        c = graph.shape(x)[-1]
        sc = graph.const(d["inputs"][1])
        bi = graph.const(d["inputs"][2]) if len(d["inputs"]) > 2 and d["inputs"][2] else np.zeros(c, np.float32)
        if sc is None or bi is None:
            _fail(graph, n, "LayerNormalization scale and bias must be constants")
        graph.rewrite([n], "LayerNorm", [x], d["outputs"][0],
                      attrs={"eps": float(d["attrs"].get("epsilon", 1e-5)), "gamma": np.ravel(sc).astype(np.float32),
                             "beta": np.ravel(bi).astype(np.float32)})
        changed = True
    return changed


def _last_axis_mean(graph: Graph, n: str) -> bool:
    d = graph.node(n)
    axes = d["attrs"].get("axes")
    if axes is None and len(d["inputs"]) > 1 and d["inputs"][1]:
        axes = graph.const(d["inputs"][1])
    r = len(graph.shape(d["inputs"][0]))
    return axes is not None and [int(a) % r for a in np.ravel(axes)] == [r - 1] and d["attrs"].get("keepdims", 1)


def layer_norm_decomposed(graph: Graph) -> bool:
    """ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div [Mul gamma] [Add beta] (exports below opset 17)."""
    changed = False
    for r1 in graph.nodes("ReduceMean"):
        if r1 not in graph.g or not _last_axis_mean(graph, r1):
            continue
        x = graph.inputs(r1)[0]
        sub = next((c for c, _ in graph.consumers(graph.outputs(r1)[0]) if graph.op(c) == "Sub"
                    and graph.inputs(c) == [x, graph.outputs(r1)[0]]), None)
        if sub is None:
            continue
        dt = graph.outputs(sub)[0]
        users = {graph.op(c): c for c, _ in graph.consumers(dt)}
        pw, dv = users.get("Pow"), users.get("Div")
        if pw is None or dv is None or len(graph.consumers(dt)) != 2 or _scalar(graph, graph.inputs(pw)[1]) != 2.0:
            continue
        r2 = _only_consumer(graph, graph.outputs(pw)[0])
        if not r2 or graph.op(r2) != "ReduceMean" or not _last_axis_mean(graph, r2):
            continue
        ad = _only_consumer(graph, graph.outputs(r2)[0])
        eps = _scalar(graph, _other(graph, ad, graph.outputs(r2)[0])) if ad and graph.op(ad) == "Add" else None
        sq = _only_consumer(graph, graph.outputs(ad)[0]) if eps is not None else None
        if not sq or graph.op(sq) != "Sqrt" or graph.inputs(dv) != [dt, graph.outputs(sq)[0]]:
            continue
        c, r = graph.shape(x)[-1], len(graph.shape(x))
        chain, t = [r1, sub, pw, r2, ad, sq, dv], graph.outputs(dv)[0]
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        m = _only_consumer(graph, t)
        if m and graph.op(m) == "Mul" and (g := _per_channel(graph, _other(graph, m, t), c, r, r - 1)) is not None:
            gamma, chain, t = g, chain + [m], graph.outputs(m)[0]
            a = _only_consumer(graph, t)
            if a and graph.op(a) == "Add" and (b := _per_channel(graph, _other(graph, a, t), c, r, r - 1)) is not None:
                beta, chain, t = b, chain + [a], graph.outputs(a)[0]
        graph.rewrite(chain, "LayerNorm", [x], t, name=graph.node(r1)["name"].rsplit("/", 1)[0] or None,
                      attrs={"eps": float(eps), "gamma": gamma, "beta": beta})
        changed = True
    return changed


def _weight_const(graph: Graph, w_t: str, w: np.ndarray, base: str) -> str:
    """A new constant for a rearranged weight, keeping the int4 annotation (with its out-channel scale)."""
    old = graph.node(graph.producer(w_t))
    c = graph.add_const(w if isinstance(w, QuantWeight) else np.asarray(w, np.float32), base=base)
    if "qweight" in old["attrs"]:
        graph.node(graph.producer(c))["attrs"]["qweight"] = old["attrs"]["qweight"]
    return c


def linear(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("Gemm"):
        d = graph.node(n)
        x, w_t = d["inputs"][0], d["inputs"][1]
        w = graph.const(w_t)
        a = d["attrs"]
        if w is None or a.get("transA", 0):
            _fail(graph, n, "Gemm needs a constant weight and no transposed activation")
        if float(a.get("alpha", 1.0)) != 1.0 or not isinstance(w, QuantWeight):
            w = np.asarray(w, np.float32) * float(a.get("alpha", 1.0))
        if a.get("transB", 0):
            w = w.T
        ins = [x, _weight_const(graph, w_t, w, "linear_w")]
        if len(d["inputs"]) > 2 and d["inputs"][2]:
            b = graph.const(d["inputs"][2])
            if b is None:
                _fail(graph, n, "Gemm bias must be a constant")
            b = np.broadcast_to(np.asarray(b, np.float32) * float(a.get("beta", 1.0)), (w.shape[1],))
            ins.append(graph.add_const(b.copy(), base="linear_b"))
        graph.rewrite([n], "Linear", ins, d["outputs"][0])
        changed = True
    for n in graph.nodes("MatMul"):
        d = graph.node(n)
        x, w_t = d["inputs"]
        w = graph.const(w_t)
        if w is None or w.ndim != 2:
            continue  # a product of activations: attention
        chain, out, ins = [n], d["outputs"][0], [x, w_t]
        attrs = {}
        a = _only_consumer(graph, out)
        if a and graph.op(a) == "Add":
            b = _per_channel(graph, _other(graph, a, out), w.shape[1], 3)
            if b is not None:
                if graph.tensors[out].scales is not None:   # the model quantizes x @ W before the bias
                    attrs["pre_bias_scales"] = graph.tensors[out].scales
                chain, out = chain + [a], graph.outputs(a)[0]
                ins.append(graph.add_const(b, base="linear_b"))
        graph.rewrite(chain, "Linear", ins, out, name=graph.node(n)["name"], attrs=attrs)
        changed = True
    return changed


def conv(graph: Graph) -> bool:
    for n in graph.nodes("Conv"):
        d = graph.node(n)
        a = d["attrs"]
        w = graph.const(d["inputs"][1])
        if w is None:
            _fail(graph, n, "convolution weights must be constant")
        k = tuple(w.shape[2:])
        strides = tuple(a.get("strides", (1, 1)))
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        if a.get("group", 1) != 1:
            _fail(graph, n, f"grouped convolution (group={a['group']}) is not supported")
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            _fail(graph, n, "dilated convolution is not supported")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            _fail(graph, n, "auto_pad is not supported; export with explicit pads")
        if k == (3, 3):
            if strides not in ((1, 1), (2, 2)) or len(set(pads)) != 1 or pads[0] not in (0, 1):
                _fail(graph, n, f"3x3 convolution with strides {strides} pads {pads} (supported: stride 1 or 2, "
                                f"symmetric pad 0 or 1)")
        elif k == (1, 1):
            if strides != (1, 1) or any(pads):
                _fail(graph, n, f"1x1 convolution with strides {strides} pads {pads} (supported: stride 1, pad 0)")
        else:
            _fail(graph, n, f"{k[0]}x{k[1]} convolution (supported: 3x3 and 1x1)")
        a["kernel"], a["stride"], a["pad"] = k[0], strides[0], pads[0]
    return False


def attention_op(graph: Graph) -> bool:
    """ONNX's Attention (4-D q, k, v: (B, heads, T, d)) as the MatMul / Softmax / MatMul pattern fuse_attention
    maps, when it is plain scaled dot-product attention: no mask, no cache, not causal, no softcap."""
    changed = False
    for n in graph.nodes("Attention"):
        d = graph.node(n)
        a, ins, outs = d["attrs"], d["inputs"], d["outputs"]
        if len(ins) > 3 and any(ins[3:]):
            _fail(graph, n, "Attention with a mask, a key/value cache or sequence lengths (supported: q, k, v only)")
        if a.get("is_causal", 0) or a.get("softcap", 0.0):
            _fail(graph, n, "causal or soft-capped Attention (supported: plain scaled dot-product attention)")
        if any(t and graph.consumers(t) for t in outs[1:]):
            _fail(graph, n, "Attention whose key/value cache or scores are read (supported: its output only)")
        q, k, v = ins[:3]
        qs, ks, vs = graph.shape(q), graph.shape(k), graph.shape(v)
        if len(qs) != 4 or len(ks) != 4 or len(vs) != 4 or ks[1] != qs[1] or vs[1] != qs[1]:
            _fail(graph, n, f"Attention on q {qs}, k {ks}, v {vs} (supported: 4-D (B, heads, T, d) inputs with "
                            f"as many key/value heads as query heads)")
        scale = float(a.get("scale", 1.0 / np.sqrt(qs[3])))
        y = outs[0]
        users = graph.consumers(y)
        name, sources = d["name"], d["sources"]
        graph.remove_node(n)

        def tensor(base: str, shape) -> str:
            t = graph.new_name(f"{name}/{base}")
            graph.add_tensor(t, shape)
            return t
        kt, s, ss, p = (tensor("k_t", (ks[0], ks[1], ks[3], ks[2])), tensor("scores", (qs[0], qs[1], qs[2], ks[2])),
                        tensor("scaled", (qs[0], qs[1], qs[2], ks[2])), tensor("probs", (qs[0], qs[1], qs[2], ks[2])))
        for op, i, o, attrs in (("Transpose", [k], kt, {"perm": [0, 1, 3, 2]}), ("MatMul", [q, kt], s, {}),
                                ("Scale", [s], ss, {"factor": scale}), ("Softmax", [ss], p, {"axis": -1}),
                                ("MatMul", [p, v], y, {})):
            graph.add_node(op, i, [o], name=f"{name}/{op}", attrs=attrs, sources=sources)
        for c, port in users:
            graph.set_input(c, port, y)
        changed = True
    return changed


def resize(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes("Resize"):
        d = graph.node(n)
        a = d["attrs"]
        x, y = d["inputs"][0], d["outputs"][0]
        xs, ys = graph.shape(x), graph.shape(y)
        if a.get("mode", "nearest") != "nearest":
            _fail(graph, n, f"Resize mode {a.get('mode')!r} (supported: nearest 2x upsampling)")
        if len(xs) != 4 or ys != (xs[0], xs[1], 2 * xs[2], 2 * xs[3]):
            _fail(graph, n, f"Resize {xs} -> {ys} (supported: nearest 2x in H and W)")
        if a.get("coordinate_transformation_mode", "half_pixel") not in ("asymmetric", "half_pixel", "pytorch_half_pixel",
                                                                          "align_corners", "tf_half_pixel_for_nn"):
            _fail(graph, n, "unsupported coordinate transformation for nearest upsampling")
        graph.rewrite([n], "Upsample", [x], y)
        changed = True
    return changed


def concat(graph: Graph) -> bool:
    for n in graph.nodes("Concat"):
        d = graph.node(n)
        r = len(graph.shape(d["outputs"][0]))
        ax = d["attrs"].get("axis", 0) % r
        if not ((r == 4 and ax == 1) or (r in (2, 3) and ax == r - 1)):
            _fail(graph, n, f"Concat on axis {d['attrs'].get('axis')} of a rank-{r} tensor (supported: channels)")
        d["attrs"]["axis"] = -1 if r != 4 else 1
    return False


def arithmetic(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes():
        if n not in graph.g:
            continue
        op = graph.op(n)
        d = graph.node(n)
        if op in ("Mul", "Div"):
            x, c = d["inputs"]
            if graph.const(x) is not None and op == "Mul":
                x, c = c, x
            s = _scalar(graph, c)
            if s is None or graph.const(x) is not None:
                continue
            if s == 1.0:   # e.g. output_scale_factor 1
                graph.alias(n)
                changed = True
                continue
            graph.rewrite([n], "Scale", [x], d["outputs"][0], attrs={"factor": s if op == "Mul" else 1.0 / s})
            changed = True
        elif op == "Add":
            x, c = d["inputs"]
            if graph.const(x) is not None:
                x, c = c, x
            if graph.const(c) is None:
                continue
            xs = graph.shape(x)
            ch = xs[1] if len(xs) == 4 else xs[-1]
            b = _per_channel(graph, c, ch, len(xs))
            if b is None:
                _fail(graph, n, f"adding a constant of shape {graph.shape(c)} that is not per channel")
            graph.rewrite([n], "Bias", [x, graph.add_const(b, base="bias")], d["outputs"][0])
            changed = True
    return changed


REWRITES = [remove_identities, silu, gelu, geglu, group_norm, layer_norm, layer_norm_decomposed, linear, conv, resize, concat,
            attention_op, arithmetic]


def run(graph: Graph, ctx) -> bool:
    changed = False
    for rw in REWRITES:
        changed = rw(graph) or changed
    changed = graph.remove_dead() or changed
    return changed


WHY = {
    "Softmax": "Softmax outside an attention pattern (MatMul -> Softmax -> MatMul with head reshapes)",
    "MatMul": "product of two activations outside an attention pattern",
    "Sigmoid": "Sigmoid that is not part of SiLU x*sigmoid(x)",
    "Erf": "Erf that is not part of GeLU x*0.5*(1+erf(x/sqrt(2)))",
    "InstanceNormalization": "InstanceNormalization that is not part of a GroupNorm pattern",
    "Mul": "multiplication by a non-scalar or non-constant factor",
    "Div": "division by a non-scalar or non-constant value",
    "Sub": "subtraction of activations",
    "Split": "Split that is not the GeGLU chunk",
    "Slice": "Slice of an activation (only the GeGLU halves are supported)",
    "Sin": "Sin on a device tensor (only the timestep embedding, computed on the host, may use it)",
    "Cos": "Cos on a device tensor (only the timestep embedding, computed on the host, may use it)",
}


def check(graph: Graph, ctx) -> bool:
    """Every op left must be canonical; otherwise name the node, its op type and why."""
    for n in graph.nodes():
        op = graph.op(n)
        if op in CANONICAL_OPS or op in ("Input", "Output", "Constant"):
            continue
        why = WHY.get(op, "no mapping to an accelerator kernel")
        raise CompileError(f"{graph.source}: node {graph.node(n)['name']!r} ({op}): not supported: {why}")
    graph.stage = "canonical"
    return False
