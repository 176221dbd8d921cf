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

from ...isa.encoding import Instr
from ...isa.spec import QUEUES
from ..shadow import Segments

@dataclass(frozen=True)
class Access:
    space: str      # act | wgt | acc | prm | dram
    lo: int         # first line (buffers) or byte (dram)
    hi: int         # one past the last
    write: bool


def R(space: str, lo: int, n: int) -> Access:
    return Access(space, lo, lo + n, False)


def W(space: str, lo: int, n: int) -> Access:
    return Access(space, lo, lo + n, True)


@dataclass
class ProgramBuilder:
    """Collects instructions, their accesses and tokens; ``finish()`` returns the program."""

    ops: list[tuple[str, dict]] = field(default_factory=list)
    queue_of: list[str] = field(default_factory=list)
    accesses: list[tuple[Access, ...]] = field(default_factory=list)
    pops: list[set] = field(default_factory=list)
    pushes: list[set] = field(default_factory=list)
    by_queue: dict = field(default_factory=lambda: {q: [] for q in QUEUES})
    _last_push: dict = field(default_factory=dict)
    _shadow: dict = field(default_factory=dict)      # space -> Segments (last writer, latest readers)

    def __len__(self) -> int:
        return len(self.ops)

    def emit(self, op: str, accesses: list[Access] | tuple[Access, ...] = (), /, **args) -> int:
        ins = Instr.make(op, **args)     # validates field names and defaults now, not at the end
        q = ins.queue
        idx = len(self.ops)
        self.ops.append((op, dict(ins.args)))
        self.queue_of.append(q)
        self.accesses.append(tuple(accesses))
        self.pops.append(set())
        self.pushes.append(set())
        if q == "ctl":
            return idx
        qpos = len(self.by_queue[q])
        self.by_queue[q].append(idx)
        need: dict[str, int] = {}
        for a in accesses:
            if a.hi <= a.lo:
                continue
            sh = self._shadow.get(a.space)
            if sh is None:
                continue
            for j in sh.covering(a.lo, a.hi):
                writer, readers = sh.info[j]
                if writer is not None and writer[0] != q and writer[1] > need.get(writer[0], -1):
                    need[writer[0]] = writer[1]
                if a.write:
                    for rq, rpos in readers.items():
                        if rq != q and rpos > need.get(rq, -1):
                            need[rq] = rpos
        for p, xpos in sorted(need.items()):
            if self._last_push.get((p, q), -1) >= xpos:
                continue
            self.pushes[self.by_queue[p][xpos]].add(q)
            self.pops[idx].add(p)
            self._last_push[(p, q)] = xpos
        for a in accesses:
            if a.hi > a.lo:
                sh = self._shadow.get(a.space) or self._shadow.setdefault(a.space, Segments())
                if a.write:
                    sh.write(a.lo, a.hi, (q, qpos))
                else:
                    sh.read(a.lo, a.hi, q, qpos)
        return idx

    def finish(self) -> list[Instr]:
        return [Instr(op, args, frozenset(self.pops[i]), frozenset(self.pushes[i]))
                for i, (op, args) in enumerate(self.ops)]
