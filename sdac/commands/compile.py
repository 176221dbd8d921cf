"""`sdac compile model.onnx -o model.sdab`: ONNX to a verified instruction bundle."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import SdacError

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile a quantized ONNX UNet into a bundle (.sdab)",
                       description="Import an ONNX model (QDQ, or float with --step-scales), rewrite it with the "
                       "graph passes, form the fusion groups, choose the dataflow per kernel, tile for the "
                       "machine, schedule into the four queues with dependency tokens, verify, and write the "
                       "bundle.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", metavar="OUT.sdab", help="bundle to write (default: MODEL.sdab)")
    p.add_argument("--step-scales", metavar="FILE.scales.json",
                   help="per-step activation scales (from `sdac quantize`); one program serves every step")
    p.add_argument("--array", metavar="RxC", help="systolic array shape (default 20x10); lanes follow the rows")
    p.add_argument("--dataflow", action="append", default=[], metavar="NAME=os|ws",
                   help="override the dataflow of a kernel or ONNX node (repeatable)")
    p.add_argument("--dump-after", action="append", default=[], metavar="PASS",
                   help="write the graph after PASS (DOT + ONNX for Netron, or the kernel list); repeatable")
    p.add_argument("--dump-dir", default=".", metavar="DIR", help="where dumps go (default .)")
    p.add_argument("--explain", action="store_true", help="print every ONNX node and where it went")
    p.add_argument("--calib", metavar="SAMPLES.npz",
                   help="sample inputs (by ONNX name) to calibrate in-kernel fixed-point formats the model's "
                   "scales do not determine")
    p.add_argument("--requant-inside", action=argparse.BooleanOptionalAction, default=True,
                   help="round where the QDQ model quantizes values inside a fusion group, as the model says "
                   "(default). --no-requant-inside keeps them at the SFU's 16-bit precision: closer to the "
                   "float model, fewer SFU passes")
    p.add_argument("--no-verify", action="store_true", help="skip the static verifier (not recommended)")
    p.add_argument("--verify-worker", action=argparse.BooleanOptionalAction, default=None,
                   help="run the verifier's per-instruction checks in a second process while the lowering "
                   "emits (default: on large models, 4000 graph nodes or more); --no-verify-worker verifies after the "
                   "lowering, in this process")
    p.add_argument("--debug", action="store_true",
                   help="check the graph's invariants after every pass (names the pass that broke one)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import write_bundle
    from ..compiler.driver import compile_model
    from ..isa.machine import DEFAULT

    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".sdab")
    if out.exists() and not args.force:
        raise SdacError(f"{out}: already exists (use --force to overwrite)")
    try:
        machine = DEFAULT.with_array(args.array) if args.array else DEFAULT
    except ValueError as e:
        raise SdacError(str(e)) from None
    overrides = {}
    for item in args.dataflow:
        name, _, df = item.partition("=")
        if df not in ("os", "ws") or not name:
            raise SdacError(f"--dataflow {item!r}: expected NAME=os or NAME=ws")
        overrides[name] = df
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    result = compile_model(src, step_scales=args.step_scales, machine=machine, dataflow=overrides,
                           dump_after=set(args.dump_after), dump_dir=args.dump_dir, calib=args.calib,
                           verify_program=not args.no_verify, requant_inside=args.requant_inside, debug=args.debug,
                           verify_in_parallel=args.verify_worker, progress=say)
    if args.explain:
        print(result.explain)
    write_bundle(result.bundle, out)
    b = result.bundle
    print(f"wrote {out}: {len(result.kernel_graph.kernels)} kernels, {len(b.instrs)} instructions, "
          f"{out.stat().st_size} bytes, {b.n_steps} step bank(s), {time.perf_counter() - t0:.2f} s")
    for path in result.dumped:
        print(f"dumped {path}")
    return 0
