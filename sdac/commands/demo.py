"""`sdac demo`: the whole flow on the built-in digits UNet, from float ONNX to images from the golden model."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 5


def register(sub) -> None:
    p = sub.add_parser("demo", help="quantize, compile and sample the built-in digits UNet on the golden model",
                       description="End to end on the built-in example: W4A8 quantization with per-step scales "
                       "calibrated along DDIM trajectories (sdac quantize), compilation to a bundle (sdac compile), "
                       "and DDIM sampling through the compiled UNet on the bit-exact golden model (sdac sample), "
                       "writing an image grid.")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for everything the demo writes "
                   "(default out/demo; the demo's own files there are replaced)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps = per-step scale banks (default 10)")
    p.add_argument("--n", type=int, default=16, help="images to sample (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import write_bundle
    from ..compiler.driver import compile_model
    from ..diffusion import DIGITS_ONNX
    from ..diffusion.sample import GoldenUNet, sample_images, save_grid
    from ..errors import SdacError
    from ..quant.ptq import quantize_file
    from ..quant.qdq import table_path

    if args.steps < 1 or args.n < 1:
        raise SdacError("--steps and --n must be >= 1")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    qdq = out / "digits.qdq.onnx"
    say(f"[1/3] quantizing {DIGITS_ONNX.name}: int4 weights, int8 activations, {args.steps} per-step scale banks")
    quantize_file(DIGITS_ONNX, qdq, steps=args.steps, samples=8, seed=args.seed, force=True)
    say("[2/3] compiling")
    result = compile_model(str(qdq), step_scales=str(table_path(qdq)), progress=lambda m: say("      " + m))
    bundle_path = out / "digits.sdab"
    write_bundle(result.bundle, bundle_path)
    say(f"      {bundle_path}: {len(result.kernel_graph.kernels)} kernels, {len(result.bundle.instrs)} instructions")
    say(f"[3/3] sampling {args.n} digits with DDIM ({args.steps} steps) through the bundle on the golden model")
    unet = GoldenUNet(bundle_path)
    meta = result.bundle.meta
    shape = tuple(unet.sample_io.shape[1:])
    images = sample_images(unet, meta["scheduler"], n_images=args.n, steps=args.steps, seed=args.seed, eta=0.0,
                           shape=shape, timesteps=meta["timesteps"],
                           progress=lambda i, n: say(f"      step {i}/{n}"))
    grid = save_grid(images, out / "grid.png")
    print(f"wrote {grid} ({args.n} digits sampled through the compiled W4A8 UNet on the golden model, "
          f"{time.perf_counter() - t0:.0f} s)")
    return 0

