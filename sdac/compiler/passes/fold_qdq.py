"""fold_qdq: QuantizeLinear/DequantizeLinear pairs become tensor scales; quantized constants become floats.

* Q(x) -> DQ on an activation: the consumers of the DQ output read x, and x gets
  the scale (replicated over the steps, unless the step-scale table already gave
  x per-step scales). Activations must be int8 with zero point 0.
* DQ(constant): the constant becomes a ``QuantWeight`` (codes and scale, not read:
  sdac/compiler/weights.py) whose value is the float weight, annotated with
  ``qweight = {"scale", "axis", "dtype"}``; form_kernels keeps the exact int4 codes
  (int8 weights are requantized there, with a warning).
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import Graph
from ..weights import LazyArray, QuantWeight


def _scalar_const(graph: Graph, t: str, n: str, what: str) -> np.ndarray:
    v = graph.const(t) if t else None
    if v is None:
        raise CompileError(f"{graph.source}: {graph.describe(n)}: {what} must be a constant")
    return v


def _dequant_const(graph: Graph, n: str) -> None:
    d = graph.node(n)
    ins = d["inputs"]
    q = graph.const(ins[0])
    scale = np.asarray(_scalar_const(graph, ins[1], n, "scale"), np.float64)
    zp = graph.const(ins[2]) if len(ins) > 2 and ins[2] else None
    if zp is not None and np.any(np.asarray(zp) != 0):
        raise CompileError(f"{graph.source}: {graph.describe(n)}: non-zero zero point on a quantized constant "
                           f"(sdac needs symmetric quantization)")
    axis = int(d["attrs"].get("axis", 1))
    if d["attrs"].get("block_size", 0):
        raise CompileError(f"{graph.source}: {graph.describe(n)}: blocked quantization is not supported")
    # kept as codes + scale (a QuantWeight, read when a pass needs it): SD-v1.5 has 860M weights, so every
    # byte per weight held here is 0.86 GB
    qi = q if isinstance(q, LazyArray) else LazyArray.of(np.asarray(q))
    narrow = {"int8": np.int8, "uint8": np.int16}.get(qi.dtype.name, np.int32)   # int4 arrive as int8
    if qi.dtype != narrow:
        qi = qi.cast(narrow)                           # int32: quantized biases
    axis = axis % max(qi.ndim, 1)
    qtype = graph.tensors[ins[0]].dtype
    val = QuantWeight(qi, scale.astype(np.float32).reshape(-1) if scale.size > 1 else scale.astype(np.float32),
                      axis, qtype)
    out = d["outputs"][0]
    users = graph.consumers(out)
    graph.remove_node(n, fate="folded (quantized constant)")
    graph.tensors[out].shape = tuple(val.shape)
    graph.tensors[out].dtype = "float32"
    graph.add_node("Constant", [], [out], name=out, value=val, sources=d["sources"],
                   attrs={"qweight": {"scale": scale.astype(np.float32), "axis": axis, "dtype": qtype}})
    for c, port in users:
        graph.set_input(c, port, out)


def _check_activation_quant(graph: Graph, n: str, checked: dict | None = None) -> float:
    """The scale of an activation Q/DQ node (checked: one per tensor, int8, zero point 0). ``checked`` keeps
    the scales of (scale, zero point) tensor pairs already checked (the constants do not change)."""
    d = graph.node(n)
    ins = d["inputs"]
    key = (ins[1], ins[2] if len(ins) > 2 else "") if len(ins) > 1 else None
    if checked is not None and key in checked:
        return checked[key]
    s = _check_activation_quant_values(graph, n, ins)
    if checked is not None and key is not None:
        checked[key] = s
    return s


def _check_activation_quant_values(graph: Graph, n: str, ins: list[str]) -> float:
    s = np.asarray(_scalar_const(graph, ins[1], n, "scale"))
    if s.size != 1:
        raise CompileError(f"{graph.source}: {graph.describe(n)}: per-channel activation quantization is not "
                           f"supported (one scale per tensor and step)")
    if len(ins) > 2 and ins[2]:
        zp = graph.const(ins[2])
        if zp is None:
            raise CompileError(f"{graph.source}: {graph.describe(n)}: zero point must be a constant")
        if np.any(np.asarray(zp) != 0):
            raise CompileError(f"{graph.source}: {graph.describe(n)}: non-zero zero point {np.asarray(zp).ravel()[0]} "
                               f"(sdac needs symmetric int8 activations)")
        if np.asarray(zp).dtype != np.int8:
            raise CompileError(f"{graph.source}: {graph.describe(n)}: activation type {np.asarray(zp).dtype} "
                               f"(sdac needs int8 activations)")
    return float(s.reshape(()))


def run(graph: Graph, ctx) -> bool:
    changed = False
    for n in graph.nodes("DequantizeLinear"):
        if graph.const(graph.inputs(n)[0]) is not None:
            _dequant_const(graph, n)
            changed = True
    checked: dict = {}
    for n in graph.nodes("QuantizeLinear"):
        x = graph.inputs(n)[0]
        qout = graph.outputs(n)[0]
        s = _check_activation_quant(graph, n, checked)
        if graph.const(x) is not None:   # a quantized constant: its fake-quantized value
            v = np.clip(np.round(np.asarray(graph.const(x), np.float64) / s), -128, 127) * s
            c = graph.add_const(v.astype(np.float32), base=x, sources=graph.node(n)["sources"])
            for dq, _ in graph.consumers(qout):
                graph.replace_uses(graph.outputs(dq)[0], c)
                graph.remove_node(dq, fate="folded (quantized constant)")
            graph.remove_node(n, fate="folded (quantized constant)")
            changed = True
            continue
        t = graph.tensors[x]
        if t.scales is None:
            t.scales = np.full(graph.n_steps, s, np.float32)
        for c, _ in graph.consumers(qout):
            if graph.op(c) != "DequantizeLinear":
                raise CompileError(f"{graph.source}: {graph.describe(c)} reads the quantized tensor {qout!r} "
                                   f"directly (sdac needs QuantizeLinear -> DequantizeLinear pairs)")
            if abs(_check_activation_quant(graph, c, checked) - s) > 1e-6 * s:
                raise CompileError(f"{graph.source}: {graph.describe(c)}: scale differs from its QuantizeLinear")
            out = graph.outputs(c)[0]
            graph.replace_uses(out, x)
            graph.remove_node(c, fate="folded (QDQ -> tensor scale)")
        graph.remove_node(n, fate="folded (QDQ -> tensor scale)")
        changed = True
    for n in graph.nodes("DequantizeLinear"):
        raise CompileError(f"{graph.source}: {graph.describe(n)}: DequantizeLinear of a non-constant tensor that "
                           f"no QuantizeLinear produced (quantized model inputs are not supported)")
    _remove_unused_constants(graph)
    return changed


def _remove_unused_constants(graph: Graph) -> None:
    """Remove the constants nothing reads any more (the scales and zero points of the folded Q/DQ nodes: 3,800
    of SD-v1.5's 7,900 nodes here), as fold_constants' remove_dead would after its folding, so that its
    topological sort and folding loop see 4,000 nodes instead of 8,000. The same graph either way: a node
    without consumers changes no other node's place in the order (Graph.nodes), its sources get the same
    fate, and its id is its tensor's name (no later add_node or new_name can take it)."""
    succ = graph.g._succ
    for n, d in list(graph.g._node.items()):
        if d["op"] == "Constant" and not succ[n] and d["outputs"] == [n]:
            graph.remove_node(n, fate="removed (unused)")
