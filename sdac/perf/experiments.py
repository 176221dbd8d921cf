"""Scheduling experiments on compiled programs: reorder instructions, re-derive the tokens, time the result.

``retoken(instrs, lanes)`` strips a program's tokens and derives them again from every instruction's
footprint (sdac.compiler.verify.footprint) with the compiler's own ProgramBuilder, in the given order.
``pipeline_attention(bundle)`` software-pipelines the attention kernels by one stage: the lowering
emits per query tile  [load Q, Q.K^T] [softmax, P.V, SFU epilogue, store], so the array's P.V of tile t
waits for the SFU's softmax of tile t and the next Q.K^T queues behind it; issuing Q.K^T of tile t+1
before the SoftMax group of tile t lets the array compute it while the SFU works. The slots the lowering
alternates keep this legal (the test runs both orders on the golden model and compares the outputs).
These are measurements for the compiler's scheduler, not part of it.
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


def _attention_order(instrs: list[Instr], first: int, last: int) -> list[int]:
    """New order of the indices first..last of one attention kernel (pipelined by one tile)."""
    idx = list(range(first, last + 1))
    qk = [i for i in idx if instrs[i].op == "mm" and instrs[i].args["wsrc"] == "act_t"]
    if len(qk) < 2:
        return idx
    groups = []          # (G: loads + Q.K^T, H: the rest up to the next G)
    starts = []
    for j in qk:
        s = j
        while s - 1 >= first and instrs[s - 1].op == "load":
            s -= 1
        starts.append(s)
    pre = list(range(first, starts[0]))
    for n, (s, j) in enumerate(zip(starts, qk)):
        end = starts[n + 1] if n + 1 < len(starts) else last + 1
        groups.append((list(range(s, j + 1)), list(range(j + 1, end))))
    order = list(pre)
    pending_h: list[int] | None = None
    for g, h in groups:
        if pending_h is not None and len(g) > 2:      # a new head (K, V reloaded): do not pipeline across it
            order += pending_h
            pending_h = None
        order += g
        if pending_h is not None:
            order += pending_h
        pending_h = h
    order += pending_h or []
    assert sorted(order) == idx
    return order


def pipeline_attention(bundle):
    """A copy of the bundle with every attention kernel software-pipelined and the tokens re-derived."""
    instrs = list(bundle.instrs)
    order: list[int] = []
    pos = 0
    debug = []
    for d in sorted(bundle.debug, key=lambda d: d["first"]):
        a, b = d["first"], d["last"]
        order += list(range(pos, a))
        new_first = len(order)
        order += _attention_order(instrs, a, b) if d.get("kind") == "attention" else list(range(a, b + 1))
        debug.append({**d, "first": new_first, "last": len(order) - 1})
        pos = b + 1
    order += list(range(pos, len(instrs)))
    new = retoken([instrs[i] for i in order], bundle.machine.lanes)
    return dataclasses.replace(bundle, instrs=new, debug=debug)
