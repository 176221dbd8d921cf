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

from ...isa.encoding import Instr, complete_args, queue_of
from ...isa.spec import QUEUES
from ..shadow import Segments


class Access(NamedTuple):
    space: str      # act | wgt | acc | prm | dram
    lo: int         # first line (buffers) or byte (dram)
    hi: int         # one past the last
    write: bool


def R(space: str, lo: int, n: int) -> Access:
    return Access(space, lo, lo + n, False)


def W(space: str, lo: int, n: int) -> Access:
    return Access(space, lo, lo + n, True)


_BIT = {q: 1 << i for i, q in enumerate(QUEUES)}
_QUEUE_SET = [frozenset(q for q in QUEUES if m & _BIT[q]) for m in range(1 << len(QUEUES))]   # mask -> set


@dataclass
class ProgramBuilder:
    """Collects instructions, their accesses and tokens; ``finish()`` returns the program."""

    ops: list[tuple[str, dict]] = field(default_factory=list)
    pops: list[int] = field(default_factory=list)       # token masks (bit per queue, QUEUES order)
    pushes: list[int] = field(default_factory=list)
    by_queue: dict = field(default_factory=lambda: {q: [] for q in QUEUES})
    _last_push: dict = field(default_factory=dict)
    _shadow: dict = field(default_factory=dict)      # space -> Segments (last writer, latest readers)

    def __len__(self) -> int:
        return len(self.ops)

    def emit(self, op: str, accesses: list[Access] | tuple[Access, ...] = (), /, **args) -> int:
        full = complete_args(op, args)      # the fields with their defaults, checked now (not at the end)
        q = queue_of(op, full)
        idx = len(self.ops)
        self.ops.append((op, full))
        self.pops.append(0)
        self.pushes.append(0)
        if q == "ctl":
            return idx
        mine = self.by_queue[q]
        qpos = len(mine)
        mine.append(idx)
        need: dict[str, int] = {}
        shadow = self._shadow
        for space, lo, hi, write in accesses:
            if hi <= lo:
                continue
            sh = shadow.get(space)
            if sh is None:
                continue
            info = sh.info
            for j in sh.covering(lo, hi):
                writer, readers = info[j]
                if writer is not None and writer[0] != q and writer[1] > need.get(writer[0], -1):
                    need[writer[0]] = writer[1]
                if write:
                    for rq, rpos in readers.items():
                        if rq != q and rpos > need.get(rq, -1):
                            need[rq] = rpos
        if need:
            last_push = self._last_push
            for p, xpos in sorted(need.items()):
                if last_push.get((p, q), -1) >= xpos:
                    continue
                self.pushes[self.by_queue[p][xpos]] |= _BIT[q]
                self.pops[idx] |= _BIT[p]
                last_push[(p, q)] = xpos
        for space, lo, hi, write in accesses:
            if hi > lo:
                sh = shadow.get(space) or shadow.setdefault(space, Segments())
                if write:
                    sh.write(lo, hi, (q, qpos))
                else:
                    sh.read(lo, hi, q, qpos)
        return idx

    def finish(self) -> list[Instr]:
        return [Instr(op, args, _QUEUE_SET[self.pops[i]], _QUEUE_SET[self.pushes[i]])
                for i, (op, args) in enumerate(self.ops)]
