"""Shadow memory for dependency analysis: one address space as sorted segments with a payload each.

The program builder (lower/program.py) derives tokens from it and the verifier (verify.py) proves the
tokens order every conflict; both keep, per segment, the last writer and the latest reader of each queue
since that write (earlier accesses are ordered before those by the queue order or by tokens already).
Segments cost O(log n) to find and split, where per-page lists of accesses grew with every tile.

Both callers run this once or twice per access of ~80 k instructions (SD-v1.5), so the hot paths are one
method call each: ``span`` splits both ends and gives the index range, ``set_writer`` / ``add_reader`` record
an access on that range.
"""
from __future__ import annotations

from bisect import bisect_right

EMPTY = (None, {})     # (last writer, {queue: latest reader since that write})


class Segments:
    """Segment j covers [starts[j], starts[j+1]) (the last one is unbounded) and carries info[j]."""

    __slots__ = ("starts", "info")

    def __init__(self):
        self.starts = [0]
        self.info: list = [EMPTY]

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Make lo and hi (lo < hi) segment boundaries; (a, b): segments a..b-1 cover exactly [lo, hi)."""
        starts = self.starts
        b = bisect_right(starts, hi) - 1
        if starts[b] != hi:
            b += 1
            starts.insert(b, hi)
            self.info.insert(b, self.info[b - 1])
        a = bisect_right(starts, lo, 0, b) - 1
        if starts[a] != lo:
            a += 1
            starts.insert(a, lo)
            self.info.insert(a, self.info[a - 1])
            b += 1
        return a, b

    def set_writer(self, a: int, b: int, who) -> None:
        """Segments a..b-1 (a ``span``) become one, written by ``who``, with no reader since."""
        if b - a > 1:
            del self.starts[a + 1:b]
            del self.info[a + 1:b]
        self.info[a] = (who, {})

    def add_reader(self, a: int, b: int, queue, who) -> None:
        """``who`` is the latest reader of ``queue`` in segments a..b-1 (a ``span``)."""
        info = self.info
        for j in range(a, b):
            writer, readers = info[j]
            info[j] = (writer, {**readers, queue: who} if readers else {queue: who})
