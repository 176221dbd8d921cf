"""fold_constants: evaluate every node whose inputs are all constants; Shape of a static tensor is a constant.

Evaluation uses the ONNX reference evaluator node by node, so any standard op folds.
Dead nodes are removed afterwards.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import Graph, onnx_node


_NUMERIC = {np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                   np.uint64, np.float16, np.float32, np.float64)}
_CAST_TO = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
            10: np.float16, 11: np.float64}


def _slice(data, starts, ends, axes=None, steps=None):
    """onnx.reference's Slice (opset >= 10)."""
    if len(starts.shape) == 0:
        starts = np.array([starts])
    if len(ends.shape) == 0:
        ends = np.array([ends])
    if axes is None:
        slices = [slice(s, e) for s, e in zip(starts, ends)] if steps is None else \
            [slice(s, e, st) for s, e, st in zip(starts, ends, steps)]
    else:
        slices = [slice(0, a) for a in data.shape]
        for i, (s, e, a) in enumerate(zip(starts, ends, axes)):
            slices[a] = slice(s, e) if steps is None else slice(s, e, steps[i])
    return data[tuple(slices)]


def _div(x, y):
    if issubclass(x.dtype.type, np.integer):   # truncation toward zero
        if not np.all(y):
            return None
        q, r = np.floor_divide(x, y), np.remainder(x, y)
        return q + ((r != 0) & ((x < 0) ^ (y < 0))).astype(q.dtype)
    return np.divide(x, y)


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Equal": np.equal}


def _fast_eval(graph: Graph, d: dict) -> list[np.ndarray] | None:
    """What onnx.reference computes for the ops exporters' shape arithmetic uses most, in numpy directly
    (SD-v1.5 folds 508 such nodes; each ReferenceEvaluator costs 0.1 ms and the first one imports every
    reference op). None when anything is unusual (the caller then runs onnx.reference, errors included)."""
    op, a = d["op"], d["attrs"]
    if graph.opset < 13:     # (these ops' definitions are the same from opset 13 on)
        return None
    vals = [None if not t else np.array(graph.const(t), order="C") for t in d["inputs"]]
    if any(v is not None and v.dtype not in _NUMERIC for v in vals):
        return None
    x = vals[0]
    floating = x is not None and x.dtype.kind == "f"
    if op == "Identity" and len(vals) == 1:
        return [x]
    if op == "Sqrt" and len(vals) == 1 and floating:
        with np.errstate(all="ignore"):     # onnx.reference silences the warnings of Sqrt
            return [np.asarray(np.sqrt(x).astype(x.dtype))]
    if op == "Cast" and len(vals) == 1 and a.get("to") in _CAST_TO:
        return [np.asarray(x.astype(_CAST_TO[a["to"]]))]
    if op in _BINARY and len(vals) == 2 and x.dtype == vals[1].dtype and x.dtype.kind in "iuf":
        r = _BINARY[op](x, vals[1])
        if r is None:
            return None
        r = np.asarray(r)
        if op == "Div" and r.dtype != x.dtype:
            r = r.astype(x.dtype)
        return [r] if r.dtype == (np.bool_ if op == "Equal" else x.dtype) else None
    if op == "Where" and len(vals) == 3 and x.dtype == np.bool_ and vals[1].dtype == vals[2].dtype:
        return [np.asarray(np.where(x, vals[1], vals[2]).astype(vals[1].dtype))]
    if op == "Gather" and len(vals) == 2 and vals[1].dtype in (np.int32, np.int64) and x.ndim:
        ax = a.get("axis", 0)
        idx = vals[1]
        if not -x.ndim <= ax < x.ndim or idx.size and not (-x.shape[ax] <= idx.min() and idx.max() < x.shape[ax]):
            return None
        return [np.asarray(np.take(x, idx, axis=ax))]
    if op == "ConstantOfShape" and len(vals) == 1 and x.dtype == np.int64 and x.ndim == 1 and x.min(initial=0) >= 0:
        v = a.get("value")
        v = np.array(0, np.float32) if v is None else np.asarray(v)
        if v.size != 1 or v.dtype not in _NUMERIC:
            return None
        return [np.full(tuple(x), v.flat[0])]
    if op == "Slice" and 3 <= len(vals) <= 5 and all(
            v is not None and v.dtype in (np.int32, np.int64) and v.ndim <= 1 for v in vals[1:]) and \
            (len(vals) < 5 or np.all(vals[4])):
        axes = vals[3] if len(vals) > 3 else None
        if axes is not None and (axes.size != vals[1].size or np.any((axes < -x.ndim) | (axes >= x.ndim))):
            return None
        if axes is None and vals[1].size > x.ndim:
            return None
        return [np.asarray(_slice(x, *vals[1:]))]
    return None


def evaluate_node(graph: Graph, n: str) -> list[np.ndarray]:
    """Run one node on constant inputs with onnx.reference."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    d = graph.node(n)
    inits = [numpy_helper.from_array(np.asarray(graph.const(t)), t) for t in dict.fromkeys(d["inputs"]) if t]
    outs = [helper.make_empty_tensor_value_info(o) for o in d["outputs"] if o]
    gp = helper.make_graph([onnx_node(d)], "fold", [], outs, inits)
    model = helper.make_model(gp, opset_imports=[helper.make_opsetid("", graph.opset)])
    try:
        res = ReferenceEvaluator(model).run(None, {})
    except Exception as e:
        raise CompileError(f"{graph.source}: {graph.describe(n)}: cannot fold on constant inputs "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")
    return [np.asarray(r) for r in res]


def fold_node(graph: Graph, n: str, values: list[np.ndarray], fate: str = "folded (constant)") -> None:
    d = graph.node(n)
    users = {o: graph.consumers(o) for o in d["outputs"] if o}
    graph.remove_node(n, fate=fate)
    for o, v in zip([o for o in d["outputs"] if o], values):
        graph.tensors[o].shape = tuple(v.shape)
        graph.tensors[o].dtype = str(v.dtype)
        graph.add_node("Constant", [], [o], name=o, value=v, sources=d["sources"])
        for c, port in users[o]:
            graph.set_input(c, port, o)


SAME_SHAPE = {"GroupNormalization", "LayerNormalization", "InstanceNormalization", "Sigmoid", "Erf", "Relu",
              "HardSwish", "HardSigmoid", "Gelu", "Softmax", "Identity", "Dropout", "Cast", "Tanh", "Sqrt", "Neg"}


def propagate_same_shape(graph: Graph) -> None:
    """Ops ONNX shape inference has no rule for (function ops like GroupNormalization) keep their input's shape."""
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] in SAME_SHAPE and d["inputs"] and d["outputs"]:
            t, x = graph.tensors[d["outputs"][0]], graph.tensors.get(d["inputs"][0])
            if x is not None and x.shape and min(x.shape) > 0 and (not t.shape or min(t.shape) < 0):
                t.shape = x.shape


def _add_value_info(field, name: str, elem: int, shape) -> None:
    """field.append(helper.make_tensor_value_info(name, elem, list(shape))) without the intermediate
    messages (the same bytes)."""
    vi = field.add()
    vi.name = name
    tt = vi.type.tensor_type
    tt.elem_type = elem
    tt.shape.SetInParent()        # (an empty shape is a scalar, not an unknown rank)
    dims = tt.shape.dim
    for s in shape:
        dims.add().dim_value = s


def shapes_model(graph: Graph):
    """The model refresh_shapes runs ONNX shape inference on: the graph's nodes, constants up to 64 elements
    as initializers, the weights and graph inputs as typed inputs, every known shape as value_info.
    (Built field by field: the bytes helper.make_model(helper.make_graph(...)) gives, without its copies.)"""
    import onnx
    from onnx import numpy_helper
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    model = onnx.ModelProto()
    model.ir_version = onnx.IR_VERSION
    gr = model.graph
    nodes, inits, weights = [], [], []
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] == "Constant":
            v = d["value"]     # may be a LazyArray (sdac/compiler/weights.py): do not read weights here
            if np.size(v) <= 64:   # shape data; weights only need their type
                inits.append(numpy_helper.from_array(np.asarray(v), d["outputs"][0]))
            else:
                weights.append((d["outputs"][0], onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
        elif d["op"] not in ("Input", "Output"):
            nodes.append(onnx_node(d))
    gr.node.extend(nodes)
    from ..frontend import as_identity_for_inference
    as_identity_for_inference(gr.node)
    gr.name = "shapes"
    gi = graph.graph_inputs()
    for t in gi:
        _add_value_info(gr.input, t, elem.get(graph.tensors[t].dtype, onnx.TensorProto.FLOAT), graph.shape(t))
    for w in weights:
        _add_value_info(gr.input, *w)
    for t in graph.graph_outputs():
        gr.output.add().name = t
    gr.initializer.extend(inits)
    gi = set(gi)
    producer, attrs = graph._producer, graph.g._node
    for t, tt in graph.tensors.items():
        if t not in gi and tt.shape and min(tt.shape) > 0:
            p = producer.get(t)
            if p is not None and attrs[p]["op"] != "Constant":
                _add_value_info(gr.value_info, t, elem.get(tt.dtype, onnx.TensorProto.FLOAT), tt.shape)
    opset = model.opset_import.add()
    opset.domain = ""
    opset.version = graph.opset
    return model


def refresh_shapes(graph: Graph) -> None:
    """Re-run ONNX shape inference now that shape computations are constants (the exporter's
    Shape->Gather->... chains leave e.g. Slice outputs unknown in the original model)."""
    import onnx
    propagate_same_shape(graph)
    unknown = [t for n in graph.nodes() if graph.op(n) not in ("Constant", "Input", "Output")
               for t in graph.outputs(n) if t and (not graph.shape(t) or min(graph.shape(t)) < 0)]
    if not unknown:
        return
    model = shapes_model(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return
    for vi in inferred.graph.value_info:
        if vi.name in graph.tensors and vi.type.tensor_type.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
            if dims and min(dims) > 0:
                graph.tensors[vi.name].shape = dims
    propagate_same_shape(graph)


def _static(graph: Graph, t: str) -> bool:
    """Whether t's shape is known (a Shape node reading it folds to a constant)."""
    shp = graph.shape(t)
    return bool(shp) and all(s > 0 for s in shp)


def _fold_once(graph: Graph) -> bool:
    changed = False
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] in ("Input", "Output", "Constant"):
            continue
        ins = [t for t in d["inputs"] if t]
        if d["op"] == "Shape":
            if _static(graph, ins[0]):
                v = np.asarray(graph.shape(ins[0]), np.int64)
                start, end = d["attrs"].get("start", 0), d["attrs"].get("end", None)
                fold_node(graph, n, [v[start:end]])
                changed = True
            continue
        if ins and all(graph.const(t) is not None for t in ins):
            try:
                values = _fast_eval(graph, d)
            except Exception:    # (anything odd: onnx.reference says what)
                values = None
            fold_node(graph, n, values if values is not None else evaluate_node(graph, n))
            changed = True
    return changed


def run(graph: Graph, ctx) -> bool:
    changed = False
    while True:
        folded = _fold_once(graph)
        changed = graph.remove_dead() or folded or changed
        refresh_shapes(graph)
        # the shapes the refresh found can make more Shape nodes constant: stacked transformer blocks (SDXL's
        # transformer_layers_per_block) take the second block's GeGLU slice bounds from shapes that only the
        # first block's folded slices decide
        if not folded or not any(_static(graph, graph.inputs(n)[0]) for n in graph.nodes("Shape")):
            break
    for n in graph.nodes():
        if graph.op(n) in ("Constant", "Input", "Output"):
            continue
        for t in graph.outputs(n):
            if t and (not graph.shape(t) or min(graph.shape(t)) < 0) and graph.consumers(t):
                raise CompileError(f"{graph.source}: {graph.describe(n)}: the shape of its output {t!r} is unknown "
                                   f"(ONNX shape inference failed; is the model consistent?)")
    return changed
