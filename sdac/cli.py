"""The `sdac` command line.

Each subcommand lives in its own module under ``sdac.commands`` and exposes
``register(subparsers)``; this file only discovers them and turns errors into
one-line messages with the documented exit codes (0 ok, 1 device error,
2 bad input).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import SdacError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit with status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdac", description="Compile quantized Stable Diffusion UNets for SDA-style FPGA "
                     "accelerators, and run them on the golden model, the RTL or a board.")
    parser.add_argument("--version", action="version", version=f"sdac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    mods = [importlib.import_module(f"{commands.__name__}.{m.name}")
            for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for mod in sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.__name__)):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SdacError as e:
        print(f"sdac {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"sdac {args.command}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdac {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`sdac disasm m.sdab | head`): stop quietly, as cat does; stdout goes to devnull
        # so the interpreter's final flush does not raise again
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):   # (a stdout without a file descriptor: nothing to flush)
            pass
        return 141      # 128 + SIGPIPE, what a shell reports for a command killed by it
    except Exception as e:
        # onnxruntime (the host prologue, calibration, sampling on the float or QDQ model) refusing a model or
        # its inputs: a bad input, said in one line (its exceptions derive from Exception alone)
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"sdac {args.command}: error: onnxruntime: {first}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
