"""The demo: the built-in digits UNet, W4A8 with per-step scales, compiled, sampled on the golden model.

Needs only the core install (numpy, onnx, onnxruntime): no torch, no Pillow.
``run_demo()`` is what `sdac demo` / `make demo` should call.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from . import DIGITS_ONNX


def run_demo(out: str | Path = "build/demo", *, steps: int = 10, n: int = 16, seed: int = 0,
             calib_samples: int = 16, calib_seed: int = 1000, model: str | Path = DIGITS_ONNX,
             log: Callable[[str], None] = print) -> dict[str, Path]:
    """quantize (per-step scales) -> compile -> DDIM on the golden model -> PNG grid.

    Also samples the float model on onnxruntime from the same noise, for comparison.
    Returns the paths written: qdq, table, bundle, grid (golden), grid_fp32, images (folder).
    """
    from ..bundle import write_bundle
    from ..compiler.driver import compile_model
    from .sample import GoldenUNet, OrtUNet, progress_bar, sample_images, save_grid, save_images
    from ..quant.ptq import quantize_file, scheduler_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sched = scheduler_for(model)
    report = progress_bar(f"calibrating {calib_samples} images x {steps} steps", steps)
    try:
        q = quantize_file(model, out / "digits.qdq.onnx", steps=steps, samples=calib_samples, seed=calib_seed,
                          scheduler=sched, force=True, progress=lambda i, k: report(i))
    finally:
        report(None)
    log(f"quantized W4A8, {len(q.calibration.timesteps)} per-step scale banks: {q.model_path}, {q.table_path} "
        f"({time.time() - t0:.0f} s)")
    res = compile_model(str(q.model_path), step_scales=str(q.table_path))
    bundle = out / "digits.sdab"
    write_bundle(res.bundle, bundle)
    log(f"compiled: {bundle} ({len(res.bundle.instrs)} instructions, {len(res.kernel_graph.kernels)} kernels)")
    images = sample_images(GoldenUNet(bundle), sched, n_images=n, steps=steps, seed=seed, progress=True,
                           timesteps=q.calibration.timesteps)
    save_images(images, out / "images")
    grid = save_grid(images, out / "grid.png")
    fp32 = save_grid(sample_images(OrtUNet(model), sched, n_images=n, steps=steps, seed=seed),
                     out / "grid_fp32.png")
    log(f"sampled {n} digits with DDIM {steps} steps on the golden model ({time.time() - t0:.0f} s)")
    log(f"image grid: {grid.resolve()}  (float model on onnxruntime, same noise: {fp32.resolve()})")
    return {"qdq": q.model_path, "table": q.table_path, "bundle": bundle, "grid": grid, "grid_fp32": fp32,
            "images": out / "images"}
