"""Scheduling experiments on compiled programs: reorder instructions, re-derive the tokens, time the result.

``retoken(instrs, lanes)`` strips a program's tokens and derives them again from every instruction's
footprint (sdac.compiler.verify.footprint) with the compiler's own ProgramBuilder, in the given order.
Reordering experiments measured here and found worth it move into the lowering: software-pipelined
attention (Q.K^T of tile t+1 before the SoftMax of tile t) did, and the lowering now emits it itself.
"""
from __future__ import annotations

import dataclasses

from ..compiler.lower.program import Access, ProgramBuilder
from ..compiler.verify import footprint
from ..isa.encoding import Instr


def retoken(instrs: list[Instr], lanes: int) -> list[Instr]:
    pb = ProgramBuilder()
    for ins in instrs:
        acc = [Access(s.space, s.lo, s.hi, s.write) for s in footprint(ins, lanes)] if ins.op != "halt" else []
        pb.emit(ins.op, acc, **dict(ins.args))
    return pb.finish()
