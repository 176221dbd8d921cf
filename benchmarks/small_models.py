"""Compile + golden model vs onnxruntime on the small test models of sdac.models (quick benchmark).

    .venv/bin/python benchmarks/small_models.py                   # all models
    .venv/bin/python benchmarks/small_models.py unet unet_cond    # some

Per model (QDQ, int4 weights, seeded): sdac compile time, onnxruntime session creation, instruction
count, golden model time for one step, onnxruntime time (1 thread), and the SQNR of the golden output
against onnxruntime on the QDQ model with the hardware's hard SiLU/GeLU (sdac.compiler.hardref) and on
the plain QDQ model. Models are cached in build/bench_small/. A failure is shown in the table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchutil as bu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "bench_small"
MODELS = ["conv3x3", "conv_gn_silu", "resnet", "attention", "transformer", "unet_noattn", "unet", "unet_cond"]


def _ort(path, inputs):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    t = time.perf_counter()
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ts = time.perf_counter() - t
    t = time.perf_counter()
    y = s.run(None, inputs)[0]
    return y, ts, time.perf_counter() - t


def one(name: str) -> tuple:
    from sdac import models
    from sdac.compiler.driver import compile_model
    from sdac.compiler.hardref import write_hard_reference
    from sdac.compiler.reference import sqnr_db
    from sdac.runtime.golden import run_bundle
    CACHE.mkdir(parents=True, exist_ok=True)
    qdq, _ = models.build(name, cache_dir=str(CACHE))
    inputs = models.sample_inputs(name, seed=1)
    y_q, t_sess, t_ort = _ort(qdq, inputs)
    t = time.perf_counter()
    try:
        r = compile_model(qdq)
    except Exception as e:  # noqa: BLE001
        return (name, "FAILED", f"{t_sess:.2f} s", "-", "-", f"{t_ort * 1e3:.1f} ms", "-", "-",
                f"{type(e).__name__}: {str(e)[:160]}")
    t_comp = time.perf_counter() - t
    hard = CACHE / f"{name}.hardref.onnx"
    if not hard.exists():
        write_hard_reference(str(qdq), str(hard))
    y_h, _, _ = _ort(hard, inputs)
    t = time.perf_counter()
    try:
        (y_g,) = run_bundle(r.bundle, inputs, step=0).values()
    except Exception as e:  # noqa: BLE001
        return (name, f"{t_comp:.2f} s", f"{t_sess:.2f} s", len(r.bundle.instrs), "FAILED", f"{t_ort * 1e3:.1f} ms",
                "-", "-", f"{type(e).__name__}: {str(e)[:160]}")
    t_gold = time.perf_counter() - t
    return (name, f"{t_comp:.2f} s", f"{t_sess:.2f} s", len(r.bundle.instrs), f"{t_gold * 1e3:.1f} ms",
            f"{t_ort * 1e3:.1f} ms", f"{sqnr_db(y_h, y_g):.1f}", f"{sqnr_db(y_q, y_g):.1f}", "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=MODELS)
    a = ap.parse_args(argv)
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    for name in a.models:
        bu.log(f"{name} ...")
        rows.append(one(name))
    print()
    print(bu.md_table(rows, ("model", "sdac compile", "ORT session", "instrs", "golden step", "ORT step",
                             "SQNR vs hard-ref QDQ dB", "SQNR vs QDQ dB", "error")))
    return 0 if all(r[1] != "FAILED" and r[4] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
