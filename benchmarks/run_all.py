"""All benchmarks in sequence (`make bench`); prints every table.

    .venv/bin/python benchmarks/run_all.py            # everything (SD-v1.5 builds ~10 min once, then runs)
    .venv/bin/python benchmarks/run_all.py --quick    # skip the SD-v1.5 benchmarks
    .venv/bin/python benchmarks/run_all.py --list     # what would run

Quick set: the golden model's instruction micro-benchmark (sdac.runtime.bench_golden) and the
compile + golden + onnxruntime timing of the small test UNets (small_models.py), the digits UNet against
onnxruntime per denoising step (digits_vs_ort.py).
SD-v1.5 set: MACs per step (macs.py), compile (compile_sd15.py, issue #3), one golden step vs
onnxruntime (golden_sd15.py, issue #4), and the performance model (perf_sd15.py) when present.
Each benchmark runs as its own process; a failing one is reported and the rest still run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def benchmarks(quick: bool) -> list[tuple[str, list[str]]]:
    out = [("golden model micro-benchmark", [PY, "-m", "sdac.runtime.bench_golden"]),
           ("small UNets: compile, golden vs onnxruntime", [PY, str(HERE / "small_models.py")]),
           ("digits UNet: golden vs onnxruntime per step, the 30 dB bound (issue #4)",
            [PY, str(HERE / "digits_vs_ort.py"), "--n", "8"])]
    if not quick:
        out += [("SD-v1.5 model build (cached)", [PY, str(HERE / "sd15_model.py"), "all"]),
                ("SD-v1.5 MACs per step", [PY, str(HERE / "macs.py"), str(HERE.parent / "build/sd15/unet.qdq.onnx")]),
                ("SD-v1.5 compile (issue #3)", [PY, str(HERE / "compile_sd15.py")]),
                ("SD-v1.5 golden step vs onnxruntime (issue #4)", [PY, str(HERE / "golden_sd15.py")])]
        if (HERE / "perf_sd15.py").exists():
            out.append(("SD-v1.5 performance model", [PY, str(HERE / "perf_sd15.py")]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the SD-v1.5 benchmarks")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    todo = benchmarks(a.quick)
    if a.list:
        for name, cmd in todo:
            print(f"{name}: {' '.join(os.path.relpath(c) if os.path.isabs(c) else c for c in cmd[1:])}")
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    summary = []
    for name, cmd in todo:
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd, env=env, cwd=HERE.parent)
        summary.append((name, rc, time.perf_counter() - t))
    print("\n=== summary")
    for name, rc, dt in summary:
        print(f"  {'ok    ' if rc == 0 else f'FAILED (exit {rc})'}  {dt:7.1f} s  {name}")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
