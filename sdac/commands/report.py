"""`sdac report model.sdab`: the cycle model's figures for a bundle (docs/performance.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SdacError

ORDER = 45


def register(sub) -> None:
    p = sub.add_parser("report", help="estimate cycles, iterations/s, utilisation and the roofline of a bundle",
                       description="Time a compiled bundle (.sdab) with the cycle model (docs/performance.md): total "
                       "cycles, UNet iterations/s at the configured clock, utilisation of the array, DMA and SFU, "
                       "the roofline bound, where the time goes, and a per-kernel table.")
    p.add_argument("bundle", metavar="MODEL.sdab")
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML page (timeline, tables)")
    p.add_argument("--plots", metavar="DIR", help="also write timeline.png, roofline.png, kernels.png (matplotlib)")
    p.add_argument("--compare-sda", action="store_true", help="add a table against the SDA paper (SD-v1.5)")
    p.add_argument("--top", type=int, default=25, metavar="N", help="kernels in the text table (0 = all; default 25)")
    p.add_argument("--timing", metavar="PROFILE|TIMING.json", help="override cycle-model parameters: a profile "
                   "name (rtl-cosim) or a JSON object of sdac.perf.timing.Timing fields")
    p.add_argument("--rtl", action="store_true", help="also run the bundle once on the RTL co-simulation (zero "
                   "inputs, step 0) and compare its cycle count with the model's (rtl-cosim profile)")
    p.add_argument("--json", metavar="OUT.json", help="also write every figure as JSON ('-' prints it instead)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import read_bundle
    from ..perf.model import estimate
    from ..perf.render import html_report, text_report, write_plots
    from ..perf.timing import Timing

    outs = [Path(x) for x in (args.html, args.json) if x and x != "-"]
    for o in outs:
        if o.exists() and not args.force:
            raise SdacError(f"{o}: already exists (use --force to overwrite)")
    if args.top < 0:
        raise SdacError("--top must be >= 0")
    b = read_bundle(args.bundle)
    timing = Timing.resolve(b.machine, args.timing)
    rep = estimate(b, timing=timing)
    name = Path(args.bundle).name
    if args.json == "-":
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(text_report(rep, name, args.top, args.compare_sda))
    for o in outs:
        o.parent.mkdir(parents=True, exist_ok=True)
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(rep.to_json(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.html:
        Path(args.html).write_text(html_report(rep, name, args.compare_sda), encoding="utf-8")
        print(f"wrote {args.html}")
    if args.plots:
        for p in write_plots(rep, args.plots, name):
            print(f"wrote {p}")
    if args.rtl:
        import numpy as np
        from ..runtime.device import Device
        dev = Device.open(b, "rtl", allow_unsupported=True)
        dev.step({t.name: np.zeros(t.shape, np.float32) for t in b.inputs}, 0)
        rtl = dev.last_run.cycles
        model = estimate(b, timing=Timing.resolve(b.machine, "rtl-cosim"), keep_schedule=False).total_cycles
        print(f"RTL co-simulation: {rtl:,} cycles in {dev.last_run.seconds:.1f} s; model (rtl-cosim profile): "
              f"{model:,} cycles ({100 * (model - rtl) / max(1, rtl):+.1f}%)")
    return 0
