"""Multiply-accumulates per UNet step, counted from an ONNX graph's shapes.

    .venv/bin/python benchmarks/macs.py build/sd15/unet.float.onnx

Categories (the brief's split of the SD-v1.5 cost):
  conv3x3    Conv with a 3x3 kernel (stride 1 or 2)          MACs = |out| * C_in/groups * 9
  conv1x1    Conv with a 1x1 kernel (shortcuts, proj_in/out)  MACs = |out| * C_in/groups
  linear     MatMul/Gemm whose B is a weight (constant, or DequantizeLinear of a constant)
  attention  MatMul of two activations (Q K^T and P V)        MACs = |out| * K
  other      any other Conv kernel size
Shapes come from ONNX shape inference on the graph alone (external data not loaded), so this
works on the 3.4 GB model in a few seconds. Float and QDQ models give the same counts.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np

# the brief's estimate for SD-v1.5 at a 64x64 latent (GMAC)
BRIEF_GMAC = {"conv3x3": 200.0, "conv1x1": 22.0, "linear": 117.0, "attention": 63.0, "total": 402.0}
CATEGORIES = ("conv3x3", "conv1x1", "linear", "attention", "other")


@dataclass
class MacCount:
    by_category: dict = field(default_factory=lambda: {c: 0 for c in CATEGORIES})
    nodes: dict = field(default_factory=lambda: {c: 0 for c in CATEGORIES})

    @property
    def total(self) -> int:
        return sum(self.by_category.values())

    def add(self, cat: str, macs: int) -> None:
        self.by_category[cat] += int(macs)
        self.nodes[cat] += 1


def _shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor: onnxruntime's symbolic shape inference (it propagates the values the
    exporter computes with Shape/Gather/Div for Slice and Expand, which ONNX's own inference leaves symbolic)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    g = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
    out = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = tuple(a.t.dims)
    return out


def count_macs(model) -> MacCount:
    """MACs of one forward pass of ``model`` (a path or ModelProto; external data is not needed)."""
    import onnx
    if not isinstance(model, onnx.ModelProto):
        import os
        from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
        path = str(model)
        model = onnx.load(path, load_external_data=False)
        # small initializers (shape constants) are needed for shape inference; the weights are not
        for t in model.graph.initializer:
            if uses_external_data(t) and np.prod(t.dims) <= 65536:   # biases, norms, shape constants
                load_external_data_for_tensor(t, os.path.dirname(os.path.abspath(path)))
                t.data_location = onnx.TensorProto.DEFAULT
                del t.external_data[:]
    shapes = _shapes(model)
    g = model.graph
    const = {t.name for t in g.initializer}
    const |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
    # weights reached through (De)QuantizeLinear / Transpose / Cast of constants are constants too
    changed = True
    while changed:
        changed = False
        for n in g.node:
            if n.op_type in ("DequantizeLinear", "QuantizeLinear", "Transpose", "Cast", "Identity", "Reshape") \
                    and n.input and n.input[0] in const and n.output[0] not in const:
                const.add(n.output[0])
                changed = True
    mc = MacCount()
    for n in g.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        out = shapes.get(n.output[0])
        if out is None:
            raise ValueError(f"node {n.name} ({n.op_type}): output shape unknown after shape inference")
        if n.op_type == "Conv":
            w = shapes[n.input[1]]                       # (O, C_in/groups, kh, kw)
            per_out = int(np.prod(w[1:]))
            k = tuple(w[2:])
            cat = "conv3x3" if k == (3, 3) else "conv1x1" if k == (1, 1) else "other"
            mc.add(cat, int(np.prod(out)) * per_out)
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            trans_a = next((x.i for x in n.attribute if x.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            mc.add("linear", int(np.prod(out)) * k)
        else:
            a = shapes[n.input[0]]
            k = a[-1]
            cat = "linear" if (n.input[1] in const or n.input[0] in const) else "attention"
            mc.add(cat, int(np.prod(out)) * k)
    return mc


def table(mc: MacCount, brief: dict | None = BRIEF_GMAC) -> str:
    rows = ["| kind | nodes | GMAC/step | brief GMAC | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    for c in CATEGORIES + ("total",):
        v = mc.total if c == "total" else mc.by_category[c]
        n = sum(mc.nodes.values()) if c == "total" else mc.nodes[c]
        if c == "other" and not v:
            continue
        b = (brief or {}).get(c)
        rows.append(f"| {c} | {n} | {v / 1e9:.1f} | {b if b is not None else '-'} | "
                    f"{(v / 1e9 / b if b else float('nan')):.2f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="MACs per step of an ONNX UNet")
    ap.add_argument("model")
    a = ap.parse_args(argv)
    print(table(count_macs(a.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
