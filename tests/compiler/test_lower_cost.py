"""The lowering's cost model ranks tilings sensibly."""
from sdac.compiler.lower.cost import TileWork, choose_rows, tiling_cycles
from sdac.isa.machine import DEFAULT as M


def test_pipelining_prefers_several_tiles_over_one():
    # balanced DMA and compute: one big tile cannot overlap its load with its compute
    def work(r):
        return TileWork(r, 320, r * 320 * 320, r * 320 * 16, r * 320, 6)
    r = choose_rows(M, 4000, 4000, work, 40)
    assert r < 4000
    assert tiling_cycles(M, [work(r)] * (4000 // r)) < tiling_cycles(M, [work(4000)])


def test_weight_reloads_push_towards_the_largest_tile():
    wbytes = 6_000_000       # weights streamed again for every tile
    def work(r):
        return TileWork(r, 1280, r * 1280 * 1280, r * 1280 * 2 + wbytes, r * 1280, 40)
    assert choose_rows(M, 200, 4096, work, 40) == 200


def test_padding_of_partial_array_tiles_counts():
    full = TileWork(40, 20, 40 * 20 * 64, 0, 0, 1)
    ragged = TileWork(41, 20, 41 * 20 * 64, 0, 0, 1)
    assert tiling_cycles(M, [ragged]) > 1.9 * tiling_cycles(M, [full]) - 2 * M.dma_latency - M.sfu_pipeline
