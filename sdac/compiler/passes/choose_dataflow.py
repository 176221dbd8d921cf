"""choose_dataflow: MM-OS or CONV-WS per kernel, with the reason; ``ctx.dataflow`` overrides.

CONV-WS (weight stationary) emits all pixels of a group of output channels first,
which is what a GroupNorm epilogue needs, and is the conv dataflow of the machine;
MM-OS (output stationary) emits whole output rows, which SoftMax, LayerNorm and
GeGLU need. ``ctx.dataflow`` maps a kernel name (or any ONNX node name fused
into it) to "os" or "ws".

A matmul marked "os" here may still run as CONV-WS: the lowering times both forms with its cost model
(a matmul as a stride-3 3x3 conv has no per-tile fill and readout, at the price of padding the reduction
to nine taps of whole lines) and records the choice in the bundle's kernel map (``debug[i]["dataflow"]``).
Only an override (``ctx.dataflow``) pins a matmul to one dataflow. Whole output rows are available either
way: the SFU epilogue runs after the array instruction has written every column of its rows.
"""
from __future__ import annotations

from ...errors import SdacError
from .. import kernels as K


def default_dataflow(k: K.Kernel) -> tuple[str, str]:
    norms = [e.kind for e in k.epilogue if isinstance(e, K.Norm)]
    if k.kind == "conv3x3":
        if "gn" in norms:
            return "ws", "3x3 conv, GroupNorm consumer needs channel groups first"
        return "ws", ("3x3 conv: the weight-stationary conv dataflow streams pixels past resident weights (the "
                      "lowering runs MM-OS instead where its cost model finds that faster: few input channels)")
    if k.kind == "matmul":
        if "ln" in norms:
            return "os", "matmul, LayerNorm consumer needs whole output rows"
        if any(isinstance(e, K.GeGLU) for e in k.epilogue):
            return "os", "matmul, GeGLU consumer needs whole output rows (both halves)"
        return "os", ("matmul / 1x1 conv: output-stationary tiles, whole rows out (the lowering runs it as "
                      "CONV-WS instead where its cost model finds that faster)")
    if k.kind == "attention":
        return "os", "attention: SoftMax needs whole rows of QK^T"
    return "os", f"{k.kind}: no array work (SFU and DMA only)"


def run(graph, ctx) -> bool:
    kg = ctx.kernel_graph
    names = {k.name for k in kg.kernels} | {s for k in kg.kernels for s in k.sources}
    unknown = sorted(set(ctx.dataflow) - names)
    if unknown:
        raise SdacError(f"dataflow override names no kernel or node: {unknown[:5]}")
    for k in kg.kernels:
        k.dataflow, k.dataflow_reason = default_dataflow(k)
        for key in (k.name, *k.sources):
            if key in ctx.dataflow:
                v = ctx.dataflow[key]
                if v not in ("os", "ws"):
                    raise SdacError(f"dataflow override for {key!r}: {v!r} (must be 'os' or 'ws')")
                k.dataflow, k.dataflow_reason = v, f"overridden by option ({key})"
                break
    return True
