"""`sdac deploy model.sdab --board HOST`: a folder to copy to a PYNQ board and run there (docs/deploy.md)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import SdacError

ORDER = 48
REMOTE_DIR = "sdac-deploy"


def register(sub) -> None:
    p = sub.add_parser("deploy", help="prepare a folder (bundle, on-board runner, README) for a PYNQ board",
                       description="Prepare what a Zynq UltraScale+ board running PYNQ needs to run a bundle: the "
                       "bundle, the register-level driver (board.py), a small runner (run_sdac.py, numpy + pynq "
                       "only), example inputs and a README. Prints the scp/ssh commands; runs nothing remotely.")
    p.add_argument("bundle", metavar="MODEL.sdab")
    p.add_argument("--board", required=True, metavar="HOST", help="the board's host name or address")
    p.add_argument("--user", default="xilinx", help="login on the board (PYNQ default: xilinx)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: MODEL-deploy next to the bundle)")
    p.add_argument("--bitstream", metavar="SDAC.bit", help="also copy this bitstream (and its .hwh if present)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def commands(host: str, user: str, out: Path, bundle_name: str) -> list[str]:
    remote = f"{user}@{host}"
    return [
        f"scp -r {out} {remote}:~/{REMOTE_DIR}",
        f"ssh {remote} 'cd ~/{REMOTE_DIR} && sudo -E python3 run_sdac.py {bundle_name} --overlay sdac.bit "
        f"--inputs inputs.example.npz --outputs outputs.npz'",
        f"scp {remote}:~/{REMOTE_DIR}/outputs.npz .",
    ]


README = """# Running {bundle} on a PYNQ board ({host})

Files:

| file | what |
| --- | --- |
| `{bundle}` | the compiled bundle (program, weights, per-step scales, IO description) |
| `run_sdac.py` | the runner: loads the bundle, writes inputs, runs a step, reads outputs (numpy + pynq only) |
| `board.py` | the register-level driver (AXI-Lite CSRs, contiguous DRAM buffer, start / poll / interrupt) |
| `csr_map.py` | the accelerator's register map and ISA constants, generated from sdac's isa/isa.toml |
| `inputs.example.npz` | zero inputs with the right names and shapes, for a first run |
| `sdac.bit`, `sdac.hwh` | the accelerator's bitstream ({bitstream}) |

The board needs a PYNQ image for Zynq UltraScale+ (e.g. ZCU102 / ZCU104; PYNQ >= 2.7), Python 3 with
numpy and pynq (both part of the image). The bitstream must hold an `sdac` accelerator whose CSR block is
named `sdac_0` in the overlay (else pass `--ip NAME` or `--csr-base 0xADDR`) and whose AXI master maps
device address 0 to the start of the buffer the runner allocates (see docs/deploy.md in sdac).

Copy, run one step and fetch the outputs (from the machine where you ran `sdac deploy`):

```sh
{commands}
```

Options of `run_sdac.py`: `--step N` (denoising step: selects the per-step scales and CSR STEP),
`--repeat N` (prints cycles, milliseconds and iterations/s read from the CSR CYCLES counter for every
run), `--irq NAME` (wait on the overlay's interrupt instead of polling STATUS), `--timeout S`.
Inputs and outputs are `.npz` archives keyed by the model's ONNX input and output names, float tensors
with the shapes listed below (quantized and dequantized with the bundle's per-step scales).

Inputs:
{inputs}
Outputs:
{outputs}

A device error prints the ISA error name and the instruction index (exit status 1), e.g.
`device error: OOB_DRAM: instruction 1234: ...`; `sdac disasm {bundle}` on the host shows that
instruction and its kernel.
"""


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..bundle import read_bundle
    from ..runtime import board as board_mod
    from ..runtime import board_runner, csr_map

    src = Path(args.bundle)
    b = read_bundle(src)                          # validates the bundle before anything is written
    if not args.board.strip() or any(c.isspace() for c in args.board):
        raise SdacError(f"--board {args.board!r}: expected a host name or address")
    out = Path(args.out) if args.out else src.with_name(src.stem + "-deploy")
    if out.exists():
        if not args.force:
            raise SdacError(f"{out}: already exists (use --force to replace it)")
        if not out.is_dir():
            raise SdacError(f"{out}: exists and is not a folder")
        shutil.rmtree(out)
    bit = Path(args.bitstream) if args.bitstream else None
    if bit is not None and not bit.is_file():
        raise SdacError(f"{bit}: no such bitstream")
    out.mkdir(parents=True)
    shutil.copyfile(src, out / src.name)
    shutil.copyfile(Path(board_mod.__file__), out / "board.py")
    shutil.copyfile(Path(csr_map.__file__), out / "csr_map.py")          # board.py imports it
    shutil.copyfile(Path(board_runner.__file__), out / "run_sdac.py")
    with open(out / "inputs.example.npz", "wb") as f:
        np.savez(f, **{t.name: np.zeros(t.shape, np.float32) for t in b.inputs})
    if bit is not None:
        shutil.copyfile(bit, out / "sdac.bit")
        hwh = bit.with_suffix(".hwh")
        if hwh.is_file():
            shutil.copyfile(hwh, out / "sdac.hwh")
    cmds = commands(args.board, args.user, out, src.name)
    desc = lambda ts: "".join(f"- `{t.name}`: {t.dtype}{list(t.shape)}\n" for t in ts) or "- (none)\n"  # noqa
    (out / "README.md").write_text(README.format(
        bundle=src.name, host=args.board, commands="\n".join(cmds), inputs=desc(b.inputs), outputs=desc(b.outputs),
        bitstream="copied by sdac deploy" if bit else "not included: copy the hw flow's sdac.bit and sdac.hwh "
        "here before the first command"), encoding="utf-8")
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if bit is None:
        print("note: no --bitstream given; copy sdac.bit and sdac.hwh into the folder before copying it")
    print("to run it on the board (not executed here):")
    for c in cmds:
        print(f"  {c}")
    return 0
