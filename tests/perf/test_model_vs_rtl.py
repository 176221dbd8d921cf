"""The cycle model against the RTL's cycle counter (CSR CYCLES) on co-simulated programs: within 10%.

The RTL runs inside hw/tb/sdac_tb_top.sv (a DRAM model answering one request per cycle), so the model
uses the "rtl-cosim" timing profile (sdac/perf/timing.py PROFILES): the same formulas, parameters
measured on that environment. Programs the RTL does not implement yet (UNSUPPORTED) are skipped.
"""
import dataclasses

import numpy as np
import pytest

from sdac.isa.encoding import Instr, encode_program
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.perf.timing import Timing

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("rtl_cosim")]

SMALL = dataclasses.replace(DEFAULT.with_array("4x2"), act_lines=512, wgt_lines=256, acc_lines=128,
                            prm_lines=16, queue_depth=8, token_max=7)       # as tests/hw/test_cosim.py
I = Instr.make
TOL = 0.10


@pytest.fixture(scope="module")
def exe():
    from sdac.hw import sim
    ok, why = sim.verilator_status()
    if not ok:
        pytest.skip(f"Verilator unavailable: {why}")
    return sim.build_cosim(SMALL, 1 << 16)


def _mm(m, n, k, wsrc="wgt", **kw):
    L = SMALL.lanes
    return I("mm", a=0, ars=-(-k // L), wsrc=wsrc, w=0 if wsrc == "wgt" else 256,
             ws=k if wsrc == "wgt" else (-(-n // L) if wsrc == "act" else -(-k // L)), c=0, crs=-(-n // L),
             m=m, n=n, k=k, **kw)


def programs():
    P = {"halt": []}
    P["syncs"] = [I("sync", q="cmp"), I("sync", q="ld"), I("sync", q="cmp")]
    for buf in ("act", "wgt", "acc", "prm"):
        n = min(40, SMALL.buf_lines(buf))
        P[f"load {buf} {n}"] = [I("load", buf=buf, dram=0, sram=0, run=n)]
        P[f"store {buf} {n}"] = [I("store", buf=buf, dram=8192, sram=0, run=n)]
    P["load strided 3-D"] = [I("load", buf="act", dram=0, sram=3, run=2, ny=3, dy=40, sy=4, nz=2, dz=200, sz=13)]
    P["zero load"] = [I("load", buf="act", dram=0, sram=0, run=30, zero=1)]
    P["dma pipeline"] = []
    for i in range(6):
        slot = (i % 2) * 8
        P["dma pipeline"] += [
            I("load", buf="act", dram=i * 32, sram=slot, run=8, pop=["st"] if i >= 2 else [], push=["cmp"]),
            I("sync", q="cmp", pop=["ld"], push=["sfu"]), I("sync", q="sfu", pop=["cmp"], push=["st"]),
            I("store", buf="act", dram=2048 + i * 32, sram=slot, run=8, pop=["sfu"], push=["ld"] if i < 4 else [])]
    for m, n, k in [(1, 1, 1), (8, 4, 40), (19, 9, 13), (24, 12, 10), (40, 8, 48)]:
        P[f"mm {m}x{n}x{k}"] = [_mm(m, n, k)]
    for w in ("act", "act_t"):
        P[f"mm8 {w}"] = [_mm(11, 6, 9, w), _mm(8, 4, 40, w)]
    P["load then mm, serialized"] = [I("load", buf="act", dram=0, sram=300, run=60, push=["cmp"]),
                                     _mm(8, 4, 40, pop=["ld"], push=["st"]),
                                     I("store", buf="acc", dram=8192, sram=0, run=8, pop=["cmp"])]
    P["load and mm, overlapped"] = [I("load", buf="act", dram=0, sram=300, run=60), _mm(8, 4, 40),
                                    I("store", buf="act", dram=8192, sram=400, run=20)]
    tiles = []
    for t in range(4):                      # double-buffered tiles: load / mm / store with WAR tokens
        a = (t % 2) * 40
        tiles += [I("load", buf="act", dram=t * 800, sram=a, run=40, pop=["cmp"] if t >= 2 else [], push=["cmp"]),
                  I("mm", a=a, ars=10, w=0, ws=40, c=(t % 2) * 16, crs=1, m=16, n=4, k=40, pop=["ld"] + (
                      ["st"] if t >= 2 else []), push=["st", "ld"] if t < 2 else ["st"]),
                  I("store", buf="acc", dram=8192 + t * 256, sram=(t % 2) * 16, run=16, pop=["cmp"],
                    push=["cmp"] if t < 2 else [])]
    P["double-buffered tiles"] = tiles
    return {k: v + [I("halt")] for k, v in P.items()}


def test_model_within_10_percent_of_rtl(exe):
    from sdac.hw import sim
    dram = np.random.default_rng(0).integers(0, 256, 16384, dtype=np.uint8).tobytes()
    timing = Timing.resolve(SMALL, "rtl-cosim")
    rows, bad = [], []
    for name, prog in programs().items():
        r = sim.run_cosim(exe, dram, encode_program(prog))
        if r.unsupported:
            continue
        assert r.error == 0, f"{name}: RTL error {r.error} at {r.index}"
        model = estimate(prog, SMALL, timing=timing).total_cycles
        err = (model - r.cycles) / r.cycles
        rows.append(f"{name:28s} rtl {r.cycles:6d} model {model:6d} {100 * err:+6.1f}%")
        if abs(err) > TOL:
            bad.append(rows[-1])
    print("\n".join(rows))
    assert len(rows) >= 15
    assert not bad, "model off by more than 10%:\n" + "\n".join(bad)
