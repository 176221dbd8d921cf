"""Regenerate (or check) every file derived from the ISA spec.

    python -m sdac.isa.gen           # write the generated files
    python -m sdac.isa.gen --check   # exit 1 if a checked-in copy is stale

Each generator module exposes OUTPUT (a path relative to the repository root)
and render() -> str.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

GENERATORS = ["gen_sv", "gen_lark", "gen_doc", "gen_py"]  # module names inside sdac.isa

ROOT = Path(__file__).resolve().parents[1]


def generated() -> dict[str, str]:
    out = {}
    for name in GENERATORS:
        mod = importlib.import_module(f"{__package__}.{name}")
        out[mod.OUTPUT] = mod.render()
    return out


def stale() -> list[str]:
    return [p for p, text in generated().items()
            if not (ROOT / p).exists() or (ROOT / p).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdac.isa.gen", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the checked-in copies are current")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p} (run `make gen`)", file=sys.stderr)
        return 1 if bad else 0
    for p, text in generated().items():
        path = ROOT / p
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
