"""Per-stage time and memory of the sdac compiler on a model (for finding what is slow or large).

    .venv/bin/python benchmarks/compile_stages.py build/sd15/unet.qdq.onnx --mem-limit-gb 10 [--profile]

Runs the frontend (load_model), each graph pass of sdac.compiler.passes one at a time, the lowering,
the static verifier and the bundle writing (to a temporary file), printing wall and CPU time (of the whole
process: the DATA writer thread's included), current and peak resident set after each, and stops at the first
failure with the error and its stack. The stages run as compile_model runs them (no cyclic GC,
sdac.compiler.driver.compiling_runtime; the DATA writer thread joined after the verifier). With --profile, cProfile's top functions per stage. The address space is
capped (--mem-limit-gb) so a runaway stage fails with MemoryError and a stack on the shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchutil as bu  # noqa: E402


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--step-scales")
    ap.add_argument("--mem-limit-gb", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--passes-only", action="store_true", help="stop after the graph passes")
    a = ap.parse_args(argv)
    bu.limit_memory(a.mem_limit_gb)
    from sdac.compiler.driver import compiling_runtime

    rows = []

    def stage(name, fn):
        prof = bu.Profile(a.profile)
        c = time.process_time()
        t = time.perf_counter()
        try:
            with prof:
                out = fn()
        except BaseException as e:  # noqa: BLE001
            dt = time.perf_counter() - t
            rows.append((name, f"{dt:.2f} s", "", bu.gib(current_rss()), bu.gib(bu.peak_rss_bytes()), "FAILED"))
            info = bu.error_info(e)
            print(f"\n{name} FAILED after {dt:.1f} s: {info['type']}: {info['message'][:1500]}")
            for s in info["stack"]:
                print("  at", s)
            if a.profile:
                print(prof.top(a.top))
            raise SystemExit(1)
        dt = time.perf_counter() - t
        rows.append((name, f"{dt:.2f} s", f"{time.process_time() - c:.2f} s", bu.gib(current_rss()),
                     bu.gib(bu.peak_rss_bytes()), "ok"))
        bu.log(f"{name}: {dt:.2f} s, RSS {bu.gib(current_rss())}, peak {bu.gib(bu.peak_rss_bytes())}")
        if a.profile and dt > 1.0:
            print(prof.top(a.top))
        return out

    try:
        with compiling_runtime():
            run_stages(a, stage)
    finally:
        print()
        total = sum(float(r[1].split()[0]) for r in rows)
        rows.append(("total", f"{total:.2f} s", "", "", "", ""))
        print(bu.md_table(rows, ("stage", "wall", "cpu", "RSS after", "peak RSS", "")))
    return 0


def run_stages(a, stage) -> None:
    import tempfile

    from sdac.bundle import write_bundle
    from sdac.compiler.frontend import load_model
    from sdac.compiler.lower import lower
    from sdac.compiler.passes import PassContext, _pipeline, verify_graph
    from sdac.compiler.verify import check_program, check_queues
    from sdac.isa.machine import DEFAULT

    graph = stage("frontend load_model", lambda: load_model(a.model, a.step_scales))
    ctx = PassContext()
    for name, fn in _pipeline():
        def run(fn=fn):
            fn(graph, ctx)
            if ctx.kernel_graph is None:
                verify_graph(graph)
        stage(f"pass {name} (+verify_graph)", run)
        ctx.ran.append(name)
    if a.passes_only:
        return
    kg = ctx.kernel_graph
    del graph
    # as compile_model runs them: the DATA image's writer thread packs and writes the weights during the
    # lowering and the verifier, and is joined after it
    bundle = stage("lower (instructions; DATA writer thread runs on)", lambda: lower(kg, DEFAULT, defer_data=True))
    # verify() is these two; apart, the queue simulation (what the compile's process still runs after the
    # lowering when a worker process does the per-instruction checks) shows its own time
    stage("verify: queue simulation (check_queues; DATA writer thread runs on)", lambda: check_queues(bundle))
    stage("verify: bounds, operands, races (check_program)", lambda: check_program(bundle))

    def join():
        bundle.data = bundle.data.finish()
    stage("DATA writer join (after verify)", join)
    with tempfile.TemporaryDirectory() as tmp:
        stage("write_bundle (encode TEXT, copy DATA)", lambda: write_bundle(bundle, f"{tmp}/b.sdab"))


if __name__ == "__main__":
    sys.exit(main())
