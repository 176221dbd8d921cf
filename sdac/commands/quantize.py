"""sdac quantize: post-training W4A8 quantization with per-step activation scales."""
from __future__ import annotations

from pathlib import Path

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("quantize", help="W4A8 post-training quantization (QDQ ONNX + per-step scale table)",
                       description="Calibrate a float ONNX UNet along DDIM sampling trajectories (onnxruntime) "
                       "and write a QDQ ONNX model (int4 per-channel weights, int8 activations, static scales) "
                       "plus MODEL.scales.json with one activation scale per tensor per denoising step.")
    p.add_argument("model", type=Path, help="float ONNX model (inputs sample, timestep)")
    p.add_argument("-o", "--output", type=Path, required=True, help="QDQ model to write (e.g. model.qdq.onnx)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (= scale banks) (default 20)")
    p.add_argument("--samples", type=int, default=16, help="calibration images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="calibration noise seed (default 0)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta during calibration (default 0)")
    p.add_argument("--static", action="store_true",
                   help="baseline: one scale per tensor for all steps (the table repeats it)")
    p.add_argument("--wbits", type=int, choices=(4, 8), default=4, help="weight bits (default 4)")
    p.add_argument("--scheduler", type=Path, help="JSON with the DDIM config (default: the model's sidecar "
                   "MODEL.json 'scheduler', else diffusers' defaults)")
    p.add_argument("--cond", type=Path, help=".npz with the conditioning inputs of a conditional model "
                   "(batched like the model; a batch-2 model runs [uncond, cond] pairs)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="guidance scale of the calibration trajectories for batch-2 models (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..diffusion.sample import progress_bar
    from ..errors import SdacError
    from ..quant.ptq import quantize_file, scheduler_for
    if args.steps < 1 or args.samples < 1:
        raise SdacError("--steps and --samples must be >= 1")
    sched = scheduler_for(args.model, args.scheduler)
    extra = None
    if args.cond:
        from ..files import read_npz
        extra = read_npz(args.cond)
    report = progress_bar(f"calibrating {args.samples} images x {args.steps} steps", args.steps)
    try:
        res = quantize_file(args.model, args.output, steps=args.steps, samples=args.samples, seed=args.seed,
                            static=args.static, wbits=args.wbits, eta=args.eta, scheduler=sched, force=args.force,
                            progress=lambda i, n: report(i), extra=extra, guidance=args.guidance)
    finally:
        report(None)
    kind = "static (one scale per tensor)" if args.static else "per-step"
    print(f"wrote {res.model_path} (W{args.wbits}A8 QDQ, {res.n_weights} weights, {res.n_activations} activations)")
    print(f"wrote {res.table_path} ({kind} scales, {len(res.calibration.timesteps)} steps, "
          f"timesteps {res.calibration.timesteps[0]}..{res.calibration.timesteps[-1]})")
    return 0
