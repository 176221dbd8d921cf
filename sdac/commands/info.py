"""`sdac info FILE.sdab`: what a bundle holds."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ..bundle import Bundle, header_isa_version, parse_bundle, section_table
from ..errors import SdacError
from ..isa.encoding import WORD_BYTES, program_layout
from ..isa.spec import QUEUES, SPEC

ORDER = 12


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a bundle: machine, memory map, sections, IO tensors, program",
                       description="Print what a bundle (.sdab) holds: the machine it was compiled for, its "
                       "DRAM memory map, section sizes, inputs and outputs, and instruction counts per "
                       "opcode and per queue.")
    p.add_argument("file", metavar="FILE.sdab")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def summary(b: Bundle) -> dict:
    ops = Counter(i.op for i in b.instrs)
    queues = Counter(i.queue for i in b.instrs)
    order = {i.name: n for n, i in enumerate(SPEC.instrs)}
    return {
        "machine": asdict(b.machine),
        "dram_size": b.dram_size,
        "sections": {"TEXT": WORD_BYTES * len(b.instrs), "DATA": len(b.data), "STEP": len(b.step_table),
                     **({"HOST": len(b.host)} if b.host is not None else {})},   # info adds META from the file
        "memory_map": {"data": [b.data_base, b.data_base + len(b.data)],
                       "step_table": [b.step_base, b.step_base + len(b.step_table)],
                       **{f"input {t.name}": [t.dram, t.dram + t.dram_bytes(b.machine.lanes)] for t in b.inputs},
                       **{f"output {t.name}": [t.dram, t.dram + t.dram_bytes(b.machine.lanes)]
                          for t in b.outputs}},
        "n_steps": b.n_steps,
        "step_bank": b.step_bank,
        "inputs": [t.to_json() for t in b.inputs],
        "outputs": [t.to_json() for t in b.outputs],
        "instructions": len(b.instrs),
        "per_opcode": {k: ops[k] for k in sorted(ops, key=order.__getitem__)},
        "per_queue": {q: queues[q] for q in (*QUEUES, "ctl") if queues[q]},
        "kernels": len(b.debug),
        "meta": b.meta,
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise SdacError(f"{path}: no such file")
    if not path.is_file():
        raise SdacError(f"{path}: not a file")
    blob = path.read_bytes()
    b = parse_bundle(blob, str(path))
    s = summary(b)
    s["file_bytes"] = len(blob)
    s["isa_version"] = header_isa_version(blob)
    s["isa_layout"] = program_layout(b.instrs, s["isa_version"])    # (what META says, or would: the reader checked)
    s["sections"] = {kind: size for kind, _, size in section_table(blob)}
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
        return 0
    m = b.machine
    print(f"{path}: sdac bundle, ISA version {s['isa_version']} (encoding {s['isa_layout']}), {_size(len(blob))}")
    print(f"machine      {m.name}: array {m.array_rows}x{m.array_cols}, L={m.lanes}, {m.clock_mhz:g} MHz")
    print(f"DRAM         {b.dram_size:#x} bytes ({_size(b.dram_size)})")
    print("sections     " + ", ".join(f"{k} {_size(v)}" for k, v in s["sections"].items()))
    print(f"steps        {b.n_steps} banks of {b.step_bank} bytes")
    print("memory map")
    for name, (lo, hi) in sorted(s["memory_map"].items(), key=lambda kv: kv[1]):
        print(f"  [{lo:#010x}, {hi:#010x})  {_size(hi - lo):>10}  {name}")
    for kind, ts in (("inputs", b.inputs), ("outputs", b.outputs)):
        print(kind)
        for t in ts:
            sc = f"scales {t.scales[0]:.6g}" + (f"..{t.scales[-1]:.6g}" if len(t.scales) > 1 else "")
            print(f"  {t.name}: {t.dtype}{list(t.shape)} {t.layout} -> rows={t.rows} cols={t.cols} "
                  f"at {t.dram:#x}, {sc}")
        if not ts:
            print("  (none)")
    print(f"instructions {len(b.instrs)}")
    print("  per opcode: " + ", ".join(f"{k} {v}" for k, v in s["per_opcode"].items()))
    print("  per queue:  " + ", ".join(f"{k} {v}" for k, v in s["per_queue"].items()))
    if b.debug:
        print(f"kernels      {len(b.debug)}")
    if b.meta:
        print("meta         " + json.dumps(b.meta, sort_keys=True)[:200])
    return 0
