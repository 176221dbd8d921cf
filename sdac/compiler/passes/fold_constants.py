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
    return graph.remove_dead() or changed
