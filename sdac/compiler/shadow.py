"""Shadow memory for dependency analysis: one address space as sorted segments with a payload each.

The program builder (lower/program.py) derives tokens from it and the verifier (verify.py) proves the
tokens order every conflict; both keep, per segment, the last writer and the latest reader of each queue
since that write (earlier accesses are ordered before those by the queue order or by tokens already).
Segments cost O(log n) to find and split, where per-page lists of accesses grew with every tile.
"""
from __future__ import annotations

import bisect

EMPTY = (None, {})     # (last writer, {queue: latest reader since that write})


class Segments:
    """Segment j covers [starts[j], starts[j+1]) (the last one is unbounded) and carries info[j]."""

    def __init__(self):
        self.starts = [0]
        self.info: list = [EMPTY]

    def split(self, x: int) -> int:
        """Make x a segment boundary; the index of the segment starting at x."""
        j = bisect.bisect_right(self.starts, x) - 1
        if self.starts[j] != x:
            j += 1
            self.starts.insert(j, x)
            self.info.insert(j, self.info[j - 1])
        return j

    def covering(self, lo: int, hi: int) -> range:
        """Indices of the segments that overlap [lo, hi) (no split)."""
        return range(bisect.bisect_right(self.starts, lo) - 1, bisect.bisect_left(self.starts, hi))

    def write(self, lo: int, hi: int, who) -> None:
        a, b = self.split(lo), self.split(hi)
        self.starts[a:b] = [lo]
        self.info[a:b] = [(who, {})]

    def read(self, lo: int, hi: int, queue, who) -> None:
        a, b = self.split(lo), self.split(hi)
        for j in range(a, b):
            writer, readers = self.info[j]
            self.info[j] = (writer, {**readers, queue: who})
