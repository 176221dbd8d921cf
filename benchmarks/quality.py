"""Image quality of quantized sampling: FP32 vs W8A8 static vs W4A8 static vs W4A8 per-step.

    .venv/bin/python benchmarks/quality.py                       # the figures in docs/diffusion.md
    .venv/bin/python benchmarks/quality.py --n 64 --steps 10     # quicker

All four run the built-in digits UNet on onnxruntime (one thread): the float model, and QDQ models
from ONE calibration (same trajectories) whose scales are either static (max over steps) or
per-step (the QDQ scale initializers rewritten for each step, i.e. what the device's per-step
scale table does). The quantization is simulated by onnxruntime's QuantizeLinear/DequantizeLinear
on every activation tensor (the device keeps some of them wider inside fused kernels, so this is
a pessimistic simulation of the board). Same seeds for every method.

Metrics:
  * FD: Frechet distance between the hidden-layer features of a small MLP classifier (sklearn,
    trained on the same digits) for the generated images and for the 1797 real digits;
  * confidence: the classifier's mean max-probability on the generated images;
  * SQNR per step: the UNet output of each method vs FP32 on the *same input* x_t (FP32 trajectory),
    in dB, pooled over the images; and the SQNR of the final images vs FP32's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdac.compiler.reference import sqnr_db
from sdac.diffusion import DIGITS_INFO, DIGITS_ONNX
from sdac.diffusion.sample import OrtUNet, sample_images, save_grid
from sdac.quant.calibrate import calibrate
from sdac.quant.ptq import quantize_file
from sdac.quant.qdq import read_table, step_models


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a and b (rows = samples).

    tr sqrt(S1 S2) is computed as tr sqrt(S1^1/2 S2 S1^1/2) (symmetric PSD, stable with dead features).
    """
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = _sqrtm_psd(s1)
    tr_covmean = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None))))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The training data of the UNet: (N, 1, 8, 8) in [-1, 1] (as sdac.diffusion.digits, without torch)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None], d.target


def train_classifier(seed: int = 0):
    from sklearn.neural_network import MLPClassifier
    x, y = load_digits_images()
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed).fit(x.reshape(len(x), -1), y)
    return clf, x.reshape(len(x), -1)


def features(clf, x: np.ndarray) -> np.ndarray:
    """The MLP's hidden layer (ReLU) as the feature space."""
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="images per method")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-seed", type=int, default=1000, help="calibration noise (not an evaluation seed)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation noise seed")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/quality_results"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the plots from OUT/quality.json")
    ap.add_argument("--golden-n", type=int, default=0,
                    help="also compile the W4A8 per-step model and run the first K images on the golden model")
    args = ap.parse_args(argv)

    if args.plot_only:
        plot(json.loads((args.out / "quality.json").read_text()), args.out)
        return 0
    info = json.loads(DIGITS_INFO.read_text())
    sched = info["scheduler"]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"calibrating: {args.calib_samples} images x {args.steps} steps (seed {args.calib_seed})", flush=True)
    calib = calibrate(DIGITS_ONNX, steps=args.steps, samples=args.calib_samples, seed=args.calib_seed,
                      scheduler=sched)
    tmp = Path(tempfile.mkdtemp(prefix="sdac-quality-"))
    q4 = quantize_file(DIGITS_ONNX, tmp / "w4.qdq.onnx", steps=args.steps, samples=args.calib_samples,
                       scheduler=sched, calibration=calib)
    q8 = quantize_file(DIGITS_ONNX, tmp / "w8.qdq.onnx", steps=args.steps, samples=args.calib_samples,
                       scheduler=sched, calibration=calib, wbits=8)
    table = read_table(q4.table_path)
    methods = {
        "FP32": OrtUNet(DIGITS_ONNX),
        "W8A8 static": OrtUNet(q8.model_path),
        "W4A8 static": OrtUNet(q4.model_path),
        "W4A8 per-step": OrtUNet(q4.model_path, step_models=step_models(q4.model_path, table)),
    }

    golden = None
    if args.golden_n:
        from sdac.bundle import write_bundle
        from sdac.compiler.driver import compile_model
        from sdac.diffusion.sample import GoldenUNet
        res = compile_model(q4.model_path, step_scales=str(q4.table_path))
        write_bundle(res.bundle, tmp / "w4.sdab")
        golden = GoldenUNet(tmp / "w4.sdab")
        print(f"  compiled the W4A8 per-step model: {len(res.bundle.instrs)} instructions", flush=True)

    # teacher-forced per-step SQNR: every method sees FP32's x_t
    fp32 = methods["FP32"]
    sqnr = {m: np.zeros(args.steps) for m in methods if m != "FP32"}
    sig = np.zeros(args.steps)
    noise = {m: np.zeros(args.steps) for m in sqnr}
    g_sig, g_noise = np.zeros(args.steps), np.zeros(args.steps)

    def trace(i, t, x, eps):
        sig[i] += float(np.sum(eps.astype(np.float64) ** 2))
        for m in sqnr:
            e = methods[m](x, t, i)
            noise[m][i] += float(np.sum((e.astype(np.float64) - eps) ** 2))
        if golden is not None:
            k = args.golden_n
            e = golden(x[:k], t, i)
            g_sig[i] += float(np.sum(eps[:k].astype(np.float64) ** 2))
            g_noise[i] += float(np.sum((e.astype(np.float64) - eps[:k]) ** 2))

    images = {"FP32": sample_images(fp32, sched, args.n, args.steps, args.seed, trace=trace)}
    for m in sqnr:
        sqnr[m] = 10 * np.log10(sig / np.maximum(noise[m], 1e-30))
    for m in methods:
        if m != "FP32":
            images[m] = sample_images(methods[m], sched, args.n, args.steps, args.seed)
        print(f"  sampled {m} ({time.time() - t0:.0f}s)", flush=True)
    golden_row = None
    if golden is not None:
        k = args.golden_n
        gim = sample_images(golden, sched, k, args.steps, args.seed)   # same noise as the first k images
        sqnr["W4A8 per-step golden"] = 10 * np.log10(g_sig / np.maximum(g_noise, 1e-30))
        save_grid(gim, args.out / "grid_W4A8_perstep_golden.png")
        print(f"  sampled {k} images on the golden model ({time.time() - t0:.0f}s)", flush=True)

    clf, real = train_classifier()
    f_real = features(clf, real)
    rows = []
    for m, im in images.items():
        flat = np.clip(im, -1, 1).reshape(len(im), -1)
        p = clf.predict_proba(flat)
        rows.append({
            "method": m,
            "fd": frechet(features(clf, flat), f_real),
            "confidence": float(p.max(1).mean()),
            "classes": int(len(set(p.argmax(1)))),
            "image_sqnr_db": float("inf") if m == "FP32" else sqnr_db(images["FP32"], im),
            "unet_sqnr_db_mean": float("nan") if m == "FP32" else float(np.mean(sqnr[m])),
            "unet_sqnr_db_min": float("nan") if m == "FP32" else float(np.min(sqnr[m])),
        })
        save_grid(im[:64], args.out / f"grid_{m.replace(' ', '_').replace('-', '')}.png")
    fd_real_half = frechet(f_real[::2], f_real[1::2])
    if golden is not None:
        k = args.golden_n
        pg = clf.predict_proba(np.clip(gim, -1, 1).reshape(k, -1))
        po = clf.predict_proba(np.clip(images["W4A8 per-step"][:k], -1, 1).reshape(k, -1))
        golden_row = {"n": k, "confidence": float(pg.max(1).mean()),
                      "same_class_as_fp32": float(np.mean(pg.argmax(1) == clf.predict(
                          np.clip(images["FP32"][:k], -1, 1).reshape(k, -1)))),
                      "image_sqnr_vs_fp32_db": sqnr_db(images["FP32"][:k], gim),
                      "image_sqnr_vs_ort_perstep_db": sqnr_db(images["W4A8 per-step"][:k], gim),
                      "ort_perstep_confidence_same_images": float(po.max(1).mean()),
                      "unet_sqnr_db_mean": float(np.mean(sqnr["W4A8 per-step golden"]))}

    print(f"\n{args.n} images per method, DDIM {args.steps} steps, eta 0, seed {args.seed}; "
          f"calibration {args.calib_samples} images (seed {args.calib_seed})")
    print(f"{'method':<15} {'FD':>8} {'conf':>6} {'classes':>7} {'img SQNR':>9} {'UNet SQNR mean/min (dB)':>24}")
    for r in rows:
        print(f"{r['method']:<15} {r['fd']:8.2f} {r['confidence']:6.3f} {r['classes']:7d} "
              f"{r['image_sqnr_db']:9.2f} {r['unet_sqnr_db_mean']:11.2f} / {r['unet_sqnr_db_min']:6.2f}")
    print(f"(FD between two halves of the real data: {fd_real_half:.2f})")
    if golden_row:
        g = golden_row
        print(f"golden model (compiled W4A8 per-step bundle), first {g['n']} images: confidence {g['confidence']:.3f} "
              f"(onnxruntime per-step on the same images {g['ort_perstep_confidence_same_images']:.3f}), "
              f"same class as FP32 {g['same_class_as_fp32']:.2f}, image SQNR vs FP32 {g['image_sqnr_vs_fp32_db']:.2f} dB, "
              f"vs onnxruntime per-step {g['image_sqnr_vs_ort_perstep_db']:.2f} dB, "
              f"UNet SQNR mean {g['unet_sqnr_db_mean']:.2f} dB")
    print("UNet output SQNR per step (dB), step 0 = t=" + str(calib.timesteps[0]) + ":")
    for m, v in sqnr.items():
        print(f"  {m:<15} " + " ".join(f"{x:5.1f}" for x in v))

    result = {"n": args.n, "steps": args.steps, "seed": args.seed, "calib_samples": args.calib_samples,
              "calib_seed": args.calib_seed, "timesteps": calib.timesteps, "rows": rows,
              "fd_real_halves": fd_real_half, "sqnr_per_step": {m: v.tolist() for m, v in sqnr.items()},
              "golden": golden_row}
    (args.out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out)
    print(f"wrote {args.out}/quality.json, quality.png, sqnr_per_step.png, grid_*.png ({time.time() - t0:.0f}s)")
    return 0


def plot(result: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    names = [r["method"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].bar(names, [r["fd"] for r in rows], color=["#444", "#7a7", "#d88", "#58c"])
    ax[0].set_ylabel("Frechet distance (MLP features), lower is better")
    ax[1].bar(names, [r["confidence"] for r in rows], color=["#444", "#7a7", "#d88", "#58c"])
    ax[1].set_ylabel("classifier confidence")
    ax[1].set_ylim(0, 1)
    for a in ax:
        a.tick_params(axis="x", rotation=20, labelsize=8)
    fig.suptitle(f"digits UNet, DDIM {result['steps']} steps, {result['n']} images/method")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, v in result["sqnr_per_step"].items():
        label = f"{m} ({result['golden']['n']} images)" if "golden" in m and result.get("golden") else m
        ax.plot(range(len(v)), v, marker="o", ms=3, label=label)
    ax.set_xticks(range(0, len(result["timesteps"]), 2))
    ax.set_xlabel(f"DDIM step (0 = t={result['timesteps'][0]}, last = t={result['timesteps'][-1]})")
    ax.set_ylabel("UNet output SQNR vs FP32 (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sqnr_per_step.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
