"""Emission of an instruction stream with dependency tokens derived from access sets.

Every emitted instruction declares what it reads and writes (buffer lines,
DRAM bytes). ``ProgramBuilder`` records those accesses in shadow memory
(sdac/compiler/shadow.py: per address range the last writer and the latest
reader of each queue since it) and, for each new instruction, finds the latest
conflicting instruction (read-after-write, write-after-read, write-after-write)
in every *other* queue; instructions of the same queue are ordered by the queue
itself, and older accesses are ordered before the ones kept. A dependency becomes a token
on the channel producer-queue -> consumer-queue unless an earlier token on that
channel already orders the two (tokens are FIFO: the k-th pop consumes the
k-th push). This is tinygrad's RAW/WAR edge construction with VTA's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ...isa.encoding import FIXED_QUEUE, Instr, complete_args, field_defaults, instrs_of, queue_of
from ...isa.spec import QUEUES
from ..shadow import Segments


class Access(NamedTuple):
    space: str      # act | wgt | acc | prm | dram
    lo: int         # first line (buffers) or byte (dram)
    hi: int         # one past the last
    write: bool


_new = tuple.__new__       # _new(Access, (...)): an Access without the NamedTuple's Python-level __new__


def R(space: str, lo: int, n: int) -> Access:
    return _new(Access, (space, lo, lo + n, False))


def W(space: str, lo: int, n: int) -> Access:
    return _new(Access, (space, lo, lo + n, True))


_BIT = {q: 1 << i for i, q in enumerate(QUEUES)}
_QI = {q: i for i, q in enumerate(QUEUES)}
_NQ = len(QUEUES)
_NO_NEED = [-1] * _NQ
_DEFAULTS: dict = {}        # mnemonic -> its fields' defaults in spec order (encoding.field_defaults)
_QUEUE_SET = [frozenset(q for q in QUEUES if m & _BIT[q]) for m in range(1 << len(QUEUES))]   # mask -> set


@dataclass
class ProgramBuilder:
    """Collects instructions, their accesses and tokens; ``finish()`` returns the program."""

    ops: list[tuple[str, dict]] = field(default_factory=list)
    pops: list[int] = field(default_factory=list)       # token masks (bit per queue, QUEUES order)
    pushes: list[int] = field(default_factory=list)
    by_queue: list = field(default_factory=lambda: [[] for _ in QUEUES])   # per queue index: instruction indices
    _last_push: list = field(default_factory=lambda: [-1] * (_NQ * _NQ))   # [producer * NQ + consumer]: position
    _shadow: dict = field(default_factory=dict)      # space -> Segments (last writer, latest readers)
    pop_sources: dict = field(default_factory=dict)  # instruction -> the instructions whose pushes its pops take
                                                     # (ascending producer queue; for a streaming verifier)

    def __len__(self) -> int:
        return len(self.ops)

    def emit(self, op: str, accesses: list[Access] | tuple[Access, ...] = (), /, **args) -> int:
        # the fields with their defaults, checked now (not at the end): complete_args, inlined
        defaults = _DEFAULTS.get(op)
        if defaults is None:
            full = complete_args(op, args)
            defaults = _DEFAULTS[op] = field_defaults(op)
        else:
            full = defaults.copy()
            full.update(args)
            if len(full) != len(defaults):
                complete_args(op, args)     # (raises, naming the unknown field)
        q = FIXED_QUEUE[op] or queue_of(op, full)
        ops = self.ops
        idx = len(ops)
        ops.append((op, full))
        self.pops.append(0)
        self.pushes.append(0)
        if q == "ctl":
            return idx
        j = _QI[q]
        mine = self.by_queue[j]
        qpos = len(mine)
        mine.append(idx)
        # shadow entries: writer (queue index, position in its queue), readers {queue index: position}
        need = [-1] * _NQ       # per other queue: the latest position this instruction must wait for
        shadow = self._shadow
        spans = []              # (segments, lo, hi, write, a, b) of each access, for the update below
        for space, lo, hi, write in accesses:
            if hi <= lo:
                continue
            sh = shadow.get(space)
            if sh is None:
                sh = shadow[space] = Segments()
            a, b = sh.span(lo, hi)      # segments a..b-1 cover exactly [lo, hi)
            info = sh.info
            spans.append((sh, lo, hi, write, a, b))
            for k in range(a, b):
                writer, readers = info[k]
                if writer is not None:
                    wq, wpos = writer
                    if wq != j and wpos > need[wq]:
                        need[wq] = wpos
                if write and readers:
                    for rq, rpos in readers.items():
                        if rq != j and rpos > need[rq]:
                            need[rq] = rpos
        if need != _NO_NEED:
            last_push = self._last_push
            pop = 0
            sources = []
            for p in range(_NQ):
                xpos = need[p]
                if xpos < 0 or last_push[p * _NQ + j] >= xpos:
                    continue
                x = self.by_queue[p][xpos]
                self.pushes[x] |= 1 << j
                sources.append(x)
                pop |= 1 << p
                last_push[p * _NQ + j] = xpos
            if pop:
                self.pops[idx] = pop
                self.pop_sources[idx] = sources
        # record the accesses after all are checked (an instruction's own write must not hide what its other
        # accesses conflict with); a later access's split or an earlier write may have moved a span's indices
        me = (j, qpos)
        for sh, lo, hi, write, a, b in spans:
            starts = sh.starts
            if b >= len(starts) or starts[a] != lo or starts[b] != hi:
                a, b = sh.span(lo, hi)
            if write:
                sh.set_writer(a, b, me)
            else:
                sh.add_reader(a, b, j, qpos)
        return idx

    def finish(self) -> list[Instr]:
        return instrs_of(self.ops, self.pops, self.pushes, _QUEUE_SET)
