"""`sdac asm FILE.s -o FILE.bin`: assemble text into instruction words."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SdacError
from ..isa.asm import assemble
from ..isa.encoding import WORD_BYTES, encode_program

ORDER = 10


def register(sub) -> None:
    p = sub.add_parser("asm", help="assemble a .s file into instruction words (.bin)",
                       description="Assemble sdac assembly (one instruction per line, see docs/isa.md) into "
                       "a flat file of 32-byte little-endian instruction words.")
    p.add_argument("source", metavar="FILE.s", help="assembly source ('-' reads standard input)")
    p.add_argument("-o", "--output", metavar="FILE.bin",
                   help="output file (default: FILE.bin next to the source)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.source == "-":
        import sys
        text, name = sys.stdin.read(), "<stdin>"
        if not args.output:
            raise SdacError("reading standard input needs -o FILE.bin")
    else:
        src = Path(args.source)
        if not src.exists():
            raise SdacError(f"{src}: no such file")
        if not src.is_file():
            raise SdacError(f"{src}: not a file")
        try:
            text = src.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SdacError(f"{src}: not a UTF-8 text file") from None
        name = str(src)
    out = Path(args.output) if args.output else Path(args.source).with_suffix(".bin")
    if out.exists() and not args.force:
        raise SdacError(f"{out}: already exists (use --force to overwrite)")
    blob = encode_program(assemble(text, name))
    out.write_bytes(blob)
    print(f"{out}: {len(blob) // WORD_BYTES} instructions, {len(blob)} bytes")
    return 0
