"""Post-training quantization of a float ONNX UNet: calibrate along DDIM trajectories, write QDQ + table."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from ..errors import SdacError
from .calibrate import Calibration, base_dir_of, calibrate, load
from .fp16 import float16_tensors, float32_copy
from .qdq import make_qdq, step_table, table_path, write_table


def scheduler_for(model_path: str | Path, scheduler_file: str | Path | None = None) -> dict:
    """The DDIM config: an explicit JSON file, else the model's sidecar JSON ("scheduler"), else defaults."""
    from ..diffusion.ddim import DDIMConfig
    from ..diffusion.sample import load_model_info
    if scheduler_file:
        p = Path(scheduler_file)
        from ..files import read_json_object
        d = read_json_object(p, "scheduler config")
        return DDIMConfig.from_dict(d.get("scheduler", d)).to_dict()
    info = load_model_info(model_path)
    return DDIMConfig.from_dict(info.get("scheduler", {})).to_dict()


@dataclass
class QuantizeResult:
    model_path: Path
    table_path: Path
    calibration: Calibration
    n_weights: int
    n_activations: int


def quantize_file(model_path: str | Path, out_path: str | Path, *, steps: int = 20, samples: int = 16,
                  seed: int = 0, static: bool = False, wbits: int = 4, eta: float = 0.0,
                  scheduler: dict | None = None, force: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  calibration: Calibration | None = None, extra: dict | None = None,
                  guidance: float = 1.0) -> QuantizeResult:
    """Calibrate (unless ``calibration`` is given), write the QDQ model and its per-step table.

    ``extra``/``guidance``: conditioning inputs of a conditional model (see calibrate()).
    """
    out_path = Path(out_path)
    tpath = table_path(out_path)
    if not force:
        for p in (out_path, tpath):
            if p.exists():
                raise SdacError(f"{p} exists (use --force to overwrite)")
    if steps < 1 or samples < 1:
        raise SdacError("--steps and --samples must be >= 1")
    proto = load(model_path)             # external data stays on disk (onnxruntime reads it)
    if scheduler is None:                # (from the sidecar JSON next to the model the user named)
        scheduler = scheduler_for(model_path)
    with tempfile.TemporaryDirectory(prefix="sdac-fp32-") as work:
        if float16_tensors(proto):       # a float16 export: calibrate and quantize its float32 copy
            model_path = float32_copy(model_path, work)      # (float16 --cond arrays: OrtUNet casts them)
            proto = load(model_path)
        return _quantize(model_path, proto, out_path, tpath, steps=steps, samples=samples, seed=seed, static=static,
                         wbits=wbits, eta=eta, scheduler=scheduler, progress=progress, calibration=calibration,
                         extra=extra, guidance=guidance)


def _quantize(model_path, proto, out_path: Path, tpath: Path, *, steps, samples, seed, static, wbits, eta, scheduler,
              progress, calibration, extra, guidance) -> QuantizeResult:
    base_dir = base_dir_of(model_path)
    calib = calibration or calibrate(proto, steps=steps, samples=samples, seed=seed, scheduler=scheduler, eta=eta,
                                     extra=extra, guidance=guidance, progress=progress, base_dir=base_dir)
    static_absmax = {n: float(calib.absmax[:, i].max()) for i, n in enumerate(calib.names)}
    qdq, names = make_qdq(proto, static_absmax, wbits=wbits, base_dir=base_dir)
    table = step_table(calib, names, static=static)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(qdq, str(out_path))
    write_table(table, tpath)
    n_w = sum(1 for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("_DequantizeLinear")
              and n.input[0].endswith(f"_q{wbits}"))
    return QuantizeResult(out_path, tpath, calib, n_w, len(names))
