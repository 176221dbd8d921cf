"""ONNX -> graph IR.

``load_model(path_or_proto, step_scales=None) -> Graph`` reads the model (external
data included), runs ONNX shape inference, and builds the IR: one node per ONNX
node, ``Input`` nodes for graph inputs, ``Constant`` nodes for initializers and
Constant ops, ``Output`` nodes for graph outputs (``attrs["onnx_name"]``).
Quantization is not interpreted here (the ``fold_qdq`` pass does that), except
that a per-step scale table (INTERFACES.md) is attached to the named tensors.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from ..errors import CompileError, SdacError
from .ir import Graph
from .weights import LazyArray, ProtoData, external_source, inline, is_small_external

# ONNX ops some pass knows how to fold, canonicalize, move to the host or map to a kernel.
SUPPORTED_ONNX_OPS = {
    # quantization
    "QuantizeLinear", "DequantizeLinear",
    # shape computations and layout (constant-folded or layout-only)
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "Transpose", "Flatten", "Slice", "Cast",
    "Constant", "ConstantOfShape", "Range", "Expand", "Identity", "Split", "Equal", "Where", "Dropout",
    # arithmetic
    "Add", "Sub", "Mul", "Div", "Sqrt", "Pow", "Exp", "Sin", "Cos", "Neg", "Reciprocal",
    "Erf", "Sigmoid", "Tanh", "Relu", "Clip", "HardSwish", "HardSigmoid", "Gelu",
    # layers
    "Conv", "MatMul", "Gemm", "InstanceNormalization", "GroupNormalization", "LayerNormalization",
    "ReduceMean", "Softmax", "Resize", "Einsum", "Attention",
}


def _load_proto(model, where: str):
    import onnx
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise SdacError(f"{path}: no such file")
    try:
        # weights in external data stay on disk (read per kernel, sdac/compiler/weights.py); small
        # tensors (shapes, scales) are loaded now
        proto = onnx.load(path, load_external_data=False)
        base_dir = os.path.dirname(os.path.abspath(path))
        for init in proto.graph.initializer:
            if is_small_external(init):
                inline(init, base_dir)
    except Exception as e:  # onnx raises several unrelated types for bad files
        raise SdacError(f"{path}: cannot read ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    if not proto.graph.node:
        raise SdacError(f"{path}: not an ONNX model (no graph nodes)")
    return proto


def _fix_dynamic_inputs(proto, where: str) -> None:
    """Symbolic input dimensions (e.g. batch) become 1 so shapes are static."""
    for vi in proto.graph.input:
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                warnings.warn(f"{where}: input {vi.name!r} dimension {i} ({dim.dim_param or '?'}) is dynamic; "
                              f"using 1", stacklevel=3)
                dim.dim_value = 1


# function ops ONNX's shape inference gives no output for (onnx 1.23: GroupNormalization-21, which
# torch.onnx.export writes at opset 21 and later): in the copies shape inference runs on they are an Identity
# of their first input, which has their output's shape and type
INFER_AS_IDENTITY = frozenset({"GroupNormalization"})


def as_identity_for_inference(nodes) -> None:
    """Turn the INFER_AS_IDENTITY nodes among ``nodes`` (NodeProtos of a copy) into Identity of input 0."""
    for nd in nodes:
        if nd.op_type in INFER_AS_IDENTITY and nd.domain in ("", "ai.onnx"):
            nd.op_type = "Identity"
            del nd.input[1:]
            del nd.attribute[:]


def for_shape_inference(proto):
    """A copy ONNX shape inference understands: onnxruntime's com.microsoft Q/DQ (used for int4
    weights below opset 21) as standard Q/DQ with the int4 constants widened to int8; stale value_info dropped."""
    import onnx
    from onnx import numpy_helper
    # a copy without the large initializers (weights become typed inputs): shape inference needs
    # only their shapes, and a 1 GB model should not be held twice
    p = onnx.ModelProto()
    p.ir_version = proto.ir_version
    p.opset_import.extend(proto.opset_import)
    p.graph.name = proto.graph.name
    p.graph.node.extend(proto.graph.node)
    p.graph.input.extend(proto.graph.input)
    p.graph.output.extend(proto.graph.output)
    for init in proto.graph.initializer:
        n = 1
        for dim in init.dims:
            n *= dim
        if n <= 64:
            p.graph.initializer.append(init)
        else:
            elem = onnx.TensorProto.INT8 if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) \
                else init.data_type
            p.graph.input.append(onnx.helper.make_tensor_value_info(init.name, elem, list(init.dims)))
    for nd in p.graph.node:
        if nd.domain == "com.microsoft" and nd.op_type in ("QuantizeLinear", "DequantizeLinear"):
            nd.domain = ""
    as_identity_for_inference(p.graph.node)
    for i, init in enumerate(p.graph.initializer):
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            p.graph.initializer[i].CopyFrom(numpy_helper.from_array(_to_array(init), init.name))
    return p


def _node_io(nodes) -> list[tuple[str, list[str], list[str]]]:
    """(op_type, inputs, outputs) of each NodeProto (read once: protobuf fields are slow to walk)."""
    return [(nd.op_type, list(nd.input), list(nd.output)) for nd in nodes]


def _host_part(proto, base_dir: str, node_io):
    """The nodes (and their initializers) that depend only on host inputs (the timestep; split_host) and
    constants: all split_host may cut the host prologue from; the rest of the model is not kept.
    ``node_io``: _node_io of proto's nodes."""
    import onnx
    inits = {i.name for i in proto.graph.initializer}
    from .passes.split_host import host_inputs
    constant = {o for op_type, _, outputs in node_io if op_type == "Constant" for o in outputs} | inits
    host = host_inputs({vi.name: len(vi.type.tensor_type.shape.dim) for vi in proto.graph.input
                        if vi.name not in inits}, ((i, o) for _, i, o in node_io), constant.__contains__)
    const = set(inits)
    kinds = []
    for op_type, inputs, outputs in node_io:
        ins = [t for t in inputs if t]
        if op_type == "Constant" or all(t in const for t in ins):
            const.update(outputs)
            kinds.append("const")
        elif all(t in host or t in const for t in ins):
            host.update(outputs)
            kinds.append("host")
        else:
            kinds.append(None)
    # keep the host nodes and only the constant subgraphs that feed them (not every weight's DQ)
    used = {t for (_, inputs, _), k in zip(node_io, kinds) if k == "host" for t in inputs}
    keep = [k == "host" for k in kinds]
    for i in reversed(range(len(kinds))):
        if kinds[i] == "const" and any(o in used for o in node_io[i][2]):
            keep[i] = True
            used.update(node_io[i][1])
    nodes = [proto.graph.node[i] for i, k in enumerate(keep) if k]
    p = onnx.ModelProto()
    p.ir_version = proto.ir_version
    p.opset_import.extend(proto.opset_import)
    p.graph.name = proto.graph.name
    p.graph.node.extend(nodes)
    p.graph.input.extend(vi for vi in proto.graph.input if vi.name in host)
    # (external data stays external here: split_host reads it into the host model it cuts, which is
    # serialized standalone, after the cut; load_model checks the files exist)
    p.graph.initializer.extend(init for init in proto.graph.initializer if init.name in used)
    p.graph.value_info.extend(vi for vi in proto.graph.value_info if vi.name in host)
    return p


def _attr_value(a):
    from onnx import helper, numpy_helper
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if hasattr(v, "dims") and hasattr(v, "data_type"):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode() for x in v]
    return v


_RAW_NP = {1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 5: np.dtype(np.int16),
           6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_), 10: np.dtype(np.float16),
           11: np.dtype(np.float64)}


# typed-field storage of plain types: field, its numpy type, the tensor's numpy type (numpy_helper.to_array)
_FIELD_NP = {1: ("float_data", np.float32, np.float32), 2: ("int32_data", np.int32, np.uint8),
             3: ("int32_data", np.int32, np.int8), 6: ("int32_data", np.int32, np.int32),
             7: ("int64_data", np.int64, np.int64), 11: ("double_data", np.float64, np.float64)}


def _to_array(tp) -> np.ndarray:
    if tp.data_location != 1 and not tp.HasField("segment"):
        # numpy_helper.to_array's own paths for plain types (3,600 scales and zero points on SD-v1.5)
        if tp.HasField("raw_data"):
            if tp.data_type in _RAW_NP and sys.byteorder == "little":
                return np.asarray(np.frombuffer(tp.raw_data, dtype=_RAW_NP[tp.data_type]).reshape(tp.dims))
        elif tp.data_type in _FIELD_NP:
            field, storage, dtype = _FIELD_NP[tp.data_type]
            return np.asarray(np.asarray(getattr(tp, field), dtype=storage).astype(dtype).reshape(tp.dims))
    import onnx
    from onnx import numpy_helper
    arr = numpy_helper.to_array(tp)
    if tp.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        arr = np.asarray(arr).astype(np.int8 if tp.data_type == onnx.TensorProto.INT4 else np.uint8)
    return np.asarray(arr)


def _initializer_value(init, base_dir: str, where: str):
    """Small tensors as arrays; weights as LazyArrays on the external-data file or the proto's bytes (read
    when a pass needs the values, never all at once)."""
    n = 1
    for d in init.dims:
        n *= d
    try:
        ext = external_source(init, base_dir) if base_dir else None
    except ValueError as e:
        raise SdacError(f"{where}: initializer {init.name!r}: {e}") from None
    if ext is not None:
        if not os.path.exists(ext.path):
            raise SdacError(f"{where}: initializer {init.name!r}: external data file {ext.path} not found")
        return LazyArray.of(ext)
    if n > 64 and init.raw_data:
        return LazyArray.of(ProtoData(init))
    return _to_array(init)


_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
           11: "float64", 21: "uint4", 22: "int4"}


def read_step_scales(path: str) -> dict:
    """Read and check a per-step scale table (format in INTERFACES.md)."""
    from ..files import read_json_object
    doc = read_json_object(path, "scale table")
    if doc.get("format") != "sdac-step-scales" or doc.get("version") != 1:
        raise SdacError(f"{path}: not an sdac-step-scales version 1 file")
    n = doc.get("n_steps")
    scales = doc.get("scales")
    if not isinstance(n, int) or n < 1 or not isinstance(scales, dict):
        raise SdacError(f"{path}: n_steps must be a positive integer and scales an object")
    for name, s in scales.items():
        if not isinstance(s, list) or len(s) != n or not all(isinstance(x, (int, float)) and x > 0 for x in s):
            raise SdacError(f"{path}: scales of {name!r} must be {n} positive numbers")
    return doc


def load_model(model, step_scales: str | dict | None = None) -> Graph:
    """Read an ONNX model (path or ModelProto) and build the graph IR."""
    import onnx
    where = "<model>" if isinstance(model, onnx.ModelProto) else os.fspath(model)
    proto = _load_proto(model, where)
    base = os.path.basename(where)
    _fix_dynamic_inputs(proto, where)
    try:
        inferred = onnx.shape_inference.infer_shapes(for_shape_inference(proto), strict_mode=False, data_prop=True)
    except Exception as e:
        raise SdacError(f"{where}: ONNX shape inference failed ({str(e).splitlines()[0][:200]})")
    gp = inferred.graph             # (its types; the IR's nodes are the model's own)
    opset = max([o.version for o in inferred.opset_import if o.domain in ("", "ai.onnx")] or [17])
    graph = Graph(source=base, opset=opset)
    base_dir = "" if isinstance(model, onnx.ModelProto) else os.path.dirname(os.path.abspath(where))
    node_io = _node_io(proto.graph.node)
    # the host prologue is cut from it (with its QDQ nodes); its external data lies in proto_dir
    graph.meta["proto"] = _host_part(proto, base_dir, node_io)
    graph.meta["proto_dir"] = base_dir

    types: dict[str, tuple[tuple[int, ...], str]] = {}
    for vi in list(gp.input) + list(gp.value_info) + list(gp.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        types[vi.name] = (dims, _DTYPES.get(tt.elem_type, str(tt.elem_type)))

    init_names = {i.name for i in proto.graph.initializer}
    for vi in gp.input:
        if vi.name in init_names:
            continue
        shape, dtype = types[vi.name]
        graph.add_tensor(vi.name, shape, dtype)
        graph.add_node("Input", [], [vi.name], name=f"input:{vi.name}", attrs={"onnx_name": vi.name})
    for init in proto.graph.initializer:   # the original (int4) values, not the inference copy
        v = _initializer_value(init, base_dir, where)
        dtype = _DTYPES.get(init.data_type)
        graph.add_tensor(init.name, v.shape, dtype if dtype is not None else str(v.dtype))
        graph.add_node("Constant", [], [init.name], name=init.name, value=v)

    for i, (nd, (_, node_inputs, node_outputs)) in enumerate(zip(proto.graph.node, node_io)):
        name = nd.name or f"{nd.op_type}_{i}"
        graph.onnx_nodes.append((name, nd.op_type))
        ms_qdq = nd.domain == "com.microsoft" and nd.op_type in ("QuantizeLinear", "DequantizeLinear")
        if (nd.domain not in ("", "ai.onnx") and not ms_qdq) or nd.op_type not in SUPPORTED_ONNX_OPS:
            raise CompileError(f"{base}: node {name!r} ({nd.op_type}{' domain ' + nd.domain if nd.domain else ''}): "
                               f"operator not supported by sdac (no mapping to the accelerator or the host prologue)")
        attrs = {a.name: _attr_value(a) for a in nd.attribute}
        if nd.op_type == "Constant":
            v = attrs.get("value")
            if v is None:
                for k in ("value_float", "value_int", "value_floats", "value_ints"):
                    if k in attrs:
                        v = np.asarray(attrs[k], np.float32 if "float" in k else np.int64)
            if v is None:
                raise CompileError(f"{base}: node {name!r} (Constant): unsupported constant attribute")
            v = np.asarray(v)
            graph.add_tensor(node_outputs[0], v.shape, str(v.dtype))
            graph.add_node("Constant", [], [node_outputs[0]], name=name, value=v, sources=(name,))
            continue
        for o in node_outputs:
            if o:
                shape, dtype = types.get(o, ((), "unknown"))
                graph.add_tensor(o, shape, dtype)
        graph.add_node(nd.op_type, node_inputs, node_outputs, name=name, attrs=attrs, sources=(name,))

    for vi in gp.output:
        graph.add_node("Output", [vi.name], [], name=f"output:{vi.name}", attrs={"onnx_name": vi.name})
    # every node was created after the producers of its inputs (add_node links to existing producers), so the
    # creation order is the topological order Graph.nodes() gives (ties by creation order): no sort needed
    graph._topo = list(graph.g._node)

    if step_scales is not None:
        doc = step_scales if isinstance(step_scales, dict) else read_step_scales(step_scales)
        graph.n_steps = int(doc["n_steps"])
        graph.timesteps = list(doc.get("timesteps") or [])
        missing = [n for n in doc["scales"] if n not in graph.tensors]
        if missing:
            warnings.warn(f"{base}: scale table names tensors not in the model: {missing[:5]}", stacklevel=2)
        for n, s in doc["scales"].items():
            if n in graph.tensors:
                graph.tensors[n].scales = np.asarray(s, np.float32)
        graph.meta["step_scales"] = True
    return graph
