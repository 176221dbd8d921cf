"""Write the assembly grammar (isa/asm.lark) built by sdac.isa.asm from the spec.

The assembler builds its grammar from SPEC at import; this checked-in copy is
for readers and other tools, and `python -m sdac.isa.gen --check` keeps it current.
"""
from __future__ import annotations

from .asm import build_grammar

OUTPUT = "isa/asm.lark"


def render() -> str:
    return build_grammar()
