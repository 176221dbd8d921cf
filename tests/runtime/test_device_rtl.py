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


# ------------------------------------------------------------------ the register map: RTL == spec == fake

def _cosim_registers(exe, dram_size, instrs, step):
    """Run `instrs` in the co-simulation; the registers the testbench read back through AXI-Lite."""
    import re
    from sdac.hw import sim
    from sdac.isa.encoding import encode_program
    r = sim.run_cosim(exe, bytes(dram_size), encode_program(instrs), step=step)
    line = next(ln for ln in r.log.splitlines() if ln.startswith("SDAC_RESULT"))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _fake_registers(dram_size, instrs, step):
    """The same CSR sequence as hw/tb/sdac_tb_top.sv, on the fake device, with offsets from SPEC.csr."""
    from sdac.isa.encoding import encode_program
    from sdac.isa.spec import SPEC
    from sdac.runtime.fake_device import FakeDevice
    off = {n: r.offset for n, r in SPEC.csr.items()}
    text = encode_program(instrs)
    base = (dram_size + 31) // 32 * 32
    dev = FakeDevice(SMALL, base + len(text), busy_polls=0)
    dev.dram_write(base, text)
    for name, v in (("DRAM_SIZE", dram_size), ("INSTR_BASE", base), ("INSTR_COUNT", len(instrs)), ("STEP", step)):
        dev.write32(off[name], v)
    dev.write32(off["CTRL"], SPEC.csr["CTRL"].pack(START=1))
    read = lambda n: dev.read32(off[n])         # noqa: E731
    return {"status": read("STATUS"), "error": read("ERROR"), "index": read("ERR_INDEX"), "id": read("ID"),
            "instr_base": read("INSTR_BASE"), "instr_count": read("INSTR_COUNT"), "step": read("STEP"),
            "dram_size": read("DRAM_SIZE"), "ctrl": read("CTRL")}


def test_rtl_registers_agree_with_spec_and_fake(verilator):
    """The RTL's register block, read through AXI-Lite by the testbench, decodes as isa.toml [csr] says:
    the ID fields, STATUS bits after a good and a failing run, RW registers reading back, CTRL write-only;
    and the fake device (built from SPEC.csr) returns the same words."""
    from sdac.hw import sim
    from sdac.isa.spec import SPEC
    exe = sim.build_cosim(SMALL, 1 << 16)            # the build the device tests above use
    status, ident = SPEC.csr["STATUS"], SPEC.csr["ID"]
    good = [I("halt")]
    bad = [I("setstep", src="csr", bank=0), I("load", buf="act", dram=1 << 20, sram=0, run=1), I("halt")]
    for instrs, want_status, want_error in ((good, dict(DONE=1), 0),
                                            (bad, dict(DONE=1, ERROR=1), SPEC.error_code("OOB_DRAM"))):
        rtl = _cosim_registers(exe, 4096, instrs, step=1)
        assert status.unpack(rtl["status"]) == {"DONE": 0, "BUSY": 0, "ERROR": 0, "UNSUPPORTED": 0,
                                                **want_status}
        assert rtl["status"] == status.pack(**want_status)       # no bits outside the named fields
        assert rtl["error"] == want_error and rtl["index"] == (1 if want_error else 0)
        assert ident.unpack(rtl["id"]) == {"VERSION": SPEC.version, "LANES": SMALL.lanes,
                                           "ARRAY_ROWS": SMALL.array_rows, "ARRAY_COLS": SMALL.array_cols}
        assert (rtl["instr_base"], rtl["instr_count"], rtl["step"], rtl["dram_size"], rtl["ctrl"]) == \
            (4096, len(instrs), 1, 4096, 0)                      # RW read back; CTRL is write-only
        fake = _fake_registers(4096, instrs, step=1)
        assert {k: rtl[k] for k in fake} == fake


def test_csr_rtl_has_no_literal_register_map():
    """Offsets and bit positions in the register block and the testbench come from sdac_isa_pkg (CSR_*),
    generated from isa.toml [csr]: no hex literals (offsets) and no constant bit indexes."""
    import re
    from pathlib import Path
    from sdac.hw import sim
    for path in (sim.RTL_DIR / "sdac_csr.sv", sim.TB_DIR / "sdac_tb_top.sv"):
        code = re.sub(r"//.*", "", Path(path).read_text())
        code = code.replace("parameter logic [31:0] ID = 32'h0", "")   # the ID parameter's default
        code = re.sub(r"localparam longint unsigned RNG_SEED0 = .*;", "", code)  # the tb's stall generator
        assert not re.search(r"\d*'h[0-9a-fA-F]+", code), path
        assert not re.search(r"(w_data|s_wdata|s_rdata|status)\[\d+\]", code), path
        assert "CSR_" in code, path
