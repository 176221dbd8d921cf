"""to_channels_last: remove the layout-only ops and make every activation channels-last.

On the device a tensor is a matrix rows x channels (INTERFACES.md): NCHW (B,C,H,W)
is rows B*H*W in NHWC order, (B,T,C) is rows B*T, (B,C) is rows B. A Reshape,
Transpose, Squeeze, Unsqueeze or Flatten that leaves that matrix unchanged (e.g.
(B,C,H,W) -> (B,C,HW) -> (B,HW,C) around an attention block, or (B,C) -> (B,C,1,1)
for the time embedding) moves no data: its users read its input instead. One that
would move data is an error naming the node. Then every rank-4 activation shape
becomes (B,H,W,C) and Concat's axis becomes -1; the graph is at stage "device".
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import Graph
from .fuse_attention import LAYOUT, apply_layout


def device_matrix(arr: np.ndarray) -> np.ndarray:
    """The rows x channels matrix of an ONNX-layout array (NCHW for rank 4)."""
    if arr.ndim == 4:
        return arr.transpose(0, 2, 3, 1).reshape(-1, arr.shape[1])
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    return arr.reshape(-1, arr.shape[-1])


def _cl_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def run(graph: Graph, ctx) -> bool:
    changed = False
    for n in graph.nodes():
        if graph.op(n) not in LAYOUT:
            continue
        x, y = graph.inputs(n)[0], graph.outputs(n)[0]
        xs = graph.shape(x)
        idx = np.arange(int(np.prod(xs))).reshape(xs)
        out = apply_layout(graph, n, idx)
        a, b = device_matrix(idx), device_matrix(out)
        if a.shape != b.shape or not np.array_equal(a, b):
            raise CompileError(f"{graph.source}: {graph.describe(n)}: {graph.op(n)} {xs} -> {graph.shape(y)} moves "
                               f"data on the device (channels-last rows x channels); not supported")
        graph.alias(n)
        changed = True
    graph.remove_dead()
    for name, t in graph.tensors.items():
        p = graph.producer(name)
        if p is None or graph.op(p) == "Constant" or t.layout == "cl":
            continue
        t.shape = _cl_shape(t.shape)
        t.layout = "cl"
    for n in graph.nodes("Concat"):
        graph.node(n)["attrs"]["axis"] = -1
    graph.stage = "device"
    return True
