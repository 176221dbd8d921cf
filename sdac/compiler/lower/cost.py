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

from ...isa.machine import Machine


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class TileWork:
    rows: int               # output rows of the tile
    cols: int               # output columns
    macs: int               # multiply-accumulates
    dma_bytes: int          # bytes loaded and stored for the tile (weights included when not resident)
    sfu_elems: int          # elements through the SFU
    instrs: int             # instructions emitted for the tile


def tile_cycles(m: Machine, w: TileWork) -> tuple[float, float, float]:
    eff = (w.rows / (_cdiv(w.rows, m.tile_m) * m.tile_m)) * (w.cols / (_cdiv(w.cols, m.tile_n) * m.tile_n))
    array = w.macs / (m.peak_macs_per_cycle * max(eff, 1e-9))
    dma = w.dma_bytes / m.dma_bytes_per_cycle + m.dma_latency
    sfu = w.sfu_elems / (m.lanes * m.sfu_lines_per_cycle) + m.sfu_pipeline
    return dma, array, sfu


def tiling_cycles(m: Machine, tiles: list[TileWork], setup_bytes: int = 0) -> float:
    """Estimated cycles of a kernel: pipelined tiles plus the unoverlapped prologue and epilogue."""
    if not tiles:
        return 0.0
    total = setup_bytes / m.dma_bytes_per_cycle
    for w in tiles:
        total += max(tile_cycles(m, w)) + w.instrs * m.instr_overhead
    first, last = tile_cycles(m, tiles[0]), tile_cycles(m, tiles[-1])
    return total + first[0] + last[2]


def choose_rows(m: Machine, limit: int, total_rows: int, work_of, granule: int) -> int:
    """The tile height (rows) with the lowest estimated cycles among multiples of granule up to limit."""
    limit = max(1, min(limit, total_rows))
    cands = {limit}
    cands.update(r for r in range(granule, limit + 1, granule))
    best = None
    for r in sorted(cands):
        tiles = [work_of(min(r, total_rows - r0)) for r0 in range(0, total_rows, r)]
        c = tiling_cycles(m, tiles)
        if best is None or c < best[0] - 1e-9:
            best = (c, r)
    return best[1]
