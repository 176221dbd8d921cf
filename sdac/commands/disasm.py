"""`sdac disasm FILE.sdab|FILE.bin`: print the program as canonical assembly."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bundle import is_bundle, parse_bundle
from ..errors import SdacError
from ..isa.asm import disassemble
from ..isa.encoding import DecodeError, decode_program

ORDER = 11


def register(sub) -> None:
    p = sub.add_parser("disasm", help="disassemble a bundle's program or a .bin of instruction words",
                       description="Print the program of a bundle (.sdab, detected by its magic number) or "
                       "of a flat file of instruction words (.bin) as canonical assembly, which "
                       "`sdac asm` turns back into the same words.")
    p.add_argument("file", metavar="FILE.sdab|FILE.bin")
    p.add_argument("-n", "--numbered", action="store_true", help="append '# index' to each line")
    p.add_argument("-o", "--output", metavar="FILE.s", help="write to a file instead of standard output")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def load_program(path: Path):
    """The instructions of a bundle or a .bin file (BundleError / SdacError on bad input)."""
    return load(path)[0]


def load(path: Path):
    """(instructions, debug map) of a bundle or a .bin file (the debug map of a .bin is empty)."""
    if not path.exists():
        raise SdacError(f"{path}: no such file")
    if not path.is_file():
        raise SdacError(f"{path}: not a file")
    blob = path.read_bytes()
    if is_bundle(blob) or path.suffix == ".sdab":   # a .sdab with a bad magic gets the bundle's error
        b = parse_bundle(blob, str(path))
        return b.instrs, b.debug
    try:
        return decode_program(blob), []
    except DecodeError as e:
        raise SdacError(f"{path}: {e}") from None


def run(args: argparse.Namespace) -> int:
    instrs, debug = load(Path(args.file))
    lines = disassemble(instrs, numbered=args.numbered).splitlines(keepends=True)
    # a bundle's kernel map becomes comment lines, so the listing still assembles to the same words
    for d in sorted(debug, key=lambda d: d["first"], reverse=True):
        sources = d.get("sources")
        src = ", ".join(str(x) for x in sources) if isinstance(sources, list) else ""
        note = f"# kernel {d['kernel']}" + (f" ({src})" if src else "")
        lines.insert(d["first"], " ".join(note.split()) + "\n")   # one line whatever the names hold
    text = "".join(lines)
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            raise SdacError(f"{out}: already exists (use --force to overwrite)")
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
