"""cocotb bench for sdac_array.sv (MM-OS): output tiles against numpy int8 x int4 (and 5-bit) matmul.

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
