"""sdac sample: DDIM sampling through a UNet (onnxruntime or a compiled bundle on the golden model)."""
from __future__ import annotations

from pathlib import Path

ORDER = 40


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate images with DDIM (onnxruntime or the golden model)",
                       description="Run DDIM from seeded noise, calling the UNet once per step (step i selects the "
                       "i-th per-step scale bank), and write PNGs plus a grid. The scheduler math is float on the host.")
    p.add_argument("model", type=Path, nargs="?", default=None,
                   help="ONNX model (backend ort) or .sdab bundle (backend golden); default: the built-in digits UNet")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the bundle's/table's, else 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--out", type=Path, default=Path("build/samples"), help="output folder (default build/samples)")
    p.add_argument("--backend", choices=("ort", "golden"), default=None,
                   help="ort: onnxruntime on an ONNX model; golden: a .sdab bundle on the golden model "
                   "(default: from the file extension)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (conditional models: batch 2 [uncond, cond])")
    p.add_argument("--cond", type=Path, default=None,
                   help=".npz with the conditioning inputs of a conditional model (ONNX or bundle), batched "
                   "like the model: batch 2 = [uncond, cond]")
    p.add_argument("--scales", type=Path, default=None,
                   help="per-step table for a QDQ model (default MODEL.scales.json if it exists)")
    p.add_argument("--static-scales", action="store_true",
                   help="QDQ model: ignore the per-step table, use the model's static scales")
    p.add_argument("--scheduler", type=Path, default=None, help="JSON with the DDIM config")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..diffusion import DIGITS_ONNX
    from ..diffusion.sample import GoldenUNet, OrtUNet, sample_images, save_grid, save_images
    from ..errors import SdacError
    from ..quant.ptq import scheduler_for
    from ..quant.qdq import read_table, step_models, table_path

    model = args.model or DIGITS_ONNX
    if not model.exists():
        raise FileNotFoundError(2, "No such file or directory", str(model))
    backend = args.backend or ("golden" if model.suffix == ".sdab" else "ort")
    if args.n < 1:
        raise SdacError("--n must be >= 1")
    timesteps = None
    sched = None
    extra = None
    if args.cond:
        from ..files import read_npz
        extra = read_npz(args.cond)
    if backend == "golden":
        unet = GoldenUNet(model, extra=extra)
        meta = unet.bundle.meta or {}
        steps = args.steps or unet.n_steps
        if steps != unet.n_steps:
            raise SdacError(f"{model}: compiled for {unet.n_steps} steps, not {steps}")
        timesteps = meta.get("timesteps")
        if meta.get("scheduler") and not args.scheduler:
            from ..diffusion.ddim import DDIMConfig
            sched = DDIMConfig.from_dict(meta["scheduler"]).to_dict()
        shape = tuple(unet.sample_io.shape[1:])
        what = f"golden model, bundle {model.name}"
    else:
        tpath = args.scales or table_path(model)
        per_step = None
        if not args.static_scales and tpath.exists():
            table = read_table(tpath)
            if not table.get("static"):
                per_step = step_models(model, table)
            timesteps = table["timesteps"]
            if table.get("scheduler") and not args.scheduler:
                sched = table["scheduler"]
        elif args.scales and not args.static_scales:
            raise FileNotFoundError(2, "No such file or directory", str(args.scales))
        unet = OrtUNet(model, extra=extra, step_models=per_step)
        steps = args.steps or (len(timesteps) if timesteps else 20)
        shape = tuple(d if isinstance(d, int) else 1 for d in
                      next(i for i in unet.sess.get_inputs() if i.name == "sample").shape[1:])
        what = f"onnxruntime, {model.name}" + (", per-step scales" if per_step else "")
    if args.guidance is not None and not getattr(unet, "conditional", False):
        raise SdacError(f"{model}: --guidance needs a conditional model (with --cond inputs)")
    if sched is None:
        sched = scheduler_for(model, args.scheduler)
    images = sample_images(unet, sched, n_images=args.n, steps=steps, seed=args.seed, eta=args.eta, shape=shape,
                           guidance=args.guidance, progress=True, timesteps=timesteps)
    paths = save_images(images, args.out)
    grid = save_grid(images, args.out / "grid.png")
    import numpy as np
    np.save(args.out / "samples.npy", images)      # the float samples themselves (latents: for a VAE)
    print(f"{args.n} images, DDIM {steps} steps, eta {args.eta}, seed {args.seed} ({what})")
    latent = images.shape[1] not in (1, 3)
    print(f"wrote {len(paths)} PNGs to {args.out}/ and the grid {grid}"
          + (f" (latents with {images.shape[1]} channels: one grayscale tile per channel; decode "
             f"{args.out / 'samples.npy'} with the model's VAE for pictures)" if latent else
             f", the float samples in {args.out / 'samples.npy'}"))
    return 0
