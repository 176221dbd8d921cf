"""The hard-activation reference model: SiLU and GeLU replaced by what the hardware computes.

``hard_reference(model) -> ModelProto`` rewrites, with standard ONNX ops,
  SiLU  x*sigmoid(x)                      -> HardSwish(x)                 = x*relu6(x+3)/6
  GeLU  x*0.5*(1+erf(x/sqrt2)), Gelu(x)   -> x * HardSigmoid(x; 1.702/6, 0.5) = x*relu6(1.702x+3)/6
(HardSigmoid(x) = clip(alpha*x + beta, 0, 1), and relu6(1.702x+3)/6 = clip(1.702/6 x + 1/2, 0, 1)),
looking through the QuantizeLinear/DequantizeLinear pairs a QDQ model puts between the
pieces. Activations on the host path (those depending only on the timestep, which the
host prologue computes exactly) are left as they are. onnxruntime on the result is the
reference for the device.
"""
from __future__ import annotations

import numpy as np

from ..errors import SdacError

GELU_ALPHA = 1.702 / 6.0
GELU_BETA = 0.5


def _host_tensors(gp) -> set[str]:
    """Tensors that depend only on rank <= 1 graph inputs (the timestep) and constants."""
    inits = {i.name for i in gp.initializer}
    host = set()
    for vi in gp.input:
        if vi.name not in inits and len(vi.type.tensor_type.shape.dim) <= 1:
            host.add(vi.name)
    const = set(inits)
    for n in gp.node:
        ins = [t for t in n.input if t]
        if n.op_type == "Constant" or all(t in const for t in ins):
            const.update(n.output)
            continue
        if all(t in host or t in const for t in ins):
            host.update(n.output)
    return host


def hard_reference(model, keep_qdq: set[str] | None = None, float_readers: dict[str, set[str]] | None = None):
    """The model with hard SiLU/GeLU.

    ``keep_qdq``: if given, only activations whose (float) name is in it stay quantized (Q/DQ pairs
    elsewhere are removed), e.g. the kernel boundaries of a KernelGraph; ``float_readers[t]`` names
    the nodes that read tensor t unquantized (inside a kernel the value flows on past an Emit).
    With both, onnxruntime computes what the KernelGraph reference computes (``boundary_reference``)."""
    import onnx
    from onnx import helper
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model), load_external_data=True)
        except Exception as e:
            raise SdacError(f"{model}: cannot read ONNX model ({str(e).splitlines()[0][:200]})")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    gp = model.graph
    host = _host_tensors(gp)
    prod = {o: n for n in gp.node for o in n.output}
    cons: dict[str, list] = {}
    for n in gp.node:
        for t in n.input:
            cons.setdefault(t, []).append(n)
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in gp.initializer}
    for n in gp.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)

    def src(t: str) -> str:
        """The float tensor behind DQ(Q(t)) chains."""
        while t in prod and prod[t].op_type == "DequantizeLinear" and prod[t].input[0] in prod \
                and prod[prod[t].input[0]].op_type == "QuantizeLinear":
            t = prod[prod[t].input[0]].input[0]
        return t

    def scalar(t: str):
        """The value of a scalar constant, dequantized if it is DQ(constant) or DQ(Q(constant))."""
        t = src(t)
        if t in consts:
            v = np.asarray(consts[t])
            return float(v.reshape(())) if v.size == 1 else None
        d = prod.get(t)
        if d is not None and d.op_type == "DequantizeLinear" and d.input[0] in consts:
            q = np.asarray(consts[d.input[0]]).astype(np.float64)
            sc = np.asarray(consts.get(d.input[1], 1.0), np.float64)
            zp = np.asarray(consts[d.input[2]]).astype(np.float64) if len(d.input) > 2 and d.input[2] else 0.0
            v = (q - zp) * sc
            return float(v.reshape(())) if v.size == 1 else None
        return None

    def next_real(t: str):
        """The single non-QDQ consumer of t (through one Q->DQ pair), with the tensor it reads."""
        cs = cons.get(t, [])
        if len(cs) == 1 and cs[0].op_type == "QuantizeLinear":
            dqs = cons.get(cs[0].output[0], [])
            if len(dqs) == 1 and dqs[0].op_type == "DequantizeLinear":
                t = dqs[0].output[0]
                cs = cons.get(t, [])
        return (cs[0], t) if len(cs) == 1 else (None, t)

    new_nodes: dict[int, list] = {}
    replaced: set[str] = set()   # output tensors now produced by new nodes
    for n in gp.node:
        if n.op_type == "Sigmoid" and n.output[0] not in host:
            x = src(n.input[0])
            m, via = next_real(n.output[0])
            if m is not None and m.op_type == "Mul" and any(src(i) == x for i in m.input if i != via):
                xin = [i for i in m.input if i != via][0]
                new_nodes[id(m)] = [helper.make_node("HardSwish", [xin], [m.output[0]], name=m.name + "_hardswish")]
                replaced.add(m.output[0])
        if n.op_type == "Gelu" and n.output[0] not in host:
            hs = n.output[0] + "_hardsigmoid"
            new_nodes[id(n)] = [helper.make_node("HardSigmoid", [n.input[0]], [hs], alpha=GELU_ALPHA, beta=GELU_BETA),
                                helper.make_node("Mul", [n.input[0], hs], [n.output[0]], name=n.name + "_hardgelu")]
        if n.op_type == "Erf" and n.output[0] not in host:
            d = prod.get(src(n.input[0]))
            if d is None or d.op_type not in ("Div", "Mul"):
                continue
            c = scalar(d.input[1])
            if c is None or not np.isclose(c if d.op_type == "Div" else 1 / c, np.sqrt(2), rtol=1e-3):
                continue
            x_in = d.input[0]
            x = src(x_in)
            a, _ = next_real(n.output[0])
            if a is None or a.op_type != "Add":
                continue
            t, ok_x, ok_h, last = a.output[0], False, False, None
            for _ in range(2):
                m, via = next_real(t)
                if m is None or m.op_type != "Mul":
                    break
                other = [i for i in m.input if i != via][0]
                if src(other) == x:
                    ok_x = True
                elif scalar(other) is not None and np.isclose(scalar(other), 0.5):
                    ok_h = True
                else:
                    break
                last, t = m, m.output[0]
            if ok_x and ok_h:
                hs = last.output[0] + "_hardsigmoid"
                new_nodes[id(last)] = [
                    helper.make_node("HardSigmoid", [x_in], [hs], alpha=GELU_ALPHA, beta=GELU_BETA,
                                     name=last.name + "_hardsigmoid"),
                    helper.make_node("Mul", [x_in, hs], [last.output[0]], name=last.name + "_hardgelu")]
    nodes = []
    for n in gp.node:
        nodes.extend(new_nodes.get(id(n), [n]))
    if keep_qdq is not None:
        nodes = _strip_qdq(nodes, keep_qdq, set(consts), gp, float_readers or {})
    # drop what no longer feeds an output
    needed = {o.name for o in gp.output}
    keep = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(t for t in n.input if t)
    del gp.node[:]
    gp.node.extend(reversed(keep))
    live_inits = [i for i in gp.initializer if i.name in needed]
    del gp.initializer[:]
    gp.initializer.extend(live_inits)
    return model


def _strip_qdq(nodes, keep: set[str], consts: set[str], gp, float_readers: dict[str, set[str]]):
    """Remove activation Q->DQ pairs whose float tensor is not in ``keep``."""
    prod = {o: n for n in nodes for o in n.output}
    rename: dict[str, str] = {}
    drop = set()
    float_for: dict[tuple[str, str], str] = {}   # (node name, DQ output) -> float tensor
    for n in nodes:
        if n.op_type != "DequantizeLinear":
            continue
        q = prod.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in consts:
            continue
        if q.input[0] in keep:
            for r in float_readers.get(q.input[0], ()):
                float_for[(r, n.output[0])] = q.input[0]
            continue
        rename[n.output[0]] = q.input[0]
        drop.add(id(n))
    outs = {o.name for o in gp.output}
    from onnx import helper
    out = []
    for n in nodes:
        if id(n) in drop:
            if n.output[0] in outs:   # keep graph output names: an Identity instead
                out.append(helper.make_node("Identity", [rename[n.output[0]]], [n.output[0]]))
            continue
        for i, t in enumerate(n.input):
            if t in rename:
                n.input[i] = rename[t]
            if (n.name, n.input[i]) in float_for:
                n.input[i] = float_for[(n.name, n.input[i])]
        out.append(n)
    # a kernel reading its own emitted value through data-free ops (Reshape, Div by 1, ...) reads it
    # unquantized too: give it a float copy of that chain
    prod = {o: n for n in out for o in n.output}
    qsrc = {n.output[0]: prod[n.input[0]].input[0] for n in out if n.op_type == "DequantizeLinear"
            and n.input[0] in prod and prod[n.input[0]].op_type == "QuantizeLinear"}
    cvals = {i.name: onnx_numpy(i) for i in gp.initializer}
    for n in out:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            cvals[n.output[0]] = onnx_numpy(n.attribute[0].t)
    extra, k = [], 0
    for n in list(out):
        for i, u in enumerate(n.input):
            chain, t, start = [], u, None
            while t in prod:
                p = prod[t]
                if t in qsrc and qsrc[t] in keep and n.name in float_readers.get(qsrc[t], ()):
                    start = qsrc[t]
                    break
                if not _passthrough(p, cvals):
                    break
                chain.append(p)
                t = p.input[0]
            if start is None or not chain:
                continue
            cur = start
            for p in reversed(chain):
                k += 1
                o = f"{p.output[0]}__float{k}"
                extra.append(helper.make_node(p.op_type, [cur] + list(p.input[1:]), [o], name=f"{p.name}__float{k}",
                                              **{a.name: helper.get_attribute_value(a) for a in p.attribute}))
                cur = o
            n.input[i] = cur
    if extra:   # keep a topological order
        out = out + extra
        out = _toposort(out)
    return out


def onnx_numpy(init):
    from onnx import numpy_helper
    return numpy_helper.to_array(init)


def _passthrough(p, cvals) -> bool:
    if p.op_type in ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"):
        return True
    if p.op_type in ("Mul", "Div") and len(p.input) == 2 and p.input[1] in cvals:
        v = np.asarray(cvals[p.input[1]])
        return v.size == 1 and float(v.reshape(())) == 1.0
    return False


def _toposort(nodes):
    produced = {o for n in nodes for o in n.output}
    have, done, out = set(), set(), []
    pending = list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(t in have or t not in produced for t in n.input if t):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise SdacError("hard reference: cycle while ordering nodes")
        pending = rest
    return out


def write_hard_reference(src_path: str, dst_path: str) -> int:
    """Write the hard-activation model; returns the number of activations replaced."""
    import onnx
    m = hard_reference(src_path)
    n = sum(1 for nd in m.graph.node if nd.op_type in ("HardSwish", "HardSigmoid"))
    onnx.save(m, dst_path)
    return n


def boundary_reference(model, kg):
    """onnxruntime's view of exactly what ``kg`` means: the hard model quantized only at the kernel
    boundaries (and the attention probabilities, in units of 1/127), and inside a kernel the value read
    unquantized past an Emit. Differences from run_kernel_graph are then only rounding ties."""
    import onnx
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=True)
    acts = {a.name for a in kg.inputs}
    readers: dict[str, set[str]] = {}
    for k in kg.kernels:
        for e in k.epilogue:
            if hasattr(e, "out"):
                acts.add(e.out.name)
                readers[e.out.name] = set(k.sources)
    acts |= {o for n in proto.graph.node if n.op_type == "Softmax" for o in n.output}
    return hard_reference(proto, keep_qdq=acts, float_readers=readers)


def run_kernel_graph(kg, inputs: dict, step: int = 0) -> dict:
    """Run a KernelGraph's float reference on the ONNX model's inputs (host layout, host prologue first).

    ``inputs`` are keyed by ONNX graph input name (NCHW arrays); the result by ONNX graph output
    name, in the ONNX layout (NCHW for feature maps). Uses onnxruntime for the host prologue.
    """
    from .reference import run_reference
    host = {}
    if kg.host_prologue:
        import onnxruntime as ort
        sess = ort.InferenceSession(kg.host_prologue, providers=["CPUExecutionProvider"])
        feed = {i.name: np.asarray(inputs[i.name]).astype(
            np.int64 if "int64" in i.type else np.float32) for i in sess.get_inputs()}
        host = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    dev = {}
    for a in kg.inputs:
        src = kg.io_names.get(a.name, a.name)
        x = np.asarray(host[src] if src in host else inputs[src], np.float64)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        dev[a.name] = x.reshape(a.shape)
    env = run_reference(kg, dev, step=step)
    out = {}
    for a in kg.outputs:
        y = env[a.name]
        if y.ndim == 4:
            y = y.transpose(0, 3, 1, 2)
        out[kg.io_names.get(a.name, a.name)] = y
    return out


def kernel_agreement(reference, kg, inputs: dict, graph=None, step: int = 0) -> list[tuple[str, str, float]]:
    """Each kernel of ``kg`` run on onnxruntime's values of its inputs, against onnxruntime's values of its
    outputs (both fake-quantized with the Act scales): [(kernel name, output Act, SQNR dB)], in order.

    ``reference`` is an ONNX model (e.g. ``hard_reference(qdq)`` or ``boundary_reference(qdq, kg)``);
    ``graph`` (the IR after the passes) tells which tensors have their channels on axis 1. This locates
    the first kernel that disagrees instead of a whole-model number.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper
    from .reference import fake_quant, run_kernel, sqnr_db
    m = onnx.ModelProto()
    m.CopyFrom(reference)
    produced = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
    acts = {a.name: a for a in kg.inputs}
    for k in kg.kernels:
        for e in k.epilogue:
            if hasattr(e, "out"):
                acts[e.out.name] = e.out
    have = [n for n in acts if n in produced and n not in {o.name for o in m.graph.output}]
    for n in have:
        m.graph.output.append(helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    # plain QDQ semantics (fake quantization in float): onnxruntime's QDQ propagation rewrites can
    # fail on models written by other tools, and its int8 kernels would add their own rounding
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    vals = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    vals.update({k: v for k, v in inputs.items() if k not in vals})
    env = {}
    for n, a in acts.items():
        if n not in vals:
            continue
        x = np.asarray(vals[n], np.float64)
        t = graph.tensors.get(n) if graph is not None else None
        ch = t.ch_axis if t is not None and t.ch_axis is not None else (1 if x.ndim == 4 else -1)
        x = np.moveaxis(x, ch, -1).reshape(a.shape)
        env[n] = fake_quant(x, float(a.scales[step]))
    out = []
    for k in kg.kernels:
        if not all(a.name in env for a in k.inputs):
            continue
        e2 = dict(env)
        run_kernel(k, e2, step)
        for e in k.epilogue:
            if hasattr(e, "out") and e.out.name in env:
                out.append((k.name, e.out.name, sqnr_db(env[e.out.name], e2[e.out.name])))
    return out
