"""The register-level driver (runtime/board.py) on the RTL, through the interactive port sdac.hw.cosim.

The board's code path, exercised for real without a board: ``Driver`` talks to sdac_top's AXI-Lite CSR
slave (each read32/write32 one AXI-Lite transaction in the Verilator simulation) and writes/reads the
DRAM model as the PS writes its contiguous buffer; the clock runs in the background while a run is in
flight. Compiled ONNX graphs must give the golden model's bytes; errors, ID, interrupt, timeout/BUSY and
multi-step runs go through the driver's own code. One build (4x2 machine, ~10 s cold) serves the module;
the default machine (20x10) runs under -m slow.
"""
import dataclasses
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sdac import models
from sdac.compiler.driver import compile_model
from sdac.errors import DeviceError, SdacError
from sdac.hw import sim
from sdac.isa.encoding import _HDR
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import SPEC
from sdac.runtime import board as B
from sdac.runtime import csr_map as CSR
from sdac.runtime.device import Device
from sdac.runtime.fake_device import FakeDevice

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_port")]

SMALL = DEFAULT.with_array("4x2")
STEPS = 3


def _needs_sfu():
    if not (sim.RTL_DIR / "sdac_sfu.sv").exists():
        pytest.skip("compiled programs need the SFU (hw/rtl/sdac_sfu.sv)")


@pytest.fixture(scope="module")
def port_exe():
    _needs_sfu()
    return sim.build_rtl_port(SMALL)          # cached; open_rtl_port reuses it


def _stepped_bundle(name, machine):
    """`name` of sdac.models compiled with STEPS per-step scales on the input and the conv output (the
    program reads its step's scales through setstep, the host quantizes with the step's input scale)."""
    path, _ = models.build(name)
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    xs, os_ = float(init["x_scale"]), float(init["out_scale"])
    doc = {"format": "sdac-step-scales", "version": 1, "n_steps": STEPS,
           "scales": {"x": [xs, 1.5 * xs, 0.7 * xs], "out_QuantizeLinear_Input": [os_, 2 * os_, 0.8 * os_]}}
    return compile_model(path, machine=machine, step_scales=doc).bundle


@pytest.fixture(scope="module")
def conv_bundle():
    return _stepped_bundle("conv3x3", SMALL)


def _dram(dev):
    """The bundle's DRAM (dram_size bytes) as the device holds it."""
    n = dev.bundle.dram_size
    if dev.backend_name == "golden":
        return bytes(dev.backend.g.dram[:n])
    return dev.backend.driver.port.dram_read(0, n)


def _same_as_golden(bundle, name, steps, irq=False, seed=1, exe=None, **axi):
    """Run `steps` on one loaded interactive RTL device and on the golden model: every output and every
    DRAM byte must agree after each step; returns the RTL RunInfos. With `exe` (a build_rtl_port
    executable) the port is opened on it instead of through Device.open(interactive=True). `axi`: the
    DRAM slave's options (open_rtl_port's axi_latency, axi_stall, axi_seed)."""
    infos = []
    if exe is None:
        opts = {"interactive": True, **axi}
    else:
        from sdac.hw.cosim import RtlPort
        opts = {"port": RtlPort(exe, B.Image.from_bundle(bundle).device_bytes + 4096, **axi)}
    with Device.open(bundle, "golden") as gold, Device.open(bundle, "rtl", irq=irq, **opts) as rtl:
        assert type(rtl.backend.driver.port).__name__ == "RtlPort"
        for k, step in enumerate(steps):
            x = models.sample_inputs(name, seed=seed + k)
            want, got = gold.step(x, step), rtl.step(x, step)
            assert want.keys() == got.keys()
            for t in want:
                assert np.array_equal(want[t], got[t]), f"{name} step {step}: output {t!r} differs"
            a, b = np.frombuffer(_dram(gold), np.uint8), np.frombuffer(_dram(rtl), np.uint8)
            diff = np.nonzero(a != b)[0]
            assert diff.size == 0, f"{name} step {step}: {diff.size} DRAM bytes differ, first at {diff[0]:#x}"
            info = rtl.last_run
            assert info.backend == "rtl" and info.retired == len(bundle.instrs) and info.cycles > 0
            assert rtl.backend.driver.port.read32(CSR.STEP) == step
            infos.append(info)
    return infos


def test_driver_on_rtl_matches_golden_every_step(port_exe, conv_bundle):
    """A compiled graph with per-step scales, loaded once, run for every step (setstep src=csr picks the
    step's scales from the step table); different inputs each step; bytes equal to the golden model's."""
    infos = _same_as_golden(conv_bundle, "conv3x3", [0, 2, 1, 0])
    # CYCLES counts START to DONE in the RTL: independent of how (and how often) the host polled
    assert infos[0].cycles == infos[3].cycles
    print(f"\nconv3x3 on the RTL through the driver: {infos[0].cycles} cycles, {infos[0].seconds * 1e3:.0f} ms")


def test_driver_on_rtl_under_backpressure(port_exe, conv_bundle):
    """The harness's AXI4 DRAM slave with random stalls on every channel and 6 cycles of latency: the
    same bytes as the golden model, in more cycles."""
    slow = _same_as_golden(conv_bundle, "conv3x3", [0, 1], axi_stall=30, axi_latency=6, axi_seed=5)
    fast = _same_as_golden(conv_bundle, "conv3x3", [0])
    assert slow[0].cycles > fast[0].cycles


def test_start_after_bus_error_with_bursts_in_flight(port_exe):
    """An R error response stops the machine while the rest of the load's bursts are still in flight
    (and a store's W beats); the host STARTs the next program at once: the old beats must not reach it
    (the read engine discards them, the write engine sends its remaining beats with WSTRB = 0)."""
    from sdac.hw.cosim import open_rtl_port
    from sdac.isa.encoding import Instr, encode_program
    I = Instr.make
    oob = SPEC.errors["OOB_DRAM"][0]
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 16384, dtype=np.uint8).tobytes()
    with open_rtl_port(SMALL, 32768, axi_slverr=(4096 + 64, 4096 + 96), axi_stall=20, axi_latency=4,
                       axi_seed=2) as port:
        def run(prog, base, dram_size=16384):
            port.dram_write(base, encode_program(prog))
            port.write32(CSR.DRAM_SIZE, dram_size)
            port.write32(CSR.INSTR_BASE, base)
            port.write32(CSR.INSTR_COUNT, len(prog))
            port.write32(CSR.CTRL, CSR.CTRL_START)
            assert port.interrupt.wait()
            return port.read32(CSR.ERROR), port.read32(CSR.ERR_INDEX)

        port.dram_write(0, data)
        L = SMALL.lanes
        bad = [I("load", buf="act", dram=0, sram=0, run=256, push=["st"]),          # a long store meanwhile
               I("store", buf="act", dram=8192, sram=0, run=256, pop=["ld"]),
               I("load", buf="act", dram=4096, sram=300, run=256),                   # error on line 16
               I("halt")]
        assert run(bad, 20480) == (oob, 2)
        good = [I("load", buf="act", dram=1024, sram=256, run=128, push=["st"]),
                I("store", buf="act", dram=12288, sram=256, run=128, pop=["ld"]), I("halt")]
        assert run(good, 24576) == (0, 0)
        assert port.dram_read(12288, 128 * L) == data[1024:1024 + 128 * L]
        # the first program's store: whatever it wrote came from its own load (or is still the old data)
        got = np.frombuffer(port.dram_read(8192, 256 * L), np.uint8)
        old, new = np.frombuffer(data[8192:8192 + 256 * L], np.uint8), np.frombuffer(data[:256 * L], np.uint8)
        assert np.all((got == old) | (got == new))
        # a store that hits the SLVERR range: ERR_INDEX names it
        assert run([I("store", buf="act", dram=4096, sram=0, run=64), I("halt")], 28672) == (oob, 0)
        # DECERR: DRAM_SIZE claims more than the slave has (32 KiB); a load past it
        assert run([I("sync", q="ld"), I("load", buf="act", dram=32768 - 8, sram=0, run=4), I("halt")], 28672,
                   dram_size=65536) == (oob, 1)


def test_interrupt_driven_wait(port_exe, conv_bundle):
    """irq_done as the driver's interrupt: the driver waits on it, then reads STATUS once (DONE)."""
    image = B.Image.from_bundle(conv_bundle)
    from sdac.hw.cosim import open_rtl_port
    with open_rtl_port(SMALL, image.device_bytes + 4096) as port:
        reads = []
        orig = port.read32
        port.read32 = lambda off: (reads.append(off), orig(off))[1]
        drv = B.Driver(port, irq=port.interrupt)
        drv.load(image)
        assert not port.irq()                                 # low after reset
        x = models.sample_inputs("conv3x3", seed=5)
        drv.write_inputs(x, 0)
        drv.start(0)
        assert not port.irq()                                 # START cleared DONE
        reads.clear()
        info = drv.wait(0, time.perf_counter())
        assert port.irq()                                     # stays high until the next START
        assert reads.count(CSR.STATUS) == 1, reads            # no polling: the interrupt said DONE
        assert info.retired == len(conv_bundle.instrs)
        out = drv.read_outputs(0)
    with Device.open(conv_bundle, "golden") as gold:
        want = gold.step(x, 0)
    assert all(np.array_equal(want[t], out[t]) for t in want)
    # the same through the device API, irq=True
    assert _same_as_golden(conv_bundle, "conv3x3", [1], irq=True)[0].cycles > 0


def _bad_opcode():
    return next(v for v in range(1, _HDR["opcode"].max + 1) if SPEC.by_opcode(v) is None)


def test_driver_errors_read_back_from_rtl_csrs(port_exe, conv_bundle):
    """A program with a word of no instruction at index 5: the driver raises BAD_OPCODE with ERR_INDEX 5
    read back from the RTL's CSRs, as on the fake device (golden model); a DMA outside DRAM_SIZE gives
    OOB_DRAM at its index; the device then runs the good program again (START clears the error)."""
    from sdac.hw.cosim import open_rtl_port
    good = B.Image.from_bundle(conv_bundle)
    words = [good.text[i:i + 32] for i in range(0, len(good.text), 32)]
    words[5] = (_bad_opcode() << _HDR["opcode"].offset).to_bytes(32, "little")
    bad = dataclasses.replace(good, text=b"".join(words))
    from sdac.isa import Instr
    from sdac.isa.encoding import encode_program
    oob = dataclasses.replace(good, text=encode_program(
        [conv_bundle.instrs[0], Instr.make("load", buf="act", dram=good.dram_size, sram=0, run=1),
         Instr.make("halt")]))
    x = models.sample_inputs("conv3x3", seed=2)
    with open_rtl_port(SMALL, good.device_bytes + 4096) as port:
        drv = B.Driver(port)
        for image, code, index in ((bad, "BAD_OPCODE", 5), (oob, "OOB_DRAM", 1)):
            fake = B.Driver(FakeDevice(SMALL, image.device_bytes + 4096))
            for d in (drv, fake):
                d.load(image)
                d.write_inputs(x, 0)
                with pytest.raises(DeviceError) as e:
                    d.run(0)
                assert (e.value.code, e.value.index) == (code, index), (d.port, str(e.value))
            assert port.read32(CSR.ERR_INDEX) == index
            assert port.read32(CSR.STATUS) & CSR.STATUS_ERROR
            assert CSR.ERROR_NAMES[port.read32(CSR.ERROR)] == code
        drv.load(good)
        out = drv.step(x, 0)
        assert not port.read32(CSR.STATUS) & CSR.STATUS_ERROR
    with Device.open(conv_bundle, "golden") as gold:
        want = gold.step(x, 0)
    assert all(np.array_equal(want[t], out[t]) for t in want)


def test_identify_and_mismatch(port_exe, conv_bundle):
    from sdac.hw.cosim import open_rtl_port
    image = B.Image.from_bundle(conv_bundle)
    with open_rtl_port(SMALL, image.device_bytes) as port:
        drv = B.Driver(port)
        assert drv.identify() == B.DeviceId(CSR.ISA_VERSION, SMALL.lanes, SMALL.array_rows, SMALL.array_cols)
        assert B.Driver(FakeDevice(SMALL, 4096)).identify() == drv.identify()
        with pytest.raises(DeviceError) as e:
            drv.load(dataclasses.replace(image, machine={**image.machine, "array_rows": 20}))
        assert e.value.code == "MISMATCH"
        with pytest.raises(DeviceError) as e:
            drv.load(dataclasses.replace(image, text=image.text + bytes(64 * 1024)))
        assert e.value.code == "NO_MEMORY"
        # registers the driver writes read back (RW), CTRL reads 0 (W), unlisted offsets read 0
        port.write32(CSR.INSTR_BASE, 0x1234)
        assert port.read32(CSR.INSTR_BASE) == 0x1234 and port.read32(CSR.CTRL) == 0
        assert port.read32(CSR.CSR_SPAN - 4) == 0


def test_timeout_busy_and_reset(port_exe, conv_bundle):
    """A run whose clock stops (max_run_cycles: a hung accelerator) stays BUSY: the driver times out,
    refuses to START again (BUSY); the PL reset (port.reset()) recovers, and a reload runs correctly."""
    from sdac.hw.cosim import open_rtl_port
    image = B.Image.from_bundle(conv_bundle)
    x = models.sample_inputs("conv3x3", seed=3)
    with open_rtl_port(SMALL, image.device_bytes + 4096, max_run_cycles=200) as port:
        drv = B.Driver(port, timeout=0.3)
        drv.load(image)
        drv.write_inputs(x, 0)
        with pytest.raises(DeviceError) as e:
            drv.run(0)
        assert e.value.code == "TIMEOUT"
        assert port.read32(CSR.STATUS) & CSR.STATUS_BUSY
        with pytest.raises(DeviceError) as e:
            drv.run(0)
        assert e.value.code == "BUSY"
        base = port.read32(CSR.INSTR_BASE)
        with pytest.raises(DeviceError) as e:                 # no new image under a running program
            drv.load(dataclasses.replace(image, dram_size=image.dram_size + 4096))
        assert e.value.code == "BUSY" and port.read32(CSR.INSTR_BASE) == base
        port.reset()
        assert port.read32(CSR.STATUS) == 0 and port.read32(CSR.INSTR_COUNT) == 0
        assert not port.interrupt.wait()                      # nothing in flight: no interrupt will come
        drv = B.Driver(port, timeout=0.3, irq=port.interrupt)  # the same hang, waiting on the interrupt
        drv.load(image)
        with pytest.raises(DeviceError) as e:
            drv.run(0)
        assert e.value.code == "TIMEOUT"
    with open_rtl_port(SMALL, image.device_bytes + 4096) as port, Device.open(conv_bundle, "golden") as gold:
        drv = B.Driver(port)
        drv.load(image)
        out = drv.step(x, 0)
        want = gold.step(x, 0)
    assert all(np.array_equal(want[t], out[t]) for t in want)


def test_port_protocol_edges(port_exe):
    """Backdoor DRAM round trip, range checks, idle cycles, a dead simulation reported with its log."""
    from sdac.hw.cosim import open_rtl_port
    port = open_rtl_port(SMALL, 1 << 16)
    try:
        blob = bytes(np.random.default_rng(0).integers(0, 256, (1 << 16) - 4096, dtype=np.uint8))
        port.dram_write(4096, blob)                           # up to the last byte of the DRAM model
        assert port.dram_read(4096, len(blob)) == blob
        assert port.dram_read(0, 4096) == bytes(4096)
        with pytest.raises(SdacError):
            port.dram_write((1 << 16) - 2, b"abc")
        with pytest.raises(SdacError):
            port.dram_read(-1, 4)
        c0 = port.cycle()
        assert port.idle(100) == c0 + 100
        r0 = port.cycle()
        port.read32(CSR.ID)
        assert 2 <= port.cycle() - r0 <= 8                    # an AXI-Lite read takes a few cycles
        port.proc.kill()
        port.proc.wait()
        with pytest.raises(sim.SimError, match="stopped"):
            port.read32(CSR.STATUS)
    finally:
        port.close()


def test_device_open_options(port_exe, conv_bundle):
    """interactive=True selects the port (slack and the driver's timeout reach it); without it the batch
    co-simulation backend is used (not built here)."""
    with Device.open(conv_bundle, "rtl", interactive=True, slack=0, timeout=5.0) as dev:
        port = dev.backend.driver.port
        assert port.dram_size == B.Image.from_bundle(conv_bundle).device_bytes
        assert port.interrupt.timeout == 5.0
    assert port.proc.poll() is not None                       # close() ended the simulation


def test_device_open_failure_ends_simulation(port_exe, conv_bundle, monkeypatch):
    from sdac.hw import cosim
    ports, real = [], cosim.open_rtl_port

    def opener(*a, **k):
        ports.append(real(*a, **k))
        return ports[-1]

    def failing_load(self, image):
        raise DeviceError("MISMATCH", "planted")
    monkeypatch.setattr(cosim, "open_rtl_port", opener)
    monkeypatch.setattr(B.Driver, "load", failing_load)
    with pytest.raises(DeviceError, match="planted"):
        Device.open(conv_bundle, "rtl", interactive=True)
    assert len(ports) == 1 and ports[0].proc.poll() is not None


# ------------------------------------------------------------------ slow: the default 20x10 machine

@pytest.fixture(scope="module")
def default_port_exe():
    _needs_sfu()
    return sim.build_rtl_port(DEFAULT)        # 20x10: minutes cold


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv3x3", "resnet", "attention"])
def test_driver_on_rtl_default_machine(default_port_exe, name):
    if name == "conv3x3":
        bundle = _stepped_bundle(name, DEFAULT)
        steps = [0, 1, 2]
    else:
        bundle = compile_model(models.build(name)[0]).bundle
        steps = [0]
    infos = _same_as_golden(bundle, name, steps, exe=default_port_exe)
    print(f"\n{name} on 20x10 through the driver: {infos[0].cycles} cycles, "
          f"{infos[0].cycles / infos[0].seconds / 1e3:.0f} k cycles/s")


@pytest.mark.slow
def test_rtl_port_cycles_equal_batch_cosim(port_exe):
    """The interactive port and the batch testbench (hw/tb/sdac_tb_top.sv) count the same CYCLES."""
    path, _ = models.build("resnet")
    bundle = compile_model(path, machine=SMALL).bundle
    x = models.sample_inputs("resnet", seed=1)
    from sdac.hw.cosim import RtlPort
    port = RtlPort(port_exe, B.Image.from_bundle(bundle).device_bytes + 4096)
    with Device.open(bundle, "rtl", port=port) as a, Device.open(bundle, "rtl") as b:
        oa, ob = a.step(x, 0), b.step(x, 0)
        assert a.last_run.cycles == b.last_run.cycles
        assert all(np.array_equal(oa[t], ob[t]) for t in oa)


def test_cli_run_interactive_equals_golden(port_exe, conv_bundle, tmp_path):
    """`sdac run --backend rtl --interactive` (the user's command) gives the golden model's outputs."""
    from sdac.bundle import write_bundle
    from sdac.cli import main
    write_bundle(conv_bundle, tmp_path / "c.sdab")
    x = np.random.default_rng(5).normal(0, 1, conv_bundle.inputs[0].shape).astype(np.float32)
    np.savez(tmp_path / "in.npz", **{conv_bundle.inputs[0].name: x})
    for backend, extra in (("golden", []), ("rtl", ["--interactive"])):
        assert main(["run", str(tmp_path / "c.sdab"), "--inputs", str(tmp_path / "in.npz"), "--step", "1",
                     "--outputs", str(tmp_path / f"{backend}.npz"), "--backend", backend, *extra]) == 0
    a, b = np.load(tmp_path / "golden.npz"), np.load(tmp_path / "rtl.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert main(["run", str(tmp_path / "c.sdab"), "--inputs", str(tmp_path / "in.npz"), "--outputs",
                 str(tmp_path / "x.npz"), "--interactive"]) == 2
