"""The register-level driver (runtime/board.py) against the fake device: the CSR protocol's start / busy /
done / error / timeout paths, the PYNQ port with a stand-in pynq module, and the standalone pieces
(bundle reader, host conversion, error table) against sdac's own."""
import dataclasses
import subprocess
import sys
import types

import numpy as np
import pytest

from sdac.errors import DeviceError, SdacError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import SPEC
from sdac.perf.model import estimate
from sdac.perf.samples import compile_slice
from sdac.runtime import board as B
from sdac.runtime.fake_device import FakeDevice, fake_pynq
from sdac.runtime.golden import run_bundle
from sdac.runtime.host import from_device, to_device


@pytest.fixture(scope="module")
def bundle():
    return compile_slice(hw=8, ch=40, calibrate=True)


# the register map straight from the spec (the driver uses the generated runtime/csr_map.py)
OFF = {name: r.offset for name, r in SPEC.csr.items()}
BIT = {f"{r.name}_{f.name}": f.mask for r in SPEC.csr.values() for f in r.fields}


def _inputs(b, seed=0):
    rng = np.random.default_rng(seed)
    return {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in b.inputs}


def _driver(b, **kw):
    img = B.Image.from_bundle(b)
    dev = FakeDevice(b.machine, img.device_bytes + 4096, **kw)
    drv = B.Driver(dev, timeout=kw.get("timeout", 5.0), poll=0)
    drv.reset()
    drv.load(img)
    return drv, dev, img


class Spy:
    """Records every CSR access of the driver."""

    def __init__(self, dev):
        self.dev, self.log = dev, []
        self.dram_size = dev.dram_size

    def read32(self, o):
        v = self.dev.read32(o)
        self.log.append(("r", o, v))
        return v

    def write32(self, o, v):
        self.log.append(("w", o, v))
        self.dev.write32(o, v)

    def dram_write(self, a, d):
        self.dev.dram_write(a, d)

    def dram_read(self, a, n):
        return self.dev.dram_read(a, n)


def test_error_table_matches_spec():
    assert B.ERROR_NAMES == {code: name for name, (code, _) in SPEC.errors.items()}
    assert B.ISA_VERSION == SPEC.version and B.WORD_BYTES == SPEC.word_bytes


def test_driver_register_map_is_the_spec():
    """board.py's constants (runtime/csr_map.py, generated) equal SPEC.csr, which the RTL package shares."""
    assert B.CSR.REGISTERS == {n: (r.offset, r.access) for n, r in SPEC.csr.items()}
    for n, r in SPEC.csr.items():
        assert getattr(B.CSR, n) == r.offset
        for f in r.fields:
            if f.bits == 1:
                assert getattr(B.CSR, f"{n}_{f.name}") == f.mask
            else:
                assert (getattr(B.CSR, f"{n}_{f.name}_LSB"), getattr(B.CSR, f"{n}_{f.name}_BITS")) == (f.lsb, f.bits)
    assert B.CSR.CSR_SPAN == 1 << SPEC.csr_addr_bits > max(OFF.values())
    # no register of the old INTERFACES.md map survives
    assert not any(hasattr(B.CSR, n) for n in ("RETIRED", "CTRL_IRQ_EN", "CTRL_SOFT_RESET", "ID_MAGIC"))


def test_image_from_file_equals_from_bundle(bundle, tmp_path):
    from sdac.bundle import write_bundle
    p = tmp_path / "m.sdab"
    write_bundle(bundle, p)
    assert B.Image.from_file(p) == B.Image.from_bundle(bundle)
    blob = bytearray(p.read_bytes())
    blob[-70] ^= 1
    with pytest.raises(SdacError, match="CRC"):
        B.Image.from_bytes(bytes(blob))
    with pytest.raises(SdacError, match="magic"):
        B.Image.from_bytes(b"hello" * 20)
    # the header's ISA version (offset 32, outside the CRCs): an older one this version runs, or an unknown one
    import struct
    for version, ok in ((min(SPEC.runs), True), (SPEC.version + 1, False)):
        blob = bytearray(p.read_bytes())
        struct.pack_into("<I", blob, 32, version)
        if ok:
            assert B.Image.from_bytes(bytes(blob)).isa_version == version
        else:
            with pytest.raises(SdacError, match=f"compiled for ISA version {version}"):
                B.Image.from_bytes(bytes(blob))


def test_driver_checks_the_encoding_layout(bundle, monkeypatch):
    """The standalone driver computes a program's encoding fingerprint from the generated per-opcode tables as
    sdac.isa.spec does, and refuses a bundle whose META.isa_layout no version it runs gives."""
    import random

    import sdac.bundle as SB
    from sdac.isa.spec import layout_fingerprint
    rng = random.Random(3)
    codes = sorted(i.opcode for i in SPEC.instrs)
    for v in SPEC.runs:
        for _ in range(20):
            ops = set(rng.sample(codes, rng.randint(1, len(codes)))) | ({63} if rng.random() < 0.3 else set())
            assert B.layout_fingerprint(ops, v) == layout_fingerprint(SPEC, ops, v)
    assert B.Image.from_bytes(bundle.to_bytes()) == B.Image.from_bundle(bundle)
    monkeypatch.setattr(SB, "program_layout", lambda instrs, v: "0123456789abcdef")   # another isa.toml's writer
    with pytest.raises(SdacError, match="another layout of ISA version .* '0123456789abcdef'"):
        B.Image.from_bytes(bundle.to_bytes())


def test_host_conversion_matches_sdac_host(bundle):
    rng = np.random.default_rng(1)
    img = B.Image.from_bundle(bundle)
    for io, spec in zip(bundle.inputs, img.inputs):
        x = rng.normal(0, 3, io.shape).astype(np.float32)
        raw = B.to_lines(spec, x, 0, 20)
        assert raw == to_device(io, x, 0, 20)
        assert np.array_equal(B.from_lines(spec, raw, 0, 20), from_device(io, raw, 0, 20))


def test_start_busy_done_protocol(bundle):
    drv, dev, img = _driver(bundle, busy_polls=3)
    spy = Spy(dev)
    drv.port = spy
    x = _inputs(bundle)
    out = drv.step(x, 0)
    want = run_bundle(bundle, x)
    assert all(np.array_equal(out[k], want[k]) for k in want)
    writes = [(o, v) for k, o, v in spy.log if k == "w"]
    # STEP, START: nothing else (no acknowledge, no write-1-to-clear: START clears the status)
    assert writes == [(OFF["STEP"], 0), (OFF["CTRL"], BIT["CTRL_START"])]
    status = [v for k, o, v in spy.log if k == "r" and o == OFF["STATUS"]]
    assert [s & BIT["STATUS_BUSY"] for s in status].count(BIT["STATUS_BUSY"]) >= 3       # polled through BUSY
    assert status[-1] & BIT["STATUS_DONE"] and not status[-1] & BIT["STATUS_ERROR"]
    assert not any(s & BIT["STATUS_DONE"] and s & BIT["STATUS_BUSY"] for s in status)
    # every access is to a register the spec lists, with an access it allows
    by_off = {r.offset: r for r in SPEC.csr.values()}
    assert all(o in by_off and (by_off[o].readable if k == "r" else by_off[o].writable) for k, o, _ in spy.log)
    assert drv.last.retired == len(bundle.instrs) and drv.last.cycles == estimate(bundle).total_cycles
    assert dev.regs["INSTR_BASE"] == img.prog_addr >= bundle.dram_size
    assert dev.regs["INSTR_COUNT"] == len(bundle.instrs) and dev.regs["DRAM_SIZE"] == bundle.dram_size
    assert dev.read32(OFF["STATUS"]) == BIT["STATUS_DONE"]          # DONE stays set until the next START


def _bad_bundle(bundle, index, bad):
    import dataclasses
    instrs = list(bundle.instrs)
    instrs[index] = bad
    return dataclasses.replace(bundle, instrs=instrs)


def test_error_code_and_index(bundle):
    i = next(k for k, ins in enumerate(bundle.instrs) if ins.op == "load" and not ins.pop and not ins.push)
    bad = bundle.instrs[i].replace(dram=bundle.dram_size + 10_000_000)
    b = _bad_bundle(bundle, i, bad)
    drv, dev, _ = _driver(b)
    with pytest.raises(DeviceError) as e:
        drv.step(_inputs(b), 0)
    assert e.value.code == "OOB_DRAM" and e.value.index == i
    assert f"instruction {i}" in str(e.value)
    assert dev.read32(OFF["STATUS"]) == BIT["STATUS_DONE"] | BIT["STATUS_ERROR"]       # until the next START
    assert (dev.read32(OFF["ERROR"]), dev.read32(OFF["ERR_INDEX"])) == (SPEC.error_code("OOB_DRAM"), i)
    # the device keeps working: load the good program again
    drv.load(B.Image.from_bundle(bundle))
    out = drv.step(_inputs(bundle), 0)
    assert np.array_equal(out["y"], run_bundle(bundle, _inputs(bundle))["y"])


def test_bad_opcode_and_fetch_oob(bundle):
    drv, dev, img = _driver(bundle)
    word = 5
    dev.dram_write(img.prog_addr + word * 32, bytes([0x3F]) + bytes(31))       # opcode 63 names nothing
    with pytest.raises(DeviceError) as e:
        drv.run(0)
    assert (e.value.code, e.value.index) == ("BAD_OPCODE", word)
    drv.load(img)
    dev.write32(OFF["INSTR_COUNT"], 10)             # cut the program before its halt
    drv.write_inputs(_inputs(bundle), 0)
    with pytest.raises(DeviceError) as e:
        drv.run(0)
    assert (e.value.code, e.value.index) == ("FETCH_OOB", 10)


def test_timeout_then_busy(bundle):
    drv, dev, _ = _driver(bundle, hang=True)
    drv.timeout = 0.05
    drv.write_inputs(_inputs(bundle), 0)
    with pytest.raises(DeviceError, match="TIMEOUT"):
        drv.run(0)
    # no soft reset in the register map: the device stays BUSY and refuses the next START
    assert dev.starts == 1 and dev.read32(OFF["STATUS"]) == BIT["STATUS_BUSY"]
    with pytest.raises(DeviceError, match="BUSY"):
        drv.run(0)
    dev.write32(OFF["CTRL"], BIT["CTRL_START"])
    assert dev.starts == 1                          # START is ignored while BUSY, as in the RTL


def test_dram_size_bounds_dma(bundle):
    """DRAM_SIZE limits DMA (OOB_DRAM beyond it), as in the RTL; the driver sets it to the bundle's DRAM."""
    drv, dev, img = _driver(bundle)
    drv.write_inputs(_inputs(bundle), 0)
    dev.write32(OFF["DRAM_SIZE"], 64)
    with pytest.raises(DeviceError) as e:
        drv.run(0)
    assert e.value.code == "OOB_DRAM"
    drv.load(img)
    assert dev.read32(OFF["DRAM_SIZE"]) == bundle.dram_size
    drv.run(0)


def test_fake_device_implements_exactly_the_spec_map(bundle):
    dev = FakeDevice(bundle.machine, 1 << 16)
    for name, r in SPEC.csr.items():
        if r.access == "RW":
            dev.write32(r.offset, 0x1234_5678)
            assert dev.read32(r.offset) == 0x1234_5678, name
        elif r.access == "W":
            assert dev.read32(r.offset) == 0, name
        else:
            before = dev.read32(r.offset)
            dev.write32(r.offset, 0xFFFF_FFFF)       # ignored
            assert dev.read32(r.offset) == before, name
    for o in range(0, 1 << SPEC.csr_addr_bits, 4):
        if o not in OFF.values():
            dev.write32(o, 0xFFFF_FFFF)
            assert dev.read32(o) == 0, hex(o)
    m = bundle.machine
    assert SPEC.csr["ID"].unpack(dev.read32(OFF["ID"])) == {
        "VERSION": SPEC.version, "LANES": m.lanes, "ARRAY_ROWS": m.array_rows, "ARRAY_COLS": m.array_cols}
    assert dev.read32(OFF["STATUS"]) == 0           # after reset: not done, not busy


def test_unsupported_is_refused_unless_allowed(bundle):
    drv, dev, _ = _driver(bundle)

    class Unsupported(Spy):
        def read32(self, o):
            v = self.dev.read32(o)
            return v | BIT["STATUS_UNSUPPORTED"] if o == OFF["STATUS"] and v & BIT["STATUS_DONE"] else v
    drv.port = Unsupported(dev)
    drv.write_inputs(_inputs(bundle), 0)
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        drv.run(0)
    drv.allow_unsupported = True
    assert drv.run(0).retired == len(bundle.instrs)


def test_identity_and_memory_checks(bundle):
    img = B.Image.from_bundle(bundle)
    other = FakeDevice(DEFAULT.with_array("4x2"), img.device_bytes)
    with pytest.raises(DeviceError, match="MISMATCH"):
        B.Driver(other).load(img)
    small = FakeDevice(bundle.machine, img.device_bytes - 1)
    with pytest.raises(DeviceError, match="NO_MEMORY"):
        B.Driver(small).load(img)

    class Nothing:
        dram_size = 1 << 20
        def read32(self, o): return 0xFFFFFFFF
    with pytest.raises(DeviceError, match="NO_DEVICE"):
        B.Driver(Nothing()).load(img)
    Nothing.read32 = lambda self, o: 0
    with pytest.raises(DeviceError, match="NO_DEVICE"):
        B.Driver(Nothing()).load(img)
    # same lanes, another array shape: the ID names it
    import dataclasses
    wide = dataclasses.replace(bundle.machine, array_cols=bundle.machine.array_cols + 1)
    with pytest.raises(DeviceError, match="MISMATCH"):
        B.Driver(FakeDevice(wide, img.device_bytes)).load(img)
    assert B.Driver(FakeDevice(bundle.machine, img.device_bytes)).identify() == B.DeviceId(
        SPEC.version, bundle.machine.lanes, bundle.machine.array_rows, bundle.machine.array_cols)


def test_isa_versions_a_device_runs(bundle):
    """A device of this version runs bundles of the versions it lists as running unchanged ([isa] runs); an
    older device refuses a bundle of a newer version (it may hold instructions the device lacks)."""
    img = B.Image.from_bundle(bundle)

    class Version(FakeDevice):
        def __init__(self, version, *a):
            super().__init__(*a)
            self.version = version

        def read32(self, o):
            v = super().read32(o)
            if o == OFF["ID"]:
                v = (v & ~0xFF) | self.version
            return v
    older = min(SPEC.runs)
    assert older < SPEC.version                 # (this version runs an older one's programs)
    B.Driver(Version(SPEC.version, bundle.machine, img.device_bytes)).load(
        dataclasses.replace(img, isa_version=older))
    with pytest.raises(DeviceError, match=f"implements ISA version {older} .* needs version {SPEC.version}"):
        B.Driver(Version(older, bundle.machine, img.device_bytes)).load(img)
    with pytest.raises(DeviceError, match="MISMATCH"):
        B.Driver(Version(SPEC.version + 1, bundle.machine, img.device_bytes)).load(img)   # unknown to us
    # an image made in memory says the oldest version that runs its program, as a bundle's header does: the
    # compiled slice uses version-2 instructions (deqact), a program without them loads on a version-1 device
    from sdac.isa.encoding import needed_version
    assert img.isa_version == SPEC.version == max(map(needed_version, bundle.instrs))
    v1 = dataclasses.replace(bundle, instrs=[i for i in bundle.instrs if needed_version(i) == older], debug=[])
    img1 = B.Image.from_bundle(v1)
    assert img1.isa_version == older and B.Image.from_bytes(v1.to_bytes()).isa_version == older
    B.Driver(Version(older, bundle.machine, img1.device_bytes)).load(img1)


def test_pynq_port_end_to_end(bundle):
    img = B.Image.from_bundle(bundle)
    dev = FakeDevice(bundle.machine, img.device_bytes + (1 << 20))
    pynq = fake_pynq(dev)
    drv = B.open_board(img, "sdac.bit", pynq_module=pynq)
    x = _inputs(bundle, 2)
    out = drv.step(x, 0)
    assert np.array_equal(out["y"], run_bundle(bundle, x)["y"])
    assert pynq.Buffer.flushed >= 3 and pynq.Buffer.invalidated >= 1
    assert isinstance(drv.port, B.PynqPort) and drv.port.physical_base == 0x7000_0000
    # raw MMIO address and the interrupt path
    drv2 = B.open_board(img, "sdac.bit", pynq_module=pynq, irq="sdac_irq")
    assert drv2.irq is not None
    out = drv2.step(x, 0)
    assert np.array_equal(out["y"], run_bundle(bundle, x)["y"])
    assert pynq.Interrupt.waited == 1 and dev.interrupt.waited == 1
    port = B.PynqPort(csr_base=0xA000_0000, dram_bytes=img.device_bytes, pynq_module=pynq)
    drv3 = B.Driver(port, poll=0)
    drv3.load(img)
    assert np.array_equal(drv3.step(x, 0)["y"], out["y"])
    with pytest.raises(SdacError, match="no IP named"):
        B.open_board(img, "sdac.bit", ip="nope", pynq_module=pynq)


def test_board_without_pynq_says_so(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", None)
    from sdac.runtime.device import Device
    with pytest.raises(SdacError, match="needs the pynq package"):
        Device.open(bundle, backend="board", overlay="sdac.bit")


def test_standalone_copy_imports_without_sdac(tmp_path):
    """Copied next to the runner (no package), board.py falls back to its own error classes and takes the
    register map from the csr_map.py copied beside it."""
    import shutil
    from pathlib import Path
    shutil.copy(Path(B.__file__), tmp_path / "board.py")
    shutil.copy(Path(B.CSR.__file__), tmp_path / "csr_map.py")
    code = ("import board, sys; e = board.DeviceError('OOB_DRAM', 'x', 7); "
            "assert e.code == 'OOB_DRAM' and e.index == 7 and 'instruction 7' in str(e); "
            f"assert board.CSR.REGISTERS == {B.CSR.REGISTERS!r}; "
            "assert 'sdac' not in sys.modules, sorted(m for m in sys.modules if m.startswith('sdac'))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
