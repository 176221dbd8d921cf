"""split_host: move everything that depends only on the timestep (and constants) to a host prologue.

Host inputs are the graph inputs of rank <= 1 (the timestep; a device tensor is a
feature map, a sequence or a batch of vectors) and the rank-2 inputs whose computation joins
the timestep's (per-sample conditioning vectors, e.g. SDXL's pooled text embedding and
size/crop ids, embedded and added to the time embedding). Every node whose non-constant
inputs all come from host inputs or other host nodes runs on the host: the
sinusoidal embedding (Sin/Cos), the time MLP (Linear, SiLU, Linear) and the
per-resnet time projections. The host nodes become an ONNX model
(``graph.host_model``) whose outputs are the host tensors the device reads; on
the device those tensors become ``Input`` nodes (``attrs["host"] = True``).
The host runs the exact float model (exact SiLU) — only the device uses the hard
activations.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import NO_SCALE_HINT, Graph, onnx_node
from ..weights import inline


def host_inputs(ranks: dict[str, int], nodes, is_const) -> set[str]:
    """The host inputs among graph inputs of these ranks: rank <= 1, and, beside a feature-map or sequence input,
    rank 2 where the nodes (in topological order, (inputs, outputs) each) compute something from it together with
    a rank <= 1 input, host-side. (A rank-2 input that only meets device tensors, like a ResnetBlock's own temb
    input, stays a device input.)
    The frontend's _host_part and host_nodes below use the same rule."""
    base = {t for t, r in ranks.items() if r <= 1}
    # (only beside a feature map or sequence: a model whose data is a batch of vectors keeps them on the device)
    cand = {t for t, r in ranks.items() if r == 2} if any(r >= 3 for r in ranks.values()) else set()
    if not cand:
        return base
    deps = {t: frozenset((t,)) for t in base | cand}      # host-computable tensor -> the inputs it depends on
    joined: set[str] = set()
    for inputs, outputs in nodes:
        dyn = [t for t in inputs if t and not is_const(t)]
        if any(t not in deps for t in dyn):
            continue
        d = frozenset().union(*(deps[t] for t in dyn))   # (empty: computed from constants)
        if d & base:
            joined |= d & cand
        for o in outputs:
            if o:
                deps[o] = d
    return base | joined


def host_input_names(graph: Graph) -> list[str]:
    nodes = ((graph.inputs(n), graph.outputs(n)) for n in graph.nodes()
             if graph.op(n) not in ("Input", "Output", "Constant"))
    host = host_inputs({t: len(graph.shape(t)) for t in graph.graph_inputs()}, nodes,
                       lambda t: graph.const(t) is not None)
    return [t for t in graph.graph_inputs() if t in host]


def host_nodes(graph: Graph) -> list[str]:
    """Nodes depending only on host inputs and constants (and on at least one host input)."""
    host_t = set(host_input_names(graph))
    out = []
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] in ("Input", "Output", "Constant"):
            continue
        ins = [t for t in d["inputs"] if t]
        dyn = [t for t in ins if graph.const(t) is None]
        if dyn and all(t in host_t for t in dyn):
            out.append(n)
            host_t.update(o for o in d["outputs"] if o)
    return out


def run(graph: Graph, ctx) -> bool:
    import onnx
    from onnx import helper, numpy_helper
    hin = host_input_names(graph)
    hn = host_nodes(graph)
    if not hn:
        for t in hin:  # an unused host input is simply dropped from the device graph
            for n in graph.nodes("Input"):
                if graph.outputs(n)[0] == t and not graph.consumers(t):
                    graph.remove_node(n)
        return False
    hset = set(hn)
    # trailing layout ops (Unsqueeze to (B,C,1,1) ...) stay on the device, so the host hands over the
    # tensor the quantizer saw (the Linear output), which is also the (B, C) vector an AddVec reads
    layout = {"Unsqueeze", "Reshape", "Squeeze", "Flatten", "Identity", "Cast"}
    moved = True
    while moved:
        moved = False
        for n in reversed(hn):
            if n in hset and graph.op(n) in layout and all(
                    c not in hset for o in graph.outputs(n) if o for c, _ in graph.consumers(o)):
                hset.discard(n)
                moved = True
    hn = [n for n in hn if n in hset]
    produced = {o for n in hn for o in graph.outputs(n) if o}
    boundary = []
    for t in sorted(produced, key=lambda t: graph.node(graph.producer(t))["order"]):
        if any(c not in hset for c, _ in graph.consumers(t)):
            boundary.append(t)
    if graph.meta.get("proto") is None:   # a graph built in memory: the host model from its IR nodes
        consts = sorted({t for n in hn for t in graph.inputs(n) if t and graph.const(t) is not None})
        nodes = [onnx_node(graph.node(n)) for n in hn]
        inits = [numpy_helper.from_array(np.asarray(graph.const(t)), t) for t in consts]
        elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64,
                "int32": onnx.TensorProto.INT32, "float16": onnx.TensorProto.FLOAT16,
                "float64": onnx.TensorProto.DOUBLE}
        ins = [helper.make_tensor_value_info(t, elem.get(graph.tensors[t].dtype, onnx.TensorProto.FLOAT),
                                             list(graph.shape(t))) for t in hin]
        outs = [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, list(graph.shape(t))) for t in boundary]
        gp = helper.make_graph(nodes, "sdac_host_prologue", ins, outs, inits)
        model = helper.make_model(gp, opset_imports=[helper.make_opsetid("", graph.opset)], producer_name="sdac")
    else:
        # cut from the original model instead, so the host computes exactly what the model says
        # (including the Q/DQ pairs on the time-embedding path)
        src = graph.meta["proto"]     # (only this pass reads it: extended in place, not copied)
        known = {v.name for v in list(src.graph.value_info) + list(src.graph.input) + list(src.graph.output)}
        for t in boundary:   # the extractor wants a type for every output
            if t not in known:
                src.graph.value_info.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT,
                                                                          list(graph.shape(t))))
        try:
            model = onnx.utils.Extractor(src).extract_model(hin, boundary)
        except Exception as e:
            raise CompileError(f"{graph.source}: cannot extract the host prologue ({str(e).splitlines()[0][:200]})")
        model.graph.name = "sdac_host_prologue"
        try:      # its weights, from the model's external data (the host model is serialized standalone)
            for t in model.graph.initializer:
                inline(t, graph.meta.get("proto_dir", ""))
        except Exception as e:
            raise CompileError(f"{graph.source}: cannot read the host prologue's weights "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    try:
        host_model = model.SerializeToString()    # once: the checker reads these bytes too
        onnx.checker.check_model(host_model)
    except Exception as e:
        raise CompileError(f"{graph.source}: host prologue is not a valid ONNX model ({str(e).splitlines()[0]})")
    graph.host_model = host_model
    graph.host_inputs = hin

    for t in boundary:
        if graph.tensors[t].scales is None:
            raise CompileError(f"{graph.source}: tensor {t!r} (host prologue output read by the device) has no "
                               f"quantization scale; {NO_SCALE_HINT}")
    users = {t: [(c, p) for c, p in graph.consumers(t) if c not in hset] for t in boundary}
    for n in reversed(hn):
        graph.remove_node(n, fate="host prologue")
    for t in boundary:
        graph.add_node("Input", [], [t], name=f"input:{t}", attrs={"onnx_name": t, "host": True})
        for c, p in users[t]:
            graph.set_input(c, p, t)
    for n in graph.nodes("Input"):
        if graph.outputs(n)[0] in hin:
            graph.remove_node(n)
    graph.remove_dead()
    return True
