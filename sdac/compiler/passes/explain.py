"""Human-readable listings: where every ONNX node went, and the kernel list."""
from __future__ import annotations

from .. import kernels as K
from ..ir import Graph


def _epi(e) -> str:
    if isinstance(e, K.Emit):
        return f"Emit({e.out.name} {list(e.out.shape)})"
    if isinstance(e, K.Norm):
        return f"{e.kind.upper()}(groups={e.groups})" if e.kind == "gn" else "LN"
    if isinstance(e, K.Activation):
        return f"hard_{e.fn}"
    if isinstance(e, K.AddTensor):
        return f"AddTensor({e.r.name})"
    if isinstance(e, K.AddVec):
        return f"AddVec({e.v.name})"
    if isinstance(e, K.Scale):
        return f"Scale({e.factor:g})"
    if isinstance(e, K.Requant):
        return "Requant"
    return type(e).__name__


def kernel_graph_text(kg: K.KernelGraph) -> str:
    lines = [f"KernelGraph: {len(kg.kernels)} kernels, n_steps={kg.n_steps}, "
             f"host prologue: {'yes' if kg.host_prologue else 'no'}"]
    for a in kg.inputs:
        lines.append(f"  input  {a.name} {list(a.shape)} <- {kg.io_names.get(a.name, '?')}")
    for i, k in enumerate(kg.kernels):
        extra = f" stride={k.stride}" if k.kind == "conv3x3" else (f" heads={k.heads}" if k.kind == "attention" else "")
        lines.append(f"  [{i}] {k.kind}{extra} {k.name} ({k.dataflow}: {k.dataflow_reason})")
        lines.append(f"       in: {', '.join(a.name for a in k.inputs)}")
        lines.append(f"       epilogue: {' -> '.join(_epi(e) for e in k.epilogue)}")
    for a in kg.outputs:
        lines.append(f"  output {a.name} {list(a.shape)} -> {kg.io_names.get(a.name, '?')}")
    return "\n".join(lines) + "\n"


def explain(obj, graph: Graph | None = None) -> str:
    """Every ONNX node and where it went (kernel, host prologue, folded); or a KernelGraph listing.

    ``explain(graph)`` after the passes uses the graph's record; ``explain(kg)`` lists the kernels
    with the ONNX nodes fused into each, and ``explain(kg, graph)`` (what `sdac compile --explain` prints)
    both: the kernels, then every ONNX node and where it went (a kernel, the host prologue, folded away).
    """
    if isinstance(obj, K.KernelGraph):
        text = kernel_graph_text(obj)
        for k in obj.kernels:
            text += f"{k.name}: {', '.join(k.sources)}\n"
        if graph is not None:
            text += "\nevery ONNX node and where it went:\n" + explain(graph)
        return text
    g = obj
    w = max([len(n) for n, _ in g.onnx_nodes] or [10])
    lines = []
    for name, op in g.onnx_nodes:
        fate = g.fate.get(name)
        if fate is None:
            fate = "still in the graph" if any(name in g.node(n)["sources"] for n in g.g) else "folded (constant)"
        lines.append(f"{name:<{w}}  {op:<22} {fate}")
    return "\n".join(lines) + "\n"
