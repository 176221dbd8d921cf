"""Micro-benchmark of the golden model: `python -m sdac.runtime.bench_golden`.

Times single instructions of SD-sized tiles (the figures quoted in docs/golden.md) and the
per-instruction scheduling overhead. Single-threaded BLAS is recommended for comparable numbers
(OPENBLAS_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from ..isa import Instr, numerics as N
from ..isa.machine import DEFAULT
from .golden import Golden


def _time(g: Golden, prog, repeat: int) -> float:
    prepared = g.prepare(list(prog) + [Instr.make("halt")])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        g.run(prepared)
        best = min(best, time.perf_counter() - t)
    return best


def _ort_reference(repeat: int) -> dict[str, float]:
    """onnxruntime float32 times of the same mm and conv shapes (same threads), for the ratio."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}
    rng = np.random.default_rng(1)

    def session(node, inputs, inits):
        g = helper.make_graph([node], "bench", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, n) for n, v in inits])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    def best(sess, feed):
        sess.run(None, feed)
        t = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            sess.run(None, feed)
            t = min(t, time.perf_counter() - t0)
        return t

    out = {}
    w = rng.normal(size=(1280, 1280)).astype(np.float32)
    out["mm"] = best(session(helper.make_node("MatMul", ["x", "w"], ["y"]), [("x", [256, 1280])], [("w", w)]),
                     {"x": rng.normal(size=(256, 1280)).astype(np.float32)})
    w = rng.normal(size=(320, 320, 3, 3)).astype(np.float32)
    out["conv"] = best(session(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                               [("x", [1, 320, 32, 32])], [("w", w)]),
                       {"x": rng.normal(size=(1, 320, 32, 32)).astype(np.float32)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdac.runtime.bench_golden", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    m = dataclasses.replace(DEFAULT, wgt_lines=1 << 17)        # room for a 1280 x 1280 int4 weight
    L = m.lanes
    g = Golden(m, 64)
    rng = np.random.default_rng(0)
    g.act[:] = rng.integers(-128, 128, g.act.shape)
    g.wgt[:] = rng.integers(-8, 8, g.wgt.shape)
    g.acc[:] = rng.integers(-2**14, 2**14, g.acc.shape)
    g.prm[0, :] = N.make_scale(3000, 12)
    g.prm[1, :3] = [round(2**32 / 10240), 16, 16]
    mm, k, n = 256, 1280, 1280
    cases = [
        ("mm 256x1280 @ 1280x1280 (int8 x int4)", 2 * mm * k * n,
         [Instr.make("mm", a=0, ars=k // L, w=0, ws=k, c=0, crs=n // L, m=mm, n=n, k=k)]),
        ("mm 256x1280 @ 1280x256 (int8 x int8, act_t)", 2 * mm * k * 256,
         [Instr.make("mm", a=0, ars=k // L, wsrc="act_t", w=20000, ws=k // L, c=0, crs=256 // L + 1,
                     m=mm, n=256, k=k)]),
        ("conv 3x3 32x32x320 -> 320", 2 * 32 * 32 * 320 * 9 * 320,
         [Instr.make("conv", i=0, ips=16, irs=16 * 32, ih=32, iw=32, w=0, wbs=9 * 320, wts=320, o=0, ops=16,
                     ors=16 * 32, oh=32, ow=32, cin=320, cout=320, stride=1, pt=1, pl=1)]),
    ]
    rows, cols, nl = 1024, 320, 16
    sfu = dict(s=0, srs=nl, d=0, drs=nl, rows=rows, cols=cols, sc=0)
    cases += [
        ("deq 1024x320 per-channel + group stats", rows * cols,
         [Instr.make("deq", per_ch=1, st=1, st_clr=1, st_mode="chan", gsize=10, **sfu)]),
        ("norm 1024x320 GroupNorm + SiLU -> int8", rows * cols,
         [Instr.make("norm", st_mode="chan", gsize=10, nd=L, gamma=0, beta=0, fn="silu", frac=8, out="act", **sfu)]),
        ("softmax 1024x320", rows * cols, [Instr.make("softmax", **sfu)]),
        ("act gelu 1024x320", rows * cols, [Instr.make("act", fn="gelu", frac=8, **sfu)]),
    ]
    ref = _ort_reference(args.repeat)
    for i, (name, work, prog) in enumerate(cases):
        t = _time(g, prog, args.repeat)
        unit = "GOP/s" if name.startswith(("mm", "conv")) else "M elements/s"
        rate = work / t / (1e9 if unit == "GOP/s" else 1e6)
        key = {0: "mm", 2: "conv"}.get(i)
        vs = f"   (onnxruntime float32: {ref[key] * 1e3:.1f} ms, ratio {t / ref[key]:.2f})" if key in ref else ""
        print(f"{name:48s} {t * 1e3:8.1f} ms   {rate:8.1f} {unit}{vs}")
    n_sync = 20000
    t = _time(g, [Instr.make("sync", q="ld", push=["cmp"]), Instr.make("sync", q="cmp", pop=["ld"])] * (n_sync // 2),
              args.repeat)
    print(f"{'scheduling overhead (sync pairs)':48s} {t / n_sync * 1e6:8.1f} us per instruction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
