"""Where the golden model's weight lines came from: lazy int4 weight loads and a cache of float32
weight matrices keyed by DRAM address (the SD-v1.5 UNet reloads every weight tile ~8 times).

The machine state never differs from the plain interpreter's at any point a reader can see:

* A *segment* says "wgt lines [lo, hi) hold the int4 lines of DRAM bytes [dram, dram + (hi-lo)*B)
  as they were when loaded, and those DRAM bytes have not been written since". A contiguous weight
  load only records a *pending* segment; its lines are decoded into the buffer (``materialize``)
  before anything reads them through the buffer (mm/conv on a cache miss, store), before a DRAM
  write touches their source bytes, before a write that may partly cover them, and at the end of
  every run (also when the run raises), so ``Golden.wgt`` always shows the decoded values.
* A load that overwrites lines [lo, hi) exactly cuts them out of older segments (the pieces left
  stay valid); any other write to the weight buffer materializes and forgets the segments it may
  touch; a DRAM write into a segment's source materializes and forgets that segment.
* The cache maps (DRAM address of the first line, the read's geometry) to the float32 matrix and
  max|w| that mm/conv computed from those lines. A read whose line hull lies inside one segment has
  a DRAM address; equal keys mean the same bytes (sources are unchanged while a segment lives, and
  a DRAM write drops every cache entry whose source range it touches), so the same matrix.

Budget: SDAC_GOLDEN_WCACHE_MB (default 256; 0 turns the cache off) bounds the cached matrices
(least recently used evicted first).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable


def _budget_bytes() -> int:
    v = os.environ.get("SDAC_GOLDEN_WCACHE_MB", "")
    return (int(v) if v.isdigit() else 256) << 20


class WeightLines:
    """Segments of the weight buffer with a known, unchanged DRAM source, and the matrix cache."""

    def __init__(self, line_bytes: int, materialize: Callable[[int, int, int], None], budget: int | None = None):
        self.B = line_bytes
        self._decode = materialize        # (lo, hi, dram): decode DRAM lines into wgt lines [lo, hi)
        self.segs: list[list] = []        # [lo, hi, dram, pending], disjoint in lines
        self.cache: OrderedDict = OrderedDict()    # key -> (value, dram_lo, dram_hi, nbytes)
        self.cache_bytes = 0
        self.budget = _budget_bytes() if budget is None else budget
        self.hits = self.misses = 0
        self.dram_lo, self.dram_hi = 1 << 62, -1     # a hull of every source (segments and cache)

    # ------------------------------------------------------------ segments
    def load(self, lo: int, hi: int, dram: int) -> None:
        """A load writes wgt lines [lo, hi) (exactly these) from DRAM [dram, dram + (hi-lo)*B): pending."""
        self._cut(lo, hi)
        self.segs.append([lo, hi, dram, True])
        self._widen(dram, dram + (hi - lo) * self.B)

    def _widen(self, lo: int, hi: int) -> None:
        self.dram_lo, self.dram_hi = min(self.dram_lo, lo), max(self.dram_hi, hi)

    def _cut(self, lo: int, hi: int) -> None:
        """Lines [lo, hi) are about to be overwritten entirely: take them out of every segment."""
        out = []
        for s in self.segs:
            slo, shi, d, p = s
            if shi <= lo or hi <= slo:
                out.append(s)
                continue
            if slo < lo:
                out.append([slo, lo, d, p])
            if hi < shi:
                out.append([hi, shi, d + (hi - slo) * self.B, p])
        self.segs = out

    def before_read(self, first: int, last: int) -> None:
        """Lines first..last are about to be read through the buffer: decode pending ones there."""
        for s in self.segs:
            if s[3] and s[0] <= last and first < s[1]:
                self._decode(s[0], s[1], s[2])
                s[3] = False

    def before_write(self, first: int, last: int) -> None:
        """Some lines in first..last are about to be written (not known which): decode pending
        segments there (the lines not written must hold their values) and forget them."""
        self.before_read(first, last)
        self.segs = [s for s in self.segs if s[1] <= first or last < s[0]]

    def before_dram_write(self, first: int, last: int) -> None:
        """DRAM bytes first..last are about to be written: segments and cache entries reading them go."""
        if last < self.dram_lo or self.dram_hi <= first:
            return                    # (activations and weights live apart: the usual case)
        keep = []
        for s in self.segs:
            if s[2] <= last and first < s[2] + (s[1] - s[0]) * self.B:
                if s[3]:
                    self._decode(s[0], s[1], s[2])
            else:
                keep.append(s)
        self.segs = keep
        stale = [k for k, (_, lo, hi, _) in self.cache.items() if lo <= last and first < hi]
        for k in stale:
            self.cache_bytes -= self.cache.pop(k)[3]

    def finish(self) -> None:
        """Decode every pending segment (end of a run): the buffer then holds every loaded value."""
        for s in self.segs:
            if s[3]:
                self._decode(s[0], s[1], s[2])
                s[3] = False

    def reset(self) -> None:
        """Forget everything (start of a run: the caller may have changed DRAM or the buffer)."""
        self.finish()
        self.segs = []
        self.cache.clear()
        self.cache_bytes = 0
        self.dram_lo, self.dram_hi = 1 << 62, -1

    def source(self, first: int, last: int) -> int | None:
        """DRAM address of line ``first`` when one segment covers lines first..last, else None."""
        for lo, hi, d, _ in self.segs:
            if lo <= first and last < hi:
                return d + (first - lo) * self.B
        return None

    # ------------------------------------------------------------ matrix cache
    def get(self, key):
        v = self.cache.get(key)
        if v is None:
            self.misses += 1
            return None
        self.hits += 1
        self.cache.move_to_end(key)
        return v[0]

    def put(self, key, value, dram_lo: int, dram_hi: int, nbytes: int) -> None:
        """Cache ``value`` computed from DRAM bytes [dram_lo, dram_hi) (LRU within the budget)."""
        if nbytes > self.budget:
            return
        old = self.cache.pop(key, None)
        if old is not None:
            self.cache_bytes -= old[3]
        self.cache[key] = (value, dram_lo, dram_hi, nbytes)
        self._widen(dram_lo, dram_hi)
        self.cache_bytes += nbytes
        while self.cache_bytes > self.budget:
            self.cache_bytes -= self.cache.popitem(last=False)[1][3]
