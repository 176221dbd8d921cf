"""Locate where the compiled program departs from the float reference, kernel by kernel.

Each kernel is compiled alone, fed the reference's own (fake-quantized) inputs
and run on the golden model; its outputs are compared with the reference's.
The first kernel whose error exceeds a few int8 steps is where to look
(`sdac compile` users get this from `compare_kernels`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..isa.machine import DEFAULT, Machine
from .kernels import KernelGraph
from .reference import run_reference, sqnr_db


@dataclass
class KernelDiff:
    kernel: str
    kind: str
    output: str
    sqnr_db: float
    max_lsb: float          # largest error in units of the output's int8 step


def _reads(k):
    from .lower.lowering import _kernel_reads
    return _kernel_reads(k)


def compare_kernels(kg: KernelGraph, inputs: dict[str, np.ndarray], step: int = 0,
                    machine: Machine = DEFAULT) -> list[KernelDiff]:
    """inputs: by Act name, channels-last reals (as run_reference takes them)."""
    from ..runtime.golden import run_bundle
    from .lower import lower
    env = run_reference(kg, inputs, step)
    diffs = []
    for k in kg.kernels:
        reads = list({a.name: a for a in _reads(k)}.values())
        sub = KernelGraph([k], reads, k.outputs, n_steps=kg.n_steps)
        b = lower(sub, machine)
        host = {}
        for a in reads:
            x = env[a.name]
            host[a.name] = np.moveaxis(x, -1, 1) if x.ndim == 4 else x
        got = run_bundle(b, host, step=step)
        for a in k.outputs:
            g = got[a.name]
            g = np.moveaxis(g, 1, -1) if g.ndim == 4 else g
            r = env[a.name]
            g = g.reshape(r.shape)
            diffs.append(KernelDiff(k.name, k.kind, a.name, sqnr_db(r, g),
                                    float(np.abs(g - r).max() / float(np.asarray(a.scales)[step]))))
    return diffs


def reference_inputs(kg: KernelGraph, bundle, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX-named host inputs -> the KernelGraph's inputs (host prologue run, channels-last, by Act name)."""
    from ..runtime.golden import device_inputs
    dev = device_inputs(bundle, inputs)
    by_onnx = {kg.io_names.get(a.name, a.name): a for a in kg.inputs}
    out = {}
    for name, v in dev.items():
        a = by_onnx[name]
        v = np.asarray(v, np.float64)
        out[a.name] = (np.moveaxis(v, 1, -1) if v.ndim == 4 else v).reshape(a.shape)
    return out
