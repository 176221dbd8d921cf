"""The lowering's cost model: estimated cycles of a tiling, used to choose tile sizes.

A tile's time is the longest of its DMA, array and SFU work (the queues
overlap them), plus a fixed cost per instruction; the first tile's loads and
the last tile's stores are not overlapped. Array efficiency counts the padding
of the last output tile (MM-OS computes 2X x 2Y outputs at a time).
The performance model (sdac.perf) is the detailed, validated one; this only
has to rank candidate tilings.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...isa.machine import Machine


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=8)
def _timing_of(m: Machine):
    from ...perf.timing import Timing      # the cycle model's table for this machine (default micro-architecture)
    return Timing.from_machine(m)


_TIMING_BY_ID: dict[int, tuple] = {}


def _timing(m: Machine):
    # by identity first: hashing the Machine (all its fields) on each of the lowering's many cost queries shows
    # in the profile; the entry keeps m alive, so its id is not reused
    hit = _TIMING_BY_ID.get(id(m))
    if hit is None or hit[0] is not m:
        if len(_TIMING_BY_ID) >= 64:        # a long run (tests) compiles for many machines: keep it bounded
            _TIMING_BY_ID.clear()
        hit = _TIMING_BY_ID[id(m)] = (m, _timing_of(m))
    return hit[1]


def mm_cycles(m: Machine, rows: int, n: int, k: int, passes: int = 1) -> int:
    """Array cycles of one mm (MM-OS): 2X x 2Y output tiles, each streaming passes x k cycles after the
    fill, then read out row by row (the cycle model's formula, docs/performance.md)."""
    from ...perf.timing import os_cycles
    t = _timing(m)
    body = int(os_cycles(t, rows, n, k, passes))
    return t.instr_overhead + t.array_start_cycles + body


def conv_cycles(m: Machine, pixels: int, cin: int, cout: int, dataflow: str) -> int:
    """Array cycles of one conv: CONV-WS streams two output pixels per cycle past each X x 2Y weight block
    (and cannot go faster than a block loads); MM-OS is an mm with k = 9 cin."""
    from ...perf.timing import ws_cycles
    t = _timing(m)
    if dataflow == "os" or t.conv_ws_as_os:
        return mm_cycles(m, pixels, cout, 9 * cin)
    body = int(ws_cycles(t, pixels, cin, cout))
    return t.instr_overhead + t.array_start_cycles + body


@dataclass
class TileWork:
    rows: int               # output rows of the tile
    cols: int               # output columns
    macs: int               # multiply-accumulates
    dma_bytes: int          # bytes loaded and stored for the tile (weights included when not resident)
    sfu_elems: int          # elements through the SFU
    instrs: int             # instructions emitted for the tile
    array: float | None = None   # array cycles (mm_cycles / conv_cycles of its instructions), if known
    lead_bytes: int | None = None    # bytes the array needs before it can start (input, first weight group)


def tile_cycles(m: Machine, w: TileWork) -> tuple[float, float, float]:
    if w.array is not None:
        array = w.array
    else:
        eff = (w.rows / (_cdiv(w.rows, m.tile_m) * m.tile_m)) * (w.cols / (_cdiv(w.cols, m.tile_n) * m.tile_n))
        array = w.macs / (m.peak_macs_per_cycle * max(eff, 1e-9))
    dma = w.dma_bytes / m.dma_bytes_per_cycle + m.dma_latency
    sfu = w.sfu_elems / (m.lanes * m.sfu_lines_per_cycle) + m.sfu_pipeline
    return dma, array, sfu


def _tile_term(m: Machine, w: TileWork) -> float:
    """A tile's share of a pipelined tiling: its longest unit plus its instructions' fixed cost."""
    return max(tile_cycles(m, w)) + w.instrs * m.instr_overhead


def _lead(m: Machine, first: TileWork) -> float:
    """What the first tile's loads add before the pipeline runs (the bytes the array needs first, if known)."""
    if first.lead_bytes is None:
        return tile_cycles(m, first)[0]
    return first.lead_bytes / m.dma_bytes_per_cycle + m.dma_latency


def tiling_cycles(m: Machine, tiles: list[TileWork], setup_bytes: int = 0) -> float:
    """Estimated cycles of a kernel: pipelined tiles plus the unoverlapped prologue and epilogue."""
    if not tiles:
        return 0.0
    total = setup_bytes / m.dma_bytes_per_cycle
    terms: dict[int, float] = {}       # per distinct TileWork object (tilings repeat one for every full tile)
    for w in tiles:
        t = terms.get(id(w))
        if t is None:
            t = terms[id(w)] = _tile_term(m, w)
        total += t
    return total + _lead(m, tiles[0]) + tile_cycles(m, tiles[-1])[2]


# Tilings whose estimates differ by less than this are a tie, which the fewer, taller tiles win: fewer
# instructions and weight re-fetches, and the estimate is not finer than that (SD-v1.5: 14 % fewer
# instructions, same cycles).
TIE = 0.005


def choose_rows(m: Machine, limit: int, total_rows: int, work_of, granule: int) -> int:
    """The tile height (rows) with the lowest estimated cycles among multiples of granule up to limit."""
    return best_rows(m, limit, total_rows, work_of, granule)[0]


def best_rows(m: Machine, limit: int, total_rows: int, work_of, granule: int) -> tuple[int, float]:
    """choose_rows and the estimated cycles of that tiling (the tallest tile within TIE of the lowest)."""
    limit = max(1, min(limit, total_rows))
    cands = {limit}
    cands.update(r for r in range(granule, limit + 1, granule))
    works: dict[int, TileWork] = {}      # a tiling has at most two tile heights: each is estimated once
    terms: dict[int, float] = {}         # tile height -> its tiling_cycles term

    def work(rows: int) -> TileWork:
        w = works.get(rows)
        if w is None:
            w = works[rows] = work_of(rows)
            terms[rows] = _tile_term(m, w)
        return w
    cost = {}
    for r in sorted(cands):
        # tiling_cycles of q full tiles and a shorter last one, without the list of tiles: the running sum
        # adds the same term q times, in the same order (add.accumulate is sequential, so the float result
        # is tiling_cycles' own, bit for bit)
        q, rem = divmod(total_rows, r)          # q >= 1: r <= limit <= total_rows
        full = work(r)
        seq = np.full(q + 1, terms[r])
        seq[0] = 0.0
        total = float(np.add.accumulate(seq)[-1])
        last = full
        if rem:
            last = work(rem)
            total += terms[rem]
        cost[r] = total + _lead(m, full) + tile_cycles(m, last)[2]
    low = min(cost.values())
    r = max(r for r, c in cost.items() if c <= low * (1 + TIE))
    return r, cost[r]
