"""Calibration along real DDIM sampling trajectories (onnxruntime on the float model).

Every float activation tensor of the graph gets a max(|x|) output computed in the graph; the
model is run step after step of DDIM sampling from seeded noise, and the absolute maximum of
every tensor is recorded per denoising step (max over the calibration images).

Which tensors are activations (what the device holds as int8): the ``sample`` input and
everything computed from it, plus the host tensors the device reads. Host tensors (computed
from the timestep alone: sinusoidal embedding, time MLP, time projections; the host runs them in
float before each step) are not quantized except where the device reads them.
Constants (computed from initializers only) and non-float tensors are never activations.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto

from ..compiler.frontend import for_shape_inference
from ..compiler.weights import inlined, is_small_external
from ..errors import SdacError

WEIGHTED_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}   # op -> index of the weight input
TIMESTEP_INPUT = "timestep"


@dataclass
class TensorRoles:
    activations: list[str]          # float tensors to quantize, in graph order
    host: set[str] = field(default_factory=set)
    constants: set[str] = field(default_factory=set)


def load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The model; from a file, the graph with its external data left on disk (``base_dir_of`` says where):
    SD-v1.5 in float32 is 3.4 GB, which onnxruntime loads itself."""
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        proto = onnx.load(str(model), load_external_data=False)
        base_dir = base_dir_of(model)
        for init in proto.graph.initializer:      # small ones (shapes, scales) in memory
            if is_small_external(init):
                init.CopyFrom(inlined(init, base_dir))
        return proto
    except FileNotFoundError:
        raise
    except Exception as e:  # onnx raises DecodeError & co.
        raise SdacError(f"{model}: not a readable ONNX model ({e})") from None


def base_dir_of(model: str | Path | onnx.ModelProto) -> str:
    return "" if isinstance(model, onnx.ModelProto) else os.path.dirname(os.path.abspath(str(model)))


def external_files(model: onnx.ModelProto) -> set[str]:
    """The external-data files the initializers refer to (relative locations)."""
    out = set()
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            out.update(e.value for e in init.external_data if e.key == "location")
    return out


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(for_shape_inference(model))
    g = inferred.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


LAYOUT_OPS = {"Unsqueeze", "Reshape", "Squeeze", "Flatten", "Identity", "Cast"}


def tensor_roles(model: onnx.ModelProto) -> TensorRoles:
    """Split the float tensors into device activations, host tensors and constants.

    Host: everything computed from the timestep (and constants) alone: the sinusoidal embedding,
    the time MLP and the per-resnet time projections run on the host in float (as the compiler's
    split_host pass does). Layout ops at the end of a host chain (e.g. the Unsqueeze of a time
    projection) belong to the device, so the tensor handed over is the projection's output.
    """
    g = model.graph
    types = float_types(model)
    inits = {i.name for i in g.initializer}
    constants = set(inits)
    host_t = {i.name for i in g.input if i.name == TIMESTEP_INPUT}
    host_nodes: list[onnx.NodeProto] = []
    for node in g.node:
        ins = [x for x in node.input if x]
        if all(x in constants for x in ins):
            constants.update(o for o in node.output if o)
            continue
        dyn = [x for x in ins if x not in constants]
        if dyn and all(x in host_t for x in dyn):
            host_nodes.append(node)
            host_t.update(o for o in node.output if o)
    # trailing layout ops move back to the device
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    outputs = {o.name for o in g.output}
    host_ids = {id(n) for n in host_nodes}
    moved = True
    while moved:
        moved = False
        for node in reversed(host_nodes):
            if id(node) in host_ids and node.op_type in LAYOUT_OPS and all(
                    id(c) not in host_ids for o in node.output for c in consumers.get(o, [])):
                host_ids.discard(id(node))
                host_t.difference_update(node.output)
                moved = True
    host_t.discard(TIMESTEP_INPUT)
    order = [i.name for i in g.input if i.name not in inits and i.name != TIMESTEP_INPUT]
    handed_over: list[str] = []
    for node in g.node:
        if id(node) in host_ids or all(x in constants for x in node.input if x):
            continue
        for x in node.input:
            if x == TIMESTEP_INPUT:
                raise SdacError(f"node {node.name} ({node.op_type}) reads the input {TIMESTEP_INPUT!r} on the "
                                "device; quantizing a raw timestep to int8 would destroy it")
            if x in host_t and x not in handed_over:
                handed_over.append(x)
        order += [o for o in node.output if o]
    is_float = lambda n: types.get(n) == TensorProto.FLOAT  # noqa: E731
    acts = [n for n in handed_over + order if is_float(n)]
    seen: set[str] = set()
    acts = [n for n in acts if not (n in seen or seen.add(n))]
    return TensorRoles(activations=acts, host=(host_t | {TIMESTEP_INPUT}) - set(acts), constants=constants)


def expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model with the given tensors added as graph outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    return m


ABSMAX_PREFIX = "sdac_absmax/"


def expose_absmax(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model with a scalar output max(|x|) per tensor (``ABSMAX_PREFIX + name``), computed in
    the graph: onnxruntime then frees every activation as usual (exposing SD-v1.5's 2000 tensors whole would
    keep a step's activations alive at once)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)

    def probe(n: str) -> list:
        a, out = f"{ABSMAX_PREFIX}{n}/abs", f"{ABSMAX_PREFIX}{n}"
        m.graph.output.append(onnx.helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
        return [onnx.helper.make_node("Abs", [n], [a], name=a),
                onnx.helper.make_node("ReduceMax", [a], [out], name=out, keepdims=0)]
    # each probe right after its tensor's producer, and the session runs nodes in this order (PRIORITY_BASED;
    # onnxruntime's default order ran the probes last and kept a whole step's activations: 12+ GB on SD-v1.5)
    want = set(names)
    produced = {o for nd in model.graph.node for o in nd.output}
    nodes = [p for n in names if n not in produced for p in probe(n)]       # graph inputs first
    for nd in model.graph.node:
        nodes.append(nd)
        nodes += [p for o in nd.output if o in want for p in probe(o)]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


MAX_INLINE_BYTES = 1 << 30    # larger instrumented models go to onnxruntime as a file with external data


def session_model(model: onnx.ModelProto, workdir: str) -> bytes | str:
    """What onnxruntime opens: serialized bytes (a model whose weights are external stays small: onnxruntime
    reads them from the model's directory, see ``calibrate``), or a path in ``workdir`` for a model over
    ``MAX_INLINE_BYTES`` held in memory (protobuf cannot serialize more than 2 GB)."""
    weights = sum(len(i.raw_data) + 4 * (len(i.float_data) + len(i.int32_data)) + 8 * len(i.int64_data)
                  for i in model.graph.initializer)       # ByteSize() itself fails past 2 GB
    if weights <= MAX_INLINE_BYTES:
        return model.SerializeToString()
    path = str(Path(workdir) / "calibrate.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="calibrate.data",
              size_threshold=1024)
    return path


@dataclass
class Calibration:
    names: list[str]                 # activation tensors
    timesteps: list[int]
    absmax: np.ndarray               # float64 [n_steps, n_tensors], max over the calibration images
    scheduler: dict
    samples: int
    seed: int
    eta: float

    def per_step(self, name: str) -> np.ndarray:
        return self.absmax[:, self.names.index(name)]


def calibrate(model: str | Path | onnx.ModelProto, *, steps: int, samples: int, seed: int,
              scheduler: dict, eta: float = 0.0, extra: dict[str, np.ndarray] | None = None,
              guidance: float = 1.0, progress: Callable[[int, int], None] | None = None,
              base_dir: str | None = None) -> Calibration:
    """Run DDIM sampling with the float model, recording |x|max of every activation per step.

    ``extra``: the other inputs of a conditional model (e.g. text embeddings), batched like the
    model. A model whose ``sample`` batch is 2 is run as classifier-free guidance: each image as the
    pair [x, x] (row 0 unconditional, row 1 conditional), eps = e0 + guidance * (e1 - e0).
    """
    from ..diffusion.ddim import DDIM, DDIMConfig
    from ..diffusion.sample import OrtUNet, sample_images
    proto = load(model)
    roles = tensor_roles(proto)
    if not roles.activations:
        raise SdacError("the model has no float activation tensors to calibrate")
    first = proto.graph.output[0].name
    names = roles.activations
    base_dir = base_dir_of(model) if base_dir is None else base_dir
    with tempfile.TemporaryDirectory(prefix="sdac-calib-") as work:
        unet = OrtUNet(session_model(expose_absmax(proto, names), work), extra=extra,
                       external_data_dir=base_dir if external_files(proto) else None, priority_order=True)
    out_names = [first] + [ABSMAX_PREFIX + n for n in names]
    pair = unet.batch == 2
    sample_in = next(i for i in unet.sess.get_inputs() if i.name == "sample")
    shape = tuple(d if isinstance(d, int) else 1 for d in sample_in.shape[1:])
    sched = DDIM(DDIMConfig.from_dict(scheduler))
    ts = sched.set_timesteps(steps)
    absmax = np.zeros((len(ts), len(names)))

    def fn(x: np.ndarray, t: int, step: int) -> np.ndarray:
        eps = []
        for k in range(x.shape[0]):
            xk = x[k:k + 1].astype(np.float32)
            feed = {"sample": np.concatenate([xk, xk]) if pair else xk,
                    "timestep": np.full(unet.t_shape, t, unet.t_dtype), **unet.extra}
            e, *row = unet.sess.run(out_names, feed)
            absmax[step] = np.maximum(absmax[step], np.nan_to_num(np.array(row, np.float64), neginf=0.0))
            eps.append(e[0:1] + guidance * (e[1:2] - e[0:1]) if pair else e)
        return np.concatenate(eps).astype(np.float32)

    sample_images(fn, scheduler, n_images=samples, steps=steps, seed=seed, eta=eta, shape=shape,
                  progress=progress or False)
    return Calibration(names=names, timesteps=[int(t) for t in ts], absmax=absmax, scheduler=dict(scheduler),
                       samples=samples, seed=seed, eta=eta)
