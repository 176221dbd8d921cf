"""fuse_attention: MatMul -> [Scale] -> Softmax -> MatMul with head reshapes -> Attention(q, k, v).

The exporter writes the head split/merge as Reshape/Transpose chains (and the
softmax scale as Mul/Div by constants, e.g. sqrt(scale) on both q and k^T). Rather
than matching each exporter's chain literally, the chains are *executed* on index
arrays: a chain from q (B,T,C) is accepted if it moves elements exactly like the
head split (B,T,h,d) -> (B,h,T,d) (or (B*h,T,d)); k must end as (B,h,d,S), v as
(B,h,S,d), and the output chain must merge the heads back to (B,T,h*d). The number
of heads h is whatever makes the index arrays agree.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ..ir import Graph

LAYOUT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def apply_layout(graph: Graph, n: str, arr: np.ndarray) -> np.ndarray:
    """Execute a layout-only node on an array (the data ops of the chain, on indices)."""
    d = graph.node(n)
    op, ins, a = d["op"], d["inputs"], d["attrs"]
    if op == "Reshape":
        shape = [int(s) for s in graph.const(ins[1])]
        shape = [arr.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
        return arr.reshape(shape)
    if op == "Transpose":
        return arr.transpose(a.get("perm", list(range(arr.ndim))[::-1]))
    if op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = [int(x) for x in graph.const(ins[1])]
        if op == "Squeeze":
            return np.squeeze(arr, axis=tuple(axes) if axes is not None else None)
        out = arr
        for ax in sorted(x % (arr.ndim + len(axes)) for x in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Flatten":
        ax = a.get("axis", 1) % max(arr.ndim, 1)
        return arr.reshape(int(np.prod(arr.shape[:ax])), -1)
    return arr


def _trace_up(graph: Graph, t: str):
    """Follow Scale and layout ops upwards from t: (root tensor, nodes root->t, factor, [(tensor, factor)])."""
    nodes, factor, seen = [], 1.0, [(t, 1.0)]
    while True:
        p = graph.producer(t)
        if p is None or graph.op(p) not in LAYOUT + ("Scale",):
            break
        if graph.op(p) == "Scale":
            factor *= graph.node(p)["attrs"]["factor"]
        nodes.append(p)
        t = graph.inputs(p)[0]
        seen.append((t, factor))
    return t, nodes[::-1], factor, seen


def _run_chain(graph: Graph, nodes: list[str], arr: np.ndarray) -> np.ndarray:
    for n in nodes:
        if graph.op(n) != "Scale":
            arr = apply_layout(graph, n, arr)
    return arr


def _index_type(shape) -> type:
    """Element indices of a tensor: int32 when they fit (half the memory traffic of int64)."""
    return np.int32 if int(np.prod(shape)) < 2 ** 31 else np.int64


def _forms_shapes(shape, h: int, kind: str):
    """The permutation and the two shapes of a head split of (B,T,C) into h heads: (B,h,...) and (B*h,...)."""
    b, t, c = shape
    perm = {"q": (0, 2, 1, 3), "k": (0, 2, 3, 1), "v": (0, 2, 1, 3)}[kind]
    split = (b, t, h, c // h)
    y = tuple(split[i] for i in perm)
    return perm, y, (b * h,) + y[2:]


def _is_form(idx: np.ndarray, got: np.ndarray, h: int, kind: str) -> bool:
    """Whether ``got`` moved the elements of ``idx`` like one of the head splits into h heads (the split view
    is compared in place: no copy of the (B*h, ...) reshape)."""
    perm, y_shape, flat_shape = _forms_shapes(idx.shape, h, kind)
    if got.shape == y_shape:
        other = got
    elif got.shape == flat_shape:
        other = got.reshape(y_shape)
    else:
        return False
    b, t, c = idx.shape
    return np.array_equal(idx.reshape(b, t, h, c // h).transpose(perm), other)


def _indices(shape, cache: dict) -> np.ndarray:
    """np.arange over a shape (read-only uses only: one array per shape and pass)."""
    idx = cache.get(shape)
    if idx is None:
        idx = cache[shape] = np.arange(int(np.prod(shape)), dtype=_index_type(shape)).reshape(shape)
    return idx


def _frozen(v):
    """A hashable stand-in for an attribute or constant value (None if there is none)."""
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (list, tuple)):
        items = tuple(_frozen(x) for x in v)
        return None if None in items else ("seq", items)
    try:
        hash(v)
    except TypeError:
        return None
    return v


def _chain_key(graph: Graph, nodes: list[str]):
    """Everything apply_layout reads of the chain's layout nodes (op, attributes, constant inputs), or None
    if some part has no hashable form. Two chains with the same key on the same root shape move the
    elements alike (SD-v1.5's 32 attention blocks have a few distinct chains)."""
    parts = []
    for n in nodes:
        d = graph.node(n)
        if d["op"] == "Scale":        # (_run_chain skips it)
            continue
        attrs = tuple(sorted((k, _frozen(v)) for k, v in d["attrs"].items()))
        consts = tuple(None if not t else _frozen(graph.const(t)) if graph.const(t) is not None else ("dynamic", t)
                       for t in d["inputs"][1:])
        if any(v is None for _, v in attrs) or any(v is None for v in consts):
            return None
        parts.append((d["op"], attrs, consts))
    return tuple(parts)


def _match(graph, root, nodes, kind, heads=None, cache=None, matched=None):
    """The smallest head count whose split the chain ``nodes`` performs on ``root`` (only ``heads`` if
    given), or None. ``matched``: answers by (root shape, kind, heads, chain key), reused."""
    shp = graph.shape(root)
    if len(shp) != 3:
        return None
    key = None
    if matched is not None:
        chain = _chain_key(graph, nodes)
        key = None if chain is None else (tuple(shp), kind, heads, chain)
        if key is not None and key in matched:
            return matched[key]
    idx = _indices(tuple(shp), {} if cache is None else cache)
    got = _run_chain(graph, nodes, idx)
    found = None
    for h in ([heads] if heads else [h for h in range(1, shp[2] + 1) if shp[2] % h == 0]):
        if _is_form(idx, got, h, kind):
            found = h
            break
    if key is not None:
        matched[key] = found
    return found


def _scale_of(graph: Graph, seen) -> np.ndarray | None:
    """Scale of the chain root: its own, or one found along the chain divided by the factor up to there."""
    root_factor = seen[-1][1]
    for t, f in reversed(seen):
        s = graph.tensors[t].scales
        if s is not None:
            return s / abs(root_factor / f) if f else s
    return None


def run(graph: Graph, ctx) -> bool:
    changed = False
    indices: dict = {}     # shape -> index array (read only)
    matched: dict = {}     # _match's answers by chain
    merged_by_chain: dict = {}   # whether an output chain has merged the heads back, by its start and nodes
    for sm in graph.nodes("Softmax"):
        d = graph.node(sm)
        if sm not in graph.g:
            continue
        s_in = d["inputs"][0]
        r = len(graph.shape(s_in))
        if d["attrs"].get("axis", -1) % r != r - 1:
            continue
        s_root, s_nodes, s_factor, _ = _trace_up(graph, s_in)
        if any(graph.op(n) != "Scale" for n in s_nodes):
            continue
        mm1 = graph.producer(s_root)
        if mm1 is None or graph.op(mm1) != "MatMul":
            continue
        cs = graph.consumers(graph.outputs(sm)[0])
        if len(cs) != 1 or graph.op(cs[0][0]) != "MatMul" or cs[0][1] != 0:
            continue
        mm2 = cs[0][0]
        a_root, a_nodes, a_f, a_seen = _trace_up(graph, graph.inputs(mm1)[0])
        b_root, b_nodes, b_f, b_seen = _trace_up(graph, graph.inputs(mm1)[1])
        v_root, v_nodes, v_f, v_seen = _trace_up(graph, graph.inputs(mm2)[1])
        heads = _match(graph, a_root, a_nodes, "q", cache=indices, matched=matched)
        if heads is None or _match(graph, b_root, b_nodes, "k", heads, indices, matched) is None or \
                _match(graph, v_root, v_nodes, "v", heads, indices, matched) is None:
            raise CompileError(f"{graph.source}: {graph.describe(mm1)}: attention whose head reshapes sdac cannot "
                               f"map (q, k, v must be (B,T,heads*d) tensors split into heads)")
        # output chain: layout ops until the heads are merged back to (B, T, C)
        b_, t_, c_ = graph.shape(a_root)
        o, o_nodes = graph.outputs(mm2)[0], []
        start = (b_, t_, c_, heads, tuple(graph.shape(o)))
        keys: list = []       # _chain_key of each node taken (the answers of equal chains are reused)
        cur = None            # the heads' indices moved along o_nodes (computed when no answer is known)
        while True:
            state = None if None in keys else (start, tuple(keys))
            merged = merged_by_chain.get(state) if state is not None else None
            if merged is None:
                h_idx = _indices((b_, t_, c_), indices).reshape(b_, heads, t_, c_ // heads)
                if cur is None:
                    cur = h_idx.reshape(start[-1])
                    for n in o_nodes:
                        cur = apply_layout(graph, n, cur)
                want = h_idx.transpose(0, 2, 1, 3).reshape(b_, t_, c_)
                merged = cur.shape == want.shape and np.array_equal(cur, want)
                if state is not None:
                    merged_by_chain[state] = merged
            if merged:
                break
            cs = graph.consumers(o)
            if len(cs) != 1 or graph.op(cs[0][0]) not in LAYOUT:
                raise CompileError(f"{graph.source}: {graph.describe(mm2)}: attention output is not merged back "
                                   f"to (B, T, heads*d) by reshapes")
            o_nodes.append(cs[0][0])
            keys.append(_chain_key(graph, [cs[0][0]]))
            if cur is not None:
                cur = apply_layout(graph, cs[0][0], cur)
            o = graph.outputs(cs[0][0])[0]
        if len(v_nodes) != len([n for n in v_nodes if graph.op(n) != "Scale"]):
            raise CompileError(f"{graph.source}: {graph.describe(mm2)}: scaling of v is not supported")
        for root, seen, what in ((a_root, a_seen, "q"), (b_root, b_seen, "k"), (v_root, v_seen, "v")):
            s = _scale_of(graph, seen)
            if s is None:
                raise CompileError(f"{graph.source}: {graph.describe(mm1)}: attention input {what} ({root!r}) "
                                   f"has no quantization scale")
            graph.tensors[root].scales = s
        if graph.tensors[o].scales is None:
            for n in reversed(o_nodes):
                if graph.tensors[graph.inputs(n)[0]].scales is not None:
                    graph.tensors[o].scales = graph.tensors[graph.inputs(n)[0]].scales
                    break
        nodes = a_nodes + b_nodes + v_nodes + [mm1] + s_nodes + [sm, mm2] + o_nodes
        # chain nodes must not feed anything else
        for n in nodes:
            for t in graph.outputs(n):
                for c, _ in graph.consumers(t):
                    if c not in nodes and t != o:
                        raise CompileError(f"{graph.source}: {graph.describe(n)}: an intermediate of the attention "
                                           f"pattern is also read by {graph.describe(c)}")
        nodes = list(dict.fromkeys(nodes))
        attrs = {"heads": int(heads), "sm_scale": float(a_f * b_f * s_factor)}
        if graph.tensors[s_in].scales is not None:   # the model rounds the scores before the SoftMax
            attrs["score_scales"] = np.asarray(graph.tensors[s_in].scales, np.float32)
        graph.rewrite(nodes, "Attention", [a_root, b_root, v_root], o, name=graph.node(sm)["name"].rsplit("/", 1)[0],
                      attrs=attrs)
        changed = True
    return changed
