"""form_kernels: group the device graph into the fusion groups of the brief (Kernel objects).

Anchors (the main operation of a kernel):
  Conv 3x3 -> conv3x3;  Conv 1x1, Linear -> matmul;  Attention -> attention;
  Upsample -> upsample;  Concat -> concat;  Add of two activations -> add;
  a GroupNorm/LayerNorm/Silu/Gelu/GeGLU/Scale/Bias with no anchor before it -> norm.
Epilogue: from the anchor's output, consumers are absorbed while they are legal
for the kernel kind (EPILOGUE_OPS) and in a legal order (adds and scales, then one
norm, then one activation): this forms conv3x3+GN+SiLU, conv + time-embedding add
+ GN + SiLU, conv + residual + GN + SiLU, MM+LN, MM + residual + LN, MM+GeGLU,
1x1 conv as MM, shortcut add, plain conv. A value read outside the kernel, or a
graph output, is emitted (``Emit``) and the chain may go on. If an Add's other
operand is not yet computed, its producer's kernel is formed first when that is
possible (no dependency on the current kernel).
Every emitted tensor needs a scale; absorbed intermediates give the absmax fields.
"""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from .. import kernels as K
from ..ir import NO_SCALE_HINT, Graph
from ..weights import QuantWeight, int4_channel_codes, int4_may_hold_min, int4_min_channels

ACT_FNS = {"Silu": "silu", "Gelu": "gelu"}
# which canonical ops may join the epilogue of each kernel kind
EPILOGUE_OPS = {
    "conv3x3": {"Bias", "Add", "Scale", "GroupNorm", "Silu", "Gelu"},
    "matmul": {"Bias", "Add", "Scale", "LayerNorm", "Silu", "Gelu", "GeGLU"},
    "attention": {"Scale"},
    "add": {"Scale"},
    "norm": {"Bias", "Scale", "Silu", "Gelu", "GroupNorm", "LayerNorm", "GeGLU"},
    "concat": set(),
    "upsample": set(),
}
PHASE = {"Bias": 0, "Add": 0, "Scale": 0, "GroupNorm": 1, "LayerNorm": 1, "Silu": 2, "Gelu": 2, "GeGLU": 2}


def _channel_values(q: np.ndarray, scale: np.ndarray, chans: np.ndarray, axis: int) -> np.ndarray:
    """float64(float32(q) * float32(scale)) of some output channels, channel axis first."""
    sub = np.moveaxis(np.take(q, chans, axis=axis), axis, 0)
    return (sub.astype(np.float32) * scale[chans].reshape((-1,) + (1,) * (sub.ndim - 1))).astype(np.float64)


def _requant_scales(q, scale, chans, axis) -> np.ndarray:
    w = _channel_values(q, scale, chans, axis)
    return np.abs(w).reshape(len(chans), -1).max(axis=1) / 7.0


def _requant_codes(q: np.ndarray, *, scale, chans, s2, axis) -> np.ndarray:
    """The codes of the channels ``chans`` requantized to [-7, 7] at their new scales ``s2`` (absmax / 7),
    channel axis first."""
    w = _channel_values(q, scale, chans, axis)
    return np.clip(np.round(w / s2.reshape((-1,) + (1,) * (w.ndim - 1))), -7, 7).astype(np.int8)


def quantize_weights(graph: Graph, ctx, w_t: str, wf: np.ndarray, out_axis: int, where: str) -> K.Weights:
    """int4 symmetric per output channel, [-7, 7]; exact when the model already holds int4 weights."""
    qinfo = graph.node(graph.producer(w_t))["attrs"].get("qweight")
    n_out = wf.shape[out_axis]
    shape = [1] * wf.ndim
    shape[out_axis] = -1
    others = tuple(i for i in range(wf.ndim) if i != out_axis)
    if isinstance(wf, QuantWeight) and wf.scale.size == n_out and wf.axis == out_axis and \
            wf.qtype in ("int4", "int8"):
        # the model's codes, checked for the int4 code -8 (on the packed bytes when they are stored int4, else
        # read) and left where they are (the lowering reads them): the same results as recovering them from
        # float32(q) * float32(scale)
        over = np.zeros(n_out, bool)
        clean: dict = {}      # (the leading bytes found free of -8 need not be read again)
        if int4_may_hold_min(wf.codes, clean) is not False:     # int4 -8 in the stored bytes (rare), or not int4
            over = int4_min_channels(wf.codes, out_axis, clean)
            if over is not None:                          # stored int4: read only the channels that change
                def codes_of(chans):
                    return int4_channel_codes(wf.codes, out_axis, chans), wf.scale[chans], np.arange(len(chans))
            else:
                q = np.asarray(wf.codes)
                over = np.zeros(n_out, bool)
                if q.min() < -7 or q.max() > 7:      # only then per channel
                    over = (q.max(axis=others) > 7) | (q.min(axis=others) < -7)

                def codes_of(chans):
                    return q, wf.scale, chans
        if not over.any():
            return K.Weights(wf.codes if wf.codes.dtype == np.int8 else wf.codes.cast(np.int8), wf.scale)
        if wf.qtype == "int8":
            ctx.warn(f"{graph.source}: {where}: int8 weights requantized to int4 [-7, 7] per output channel")
            wf, qinfo = np.asarray(wf, np.float64), None
        else:
            ctx.warn(f"{graph.source}: {where}: int4 weights use -8 in {int(over.sum())} output channels; "
                     f"requantized those channels to [-7, 7]")
            chans = np.flatnonzero(over)
            cq, cscale, cidx = codes_of(chans)          # (the values, scales and indices of those channels)
            s2 = wf.scale.astype(np.float64)
            s2[chans] = _requant_scales(cq, cscale, cidx, out_axis)
            # only those channels change: the codes stay lazy with the new codes of those channels
            new = _requant_codes(cq, scale=cscale, chans=cidx, s2=s2[chans], axis=out_axis)
            return K.Weights(wf.codes.put(out_axis, chans, new), s2.astype(np.float32))
    wf = np.asarray(wf)
    if qinfo is not None and qinfo["scale"].size == n_out and qinfo["dtype"] in ("int4", "int8"):
        # fold_qdq built these weights as float32(q) * float32(scale): recover q exactly in float32 (cheap on
        # 860M weights); anything else takes the tolerant float64 check
        w32, s32 = np.asarray(wf, np.float32), qinfo["scale"].astype(np.float32).reshape(shape)
        q = np.rint(w32 / s32)
        exact = np.array_equal(q * s32, w32)
        s = qinfo["scale"].astype(np.float64)
        if not exact:
            wf = np.asarray(wf, np.float64)
            q = np.round(wf / s.reshape(shape))
        if exact or np.allclose(q * s.reshape(shape), wf, rtol=1e-5, atol=1e-12 * float(s.max())):
            over = np.abs(q).max(axis=others) > 7
            if not over.any():   # int4, or int8 that already fits [-7, 7]: exact
                return K.Weights(q.astype(np.int8), s.astype(np.float32))
            if qinfo["dtype"] == "int4":
                ctx.warn(f"{graph.source}: {where}: int4 weights use -8 in {int(over.sum())} output channels; "
                         f"requantized those channels to [-7, 7]")
                wf = np.asarray(wf, np.float64)
                absmax = np.abs(wf).max(axis=others)
                s2 = np.where(over, absmax / 7.0, s)
                q = np.clip(np.round(wf / s2.reshape(shape)), -7, 7)
                return K.Weights(q.astype(np.int8), s2.astype(np.float32))
        if qinfo["dtype"] == "int8":
            ctx.warn(f"{graph.source}: {where}: int8 weights requantized to int4 [-7, 7] per output channel")
    wf = np.asarray(wf, np.float64)
    absmax = np.abs(wf).max(axis=others)
    s = np.where(absmax > 0, absmax / 7.0, 1.0)
    q = np.clip(np.round(wf / s.reshape(shape)), -7, 7)
    return K.Weights(q.astype(np.int8), s.astype(np.float32))


def _has_path(g, a: str, b: str) -> bool:
    """nx.has_path(g, a, b): a breadth-first search from both ends, the smaller frontier first (as networkx
    does), on the adjacency dicts."""
    if a == b:
        return True
    succ, pred = g._succ, g._pred
    seen_a, seen_b, front_a, front_b = {a}, {b}, [a], [b]
    while front_a and front_b:
        forward = len(front_a) <= len(front_b)
        adj, front, seen, other = (succ, front_a, seen_a, seen_b) if forward else (pred, front_b, seen_b, seen_a)
        nxt = []
        for u in front:
            for v in adj[u]:
                if v in other:
                    return True
                if v not in seen:
                    seen.add(v)
                    nxt.append(v)
        if forward:
            front_a = nxt
        else:
            front_b = nxt
    return False


class _Former:
    def __init__(self, graph: Graph, ctx):
        self.g, self.ctx = graph, ctx
        self.acts: dict[str, K.Act] = {}
        self.ready: set[str] = set()
        self.assigned: set[str] = set()
        self.kernels: list[K.Kernel] = []
        self.building: set[str] = set()

    def act(self, t: str, vector: bool = False) -> K.Act:
        if t in self.acts:
            return self.acts[t]
        tt = self.g.tensors[t]
        if tt.scales is None:
            p = self.g.producer(t)
            raise CompileError(f"{self.g.source}: tensor {t!r} (output of {self.g.describe(p)}) is a kernel boundary "
                               f"but has no quantization scale (no QuantizeLinear in the model and not in the "
                               f"scale table); {NO_SCALE_HINT}")
        shape = tt.shape
        if vector:   # an AddVec operand or a device input of rank 2: (B, C)
            shape = (shape[0], shape[-1])
        a = K.Act(t, tuple(int(s) for s in shape), np.asarray(tt.scales, np.float32).reshape(-1))
        self.acts[t] = a
        return a

    def absmax(self, t: str) -> float:
        return self.g.tensors[t].absmax

    def is_vector(self, t: str, like: str) -> bool:
        ts, ls = self.g.shape(t), self.g.shape(like)
        return int(np.prod(ts)) == ts[0] * ts[-1] and int(np.prod(ts)) != int(np.prod(ls))

    # -------------------------------------------------------------- anchors
    def anchor(self, n: str):
        g = self.g
        d = g.node(n)
        op, ins = d["op"], d["inputs"]
        where = g.describe(n)
        kw: dict = {}
        epi: list = []
        if op == "Conv":
            w = g.const(ins[1])      # a QuantWeight or LazyArray stays unread (sdac/compiler/weights.py)
            if d["attrs"]["kernel"] == 3:
                kind = "conv3x3"
                kw.update(weights=quantize_weights(g, self.ctx, ins[1], w, 0, where), stride=d["attrs"]["stride"],
                          pad=d["attrs"]["pad"])
            else:
                kind = "matmul"
                kw.update(weights=quantize_weights(g, self.ctx, ins[1], w[:, :, 0, 0].T, 1, where))
            inputs = [ins[0]]
            bias = g.const(ins[2]) if len(ins) > 2 and ins[2] else None
        elif op == "Linear":
            kind = "matmul"
            kw.update(weights=quantize_weights(g, self.ctx, ins[1], g.const(ins[1]), 1, where))
            inputs = [ins[0]]
            bias = g.const(ins[2]) if len(ins) > 2 and ins[2] else None
        elif op == "Attention":
            kind, inputs, bias = "attention", list(ins), None
            kw.update(heads=d["attrs"]["heads"], sm_scale=d["attrs"]["sm_scale"])
            if getattr(self.ctx, "requant_inside", False) and d["attrs"].get("score_scales") is not None:
                kw.update(score_scales=d["attrs"]["score_scales"])
        elif op == "Upsample":
            kind, inputs, bias = "upsample", [ins[0]], None
        elif op == "Concat":
            kind, inputs, bias = "concat", list(ins), None
        elif op == "Add":
            kind, inputs, bias = "add", list(ins), None
            if self.is_vector(ins[0], ins[1]):
                inputs = inputs[::-1]
        elif op in EPILOGUE_OPS["norm"]:
            kind, inputs, bias = "norm", [ins[0]], None
            return kind, inputs, kw, None, n   # the op itself is the first epilogue step
        else:
            raise CompileError(f"{g.source}: {where}: no kernel for op {op}")
        pre = d["attrs"].get("pre_bias_scales")
        if bias is not None and pre is not None and getattr(self.ctx, "requant_inside", False):
            epi.append(K.Requant(np.asarray(pre, np.float32), d["name"], float(np.max(pre) * 127)))
        if bias is not None:
            epi.append(K.Bias(np.asarray(bias, np.float32).reshape(-1), absmax=self.absmax(d["outputs"][0])))
        return kind, inputs, kw, epi, None

    def step(self, n: str, cur: str):
        """The epilogue step of canonical node n applied to the running value ``cur``."""
        g = self.g
        d = g.node(n)
        op, a = d["op"], d["attrs"]
        am = self.absmax(d["outputs"][0])
        if op == "Bias":
            return K.Bias(np.asarray(g.const(d["inputs"][1]), np.float32).reshape(-1), absmax=am)
        if op == "Scale":
            return K.Scale(float(a["factor"]), absmax=am)
        if op == "GroupNorm":
            inner = {}
            if getattr(self.ctx, "requant_inside", False) and (np.asarray(a["gamma"]) >= 0).all():
                # (the device applies gamma by unsigned scale entries when it rounds before it)
                inner = {k: np.asarray(a[k], np.float32) for k in ("norm_scales", "gamma_scales")
                         if a.get(k) is not None}
            return K.Norm("gn", int(a["groups"]), float(a["eps"]), np.asarray(a["gamma"], np.float32),
                          np.asarray(a["beta"], np.float32), absmax=am, **inner)
        if op == "LayerNorm":
            return K.Norm("ln", 1, float(a["eps"]), np.asarray(a["gamma"], np.float32),
                          np.asarray(a["beta"], np.float32), absmax=am)
        if op in ACT_FNS:
            return K.Activation(ACT_FNS[op], absmax=am)
        if op == "GeGLU":
            gs = a.get("gate_scales") if getattr(self.ctx, "requant_inside", False) else None
            return K.GeGLU(absmax=am, gate_scales=None if gs is None else np.asarray(gs, np.float32))
        if op == "Add":
            other = d["inputs"][1] if d["inputs"][0] == cur else d["inputs"][0]
            if self.is_vector(other, cur):
                return K.AddVec(self.act(other, vector=True), absmax=am)
            return K.AddTensor(self.act(other), absmax=am)
        raise CompileError(f"{g.source}: {g.describe(n)}: op {op} cannot be an epilogue step")

    # -------------------------------------------------------------- chains
    def can_make_ready(self, t: str, anchor: str) -> bool:
        if t in self.ready:
            return True
        p = self.g.producer(t)
        if p is None or p in self.assigned or p in self.building or self.g.op(p) in ("Input", "Constant"):
            return False
        if _has_path(self.g.g, anchor, p):
            return False
        # only one kernel ahead (its inputs are already computed): the short branch (a shortcut
        # conv) runs first, the long one absorbs the add (conv + residual + GN + SiLU)
        return all(x in self.ready for x in self.g.inputs(p) if x and self.g.const(x) is None)

    def make_ready(self, t: str) -> None:
        if t in self.ready:
            return
        p = self.g.producer(t)
        for x in self.g.inputs(p):
            if x and self.g.const(x) is None:
                self.make_ready(x)
        if p not in self.assigned:
            self.build(p)

    def candidate(self, kind: str, cur: str, phase: int, anchor: str) -> str | None:
        g = self.g
        for c, _ in g.consumers(cur):
            op = g.op(c)
            if op not in EPILOGUE_OPS[kind] or c in self.assigned or PHASE[op] < phase:
                continue
            if PHASE[op] == phase and phase > 0:
                continue  # one norm, one activation
            if op == "GeGLU" and phase > 0:
                continue
            if op == "Add":
                ins = g.inputs(c)
                other = ins[1] if ins[0] == cur else ins[0]
                if other == cur or not self.can_make_ready(other, anchor):
                    continue
            return c
        return None

    def build(self, n: str) -> None:
        g = self.g
        self.building.add(n)
        kind, inputs, kw, epi, first = self.anchor(n)
        for t in inputs:
            if t not in self.ready:
                self.make_ready(t)
        in_acts = [self.act(t) for t in inputs]
        sources = list(g.node(n)["sources"])
        members = [n]
        cur = g.outputs(n)[0]
        main_absmax = self.absmax(cur)
        if first is not None:   # a norm kernel: its op is the first step
            epi = [self.step(n, inputs[0])]
            main_absmax = self.absmax(inputs[0])
        phase = max([PHASE[g.op(n)]] if first is not None else [0])
        while True:
            c = self.candidate(kind, cur, phase, n)
            outside = [u for u, _ in g.consumers(cur) if u != c]
            if c is not None and getattr(self.ctx, "requant_inside", False) and g.tensors[cur].scales is not None:
                # the model quantizes this intermediate: round the flowing value to its grid too
                epi.append(K.Requant(np.asarray(g.tensors[cur].scales, np.float32), cur, self.absmax(cur)))
            if outside or c is None:
                epi.append(K.Emit(self.act(cur)))
                self.ready.add(cur)
            if c is None:
                break
            if g.op(c) == "Add":
                ins = g.inputs(c)
                self.make_ready(ins[1] if ins[0] == cur else ins[0])
            epi.append(self.step(c, cur))
            phase = PHASE[g.op(c)]
            members.append(c)
            self.assigned.add(c)
            sources.extend(g.node(c)["sources"])
            cur = g.outputs(c)[0]
        self.assigned.add(n)
        self.building.discard(n)
        name = g.node(n)["name"]
        k = K.Kernel(name=name, kind=kind, inputs=in_acts, epilogue=epi, sources=tuple(dict.fromkeys(sources)),
                     main_absmax=main_absmax, **kw)
        self.kernels.append(k)
        for s in k.sources:
            g.fate[s] = f"kernel {name}"

    def run(self) -> K.KernelGraph:
        g = self.g
        inputs, io = [], {}
        for n in g.nodes("Input"):
            t = g.outputs(n)[0]
            if g.consumers(t):
                vec = len(g.shape(t)) == 2
                a = self.act(t, vector=vec)
                inputs.append(a)
                io[t] = g.node(n)["attrs"].get("onnx_name", t)
                self.ready.add(t)
        for n in g.nodes():
            if g.op(n) in ("Input", "Output", "Constant") or n in self.assigned:
                continue
            self.build(n)
        outputs = []
        for n in g.nodes("Output"):
            t = g.inputs(n)[0]
            if t not in self.ready:
                raise CompileError(f"{g.source}: graph output {t!r} is not computed on the device")
            outputs.append(self.acts[t])
            io[t] = g.node(n)["attrs"].get("onnx_name", t)
        return K.KernelGraph(kernels=self.kernels, inputs=inputs, outputs=outputs, n_steps=g.n_steps,
                             host_prologue=g.host_model, io_names=io)


def run(graph: Graph, ctx) -> bool:
    ctx.kernel_graph = _Former(graph, ctx).run()
    graph.stage = "kernels"
    return True
