"""sdac_top's AXI4 master against the testbench's AXI4 DRAM slave (hw/tb/sdac_tb_top.sv).

The slave checks every AR / AW burst (INCR, at most BURST_MAX beats, inside one 4 KiB page unless it
is one beat) and stops the simulation on a violation; it counts bursts and the cycles each channel
waited. These tests check how DMA lines become bursts, that data crossing pages stays bit-exact
(against the golden model), and that R / B error responses stop the machine with OOB_DRAM and the
right instruction index. Random backpressure on whole programs: tests/hw/test_cosim.py.
"""
import dataclasses

import numpy as np
import pytest

from sdac.hw import sim
from sdac.isa.encoding import Instr, encode_program
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import SPEC
from sdac.runtime.golden import Golden

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_cosim")]

SMALL = dataclasses.replace(DEFAULT.with_array("4x2"), act_lines=512, wgt_lines=256, acc_lines=128,
                            prm_lines=16, queue_depth=8, token_max=7)          # as tests/hw/test_cosim.py
I = Instr.make
OOB_DRAM = SPEC.errors["OOB_DRAM"][0]
BURST_MAX = 16
FETCH_BURST = 4


@pytest.fixture(scope="module")
def exe():
    return sim.build_cosim(SMALL, 1 << 16)


def dram_bytes(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def run_and_compare(exe, dram, prog, **axi):
    rtl = sim.run_cosim(exe, dram, encode_program(prog), **axi)
    g = Golden(SMALL, len(dram))
    g.dram[:] = np.frombuffer(dram, np.uint8)
    g.run(prog)
    assert rtl.error == 0, f"RTL error {SPEC.error_name(rtl.error)} at {rtl.index}"
    assert rtl.dram == bytes(g.dram)
    return rtl


def bursts_of(lines_at, B, burst_max=BURST_MAX):
    """Bursts the burst rule makes of DMA lines at byte addresses `lines_at`, B bytes each."""
    n, start, end = 0, None, None
    for a in lines_at:
        joins = (start is not None and a == end and (end - start) // B < burst_max
                 and (a + B - 1) >> 12 == start >> 12)
        if joins:
            end += B
        else:
            n, start, end = n + 1, a, a + B
    return n


def lines(dram, run, B, ny=1, dy=0, nz=1, dz=0):
    return [dram + z * dz + y * dy + i * B for z in range(nz) for y in range(ny) for i in range(run)]


# (buf, dram, run, ny, dy, nz, dz) in lines of the buffer's size B
SHAPES = {
    "contiguous 40 lines": ("act", 0, 40, 1, 0, 1, 0),
    "rows and planes contiguous": ("act", 64, 2, 2, 8, 4, 16),
    "rows contiguous, planes not": ("acc", 0, 2, 3, 32, 2, 200),
    "strided rows": ("act", 8, 3, 4, 20, 1, 0),
    "crossing 4 KiB": ("act", 4096 - 8, 8, 1, 0, 1, 0),
    "a line straddling 4 KiB": ("acc", 4096 - 8, 4, 1, 0, 1, 0),
    "wgt rows across pages": ("wgt", 4000, 30, 3, 4096, 1, 0),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_dma_lines_become_bursts(exe, name, burst_max=BURST_MAX):
    buf, dram, run, ny, dy, nz, dz = SHAPES[name]
    B = SMALL.line_bytes(buf)
    shape = dict(run=run, ny=ny, dy=dy, nz=nz, dz=dz)
    prog = [I("load", buf=buf, dram=dram, sram=0, **shape, push=["st"]),
            I("store", buf=buf, dram=dram + 16384, sram=0, **shape, pop=["ld"]), I("halt")]
    want = bursts_of(lines(dram, run, B, ny, dy, nz, dz), B, burst_max)
    rtl = run_and_compare(exe, dram_bytes(32768), prog)
    assert rtl.axi["read_bursts"] == want + -(-len(prog) // FETCH_BURST)
    assert rtl.axi["write_bursts"] == bursts_of(lines(dram + 16384, run, B, ny, dy, nz, dz), B, burst_max)
    stalled = run_and_compare(exe, dram_bytes(32768), prog, axi_stall=40, axi_latency=7, axi_seed=len(name))
    assert (stalled.axi["read_bursts"], stalled.axi["write_bursts"]) == (rtl.axi["read_bursts"],
                                                                         rtl.axi["write_bursts"])
    assert stalled.cycles > rtl.cycles


def test_bursts_rule_model():
    assert bursts_of(lines(0, 40, 4), 4) == 3
    assert bursts_of(lines(4088, 8, 4), 4) == 2
    assert bursts_of(lines(4088, 4, 16), 16) == 2          # the straddling line alone, then 3 lines


def test_load_error_response_stops_the_machine(exe):
    """SLVERR on some lines of a load: ERROR = OOB_DRAM, ERR_INDEX = the load; the store that waits for
    its token never runs, the earlier store did."""
    dram = dram_bytes(16384, 1)
    prog = [I("load", buf="act", dram=0, sram=0, run=8, push=["st"]),
            I("store", buf="act", dram=8192, sram=0, run=8, pop=["ld"]),
            I("load", buf="act", dram=4000, sram=100, run=60, push=["st"]),
            I("store", buf="act", dram=12288, sram=100, run=60, pop=["ld"]),
            I("halt")]
    for axi in ({}, dict(axi_stall=40, axi_latency=5, axi_seed=4)):
        r = sim.run_cosim(exe, dram, encode_program(prog), axi_slverr=(4096 + 12, 4096 + 16), **axi)
        assert (r.error, r.index) == (OOB_DRAM, 2), axi
        assert r.dram[8192:8192 + 32] == dram[:32]
        assert r.dram[12288:12288 + 240] == dram[12288:12288 + 240]
    ok = sim.run_cosim(exe, dram, encode_program(prog), axi_slverr=(5000, 5004))   # outside the load
    assert ok.error == 0 and ok.dram[12288:12288 + 240] == dram[4000:4240]


def test_store_error_response_names_the_store(exe):
    dram = dram_bytes(16384, 2)
    prog = [I("load", buf="acc", dram=0, sram=0, run=20, push=["st"]),
            I("store", buf="acc", dram=1024, sram=0, run=20, pop=["ld"], push=["ld"]),
            I("load", buf="act", dram=0, sram=0, run=4, pop=["st"]),
            I("halt")]
    for axi in ({}, dict(axi_stall=40, axi_latency=5, axi_seed=5)):
        r = sim.run_cosim(exe, dram, encode_program(prog), axi_slverr=(1024 + 300, 1024 + 301), **axi)
        assert (r.error, r.index) == (OOB_DRAM, 1), axi


def test_fetch_error_response_names_the_word(exe):
    """SLVERR on instruction word 3: the run stops there; on a word past HALT (prefetched with the burst
    but never executed) nothing happens."""
    dram = dram_bytes(4096, 3)
    base = 4096                                          # sim.run_cosim puts the program after the DRAM
    prog = [I("sync", q="ld")] * 5 + [I("halt")]
    r = sim.run_cosim(exe, dram, encode_program(prog), axi_slverr=(base + 3 * 32 + 5, base + 3 * 32 + 6))
    assert (r.error, r.index) == (OOB_DRAM, 3)
    early = [I("sync", q="ld"), I("halt")] + [I("sync", q="ld")] * 2
    r = sim.run_cosim(exe, dram, encode_program(early), axi_slverr=(base + 3 * 32, base + 4 * 32))
    assert (r.error, r.executed) == (0, 2)


@pytest.mark.slow
@pytest.mark.parametrize("burst_max,outstanding", [(256, 2), (1, 8)])
def test_other_burst_lengths_and_outstanding(burst_max, outstanding):
    """BURST_MAX 256 with 2 bursts in flight, and single-beat bursts with 8 in flight: the same bursts as
    the rule says, bit-exact, also for 2000 contiguous lines across pages under stalls."""
    exe = sim.build_cosim(SMALL, 1 << 16, burst_max=burst_max, outstanding=outstanding)
    for name in SHAPES:
        test_dma_lines_become_bursts(exe, name, burst_max)
    prog = [I("load", buf="act", dram=3000, sram=0, run=500, push=["st"]),
            I("store", buf="act", dram=12000, sram=0, run=500, pop=["ld"], push=["ld"]),
            I("load", buf="acc", dram=100, sram=0, run=120, pop=["st"], push=["st"]),
            I("store", buf="acc", dram=9000, sram=0, run=120, pop=["ld"]), I("halt")]
    for stall in (0, 35):
        run_and_compare(exe, dram_bytes(16384, 7), prog, axi_stall=stall, axi_latency=9, axi_seed=outstanding)

