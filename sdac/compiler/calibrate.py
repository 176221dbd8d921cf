"""Fill the calibrated magnitudes (absmax fields) of a KernelGraph from sample inputs.

The lowering chooses the fixed-point format of every value inside a kernel
from these magnitudes. The frontend sets them from the model's own
quantization scales where it has them; this fills the rest (or all, for a
KernelGraph built by hand) by running the float reference on sample inputs
at every denoising step.
"""
from __future__ import annotations

import numpy as np

from .kernels import Kernel, KernelGraph
from .reference import run_reference


def calibrate_absmax(kg: KernelGraph, samples: list[dict[str, np.ndarray]], *, overwrite: bool = False) -> None:
    seen: dict[int, float] = {}

    def observe(stage, value) -> None:
        seen[id(stage)] = max(seen.get(id(stage), 0.0), float(np.abs(value).max(initial=0.0)))

    for step in range(kg.n_steps):
        for inputs in samples:
            run_reference(kg, inputs, step, observe)
    for k in kg.kernels:
        if overwrite or not k.main_absmax:
            k.main_absmax = seen.get(id(k), 0.0)
        for e in k.epilogue:
            if hasattr(e, "absmax") and (overwrite or not e.absmax):
                e.absmax = seen.get(id(e), 0.0)


def kernel_by_name(kg: KernelGraph, name: str) -> Kernel:
    return next(k for k in kg.kernels if k.name == name)
