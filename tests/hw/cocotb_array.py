"""cocotb bench for sdac_array.sv: MM-OS output tiles against numpy int8 x int4 (and 5-bit) matmul, and
CONV-WS (weight stationary) streams of pixel pairs through resident X x 2Y weight blocks against numpy.

Shape from SDAC_ARRAY_X / SDAC_ARRAY_Y, random seed from SDAC_ARRAY_SEED.
"""
import os

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, Timer

X = int(os.environ.get("SDAC_ARRAY_X", "20"))
Y = int(os.environ.get("SDAC_ARRAY_Y", "10"))
M, N = 2 * X, 2 * Y


def pack(values, bits):
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << bits) - 1)) << (bits * i)
    return out


def unpack32(word):
    v = np.array([(word >> (32 * i)) & 0xFFFFFFFF for i in range(N)], dtype=np.int64)
    return np.where(v >= 1 << 31, v - (1 << 32), v)


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.in_clr.value = 0
    dut.a_col.value = 0
    dut.w_row.value = 0
    dut.rd_row.value = 0
    dut.ws.value = 0
    dut.w_ld.value = 0
    dut.w_ld_row.value = 0
    dut.in_bank.value = 0
    dut.in_last.value = 0
    dut.rd_bank.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def stream(dut, a, w, clr: bool, rng, bubbles: float = 0.0):
    """Feed A (M x K) and W (K x N) column/row k per cycle; clr on the first k."""
    k_total = a.shape[1]
    k = 0
    while k < k_total:
        if bubbles and rng.random() < bubbles:
            dut.in_valid.value = 0
            dut.a_col.value = pack(rng.integers(-128, 128, M), 8)   # garbage must be ignored
        else:
            dut.in_valid.value = 1
            dut.in_clr.value = int(clr and k == 0)
            dut.a_col.value = pack(a[:, k], 8)
            dut.w_row.value = pack(w[k, :], 5)
            k += 1
        await RisingEdge(dut.clk)
    dut.in_valid.value = 0
    dut.in_clr.value = 0


async def read_tile(dut):
    cycles = 0
    while True:
        await ReadOnly()
        if int(dut.idle.value):
            break
        await RisingEdge(dut.clk)
        cycles += 1
        assert cycles < 10 * (X + Y + 10), "array never became idle"
    await RisingEdge(dut.clk)
    out = np.zeros((M, N), dtype=np.int64)
    for r in range(M):
        dut.rd_row.value = r
        await Timer(1, unit="ns")
        out[r] = unpack32(int(dut.rd_data.value))
    return out


def wrap32(x):
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


@cocotb.test()
async def mm_os_tiles_match_numpy(dut):
    rng = np.random.default_rng(int(os.environ.get("SDAC_ARRAY_SEED", "5")))
    await reset(dut)
    cases = [
        ("extremes", np.full((M, 3), -128), np.full((3, N), -8), 0.0),
        ("k1", rng.integers(-128, 128, (M, 1)), rng.integers(-8, 8, (1, N)), 0.0),
        ("random", rng.integers(-128, 128, (M, 37)), rng.integers(-8, 8, (37, N)), 0.0),
        ("bubbles", rng.integers(-128, 128, (M, 50)), rng.integers(-8, 8, (50, N)), 0.3),
        ("long", rng.integers(-128, 128, (M, 300)), rng.integers(-8, 8, (300, N)), 0.0),
        # 5-bit weights: the unsigned low nibble of an int8 W (0..15) and the full range
        ("nibble", rng.integers(-128, 128, (M, 30)), rng.integers(0, 16, (30, N)), 0.1),
        ("w5", rng.integers(-128, 128, (M, 30)), rng.integers(-16, 16, (30, N)), 0.0),
        ("w5 extremes", np.full((M, 2), -128), np.full((2, N), -16), 0.0),
    ]
    for name, a, w, bub in cases:
        await stream(dut, a, w, True, rng, bub)
        got = await read_tile(dut)
        want = wrap32(a.astype(np.int64) @ w.astype(np.int64))
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{name}: {len(bad)} wrong outputs, first at {tuple(bad[0])}: " \
                              f"got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}"
    # Accumulate: a second stream without clr adds to the tile (k split over two passes).
    a1, w1 = rng.integers(-128, 128, (M, 20)), rng.integers(-8, 8, (20, N))
    a2, w2 = rng.integers(-128, 128, (M, 25)), rng.integers(-8, 8, (25, N))
    await stream(dut, a1, w1, True, rng)
    await read_tile(dut)
    await stream(dut, a2, w2, False, rng, 0.2)
    got = await read_tile(dut)
    want = a1 @ w1 + a2 @ w2
    assert np.array_equal(got, want), f"accumulate: {int((got != want).sum())} wrong outputs"


@cocotb.test()
async def mm_os_two_accumulator_sets(dut):
    """Tiles alternate between the two accumulator sets; a tile is read out (after last_out) while the
    next streams into the other set, with in_clr starting each tile."""
    rng = np.random.default_rng(int(os.environ.get("SDAC_ARRAY_SEED", "5")) + 2)
    await reset(dut)
    tiles = [(edge_values(rng, (M, k), [-128, 127]), edge_values(rng, (k, N), [-8, 7, -7]))
             for k in (12, 3, 30, 1, 17, 2)]
    got, finals = [], []

    async def watch_last():
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(dut.last_out.value):
                finals.append(1)

    watcher = cocotb.start_soon(watch_last())
    prev, rows = None, None          # the tile being read out (index) and its rows so far

    async def read_row():
        nonlocal prev, rows
        if prev is None or len(finals) <= prev:
            return
        dut.rd_bank.value = prev % 2
        dut.rd_row.value = len(rows)
        await Timer(1, unit="ns")
        rows.append(unpack32(int(dut.rd_data.value)))
        if len(rows) == M:
            got.append(np.array(rows))
            prev, rows = None, None

    for t, (a, w) in enumerate(tiles):
        k = a.shape[1]
        for kk in range(k):
            dut.in_valid.value = 1
            dut.in_clr.value = int(kk == 0)
            dut.in_bank.value = t % 2
            dut.in_last.value = int(kk == k - 1)
            dut.a_col.value = pack(a[:, kk], 8)
            dut.w_row.value = pack(w[kk, :], 5)
            await read_row()                      # the previous tile's rows, while this one streams
            await RisingEdge(dut.clk)
        dut.in_valid.value = 0
        dut.in_last.value = 0
        for _ in range(20 * (X + Y + 10)):        # tile t + 1 may only start once tile t - 1 is read
            if prev is None:
                break
            await read_row()
            await RisingEdge(dut.clk)
        assert prev is None, f"tile {t - 1} never became final"
        prev, rows = t, []
    for _ in range(20 * (X + Y + 10)):
        if prev is None:
            break
        await read_row()
        await RisingEdge(dut.clk)
    watcher.cancel()
    for t, ((a, w), g) in enumerate(zip(tiles, got)):
        want = wrap32(a.astype(np.int64) @ w.astype(np.int64))
        assert np.array_equal(g, want), f"tile {t} (set {t % 2}): {int((g != want).sum())} wrong outputs"


# ------------------------------------------------------------------ weight stationary (CONV-WS)

def edge_values(rng, shape, values, p=0.3):
    """Random int8 / int4 data with the extreme values planted at a fraction p of the entries."""
    a = rng.integers(min(values), max(values) + 1, shape)
    mask = rng.random(shape) < p
    a[mask] = rng.choice(values, int(mask.sum()))
    return a


async def ws_run(dut, blocks, rng, bubbles=0.0, gap_load=False):
    """Stream each (A, W) block: A (pixels x X) int8, W (X x 2Y) weights. Block b+1 loads into the shadow
    weights while block b streams (row x's line at period cycle x); a block occupies max(pairs, X) cycles
    (more with bubbles). Returns the outputs in arrival order: a list of (p0 sums, p1 sums) per pair."""
    out = []
    done = False

    async def monitor():
        while not done:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(dut.ws_valid.value):
                out.append((unpack32(int(dut.ws_out0.value)), unpack32(int(dut.ws_out1.value))))

    mon = cocotb.start_soon(monitor())
    dut.ws.value = 1

    def drive_load(w, x):
        dut.w_ld.value = 1
        dut.w_ld_row.value = x
        dut.w_row.value = pack(w[x], 5)

    # first block: X load cycles, nothing streams
    for x in range(X):
        drive_load(blocks[0][1], x)
        await RisingEdge(dut.clk)
    dut.w_ld.value = 0
    if gap_load:                            # an idle gap between loading and streaming is harmless
        for _ in range(3):
            await RisingEdge(dut.clk)
    for b, (a, _) in enumerate(blocks):
        nxt = blocks[b + 1][1] if b + 1 < len(blocks) else None
        pairs = [(a[i], a[i + 1] if i + 1 < len(a) else np.zeros(X, np.int64)) for i in range(0, len(a), 2)]
        c, q = 0, 0
        while q < len(pairs) or c < X:
            if nxt is not None and c < X:
                drive_load(nxt, c)
            else:
                dut.w_ld.value = 0
                dut.w_row.value = pack(rng.integers(-16, 16, N), 5)      # garbage without w_ld
            if q < len(pairs) and not (q > 0 and bubbles and rng.random() < bubbles):
                p0, p1 = pairs[q]
                col = np.empty(M, np.int64)
                col[0::2], col[1::2] = p0, p1
                dut.a_col.value = pack(col, 8)
                dut.in_valid.value = 1
                dut.in_clr.value = int(q == 0)
                q += 1
            else:
                dut.in_valid.value = 0
                dut.in_clr.value = 0
                dut.a_col.value = pack(rng.integers(-128, 128, M), 8)
            await RisingEdge(dut.clk)
            c += 1
        dut.in_valid.value = 0
        dut.in_clr.value = 0
        dut.w_ld.value = 0
    for _ in range(X + Y + 12):
        await RisingEdge(dut.clk)
    done = True
    await mon
    await RisingEdge(dut.clk)            # leave the read-only phase the monitor ended in
    dut.ws.value = 0
    return out


@cocotb.test()
async def conv_ws_blocks_match_numpy(dut):
    rng = np.random.default_rng(int(os.environ.get("SDAC_ARRAY_SEED", "5")) + 1)
    await reset(dut)
    acts, wts = [-128, 127, -1, 0], [-7, 7, -8, 0]
    cases = []
    # (name, pixels per block, number of blocks, bubble rate, weight range)
    for name, npix, nblk, bub in [("pairs >= X", 2 * X + 3, 4, 0.0), ("pairs < X (load bound)", 2, 5, 0.0),
                                  ("one pixel", 1, 3, 0.0), ("long, bubbles", 6 * X, 3, 0.25),
                                  ("pairs == X", 2 * X, 3, 0.0)]:
        blocks = [(edge_values(rng, (npix, X), acts), edge_values(rng, (X, N), wts)) for _ in range(nblk)]
        cases.append((name, blocks, bub, False))
    extremes = [(np.full((5, X), -128), np.full((X, N), -8)), (np.full((4, X), 127), np.full((X, N), 7)),
                (np.full((3, X), -128), np.full((X, N), 7))]
    cases.append(("extremes", extremes, 0.0, True))
    # 5-bit weights (the unsigned low nibble of int8 weights) work in WS too
    cases.append(("w5", [(rng.integers(-128, 128, (7, X)), rng.integers(-16, 16, (X, N))) for _ in range(3)],
                  0.1, False))
    for name, blocks, bub, gap in cases:
        got = await ws_run(dut, blocks, rng, bub, gap)
        want = []
        for a, w in blocks:
            s = a.astype(np.int64) @ w.astype(np.int64)
            for i in range(0, len(a), 2):
                want.append((s[i], s[i + 1] if i + 1 < len(a) else np.zeros(N, np.int64)))
        assert len(got) == len(want), f"{name}: {len(got)} pixel pairs out, {len(want)} expected"
        for i, ((g0, g1), (w0, w1)) in enumerate(zip(got, want)):
            assert np.array_equal(g0, w0) and np.array_equal(g1, w1), \
                f"{name}: pair {i}: got {g0.tolist()} / {g1.tolist()} want {w0.tolist()} / {w1.tolist()}"
    # back to output-stationary after WS: the MM-OS path is unaffected
    a, w = rng.integers(-128, 128, (M, 9)), rng.integers(-8, 8, (9, N))
    await stream(dut, a, w, True, rng)
    got = await read_tile(dut)
    assert np.array_equal(got, a @ w), "MM-OS after WS"
