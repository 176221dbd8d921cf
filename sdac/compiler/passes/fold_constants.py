"""fold_constants: evaluate every node whose inputs are all constants; Shape of a static tensor is a constant.

Evaluation uses the ONNX reference evaluator node by node, so any standard op folds.
Dead nodes are removed afterwards.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import Graph, onnx_node


def evaluate_node(graph: Graph, n: str) -> list[np.ndarray]:
    """Run one node on constant inputs with onnx.reference."""
    import onnx
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


def refresh_shapes(graph: Graph) -> None:
    """Re-run ONNX shape inference now that shape computations are constants (the exporter's
    Shape->Gather->... chains leave e.g. Slice outputs unknown in the original model)."""
    import onnx
    from onnx import helper, numpy_helper
    propagate_same_shape(graph)
    unknown = [t for n in graph.nodes() if graph.op(n) not in ("Constant", "Input", "Output")
               for t in graph.outputs(n) if t and (not graph.shape(t) or min(graph.shape(t)) < 0)]
    if not unknown:
        return
    nodes, inits, weights = [], [], []
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] == "Constant":
            v = d["value"]     # may be a LazyArray (sdac/compiler/weights.py): do not read weights here
            if np.size(v) <= 64:   # shape data; weights only need their type
                inits.append(numpy_helper.from_array(np.asarray(v), d["outputs"][0]))
            else:
                weights.append(helper.make_tensor_value_info(d["outputs"][0], onnx.helper.np_dtype_to_tensor_dtype(
                    v.dtype), list(v.shape)))
        elif d["op"] not in ("Input", "Output"):
            nodes.append(onnx_node(d))
    ins = [helper.make_tensor_value_info(t, elem.get(graph.tensors[t].dtype, onnx.TensorProto.FLOAT),
                                         list(graph.shape(t))) for t in graph.graph_inputs()] + weights
    outs = [helper.make_empty_tensor_value_info(t) for t in graph.graph_outputs()]
    gi = set(graph.graph_inputs())
    known = [helper.make_tensor_value_info(t, elem.get(tt.dtype, onnx.TensorProto.FLOAT), list(tt.shape))
             for t, tt in graph.tensors.items() if t not in gi and graph.producer(t) is not None
             and graph.op(graph.producer(t)) != "Constant" and tt.shape and min(tt.shape) > 0]
    model = helper.make_model(helper.make_graph(nodes, "shapes", ins, outs, inits, value_info=known),
                              opset_imports=[helper.make_opsetid("", graph.opset)])
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


def run(graph: Graph, ctx) -> bool:
    changed = False
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] in ("Input", "Output", "Constant"):
            continue
        ins = [t for t in d["inputs"] if t]
        if d["op"] == "Shape":
            shp = graph.shape(ins[0])
            if shp and all(s > 0 for s in shp):
                v = np.asarray(shp, np.int64)
                start, end = d["attrs"].get("start", 0), d["attrs"].get("end", None)
                fold_node(graph, n, [v[start:end]])
                changed = True
            continue
        if ins and all(graph.const(t) is not None for t in ins):
            fold_node(graph, n, evaluate_node(graph, n))
            changed = True
    changed = graph.remove_dead() or changed
    refresh_shapes(graph)
    for n in graph.nodes():
        if graph.op(n) in ("Constant", "Input", "Output"):
            continue
        for t in graph.outputs(n):
            if t and (not graph.shape(t) or min(graph.shape(t)) < 0) and graph.consumers(t):
                raise CompileError(f"{graph.source}: {graph.describe(n)}: the shape of its output {t!r} is unknown "
                                   f"(ONNX shape inference failed; is the model consistent?)")
    return changed
