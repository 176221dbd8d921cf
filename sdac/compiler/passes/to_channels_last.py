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


def device_matrix(arr: np.ndarray, ch_axis: int | None = None) -> np.ndarray:
    """The rows x channels matrix of an ONNX-layout array (channels on axis 1 for rank 4, else last)."""
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if ch_axis is None:
        ch_axis = 1 if arr.ndim == 4 else arr.ndim - 1
    return np.moveaxis(arr, ch_axis, -1).reshape(-1, arr.shape[ch_axis])


def _cl_shape(shape: tuple[int, ...], ch_axis: int) -> tuple[int, ...]:
    s = list(shape)
    c = s.pop(ch_axis)
    return tuple(s + [c])


def _index_type(shape) -> type:
    """Element indices of a tensor: int32 when they fit (half the memory traffic of int64 on 64x64x320 maps)."""
    return np.int32 if int(np.prod(shape)) < 2 ** 31 else np.int64


def run(graph: Graph, ctx) -> bool:
    changed = False
    # chains of layout ops are judged from their root to each end a non-layout op reads:
    # the intermediates (e.g. (B,C) -> (B,C,1) -> (B,C,1,1)) need not be device tensors
    moved: dict[str, tuple[str, np.ndarray]] = {}   # tensor -> (root tensor, root indices moved here)
    aranges: dict = {}     # (size, dtype) -> np.arange (read only: reshaped views of it are moved around)

    def arange(size: int, dtype) -> np.ndarray:
        a = aranges.get((size, dtype))
        if a is None:
            a = aranges[size, dtype] = np.arange(size, dtype=dtype)
        return a
    layout_nodes = [n for n in graph.nodes() if graph.op(n) in LAYOUT]
    for n in layout_nodes:
        x, y = graph.inputs(n)[0], graph.outputs(n)[0]
        root, idx = moved.get(x, (x, None))
        if idx is None:
            idx = arange(int(np.prod(graph.shape(x))), _index_type(graph.shape(x))).reshape(graph.shape(x))
        out = apply_layout(graph, n, idx)
        moved[y] = (root, out)
        if any(graph.op(c) not in LAYOUT for c, _ in graph.consumers(y)):
            a = device_matrix(arange(out.size, out.dtype).reshape(graph.shape(root)),
                              graph.tensors[root].channel_axis)
            b = device_matrix(out, graph.tensors[y].channel_axis)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise CompileError(f"{graph.source}: {graph.describe(n)}: {graph.op(n)} chain {graph.shape(root)} -> "
                                   f"{graph.shape(y)} moves data on the device (channels-last rows x channels); "
                                   f"not supported")
    for n in layout_nodes:
        graph.alias(n)
        changed = True
    graph.remove_dead()
    for name, t in graph.tensors.items():
        p = graph.producer(name)
        if p is None or graph.op(p) == "Constant" or t.layout == "cl":
            continue
        t.shape = _cl_shape(t.shape, t.channel_axis) if t.shape else t.shape
        t.layout = "cl"
    for n in graph.nodes("Concat"):
        graph.node(n)["attrs"]["axis"] = -1
    graph.stage = "device"
    return True
