"""W4A8 QDQ ONNX models and the per-step activation scale table.

The QDQ model (opset 21) is standard ONNX that onnxruntime runs:
  * every weight of Conv / Gemm / MatMul is an int4 initializer (symmetric, [-7, 7]; or int8
    [-127, 127] with wbits=8) followed by DequantizeLinear with a per-output-channel scale
    (absmax / 7): axis 0 for Conv and Gemm(transB=1) weights, axis 1 for MatMul and Gemm(transB=0)
    weights, whose (K, N) layout puts the output channels last. The DequantizeLinear output keeps
    the float weight's name.
  * every float activation tensor X gets QuantizeLinear -> DequantizeLinear (int8, zero point 0) with
    one static scale initializer ``X + "_scale"`` shared by the pair (max over all steps / 127);
    consumers read the dequantized tensor. A graph output X is renamed ``X + "_float"`` before the
    pair so the graph keeps its output name.
The per-step table (``*.scales.json``, format in INTERFACES.md) maps the name of the tensor each
QuantizeLinear quantizes to one scale per denoising step (absmax at that step / 127).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import SdacError
from ..compiler.weights import inlined, pack_int4
from .calibrate import WEIGHTED_OPS, Calibration, tensor_roles

QDQ_OPSET = 21
TABLE_FORMAT = "sdac-step-scales"
TABLE_VERSION = 1
ZP_NAME = "sdac_zero_point_int8"
MIN_ABSMAX = 1e-6   # a tensor that is always 0 still needs a positive scale


# ------------------------------------------------------------------ weights

def quantize_weight(w: np.ndarray, axis: int, bits: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel: q in [-qmax, qmax] (qmax = 7 for int4, 127 for int8), scale = absmax/qmax."""
    qmax = (1 << (bits - 1)) - 1
    w = np.asarray(w, np.float32)
    red = tuple(a for a in range(w.ndim) if a != axis)
    absmax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    scale = (np.maximum(absmax, 1e-12) / np.float32(qmax)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def _weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: B is (K, N)


def _int_tensor(name: str, q: np.ndarray, bits: int) -> TensorProto:
    if bits == 4:   # packed with numpy: SD-v1.5 has 860 M codes
        t = TensorProto(name=name, data_type=TensorProto.INT4, dims=list(q.shape))
        t.raw_data = pack_int4(q).tobytes()
        return t
    return numpy_helper.from_array(q.astype(np.int8), name)


# --------------------------------------------------------------- QDQ model

def make_qdq(model: onnx.ModelProto, act_absmax: dict[str, float], wbits: int = 4,
             base_dir: str = "") -> tuple[onnx.ModelProto, dict]:
    """Build the QDQ model. ``act_absmax``: the static |x|max of every activation to quantize; ``base_dir``:
    where the model's external data lies (weights are read one at a time; the QDQ model holds its data).

    Returns (model, names) where names maps each calibrated tensor to the name the QuantizeLinear
    quantizes in the new graph (equal except for graph outputs).
    """
    if wbits not in (4, 8):
        raise SdacError(f"weight bits must be 4 or 8, not {wbits}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}

    # ---- weights
    weight_axis: dict[str, int] = {}
    for node in g.node:
        k = WEIGHTED_OPS.get(node.op_type)
        if k is None or len(node.input) <= k or node.input[k] not in inits:
            continue
        name = node.input[k]
        axis = _weight_axis(node)
        if weight_axis.setdefault(name, axis) != axis:
            raise SdacError(f"weight {name} is used with two output-channel axes (node {node.name})")
    new_inits = [inlined(i, base_dir) for i in g.initializer if i.name not in weight_axis]
    w_nodes = []
    for name, axis in weight_axis.items():
        w = numpy_helper.to_array(inits[name], base_dir)
        q, scale = quantize_weight(w, axis, wbits)
        new_inits.append(_int_tensor(f"{name}_q{wbits}", q, wbits))
        new_inits.append(numpy_helper.from_array(scale, f"{name}_wscale"))
        w_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q{wbits}", f"{name}_wscale"], [name],
                                        name=f"{name}_DequantizeLinear", axis=axis))

    # ---- activations
    outputs = {o.name for o in g.output}
    rename = {n: (f"{n}_float" if n in outputs else n) for n in act_absmax}
    new_inits.append(numpy_helper.from_array(np.array(0, np.int8), ZP_NAME))
    for n, a in act_absmax.items():
        new_inits.append(numpy_helper.from_array(np.array(max(a, MIN_ABSMAX) / 127.0, np.float32),
                                                 f"{rename[n]}_scale"))

    def qdq(n: str) -> list[onnx.NodeProto]:
        f = rename[n]
        dq_out = n if n in outputs else f"{n}_dq"
        return [helper.make_node("QuantizeLinear", [f, f"{f}_scale", ZP_NAME], [f"{f}_q"], name=f"{f}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{f}_q", f"{f}_scale", ZP_NAME], [dq_out],
                                 name=f"{f}_DequantizeLinear")]

    consumed = {n: (n if n in outputs else f"{n}_dq") for n in act_absmax}
    nodes = list(w_nodes)
    for inp in g.input:
        if inp.name in act_absmax:
            nodes += qdq(inp.name)
    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, x in enumerate(new.input):
            if x in consumed:
                new.input[i] = consumed[x]
        for i, x in enumerate(new.output):
            if x in rename:
                new.output[i] = rename[x]
        nodes.append(new)
        for x in node.output:
            if x in act_absmax:
                nodes += qdq(x)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    # value_info of renamed tensors is stale: infer it again (tools such as onnx.utils.Extractor need it)
    del g.value_info[:]
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = max(op.version, QDQ_OPSET)
    m.ir_version = max(m.ir_version, 10)
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    return m, {n: rename[n] for n in act_absmax}


# ---------------------------------------------------------------- the table

def step_table(calib: Calibration, names: dict[str, str], static: bool = False) -> dict:
    """The per-step scale table (INTERFACES.md); ``static``: the same (max over steps) scale for every step."""
    scales = {}
    for n, qn in names.items():
        a = np.maximum(calib.per_step(n), MIN_ABSMAX)
        if static:
            a = np.full_like(a, a.max())
        scales[qn] = [float(np.float32(v / 127.0)) for v in a]
    return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "n_steps": len(calib.timesteps),
            "timesteps": [int(t) for t in calib.timesteps], "scales": scales,
            # extensions (readers may ignore them): how the table was made
            "static": bool(static), "scheduler": calib.scheduler,
            "calibration": {"samples": calib.samples, "seed": calib.seed, "eta": calib.eta}}


def validate_table(table: dict, where: str = "scale table") -> dict:
    """Check the table's structure; raises SdacError naming the problem."""
    def bad(msg: str):
        raise SdacError(f"{where}: {msg}")
    if not isinstance(table, dict):
        bad("not a JSON object")
    if table.get("format") != TABLE_FORMAT:
        bad(f"format is {table.get('format')!r}, expected {TABLE_FORMAT!r}")
    if table.get("version") != TABLE_VERSION:
        bad(f"version {table.get('version')!r} not supported (expected {TABLE_VERSION})")
    n = table.get("n_steps")
    if not isinstance(n, int) or n < 1:
        bad(f"n_steps must be a positive integer, not {n!r}")
    ts = table.get("timesteps")
    if not isinstance(ts, list) or len(ts) != n or not all(isinstance(t, int) for t in ts):
        bad(f"timesteps must be a list of {n} integers")
    sc = table.get("scales")
    if not isinstance(sc, dict):
        bad("scales must be an object {tensor name: [scale per step]}")
    for name, v in sc.items():
        if not isinstance(v, list) or len(v) != n:
            bad(f"tensor {name}: {len(v) if isinstance(v, list) else v!r} scales, expected {n}")
        if not all(isinstance(s, (int, float)) and np.isfinite(s) and s > 0 for s in v):
            bad(f"tensor {name}: scales must be finite and > 0")
    return table


def read_table(path: str | Path) -> dict:
    p = Path(path)
    from ..files import read_json_object
    return validate_table(read_json_object(p, "per-step scale table"), str(p))


def write_table(table: dict, path: str | Path) -> None:
    validate_table(table)
    Path(path).write_text(json.dumps(table, indent=1) + "\n")


def table_path(qdq_path: str | Path) -> Path:
    """model.qdq.onnx -> model.qdq.scales.json"""
    p = Path(qdq_path)
    return p.with_name((p.name[:-5] if p.name.endswith(".onnx") else p.name) + ".scales.json")


# ------------------------------------------------- per-step simulation (ORT)

def with_step_scales(qdq: onnx.ModelProto, table: dict, step: int) -> onnx.ModelProto:
    """A copy of the QDQ model whose activation scales are those of step ``step`` of the table."""
    if not 0 <= step < table["n_steps"]:
        raise SdacError(f"step {step} outside the table's {table['n_steps']} steps")
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    by_name = {i.name: i for i in m.graph.initializer}
    for name, scales in table["scales"].items():
        init = by_name.get(f"{name}_scale")
        if init is None:
            raise SdacError(f"scale table names tensor {name}, which the QDQ model does not quantize")
        init.CopyFrom(numpy_helper.from_array(np.array(scales[step], np.float32), init.name))
    return m


def step_models(qdq_path: str | Path, table: dict) -> list[bytes]:
    """One serialized QDQ model per step (for OrtUNet(step_models=...))."""
    base = onnx.load(str(qdq_path))
    return [with_step_scales(base, table, i).SerializeToString() for i in range(table["n_steps"])]


def activation_names(model: onnx.ModelProto) -> list[str]:
    return tensor_roles(model).activations
