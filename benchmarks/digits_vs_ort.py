"""Golden model vs onnxruntime on the digits UNet, per denoising step (docs/numerics.md).

    .venv/bin/python benchmarks/digits_vs_ort.py                             # 8 images per step, default compile
    .venv/bin/python benchmarks/digits_vs_ort.py --no-requant-inside --n 4   # 16-bit values inside fusion groups

Quantizes the built-in digits UNet as tests/e2e/test_digits.py does (10 steps, 8 calibration images,
seed 0), compiles it, and for each step feeds noisy real digits at that step's timestep to:
the golden model, onnxruntime on the QDQ model with that step's scales (default graph optimizations,
which swap some Q/DQ groups for onnxruntime's own int8 kernels, and ORT_DISABLE_ALL: the plain QDQ
semantics), onnxruntime on the float model, and the KernelGraph's float64 reference. Prints SQNR per
step: per image (min over images) and pooled (signal and noise summed over the images). The last row
compares what the sampler carries to the next step, the DDIM update x_{t-1} (the digits model's
scheduler, eta = 0) computed from each eps, golden against onnxruntime. Then a whole sampling run
(--images seeded noise images, 10 DDIM steps) on the golden model, on onnxruntime's per-step QDQ models
and on the float model: SQNR of the final images.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=16, help="images of the whole sampling run (0: none)")
    ap.add_argument("--no-requant-inside", dest="plain", action="store_true",
                    help="compile with --no-requant-inside (16-bit values inside fusion groups)")
    args = ap.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    import onnx
    import onnxruntime as ort

    from sdac.compiler.driver import compile_model
    from sdac.compiler.hardref import run_kernel_graph
    from sdac.diffusion import DIGITS_INFO, DIGITS_ONNX
    from sdac.diffusion.ddim import DDIM, DDIMConfig
    from sdac.diffusion.digits import load_digits_images
    from sdac.quant.ptq import quantize_file
    from sdac.quant.qdq import read_table, table_path, with_step_scales
    from sdac.runtime.golden import run_bundle

    q = Path(tempfile.mkdtemp(prefix="sdac-digits-")) / "digits.qdq.onnx"
    quantize_file(DIGITS_ONNX, q, steps=10, samples=8, seed=0)
    table = read_table(table_path(q))
    res = compile_model(str(q), step_scales=str(table_path(q)), requant_inside=not args.plain)
    qdq = onnx.load(str(q))

    def session(model, optimize=True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(), so)

    flt = session(str(DIGITS_ONNX))
    sched = DDIM(DDIMConfig.from_dict(json.loads(DIGITS_INFO.read_text())["scheduler"]))
    if [int(v) for v in sched.set_timesteps(table["n_steps"])] != [int(v) for v in table["timesteps"]]:
        raise SystemExit("the scale table's timesteps are not the digits scheduler's")
    images, _ = load_digits_images()
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    rng = np.random.default_rng(args.seed)
    pairs = [("golden", "ort"), ("golden", "ort-noopt"), ("kgref", "ort-noopt"), ("ort-noopt", "ort"),
             ("golden", "float"), ("ort", "float"), ("golden x_t-1", "ort x_t-1")]
    rows = {p: [] for p in pairs}
    for step, t in enumerate(table["timesteps"]):
        m = with_step_scales(qdq, table, step)
        s_opt, s_plain = session(m), session(m, optimize=False)
        sig = {p: 0.0 for p in pairs}
        noise = {p: 0.0 for p in pairs}
        worst = {p: np.inf for p in pairs}
        for _ in range(args.n):
            x0 = images[rng.integers(len(images))][None]
            x = (np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * rng.standard_normal(x0.shape)).astype(np.float32)
            f = {"sample": x, "timestep": np.array([t], np.float32)}
            out = {"golden": run_bundle(res.bundle, f, step=step)["out_sample"], "ort": s_opt.run(None, f)[0],
                   "ort-noopt": s_plain.run(None, f)[0], "float": flt.run(None, f)[0],
                   "kgref": run_kernel_graph(res.kernel_graph, f, step)["out_sample"]}
            for k in ("golden", "ort"):          # the sampler's next sample from this eps
                out[k + " x_t-1"] = sched.step(out[k], t, x)[0]
            for a, b in pairs:
                ref, got = out[b].astype(np.float64), out[a].astype(np.float64)
                s, n = float(np.sum(ref ** 2)), float(np.sum((got - ref) ** 2))
                sig[(a, b)] += s
                noise[(a, b)] += n
                worst[(a, b)] = min(worst[(a, b)], 10 * np.log10(s / n) if n else np.inf)
        for p in pairs:
            rows[p].append((10 * np.log10(sig[p] / noise[p]) if noise[p] else np.inf, worst[p]))
        print(f"  step {step} (t={t}) done", file=sys.stderr, flush=True)
    mode = "--no-requant-inside" if args.plain else "default compile (requant_inside)"
    print(f"SQNR in dB per step, {args.n} images per step (seed {args.seed}), {mode}: pooled / min image")
    print(f"{'':27s}" + "".join(f"{'t=' + str(t):>13s}" for t in table["timesteps"]))
    for (a, b), v in rows.items():
        print(f"{a + ' vs ' + b:27s}" + "".join(f"{p:6.1f} /{w:5.1f}" for p, w in v))
    if args.images:
        whole_run(res.bundle, qdq, table, args.images, args.seed)
    return 0


def whole_run(bundle, qdq, table, n: int, seed: int) -> None:
    """The same noise through 10 DDIM steps on the golden model, onnxruntime (QDQ, per step) and float."""
    from sdac.bundle import write_bundle
    from sdac.diffusion import DIGITS_INFO, DIGITS_ONNX
    from sdac.diffusion.sample import GoldenUNet, OrtUNet, sample_images
    from sdac.quant.qdq import with_step_scales
    sched = json.loads(DIGITS_INFO.read_text())["scheduler"]
    with tempfile.TemporaryDirectory() as d:
        write_bundle(bundle, f"{d}/digits.sdab")
        steps = [with_step_scales(qdq, table, s).SerializeToString() for s in range(table["n_steps"])]
        runs = {"golden": GoldenUNet(f"{d}/digits.sdab"), "ort": OrtUNet(steps[0], step_models=steps),
                "float": OrtUNet(str(DIGITS_ONNX))}
        img = {k: sample_images(u, sched, n, table["n_steps"], seed=seed).astype(np.float64) for k, u in runs.items()}

    def db(a, b):
        return 10 * np.log10(np.sum(img[b] ** 2) / np.sum((img[a] - img[b]) ** 2))
    print(f"whole sampling run, {n} images, {table['n_steps']} DDIM steps (seed {seed}), final images: golden vs ort "
          f"{db('golden', 'ort'):.1f} dB, golden vs float {db('golden', 'float'):.1f} dB, ort vs float "
          f"{db('ort', 'float'):.1f} dB")


if __name__ == "__main__":
    sys.exit(main())
