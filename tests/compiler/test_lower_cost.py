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


def test_array_cycles_follow_the_cycle_model():
    from sdac.compiler.lower.cost import conv_cycles, mm_cycles
    # MM-OS, two accumulator sets: the fill (X + Y + 6) once, the first tile streams passes x k, each next
    # one streams while the previous tile's 40 rows are read out (at least 40 cycles), then the last readout
    assert mm_cycles(M, 40, 20, 40, passes=2) == M.instr_overhead + 36 + 2 * 40 + 40
    assert mm_cycles(M, 80, 40, 40) == M.instr_overhead + 36 + 4 * 40 + 40
    assert mm_cycles(M, 80, 40, 20) == M.instr_overhead + 36 + 20 + 3 * 40 + 40     # k < 40: readout-bound
    assert mm_cycles(M, 40, 20, 1280) < 1.1 * 40 * 20 * 1280 / M.peak_macs_per_cycle
    # CONV-WS: fewer than 2X pixels cannot hide a weight block's load: 32 pixels cost what 40 do
    assert conv_cycles(M, 32, 320, 320, "ws") == conv_cycles(M, 40, 320, 320, "ws")
    assert conv_cycles(M, 64, 320, 320, "ws") < 1.7 * conv_cycles(M, 32, 320, 320, "ws")


def test_short_conv_tiles_lose_to_taller_ones():
    from sdac.compiler.lower.cost import conv_cycles
    # 32-pixel image rows, 1280 channels: one row per tile leaves the array waiting for weight blocks
    def work(r):
        return TileWork(r * 32, 1280, r * 32 * 9 * 1280 * 1280, (r + 2) * 32 * 1280 + 7_400_000, r * 32 * 1280,
                        70, array=conv_cycles(M, r * 32, 1280, 1280, "ws"))
    assert choose_rows(M, 4, 32, work, 1) >= 2
