"""Issue #4 benchmark: one step of the SD-v1.5 UNet on the golden model vs onnxruntime (CPU).

    .venv/bin/python benchmarks/golden_sd15.py              # uses build/sd15/unet.qdq.sdab (compiles it if missing)
    .venv/bin/python benchmarks/golden_sd15.py --profile    # + cProfile hotspots of the golden run
    .venv/bin/python benchmarks/golden_sd15.py --threads 2  # BLAS / onnxruntime threads (default 1 for both)

Prints the golden model's time for one step (bundle loading and the one-time setup of its int8 GEMM backend,
the torch import and the backend's self-test, excluded and shown apart, as onnxruntime's session), onnxruntime's
time for the same QDQ model on the same inputs (session creation excluded and shown apart), their
ratio (target: golden within 1.5x of onnxruntime), each one's peak memory (ru_maxrss of its own child
process), and the SQNR of the golden output against onnxruntime on (1) the QDQ model, (2) the QDQ
model with the hardware's hard SiLU/GeLU (sdac.compiler.hardref), (3) the float model.
Results: build/sd15/golden.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchutil as bu  # noqa: E402
import sd15_model  # noqa: E402

BUNDLE = sd15_model.CACHE / "unet.qdq.sdab"
HARDREF = sd15_model.CACHE / "unet.qdq.hardref.onnx"


def child_golden(bundle_path: str, out: str, profile: bool) -> dict:
    from sdac.bundle import read_bundle
    from sdac.runtime.golden import execute_bundle
    res: dict = {"rss_after_imports": bu.peak_rss_bytes()}
    t = time.perf_counter()
    bundle = read_bundle(bundle_path)
    res["load_s"] = time.perf_counter() - t
    from sdac.runtime.golden import prepare_backends
    t = time.perf_counter()
    prepare_backends()
    res["setup_s"] = time.perf_counter() - t
    res["instrs"] = len(bundle.instrs)
    inputs = sd15_model.load_inputs()
    prof = bu.Profile(profile)
    bu.log(f"golden model: {len(bundle.instrs)} instructions, loaded in {res['load_s']:.1f} s; running step 0 ...")
    t = time.perf_counter()
    try:
        with prof:
            outs, rr = execute_bundle(bundle, inputs, step=0)
        res["run_s"] = time.perf_counter() - t
        res["counts"] = {"instructions": rr.instructions, "macs": rr.macs, "dram_read": rr.dram_read,
                         "dram_written": rr.dram_written, "sfu_elems": rr.sfu_elems, "by_queue": rr.by_queue}
        (name, y), = outs.items()
        np.save(out, np.asarray(y, np.float32))
        res.update(ok=True, output=name)
    except BaseException as e:  # noqa: BLE001
        res.update(ok=False, failed_after_s=time.perf_counter() - t, error=bu.error_info(e))
        bu.log(f"golden FAILED: {type(e).__name__}: {str(e)[:500]}")
    res["peak_rss"] = bu.peak_rss_bytes()
    if profile:
        res["profile"] = prof.top(25)
    return res


def child_ort(model: str, out: str, threads: int) -> dict:
    import onnxruntime as ort
    res: dict = {"rss_after_imports": bu.peak_rss_bytes()}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    t = time.perf_counter()
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    res["session_s"] = time.perf_counter() - t
    inputs = sd15_model.load_inputs()
    bu.log(f"onnxruntime {Path(model).name}: session {res['session_s']:.1f} s; running ...")
    t = time.perf_counter()
    y = sess.run(None, inputs)[0]
    res["run_s"] = time.perf_counter() - t
    np.save(out, y.astype(np.float32))
    res["peak_rss"] = bu.peak_rss_bytes()
    return res


def sqnr(ref, test) -> float:
    from sdac.compiler.reference import sqnr_db
    return sqnr_db(ref, test)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="do not try to compile the bundle when it is missing")
    ap.add_argument("--child", choices=["golden", "ort"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "golden":
        bu.emit(child_golden(a.path, a.out, a.profile))
        return 0
    if a.child == "ort":
        bu.emit(child_ort(a.path, a.out, a.threads))
        return 0

    # the same thread count for every BLAS, torch (OMP) and the golden model's own GEMM sessions
    env = {k: str(a.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                       "SDAC_GOLDEN_THREADS")}
    qdq = sd15_model.ensure("qdq")
    C = sd15_model.CACHE
    res: dict = {"threads": a.threads, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if not BUNDLE.exists() and not a.no_compile:
        bu.log(f"no {BUNDLE}: compiling it (benchmarks/compile_sd15.py child) ...")
        comp = bu.run_child([str(HERE / "compile_sd15.py"), "--child", "compile", "--path", str(qdq),
                             "--out", str(BUNDLE)], env=env)
        res["compile"] = {k: v for k, v in comp.items() if k != "stages"}
    if BUNDLE.exists():
        bu.log("golden model, one step (child process) ...")
        res["golden"] = bu.run_child([__file__, "--child", "golden", "--path", str(BUNDLE),
                                      "--out", str(C / "golden_out.npy")] + (["--profile"] if a.profile else []),
                                     env=env)
    else:
        res["golden"] = {"ok": False, "error": {"message": "no bundle (the compile failed, see compile_sd15.py)"}}
    bu.log("onnxruntime, QDQ model (child process) ...")
    res["ort_qdq"] = bu.run_child([__file__, "--child", "ort", "--path", str(qdq), "--out", str(C / "ort_qdq_out.npy"),
                                   "--threads", str(a.threads)], env=env)
    try:
        if not HARDREF.exists():
            from sdac.compiler.hardref import write_hard_reference
            write_hard_reference(str(qdq), str(HARDREF))
        bu.log("onnxruntime, QDQ model with hard SiLU/GeLU (child process) ...")
        res["ort_hard"] = bu.run_child([__file__, "--child", "ort", "--path", str(HARDREF),
                                        "--out", str(C / "ort_hard_out.npy"), "--threads", str(a.threads)], env=env)
    except Exception as e:  # noqa: BLE001 - the hard reference is optional here
        res["ort_hard"] = {"error": bu.error_info(e)}
    bu.log("onnxruntime, float model (child process) ...")
    res["ort_float"] = bu.run_child([__file__, "--child", "ort", "--path", str(sd15_model.FLOAT),
                                     "--out", str(C / "ort_float_out.npy"), "--threads", str(a.threads)], env=env)

    outs = {k: np.load(C / f"{k}_out.npy") for k in ("golden", "ort_qdq", "ort_hard", "ort_float")
            if (C / f"{k}_out.npy").exists() and res.get(k, {}).get("run_s")}
    sq = {}
    for ref in ("ort_qdq", "ort_hard", "ort_float"):
        if "golden" in outs and ref in outs:
            sq[f"golden vs {ref}"] = sqnr(outs[ref], outs["golden"])
    for ref, test in (("ort_float", "ort_qdq"), ("ort_float", "ort_hard")):
        if ref in outs and test in outs:
            sq[f"{test} vs {ref}"] = sqnr(outs[ref], outs[test])
    res["sqnr_db"] = sq

    g, o = res["golden"], res["ort_qdq"]
    ratio = g["run_s"] / o["run_s"] if g.get("run_s") and o.get("run_s") else None
    res["ratio"] = ratio
    rows = [
        ("golden model, one step", bu.secs(g.get("run_s")) if g.get("ok") else
         f"FAILED: {g.get('error', {}).get('message', '')[:120]}",
         f"bundle load {bu.secs(g.get('load_s'))}, GEMM backend setup {bu.secs(g.get('setup_s'))}, "
         f"peak RSS {bu.gib(g.get('peak_rss'))}"),
        ("onnxruntime QDQ, one step", bu.secs(o.get("run_s")),
         f"session {bu.secs(o.get('session_s'))}, peak RSS {bu.gib(o.get('peak_rss'))}"),
        ("ratio golden / onnxruntime", f"{ratio:.2f}x" if ratio else "-",
         "target <= 1.5x" + (f": {'MET' if ratio <= 1.5 else 'NOT MET'}" if ratio else "")),
        ("onnxruntime QDQ hard SiLU/GeLU", bu.secs(res["ort_hard"].get("run_s")),
         f"peak RSS {bu.gib(res['ort_hard'].get('peak_rss'))}"),
        ("onnxruntime float, one step", bu.secs(res["ort_float"].get("run_s")),
         f"session {bu.secs(res['ort_float'].get('session_s'))}, peak RSS {bu.gib(res['ort_float'].get('peak_rss'))}"),
    ]
    rows += [(f"SQNR {k}", f"{v:.1f} dB", "") for k, v in sq.items()]
    c = g.get("counts")
    if c:
        from macs import count_macs
        onnx_macs = count_macs(qdq).total
        rows += [("MACs executed (golden count)", f"{c['macs'] / 1e9:.1f} GMAC",
                  f"ONNX graph: {onnx_macs / 1e9:.1f} GMAC ({c['macs'] / onnx_macs:.3f}x)"),
                 ("instructions executed", c["instructions"], ", ".join(f"{k} {v}" for k, v in c["by_queue"].items())),
                 ("DRAM traffic", f"{(c['dram_read'] + c['dram_written']) / 2**30:.2f} GiB",
                  f"read {c['dram_read'] / 2**30:.2f}, written {c['dram_written'] / 2**30:.2f} GiB"),
                 ("SFU elements", f"{c['sfu_elems'] / 1e9:.2f} G", "")]
    print()
    print(bu.md_table(rows, (f"SD-v1.5 one step ({a.threads} thread)", "measured", "note")))
    if not g.get("ok") and g.get("error", {}).get("stack"):
        print("\ngolden error:", g["error"]["type"], g["error"]["message"][:1000])
        for s in g["error"]["stack"]:
            print("  at", s)
    if g.get("profile"):
        print("\ncProfile of the golden run (top by own time, then cumulative):\n" + g["profile"])
    (C / "golden.json").write_text(json.dumps(res, indent=1, default=str))
    return 0 if g.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
