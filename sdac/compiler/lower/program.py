"""Emission of an instruction stream with dependency tokens derived from access sets.

Every emitted instruction declares what it reads and writes (buffer lines,
DRAM bytes). ``ProgramBuilder`` records those accesses and, for each new
instruction, finds the latest conflicting instruction (read-after-write,
write-after-read, write-after-write) in every *other* queue; instructions of
the same queue are ordered by the queue itself. A dependency becomes a token
on the channel producer-queue -> consumer-queue unless an earlier token on that
channel already orders the two (tokens are FIFO: the k-th pop consumes the
k-th push). This is tinygrad's RAW/WAR edge construction with VTA's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...isa.encoding import Instr
from ...isa.spec import QUEUES

PAGE = {"act": 1024, "wgt": 1024, "acc": 1024, "prm": 256, "dram": 1 << 16}


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
class _Entry:
    lo: int
    hi: int
    write: bool
    queue: str
    qpos: int
    alive: bool = True


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
    _pages: dict = field(default_factory=dict)

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
            for e in self._overlapping(a):
                if e.queue != q and (a.write or e.write):
                    need[e.queue] = max(need.get(e.queue, -1), e.qpos)
        for p, xpos in sorted(need.items()):
            if self._last_push.get((p, q), -1) >= xpos:
                continue
            self.pushes[self.by_queue[p][xpos]].add(q)
            self.pops[idx].add(p)
            self._last_push[(p, q)] = xpos
        for a in accesses:
            self._record(a, q, qpos)
        return idx

    # Access history, bucketed by page so that lookups stay local.
    def _pages_of(self, a: Access):
        size = PAGE[a.space]
        return range(a.lo // size, (max(a.hi, a.lo + 1) - 1) // size + 1)

    def _overlapping(self, a: Access):
        seen = set()
        for p in self._pages_of(a):
            for e in self._pages.get((a.space, p), ()):
                if e.alive and id(e) not in seen and e.lo < a.hi and a.lo < e.hi:
                    seen.add(id(e))
                    yield e

    def _record(self, a: Access, q: str, qpos: int) -> None:
        if a.hi <= a.lo:
            return
        e = _Entry(a.lo, a.hi, a.write, q, qpos)
        for p in self._pages_of(a):
            lst = self._pages.setdefault((a.space, p), [])
            # Forget what this access covers and makes redundant: a write is ordered after everything it
            # overlaps; a read supersedes earlier reads of the same queue (a later writer that waits for it
            # waits for them too).
            for old in lst:
                if a.lo <= old.lo and old.hi <= a.hi and (a.write or (not old.write and old.queue == q)):
                    old.alive = False
            lst[:] = [o for o in lst if o.alive]
            lst.append(e)

    def finish(self) -> list[Instr]:
        return [Instr(op, args, frozenset(self.pops[i]), frozenset(self.pushes[i]))
                for i, (op, args) in enumerate(self.ops)]
