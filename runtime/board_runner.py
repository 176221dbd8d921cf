"""On-board runner of a compiled sdac bundle (copied by `sdac deploy` as run_sdac.py next to board.py).

Needs only Python 3, numpy and pynq (a PYNQ image for Zynq UltraScale+), plus board.py and csr_map.py alongside:

    sudo python3 run_sdac.py model.sdab --overlay sdac.bit --inputs inputs.npz --outputs outputs.npz --step 0
    sudo python3 run_sdac.py model.sdab --overlay sdac.bit --repeat 10        # timing from the CSR CYCLES

Inputs/outputs are .npz archives keyed by the ONNX input/output names (float host tensors, quantized with
the bundle's per-step scales). Exit status: 0 ok, 1 device error (code and instruction index printed),
2 bad input.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

try:                            # inside the sdac package (tests)
    from . import board as B
except ImportError:             # on the board: board.py (and its csr_map.py) next to this script
    import board as B


def parse_args(argv):
    p = argparse.ArgumentParser(prog="run_sdac.py", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="compiled bundle (.sdab)")
    p.add_argument("--overlay", default="sdac.bit", help="bitstream (with its .hwh) holding the accelerator")
    p.add_argument("--ip", default="sdac_0", help="name of the accelerator's AXI-Lite block in the overlay")
    p.add_argument("--csr-base", type=lambda s: int(s, 0), help="physical CSR address (instead of --ip)")
    p.add_argument("--irq", help="name of the accelerator's interrupt in the overlay (default: poll STATUS)")
    p.add_argument("--inputs", help="input tensors (.npz by ONNX name); default: zeros")
    p.add_argument("--outputs", default="outputs.npz", help="where to write the outputs (.npz)")
    p.add_argument("--step", type=int, default=0, help="denoising step (per-step scales, CSR STEP)")
    p.add_argument("--repeat", type=int, default=1, help="runs (the figures are reported for each)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is abandoned")
    return p.parse_args(argv)


def main(argv=None, pynq_module=None) -> int:
    a = parse_args(argv)
    try:
        image = B.Image.from_file(a.bundle)
        if a.inputs:
            with np.load(a.inputs, allow_pickle=False) as z:
                inputs = {k: z[k] for k in z.files}
        else:
            inputs = {t.name: np.zeros(t.shape, np.float32) for t in image.inputs}
        kw = dict(csr_base=a.csr_base) if a.csr_base is not None else dict(ip=a.ip)
        drv = B.open_board(image, a.overlay, irq=a.irq, timeout=a.timeout, pynq_module=pynq_module, **kw)
        clock = float(image.machine.get("clock_mhz", 250.0)) * 1e6
        outputs = None
        for r in range(a.repeat):
            drv.write_inputs(inputs, a.step)
            t0 = time.perf_counter()
            info = drv.run(a.step)
            wall = time.perf_counter() - t0
            outputs = drv.read_outputs(a.step)
            print(f"run {r}: step {a.step}: {info.retired} instructions, {info.cycles} cycles = "
                  f"{info.cycles / clock * 1e3:.3f} ms = {clock / max(1, info.cycles):.4g} iterations/s "
                  f"({wall * 1e3:.1f} ms wall)")
        with open(a.outputs, "wb") as f:
            np.savez(f, **outputs)
        print(f"wrote {a.outputs}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items()))
        return 0
    except B.DeviceError as e:
        print(f"run_sdac.py: device error: {e}", file=sys.stderr)
        return 1
    except (B.SdacError, OSError, KeyError, ValueError) as e:
        print(f"run_sdac.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
