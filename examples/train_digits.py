"""Train the built-in digits diffusion UNet and store it as package data.

    .venv/bin/python examples/train_digits.py            # ~5 min on one CPU thread
    .venv/bin/python examples/train_digits.py --steps 300 --out /tmp/d   # quick try

Writes <out>/digits_unet.onnx (float ONNX, opset 17, inputs sample (1,1,8,8) and timestep (1,),
output out_sample (1,1,8,8)) and <out>/digits_unet.json (scheduler config, training settings, loss),
then samples a grid with DDIM on onnxruntime and saves build/digits_unet_samples.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdac.diffusion import DATA_DIR


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-attention", action="store_true", help="no self-attention in the mid block")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--sample-steps", type=int, default=20, help="DDIM steps for the preview grid")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from sdac.diffusion.digits import DigitsConfig, export_onnx, train, write_model_info
    from sdac.diffusion.sample import OrtUNet, sample_images, save_grid

    cfg = DigitsConfig(steps=args.steps, seed=args.seed, add_attention=not args.no_attention)
    model, stats = train(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits_unet.onnx"
    export_onnx(model, onnx_path)
    write_model_info(args.out / "digits_unet.json", cfg, stats, onnx_path.name)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), final loss {stats['final_loss']:.4f}")

    unet = OrtUNet(onnx_path)
    images = sample_images(unet, cfg.scheduler, n_images=64, steps=args.sample_steps, seed=0)
    grid = Path("build") / "digits_unet_samples.png"
    save_grid(images, grid)
    print(f"wrote {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
