"""`sdac run model.sdab --inputs in.npz --outputs out.npz`: run one denoising step of a bundle."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..errors import SdacError
from ..files import read_npz

ORDER = 40
BACKENDS = ("golden", "rtl", "fake", "board")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a compiled bundle on the golden model",
                       description="Run one denoising step of a compiled bundle (.sdab). Inputs and outputs are "
                       ".npz archives whose array names are the ONNX graph's input and output names; values are "
                       "float host tensors (quantized and dequantized with the bundle's per-step scales).")
    p.add_argument("bundle", metavar="MODEL.sdab", help="compiled bundle")
    p.add_argument("--inputs", required=True, metavar="IN.npz", help="input tensors by ONNX name")
    p.add_argument("--outputs", required=True, metavar="OUT.npz", help="where to write the output tensors")
    p.add_argument("--step", type=int, default=0, metavar="N",
                   help="denoising step (selects the per-step scales and the CSR STEP value; default 0)")
    p.add_argument("--trace", metavar="TRACE.json",
                   help="also write per-instruction work records (index, op, queue, MACs, DRAM bytes, SFU "
                   "elements, buffer lines) for the performance model")
    p.add_argument("--backend", choices=BACKENDS, default="golden",
                   help="golden: the golden model (default); rtl: the Verilator co-simulation of hw/ (builds it "
                   "once, minutes); fake: the register-level driver against an in-process device; board: a PYNQ "
                   "board (run on the board, see sdac deploy)")
    p.add_argument("--interactive", action="store_true",
                   help="with --backend rtl: run the board driver (runtime/board.py) on the RTL through its "
                   "register port (sdac.hw.cosim: AXI-Lite CSR accesses, DRAM buffers, the irq line) instead of "
                   "the batch co-simulation")
    p.add_argument("--priority", metavar="Q,Q,Q,Q", default="ld,cmp,sfu,st",
                   help="queue order of the golden model's interleaving (default ld,cmp,sfu,st); outputs that "
                   "change with it reveal a missing dependency token")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def _si(n: float) -> str:
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n:g} "


def run(args: argparse.Namespace) -> int:
    from ..bundle import read_bundle
    from ..runtime.golden import execute_bundle

    out = Path(args.outputs)
    trace = Path(args.trace) if args.trace else None
    for p in (out, trace):
        if p is not None and p.exists() and not args.force:
            raise SdacError(f"{p}: already exists (use --force to overwrite)")
    priority = tuple(q.strip() for q in args.priority.split(","))
    if sorted(priority) != sorted(("ld", "cmp", "sfu", "st")):
        raise SdacError(f"--priority must list the queues ld, cmp, sfu, st once each, got {args.priority!r}")
    bundle = read_bundle(args.bundle)
    inputs = read_npz(args.inputs)
    for name, x in inputs.items():
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise SdacError(f"input {name!r}: dtype {x.dtype} is not a real number type")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise SdacError(f"input {name!r}: contains NaN or infinity")
    t0 = time.perf_counter()
    if args.interactive and args.backend != "rtl":
        raise SdacError("--interactive applies to --backend rtl only")
    if args.backend != "golden":
        if trace is not None or priority != ("ld", "cmp", "sfu", "st"):
            raise SdacError("--trace and --priority are golden-model options")
        from ..runtime.device import Device
        dev = Device.open(bundle, args.backend, **({"interactive": True} if args.interactive else {}))
        outputs = dev.step(inputs, args.step)
        info = dev.last_run
        with open(out, "wb") as f:
            np.savez(f, **outputs)
        cycles = f", {info.cycles} cycles" if info.cycles is not None else ""
        print(f"{args.bundle}: step {args.step}: {info.retired} instructions{cycles} in {info.seconds:.2f} s "
              f"({args.backend}); wrote {out}")
        return 0
    outputs, res = execute_bundle(bundle, inputs, args.step, trace=trace is not None, priority=priority)
    dt = time.perf_counter() - t0
    with open(out, "wb") as f:
        np.savez(f, **outputs)
    if trace is not None:
        trace.write_text(json.dumps(res.to_json()) + "\n", encoding="utf-8")
    print(f"{args.bundle}: step {args.step}: {res.instructions} instructions, {_si(res.macs)}MAC, "
          f"{_si(res.dram_bytes)}B DMA, {_si(res.sfu_elems)} SFU elements in {dt:.2f} s "
          f"({args.backend}); wrote {out}" + (f" and {trace}" if trace else ""))
    return 0
