"""The graph IR: an ONNX-like operator graph on a networkx MultiDiGraph.

Nodes are operators (plus ``Input``, ``Output`` and ``Constant`` nodes); each
node's data holds ``op``, ``name`` (the ONNX node name it came from),
``attrs`` (typed attribute dict), ``inputs`` / ``outputs`` (tensor names by
port, "" for an absent optional input), ``value`` (numpy array, constants
only) and ``sources`` (the ONNX node names merged into it, for ``explain``).
Edges run producer -> consumer, one per consumer port, and carry the shared
``TensorType`` of the tensor (name, shape, dtype, per-step scales).

The port lists on the nodes are the truth; the edges are kept in sync by the
mutation methods (``add_node``, ``remove_node``, ``set_input``,
``replace_uses``) and checked by ``verify_graph``.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import CompileError


# what to do about a tensor without a scale (a float model compiled as it is)
NO_SCALE_HINT = ("a float model needs its per-step activation scales: quantize it with `sdac quantize` (a QDQ "
                 "model and its scale table) or pass --step-scales")

@dataclass(eq=False)
class TensorType:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    scales: np.ndarray | None = None   # float32 [n_steps]: quantization scale per denoising step
    layout: str = "onnx"               # "onnx" (as in the model) or "cl" (channels-last, after to_channels_last)
    ch_axis: int | None = None         # channel axis in the "onnx" layout if not the default (1 for rank 4, else -1)

    @property
    def channel_axis(self) -> int:
        if self.layout == "cl":
            return len(self.shape) - 1
        if self.ch_axis is not None:
            return self.ch_axis
        return 1 if len(self.shape) == 4 else max(len(self.shape) - 1, 0)

    @property
    def absmax(self) -> float:
        """Largest |value| the scale can represent (scale*127, max over steps); 0 if no scale."""
        return float(np.max(self.scales) * 127.0) if self.scales is not None else 0.0

    def __repr__(self) -> str:
        q = "" if self.scales is None else f" s={float(np.max(self.scales)):.3g}"
        return f"{self.name}:{self.dtype}{list(self.shape)}{q}"


# Ops each stage may contain (besides Input/Output/Constant). "onnx" is checked by the frontend's table.
CANONICAL_OPS = {
    "Conv", "Linear", "GroupNorm", "LayerNorm", "Silu", "Gelu", "GeGLU", "Add", "Bias", "Scale", "Upsample",
    "Concat", "Attention",
    # layout-only ops, removed by to_channels_last
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
}
DEVICE_OPS = CANONICAL_OPS - {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
STRUCTURAL_OPS = {"Input", "Output", "Constant"}


@dataclass
class Graph:
    """An operator graph; ``stage`` says which ops are legal ("onnx", "canonical", "device")."""

    g: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    tensors: dict[str, TensorType] = field(default_factory=dict)
    stage: str = "onnx"
    n_steps: int = 1
    timesteps: list | None = None
    source: str = "<model>"                     # file name, for messages
    opset: int = 17
    onnx_nodes: list[tuple[str, str]] = field(default_factory=list)  # (name, op_type) of every ONNX node, in order
    fate: dict[str, str] = field(default_factory=dict)   # ONNX node name -> where it went (folded, host, kernel)
    host_model: bytes | None = None
    host_inputs: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    _producer: dict[str, str] = field(default_factory=dict)
    _counter: itertools.count = field(default_factory=itertools.count)
    _topo: list | None = None

    # ------------------------------------------------------------ access
    def node(self, n: str) -> dict:
        return self.g._node[n]          # the attribute dict itself (g.nodes[n] without the view's overhead)

    def op(self, n: str) -> str:
        return self.g._node[n]["op"]

    def nodes(self, op: str | None = None) -> list[str]:
        """Node ids in a deterministic topological order (ties broken by creation order)."""
        if self._topo is None and op is not None:   # no order needed to list none or one node
            found = [n for n, d in self.g._node.items() if d["op"] == op]
            if len(found) <= 1:
                return found
        if self._topo is None:   # cached until the next mutation
            order = topological_order(self.g)
            if order is None:
                raise nx.NetworkXUnfeasible("Graph contains a cycle or graph changed during iteration")
            self._topo = order
        if op is None:
            return list(self._topo)
        attrs = self.g._node
        return [n for n in self._topo if attrs[n]["op"] == op]

    def producer(self, tensor: str) -> str | None:
        return self._producer.get(tensor)

    def producer_op(self, tensor: str) -> str | None:
        p = self._producer.get(tensor)
        return None if p is None else self.op(p)

    def consumers(self, tensor: str) -> list[tuple[str, int]]:
        """(node, port) of every use of ``tensor``, in deterministic order."""
        p = self._producer.get(tensor)
        if p is None:
            return []
        out = [(v, d["port"]) for v, keys in self.g._succ[p].items() for d in keys.values()
               if d["tensor"].name == tensor]
        if len(out) > 1:
            attrs = self.g._node
            out.sort(key=lambda vp: (attrs[vp[0]]["order"], vp[1]))
        return out

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor, or None."""
        p = self._producer.get(tensor)
        if p is not None and self.op(p) == "Constant":
            return self.g._node[p]["value"]
        return None

    def inputs(self, n: str) -> list[str]:
        return self.g._node[n]["inputs"]

    def outputs(self, n: str) -> list[str]:
        return self.g._node[n]["outputs"]

    def graph_outputs(self) -> list[str]:
        return [self.inputs(n)[0] for n in self.nodes("Output")]

    def graph_inputs(self) -> list[str]:
        return [self.outputs(n)[0] for n in self.nodes("Input")]

    def describe(self, n: str) -> str:
        d = self.g._node[n]
        return f"node {d['name']!r} ({d['op']})"

    # ---------------------------------------------------------- mutation
    def new_name(self, base: str) -> str:
        while True:
            name = f"{base}__{next(self._counter)}"
            if name not in self.tensors and name not in self.g:
                return name

    def add_tensor(self, name: str, shape, dtype: str = "float32", scales=None) -> TensorType:
        t = TensorType(name, tuple(map(int, shape)), dtype,
                       None if scales is None else np.asarray(scales, np.float32))
        self.tensors[name] = t
        return t

    def add_node(self, op: str, inputs: list[str], outputs: list[str], *, name: str | None = None,
                 attrs: dict | None = None, value: np.ndarray | None = None, sources: tuple[str, ...] = ()) -> str:
        self._topo = None
        g = self.g
        nid = name if name and name not in g._node else self.new_name(name or op)
        order = next(self._counter)  # creation order breaks ties in the topological order
        # g.add_node(nid, ...) of a new node, then _link of each input (g.add_edge), on networkx's dicts
        # without its per-call overhead (13,000 nodes and 22,000 edges on SD-v1.5)
        succ = g._succ
        succ[nid] = {}
        preds = g._pred[nid] = {}
        g._node[nid] = {"op": op, "name": name or nid, "attrs": dict(attrs or {}), "inputs": list(inputs),
                        "outputs": list(outputs), "value": value, "sources": tuple(sources), "order": order}
        producer = self._producer
        for t in outputs:
            if t:
                if t in producer:
                    raise CompileError(f"{self.source}: tensor {t!r} produced twice ({producer[t]!r}, {nid!r})")
                producer[t] = nid
        for port, t in enumerate(inputs):
            if not t:
                continue
            p = producer.get(t)
            if p is None:
                _clear_nx_cache(g)
                raise CompileError(f"{self.source}: {self.describe(nid)} reads tensor {t!r} that nothing produces")
            keys = preds.get(p)
            if keys is None:
                keys = succ[p][nid] = preds[p] = {}
            keys[f"{t}@{port}"] = {"tensor": self.tensors[t], "port": port}   # (a new node: no such edge yet)
        _clear_nx_cache(g)
        return nid

    def add_const(self, value: np.ndarray, base: str = "const", sources: tuple[str, ...] = ()) -> str:
        from .weights import LazyArray
        value = value if isinstance(value, LazyArray) else np.asarray(value)
        t = self.new_name(base)
        self.add_tensor(t, value.shape, str(value.dtype))
        self.add_node("Constant", [], [t], name=t, value=value, sources=sources)
        return t

    def _link(self, tensor: str, nid: str, port: int) -> None:
        if not tensor:
            return
        p = self._producer.get(tensor)
        if p is None:
            raise CompileError(f"{self.source}: {self.describe(nid)} reads tensor {tensor!r} that nothing produces")
        # g.add_edge(p, nid, key=f"{tensor}@{port}", tensor=..., port=port) on networkx's dicts
        g = self.g
        keys = g._succ[p].get(nid)
        if keys is None:
            keys = g._succ[p][nid] = g._pred[nid][p] = {}
        key = f"{tensor}@{port}"
        data = keys.get(key)
        if data is None:
            keys[key] = {"tensor": self.tensors[tensor], "port": port}
        else:
            data.update(tensor=self.tensors[tensor], port=port)
        _clear_nx_cache(g)

    def _unlink(self, tensor: str, nid: str, port: int) -> None:
        p = self._producer.get(tensor)
        if not tensor or p is None:
            return
        # g.remove_edge(p, nid, key=...) if the edge exists, on networkx's dicts
        g = self.g
        keys = g._succ.get(p, {}).get(nid)
        key = f"{tensor}@{port}"
        if keys is not None and key in keys:
            del keys[key]
            if not keys:
                del g._succ[p][nid]
                del g._pred[nid][p]
            _clear_nx_cache(g)

    def set_input(self, nid: str, port: int, tensor: str) -> None:
        self._topo = None
        ins = self.g._node[nid]["inputs"]
        while len(ins) <= port:
            ins.append("")
        self._unlink(ins[port], nid, port)
        ins[port] = tensor
        self._link(tensor, nid, port)

    def replace_uses(self, old: str, new: str) -> None:
        """Every consumer of ``old`` reads ``new`` instead."""
        for v, port in self.consumers(old):
            self.set_input(v, port, new)

    def remove_node(self, nid: str, fate: str | None = None) -> None:
        self._topo = None
        d = self.g._node[nid]
        for t in d["outputs"]:
            if t and self._producer.get(t) == nid:
                del self._producer[t]
        if fate:
            for s in d["sources"]:
                self.fate.setdefault(s, fate)
        # g.remove_node(nid) on networkx's dicts
        g = self.g
        succ, pred = g._succ, g._pred
        del g._node[nid]
        for u in succ.pop(nid):
            del pred[u][nid]
        for u in pred.pop(nid):
            del succ[u][nid]
        _clear_nx_cache(g)

    def remove_dead(self) -> bool:
        """Remove nodes none of whose outputs are used (Output nodes are the roots)."""
        changed = False
        succ, attrs = self.g._succ, self.g._node
        while True:
            dead = [n for n, d in attrs.items() if not succ[n] and d["op"] not in ("Output", "Input")]
            if not dead:
                return changed
            for n in dead:
                self.remove_node(n, fate="removed (unused)")
            changed = True

    def rewrite(self, remove: list[str], op: str, inputs: list[str], output: str, *, attrs: dict | None = None,
                name: str | None = None, value=None) -> str:
        """Replace the nodes ``remove`` by one node producing ``output`` (its users keep reading it)."""
        users = self.consumers(output)
        sources = tuple(dict.fromkeys(s for n in remove for s in self.g._node[n]["sources"]))
        name = name or self.g._node[remove[-1]]["name"]
        for n in remove:
            self.remove_node(n)
        nid = self.add_node(op, inputs, [output], name=name, attrs=attrs, value=value, sources=sources)
        t = self.tensors[output]
        if op in ("GroupNorm", "LayerNorm", "Silu", "Gelu", "Scale", "Bias", "Upsample") and inputs and \
                (not t.shape or min(t.shape) < 0):   # shape inference left it open: same as the input
            xs = self.tensors[inputs[0]].shape
            t.shape = xs if op != "Upsample" else (xs[0], xs[1], 2 * xs[2], 2 * xs[3])
        for c, port in users:
            self.set_input(c, port, output)
        return nid

    def alias(self, n: str) -> None:
        """Remove a single-input node that does not change values: its users read its input."""
        x, y = self.inputs(n)[0], self.outputs(n)[0]
        tx, ty = self.tensors[x], self.tensors[y]
        if tx.scales is None and ty.scales is not None:
            tx.scales = ty.scales
        for c, port in self.consumers(y):
            self.set_input(c, port, x)
        self.remove_node(n, fate="layout/identity (no data movement)")

    # --------------------------------------------------------- utilities
    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape

    def scales(self, tensor: str) -> np.ndarray | None:
        return self.tensors[tensor].scales

    def copy(self) -> "Graph":
        import copy
        return copy.deepcopy(self)


def _clear_nx_cache(g) -> None:
    """What networkx does after every mutation (drop graphs a backend converted; only if there are any)."""
    if g.__dict__.get("__networkx_cache__"):
        g.__networkx_cache__.clear()


# ------------------------------------------------------------------ verification

def topological_order(g: nx.MultiDiGraph) -> list | None:
    """Kahn's algorithm, always taking the ready node created first (the smallest "order"; orders are unique):
    the order nx.lexicographical_topological_sort gives with that key, without its per-node views. None when
    the graph has a cycle. (Counts predecessors, not edges: parallel edges leave a node ready at the same time.
    The heap holds the orders alone: int comparisons.)"""
    attrs, succ = g._node, g._succ
    indeg = {}
    node_of = {}
    ready = []
    for n, preds in g._pred.items():
        o = attrs[n]["order"]
        node_of[o] = n
        if preds:
            indeg[n] = len(preds)
        else:
            ready.append(o)
    if len(node_of) != len(g._pred):    # orders not unique (not a Graph's): ties broken by node id
        return _topological_order_ties(g)
    heapq.heapify(ready)
    pop, push = heapq.heappop, heapq.heappush
    out = []
    while ready:
        n = node_of[pop(ready)]
        out.append(n)
        for v in succ[n]:
            k = indeg[v] - 1
            indeg[v] = k
            if not k:
                push(ready, attrs[v]["order"])
    return out if len(out) == len(node_of) else None


def _topological_order_ties(g: nx.MultiDiGraph) -> list | None:
    """topological_order when orders repeat: ties broken by (order, node id)."""
    attrs, succ = g._node, g._succ
    indeg = {n: len(preds) for n, preds in g._pred.items()}
    ready = [(attrs[n]["order"], n) for n, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, n = heapq.heappop(ready)
        out.append(n)
        for v in succ[n]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, (attrs[v]["order"], v))
    return out if len(out) == len(indeg) else None


def verify_graph(graph: Graph, known_ops: set[str] | None = None) -> None:
    """Check the invariants; raise CompileError naming the first violation.

    acyclic; every edge typed and consistent with the port lists; every tensor read
    has one producer; shapes consistent for the ops whose shape rule is simple; every
    op legal at the graph's stage.
    """
    g = graph.g
    succ = g._succ
    where = f"{graph.source} (stage {graph.stage})"
    order = topological_order(g)
    if order is None:
        cyc = nx.find_cycle(g)
        raise CompileError(f"{where}: graph has a cycle through {[e[0] for e in cyc]}")
    graph._topo = order       # the graph as checked (nodes() reuses it until the next mutation)
    if known_ops is None:
        known_ops = {"canonical": CANONICAL_OPS, "device": DEVICE_OPS}.get(graph.stage)
    for n, d in g._node.items():
        op = d["op"]
        if known_ops is not None and op not in known_ops and op not in STRUCTURAL_OPS:
            raise CompileError(f"{where}: {graph.describe(n)}: op {op} is not legal at this stage")
        if op == "Constant" and d["value"] is None:
            raise CompileError(f"{where}: constant {n!r} has no value")
        for port, t in enumerate(d["inputs"]):
            if not t:
                continue
            if t not in graph.tensors:
                raise CompileError(f"{where}: {graph.describe(n)} input {port} {t!r} has no tensor type")
            p = graph._producer.get(t)
            if p is None or f"{t}@{port}" not in succ.get(p, {}).get(n, {}):     # (g.has_edge)
                raise CompileError(f"{where}: {graph.describe(n)} input {port} {t!r} has no edge from its producer")
        for t in d["outputs"]:
            if t and graph._producer.get(t) != n:
                raise CompileError(f"{where}: {graph.describe(n)} output {t!r} not registered as produced by it")
            if t and t not in graph.tensors:
                raise CompileError(f"{where}: {graph.describe(n)} output {t!r} has no tensor type")
        if op == "Constant":
            t = graph.tensors[d["outputs"][0]]
            if tuple(np.shape(d["value"])) != t.shape:
                raise CompileError(f"{where}: constant {n!r} value shape {np.shape(d['value'])} != type {t.shape}")
        _check_shape_rule(graph, n, d, where)
    nodes = g._node
    for u, nbrs in succ.items():      # g.edges(keys=True, data=True), in its order
        for v, keys in nbrs.items():
            for d in keys.values():
                t = d.get("tensor")
                if not isinstance(t, TensorType):
                    raise CompileError(f"{where}: edge {u}->{v} carries no tensor type")
                if nodes[v]["inputs"][d["port"]] != t.name or graph._producer.get(t.name) != u:
                    raise CompileError(f"{where}: edge {u}->{v} ({t.name}) disagrees with the port lists")
                if graph.tensors.get(t.name) is not t:
                    raise CompileError(f"{where}: edge {u}->{v} carries a stale type for {t.name}")


def _numel(s) -> int:
    n = 1
    for x in s:       # (np.prod of a shape, in Python ints)
        n *= x
    return n


_SAME_SHAPE_OPS = {"Silu", "Gelu", "GroupNorm", "LayerNorm", "Scale", "Bias"}


def _check_shape_rule(graph: Graph, n: str, d: dict, where: str) -> None:
    op, ins, outs = d["op"], d["inputs"], d["outputs"]
    shp = graph.tensors
    a_, y_ = shp[ins[0]].shape if ins else (), shp[outs[0]].shape if outs else ()
    if op in _SAME_SHAPE_OPS and not (a_ == y_ if graph.stage != "device" else
                                      (_numel(a_) == _numel(y_) and a_[-1:] == y_[-1:])):
        raise CompileError(f"{where}: {graph.describe(n)}: output shape {shp[outs[0]].shape} != input "
                           f"{shp[ins[0]].shape}")
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose") and graph.stage != "onnx":
        if _numel(shp[ins[0]].shape) != _numel(shp[outs[0]].shape):
            raise CompileError(f"{where}: {graph.describe(n)}: element count changes")
    if op == "Add" and graph.stage != "onnx":
        a, b, y = (shp[t].shape for t in (ins[0], ins[1], outs[0]))
        ch = y[1] if len(y) == 4 and graph.stage != "device" else y[-1]
        if _numel(a) != _numel(y) or _numel(b) not in (_numel(y), y[0] * ch):
            raise CompileError(f"{where}: {graph.describe(n)}: operand shapes {a}, {b} do not give {y}")


# ------------------------------------------------------------------ dumping

def to_dot(graph: Graph) -> str:
    """Graphviz text: one box per op, edges labelled with tensor types."""
    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = ["digraph sdac {", "  rankdir=TB; node [shape=box, fontname=monospace, fontsize=10];"]
    for n in graph.nodes():
        d = graph.node(n)
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(d["attrs"].items()))
        label = f"{d['op']}\\n{d['name']}" + (f"\\n{attrs}" if attrs else "")
        if d["op"] == "Constant":
            label = f"Constant {list(np.shape(d['value']))}\\n{d['name']}"
        lines.append(f"  {q(n)} [label={q(label)}];")
    for u, v, d in sorted(graph.g.edges(data=True), key=lambda e: (graph.node(e[1])["order"], e[2]["port"])):
        lines.append(f"  {q(u)} -> {q(v)} [label={q(repr(d['tensor']))}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _short(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    s = repr(v)
    return s if len(s) < 40 else s[:37] + "..."


def to_onnx(graph: Graph):
    """An ONNX ModelProto that Netron opens (custom ops in domain 'sdac'; scales as metadata)."""
    import onnx
    from onnx import helper, numpy_helper

    std = {"Conv", "Add", "Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
    nodes, inits, value_info = [], [], []
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] in ("Input", "Output"):
            continue
        if d["op"] == "Constant":
            v = np.asarray(d["value"])
            inits.append(numpy_helper.from_array(v if v.dtype != object else v.astype(np.float32), d["outputs"][0]))
            continue
        attrs = {}
        for k, v in d["attrs"].items():
            if isinstance(v, (int, float, str)) or (isinstance(v, (list, tuple)) and all(
                    isinstance(x, (int, float)) for x in v)):
                attrs[k] = v
        domain = "" if d["op"] in std and graph.stage == "onnx" else "sdac"
        nodes.append(helper.make_node(d["op"], [t for t in d["inputs"]], d["outputs"], name=d["name"],
                                      domain=domain, **attrs))
    for name, t in sorted(graph.tensors.items()):
        if name in graph._producer and graph.op(graph._producer[name]) != "Constant":
            vi = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(t.shape))
            if t.scales is not None:
                vi.doc_string = "scales " + " ".join(f"{s:.6g}" for s in t.scales)
            value_info.append(vi)
    ins = [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, list(graph.shape(t)))
           for t in graph.graph_inputs()]
    outs = [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, list(graph.shape(t)))
            for t in graph.graph_outputs()]
    gp = helper.make_graph(nodes, f"sdac-{graph.stage}", ins, outs, inits, value_info=value_info)
    return helper.make_model(gp, opset_imports=[helper.make_opsetid("", graph.opset),
                                                helper.make_opsetid("sdac", 1)], producer_name="sdac")


def dump(graph: Graph, path: str) -> str:
    """Write ``path`` as DOT (.dot) or ONNX (.onnx) by its suffix; returns the path."""
    import onnx
    if str(path).endswith(".onnx"):
        onnx.save(to_onnx(graph), str(path))
    else:
        with open(path, "w") as f:
            f.write(to_dot(graph))
    return str(path)


def onnx_node(d: dict):
    """The ONNX NodeProto of an IR node in the "onnx" op set (attributes converted back)."""
    from onnx import helper, numpy_helper
    attrs = {}
    for k, v in d["attrs"].items():
        if k in ("qweight", "onnx_name"):
            continue
        attrs[k] = numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v
    return helper.make_node(d["op"], list(d["inputs"]), list(d["outputs"]), name=d["name"], **attrs)
