"""float16 ONNX exports (common for diffusion UNets) as float32 models, for calibration and quantization.

``sdac quantize`` works on float32 models (onnxruntime's CPU kernels, the scales it measures, the QDQ model
it writes). A float16 model is copied to float32 first: every float16 initializer, constant and attribute
tensor widened, every float16 type (inputs, outputs, value_info, Cast targets) made float32. Widening is
exact, so the copy computes what the float16 model's weights say, in float32 arithmetic."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import SdacError

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def float16_tensors(proto: onnx.ModelProto) -> list[str]:
    """Names of the graph inputs and initializers that are float16 (empty: a float32 model)."""
    g = proto.graph
    return ([vi.name for vi in g.input if vi.type.tensor_type.elem_type == F16]
            + [i.name for i in g.initializer if i.data_type == F16])


def _widen(t: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def _widen_type(vi) -> None:
    tt = vi.type.tensor_type
    if tt.elem_type == F16:
        tt.elem_type = F32


def _widen_node(nd, where: str) -> None:
    for a in nd.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            raise SdacError(f"{where}: node {nd.name!r} ({nd.op_type}) has a subgraph; float16 models with "
                            f"control flow are not converted: export the model in float32")
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F16:
            a.t.CopyFrom(_widen(a.t))
        elif a.name in ("to", "dtype", "output_dtype") and a.type == onnx.AttributeProto.INT and a.i == F16:
            a.i = F32


def float32_copy(model_path: str | Path, work_dir: str | Path) -> Path:
    """Write a float32 copy of the float16 ONNX model at ``model_path`` into ``work_dir`` (weights as external
    data there) and return its path."""
    model_path, work_dir = Path(model_path), Path(work_dir)
    try:
        proto = onnx.load(str(model_path), load_external_data=True)
    except Exception as e:  # noqa: BLE001 - onnx raises several unrelated types
        raise SdacError(f"{model_path}: cannot read ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    g = proto.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == F16:
            g.initializer[i].CopyFrom(_widen(t))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        _widen_type(vi)
    for nd in g.node:
        _widen_node(nd, str(model_path))
    out = work_dir / (model_path.stem + ".float32.onnx")
    os.makedirs(work_dir, exist_ok=True)
    onnx.save(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=out.name + ".data", size_threshold=1024)
    return out
