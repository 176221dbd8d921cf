"""benchmarks/program_periodicity.py counts a replicated run as one period plus a loop record."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import program_periodicity as pp  # noqa: E402


def _ins(op, pop=(), push=(), **args):
    return SimpleNamespace(op=op, args=args, pop=frozenset(pop), push=frozenset(push))


def _tile(t, tokens=("cmp",)):
    return [_ins("load", push=tokens, buf="act", dram=1000 + 64 * t, sram=0),
            _ins("mm", pop=("ld",), a=0, c=16 * t),
            _ins("store", buf="act", dram=9000 + 32 * t, sram=0)]


def _count(instrs, mode):
    keys, vals = pp._keys(instrs, mode)
    return pp.emitted(0, len(instrs), keys, vals)


def test_a_periodic_run_costs_one_period_and_a_loop_record():
    prog = [x for t in range(10) for x in _tile(t)]
    assert _count(prog, "affine") == 3 + 1              # every integer field steps by a constant
    assert _count(prog, "exact") > 4                    # the mm's acc address steps: not a DRAM-only repeat
    flat = [x for t in range(10) for x in _tile(0)[:1] + [_ins("mm", pop=("ld",), a=0, c=0)] + _tile(t)[2:]]
    assert _count([_ins("load", buf="act", dram=1000 + 64 * t, sram=0) for t in range(10)], "exact") == 2
    assert _count(flat, "exact") == 3 + 1


def test_tokens_break_a_run_unless_ignored():
    prog = [x for t in range(9) for x in _tile(t, tokens=("cmp",) if t % 3 else ("cmp", "sfu"))]
    assert _count(prog, "affine") > _count(prog, "affine-notok") == 3 + 1
