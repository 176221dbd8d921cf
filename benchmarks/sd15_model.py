"""The SD-v1.5 UNet (seeded random weights) as ONNX models, built once into build/sd15/.

    .venv/bin/python benchmarks/sd15_model.py            # export + quantize (cached, ~10-20 min once)
    .venv/bin/python benchmarks/sd15_model.py export     # only the float model
    .venv/bin/python benchmarks/sd15_model.py info       # sizes, parameter count, MACs per step

Files (build/ is gitignored):
  unet.float.onnx + unet.float.onnx.data   float32, opset 17, torch.onnx.export (dynamo=False)
  unet.qdq.onnx + unet.qdq.onnx.data       onnxruntime quantize_static: QDQ, symmetric int8 activations,
                                           int4 per-output-channel weights, opset 21, 1 calibration sample
  inputs.npz                                sample (1,4,64,64), timestep (1,), encoder_hidden_states (1,77,768)
  torch_out.npy                             the torch float output for those inputs
  info.json                                 parameter count, weight bytes, build times, activation ranges

Each heavy stage runs in its own process (``python sd15_model.py export`` / ``quantize``) so the
3.4 GB of float weights is never held twice. Torch uses 2 threads here (a one-off build).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# SDAC_SD15_VARIANT=slice: a 2-level cut of the same UNet for diagnosing the compiler at SD-v1.5 shapes with
# ~1/5 of the weights (64x64 latent, 320 and 1280 channels, 4096-token self-attention, 77-token cross-attention).
VARIANT = os.environ.get("SDAC_SD15_VARIANT", "full")
CACHE = Path(os.environ.get("SDAC_SD15_CACHE", ROOT / "build" / ("sd15" if VARIANT == "full" else f"sd15_{VARIANT}")))
FLOAT = CACHE / "unet.float.onnx"
QDQ = CACHE / "unet.qdq.onnx"
INPUTS = CACHE / "inputs.npz"
INFO = CACHE / "info.json"

SD15_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
if VARIANT == "slice":
    SD15_CONFIG.update(layers_per_block=1, block_out_channels=(320, 1280),
                       down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
INPUT_SHAPES = {"sample": (1, 4, 64, 64), "timestep": (1,), "encoder_hidden_states": (1, 77, 768)}
SEED = 0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_gb() -> float:
    """Peak resident set of this process (ru_maxrss, KiB on Linux) in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sample_inputs(seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded inputs: a unit-normal latent, timestep 500, text embeddings of CLIP-like magnitude (std 1)."""
    rng = np.random.default_rng(seed)
    return {"sample": rng.standard_normal(INPUT_SHAPES["sample"]).astype(np.float32),
            "timestep": np.array([500.0], np.float32),
            "encoder_hidden_states": rng.standard_normal(INPUT_SHAPES["encoder_hidden_states"]).astype(np.float32)}


def load_inputs() -> dict[str, np.ndarray]:
    if not INPUTS.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(INPUTS, **sample_inputs())
    z = np.load(INPUTS)
    return {k: z[k] for k in z.files}


def read_info() -> dict:
    return json.loads(INFO.read_text()) if INFO.exists() else {}


def write_info(**kv) -> None:
    info = read_info()
    info.update(kv)
    INFO.write_text(json.dumps(info, indent=1))


def weight_bytes(path: Path) -> int:
    """Bytes of the model's initializers as stored (external data file + inline)."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    total = 0
    for t in m.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        total += int(ext["length"]) if "length" in ext else len(t.raw_data)
    return total


# ------------------------------------------------------------------ torch model

def _int4_friendly(module, torch) -> None:
    """Each output channel's largest |w| made positive (same trick as sdac/models.py): onnxruntime's
    symmetric int4 ([-8, 7], scale absmax/7.5) then never produces -8, so weights fit the device's [-7, 7]."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.view(m.weight.shape[0], -1)
            i = w.abs().argmax(dim=1)
            w.mul_(torch.sign(w[torch.arange(w.shape[0]), i])[:, None])


def build_torch(threads: int = 2):
    """The SD-v1.5 UNet2DConditionModel with seeded random weights (eval mode).

    diffusers' default init (PyTorch's kaiming-uniform, gain 1/sqrt(3)) keeps every block's output
    O(1) here because GroupNorm/LayerNorm re-normalize each block; we only (a) give the norms' affine
    parameters the identity and (b) shrink the zero-initialised-in-training output convs/projections
    to a 0.5 gain so the residual stream does not double per block (measured ranges go to info.json).
    """
    import torch
    from diffusers import UNet2DConditionModel
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    with torch.no_grad():
        m = UNet2DConditionModel(**SD15_CONFIG).eval()
        for name, mod in m.named_modules():
            if name.endswith(("conv2", "proj_out", "to_out.0", "ff.net.2")) and hasattr(mod, "weight"):
                mod.weight.mul_(0.5)
        _int4_friendly(m, torch)
    return m


class _Wrap:
    """Positional-argument wrapper so torch.onnx.export sees (sample, timestep, encoder_hidden_states)."""

    def __new__(cls, unet):
        import torch

        class W(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = unet

            def forward(self, sample, timestep, encoder_hidden_states):
                return self.m(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        return W().eval()


def export_float() -> Path:
    """Stage 1 (own process): build, run torch once (reference output, ranges), export to ONNX."""
    if FLOAT.exists():
        return FLOAT
    import warnings

    import onnx
    import torch
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log("building UNet2DConditionModel (SD-v1.5 config, seed 0)")
    unet = build_torch()
    n_params = sum(p.numel() for p in unet.parameters())
    t_build = time.perf_counter() - t0
    log(f"  {n_params / 1e6:.1f} M parameters ({t_build:.1f} s, peak RSS {peak_rss_gb():.2f} GiB)")
    w = _Wrap(unet)
    args = tuple(torch.from_numpy(v) for v in load_inputs().values())

    # one torch forward: reference output and the range of every down/mid/up block output
    ranges = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, n=n: ranges.__setitem__(
        n, float((o[0] if isinstance(o, tuple) else o).abs().max())))
        for n, mod in unet.named_children() if n in ("conv_in", "mid_block", "conv_out")]
    hooks += [blk.register_forward_hook(lambda mod, i, o, n=f"{kind}.{j}": ranges.__setitem__(
        n, float((o[0] if isinstance(o, tuple) else o).abs().max())))
        for kind in ("down_blocks", "up_blocks") for j, blk in enumerate(getattr(unet, kind))]
    t = time.perf_counter()
    with torch.no_grad():
        out = w(*args).numpy()
    t_torch = time.perf_counter() - t
    for h in hooks:
        h.remove()
    np.save(CACHE / "torch_out.npy", out)
    log(f"  torch forward {t_torch:.1f} s; output std {out.std():.3f}, |max| {np.abs(out).max():.3f}; "
        f"block |max|: " + ", ".join(f"{k} {v:.1f}" for k, v in ranges.items()))

    # export into a scratch folder (the exporter writes one file per tensor above 2 GB), then repack
    # into a single external-data file next to the model
    tmp = CACHE / "export_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    log("torch.onnx.export (opset 17, dynamo=False) ...")
    t = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(w, args, str(tmp / "unet.onnx"), input_names=list(INPUT_SHAPES), output_names=["out"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    t_export = time.perf_counter() - t
    log(f"  exported in {t_export:.1f} s (peak RSS {peak_rss_gb():.2f} GiB)")
    del unet, w, args
    t = time.perf_counter()
    model = onnx.load(str(tmp / "unet.onnx"), load_external_data=True)
    part = FLOAT.with_suffix(".part.onnx")
    onnx.save_model(model, str(part), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=FLOAT.name + ".data", size_threshold=1024)
    del model
    os.replace(part, FLOAT)
    shutil.rmtree(tmp)
    t_repack = time.perf_counter() - t
    log(f"  repacked to {FLOAT} ({t_repack:.1f} s)")
    write_info(params=n_params, torch_build_s=t_build, torch_forward_s=t_torch, export_s=t_export,
               repack_s=t_repack, export_peak_rss_gib=peak_rss_gb(), block_absmax=ranges,
               torch_out_std=float(out.std()), config={k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in SD15_CONFIG.items()},
               float_weight_bytes=weight_bytes(FLOAT))
    return FLOAT


CALIB_CACHE = CACHE / "calib_ranges.json"


def calibrate_ranges() -> Path:
    """Stage 2a (own process): min/max of every tensor quantize_static would calibrate, in ~1x the weights.

    onnxruntime's own calibrator holds the model 4-5 times (loaded, opset-updated copy, calibrator copy,
    session, prepacked weights) and took 20 GB here before it was stopped. Instead: the same tensor
    selection (inputs/outputs of the quantizable op types), one ReduceMin + ReduceMax per tensor added to
    the graph structure only (the weights stay in the external data file), one onnxruntime run with
    prepacking off; the ranges go to quantize_static's calibration cache (calibration_cache_path).
    """
    if CALIB_CACHE.exists():
        return CALIB_CACHE
    import onnx
    import onnxruntime as ort
    from onnx import helper, shape_inference
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    export_float()
    t = time.perf_counter()
    m = onnx.load(str(FLOAT), load_external_data=False)
    inferred = shape_inference.infer_shapes(m)
    vis = {vi.name: vi for vi in list(inferred.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    inits = {x.name for x in m.graph.initializer}
    ops = set(QLinearOpsRegistry) | set(QDQRegistry)
    names = []
    for n in m.graph.node:
        if n.op_type in ops:
            for x in list(n.input) + list(n.output):
                vi = vis.get(x)
                if vi is not None and vi.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) \
                        and x not in inits and x not in names:
                    names.append(x)
    for x in names:
        for red in ("ReduceMin", "ReduceMax"):
            o = f"{x}__{red}"
            m.graph.node.append(helper.make_node(red, [x], [o], keepdims=0, name=o))
            m.graph.output.append(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, []))
    aug = CACHE / "calib_augmented.onnx"       # next to the data file its initializers point to
    onnx.save(m, str(aug))
    del m, inferred
    log(f"calibration: {len(names)} tensors; creating onnxruntime session ...")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(str(aug), so, providers=["CPUExecutionProvider"])
    log(f"  session ready (peak RSS {peak_rss_gb():.2f} GiB); running 1 sample ...")
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, load_inputs())))
    del sess
    aug.unlink()
    data = {}
    for x in names:
        lo, hi = float(outs[f"{x}__ReduceMin"]), float(outs[f"{x}__ReduceMax"])
        data[x] = TensorData(lowest=np.array(min(lo, 0.0), np.float32), highest=np.array(max(hi, 0.0), np.float32))
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), CALIB_CACHE)
    t_c = time.perf_counter() - t
    log(f"  calibrated {len(names)} tensors in {t_c:.1f} s (peak RSS {peak_rss_gb():.2f} GiB)")
    write_info(calibrate_s=t_c, calibrate_peak_rss_gib=peak_rss_gb(), calibrated_tensors=len(names))
    return CALIB_CACHE


def quantize() -> Path:
    """Stage 2b (own process): onnxruntime quantize_static from the cached ranges -> QDQ model
    (int8 symmetric activations, int4 symmetric per-output-channel weights, opset 21)."""
    if QDQ.exists():
        return QDQ
    import logging

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    logging.getLogger().setLevel(logging.ERROR)
    if not CALIB_CACHE.exists():
        raise SystemExit(f"run `{sys.argv[0]} calibrate` first (no {CALIB_CACHE})")
    t = time.perf_counter()
    part = CACHE / "qdq_part" / "unet.qdq.onnx"
    part.parent.mkdir(exist_ok=True)
    log("quantize_static: QDQ, int8 symmetric activations, int4 per-channel weights, opset 21 ...")
    quantize_static(str(FLOAT), str(part), None, quant_format=QuantFormat.QDQ, calibration_cache_path=str(CALIB_CACHE),
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt4, per_channel=True,
                    use_external_data_format=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    t_q = time.perf_counter() - t
    log(f"  quantized in {t_q:.1f} s (peak RSS {peak_rss_gb():.2f} GiB); repacking ...")
    m = onnx.load(str(part), load_external_data=True)
    onnx.save_model(m, str(QDQ), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=QDQ.name + ".data", size_threshold=1024)
    del m
    shutil.rmtree(part.parent)
    log(f"  -> {QDQ}")
    write_info(quantize_s=t_q, quantize_peak_rss_gib=peak_rss_gb(), qdq_weight_bytes=weight_bytes(QDQ))
    return QDQ


def ensure(stage: str = "qdq") -> Path:
    """Build what is missing, each heavy stage in a child process (memory returns to the OS)."""
    if not FLOAT.exists():
        subprocess.run([sys.executable, __file__, "export"], check=True)
    if stage == "float":
        return FLOAT
    if not CALIB_CACHE.exists():
        subprocess.run([sys.executable, __file__, "calibrate"], check=True)
    if not QDQ.exists():
        subprocess.run([sys.executable, __file__, "quantize"], check=True)
    return QDQ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", nargs="?", default="all", choices=["all", "export", "calibrate", "quantize", "info"])
    a = ap.parse_args(argv)
    if a.stage == "export":
        export_float()
    elif a.stage == "calibrate":
        calibrate_ranges()
    elif a.stage == "quantize":
        quantize()
    elif a.stage == "all":
        ensure("qdq")
    if a.stage == "info":
        print(json.dumps(read_info(), indent=1))
    elif a.stage == "all":
        i = read_info()
        print(f"{FLOAT} ({i.get('float_weight_bytes', 0) / 1e9:.2f} GB of weights), {QDQ} "
              f"({i.get('qdq_weight_bytes', 0) / 1e9:.2f} GB), {i.get('params', 0) / 1e6:.1f} M parameters "
              f"(details: {sys.argv[0]} info)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
