"""The same bundle through the device API on the golden model and on the RTL co-simulation.

The RTL implements DMA, tokens and mm so far: the bundle is hand-built (a rows tensor copied through the
act buffer with a token relay, plus an mm whose result is stored as a second output's bytes). A program
with instructions the RTL skips is refused with UNSUPPORTED unless allowed."""
import dataclasses

import numpy as np
import pytest

from sdac.bundle import Bundle, IOTensor
from sdac.errors import DeviceError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.perf.timing import Timing
from sdac.runtime.device import Device

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("rtl_cosim")]
SMALL = dataclasses.replace(DEFAULT.with_array("4x2"), act_lines=512, wgt_lines=256, acc_lines=128,
                            prm_lines=16, queue_depth=8, token_max=7)       # as tests/hw/test_cosim.py
I = Instr.make


@pytest.fixture(scope="module")
def verilator():
    from sdac.hw import sim
    ok, why = sim.verilator_status()
    if not ok:
        pytest.skip(f"Verilator unavailable: {why}")


def copy_bundle(extra=()):
    L = SMALL.lanes
    rows, cols = 24, 8                     # 2 lines per row
    n = rows * 2 * L
    x = IOTensor("x", (rows, cols), "float32", "rows", 0, rows, cols, (0.1, 0.05))
    y = IOTensor("y", (rows, cols), "float32", "rows", 1024, rows, cols, (0.1, 0.05))
    prog = [I("setstep", src="csr", bank=0),
            I("load", buf="act", dram=0, sram=0, run=rows * 2, push=["cmp"]),
            I("sync", q="cmp", pop=["ld"], push=["st"]),
            I("mm", a=0, ars=2, w=0, ws=8, c=0, crs=1, m=8, n=4, k=8),     # result unused: timing only
            *extra,
            I("store", buf="act", dram=1024, sram=0, run=rows * 2, pop=["cmp"]),
            I("halt")]
    return Bundle(machine=SMALL, instrs=prog, dram_size=4096, data=bytes(64), data_base=2048, n_steps=2,
                  step_base=3072, step_bank=64, step_table=bytes(128), inputs=[x], outputs=[y]), n


def test_same_bundle_golden_and_rtl(verilator):
    b, _ = copy_bundle()
    rng = np.random.default_rng(0)
    gold, rtl = Device.open(b, "golden"), Device.open(b, "rtl")
    for step in (0, 1):
        x = {"x": rng.normal(0, 4, (24, 8)).astype(np.float32)}
        want = gold.step(x, step)
        got = rtl.step(x, step)
        assert np.array_equal(got["y"], want["y"])
        info = rtl.last_run
        assert info.backend == "rtl" and info.retired == len(b.instrs) and info.cycles > 0
        model = estimate(b, timing=Timing.resolve(b.machine, "rtl-cosim")).total_cycles
        assert abs(model - info.cycles) <= 0.1 * info.cycles


def test_rtl_errors_and_unsupported(verilator):
    b, _ = copy_bundle()
    bad = dataclasses.replace(b, instrs=[b.instrs[0], I("load", buf="act", dram=1 << 20, sram=0, run=1),
                                         I("halt")])
    with pytest.raises(DeviceError) as e:
        Device.open(bad, "rtl").step({"x": np.zeros((24, 8), np.float32)}, 0)
    assert (e.value.code, e.value.index) == ("OOB_DRAM", 1)
    sfu = I("act", s=0, srs=1, out="acc", d=0, drs=1, rows=1, cols=4, sc=0)
    b2, _ = copy_bundle([sfu])
    x = {"x": np.zeros((24, 8), np.float32)}
    try:
        Device.open(b2, "rtl").step(x, 0)         # fine once the RTL implements the SFU
    except DeviceError as err:
        assert err.code == "UNSUPPORTED"
    dev = Device.open(b2, "rtl", allow_unsupported=True)
    dev.step(x, 0)
    assert dev.last_run.cycles > 0
