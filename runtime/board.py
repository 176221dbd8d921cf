"""Register-level driver of the sdac accelerator, and its PYNQ port for Zynq UltraScale+ boards.

This file drives the accelerator through its AXI-Lite control/status registers
(isa/isa.toml [csr], docs/isa.md "Control and status registers"): load the
bundle's DRAM image and program, write INSTR_BASE / INSTR_COUNT / DRAM_SIZE and
STEP, START, poll STATUS (or wait for the irq_done interrupt) until DONE, read
ERROR / ERR_INDEX, EXECUTED and CYCLES. The same ``Driver`` runs against any
``RegisterPort``: the RTL co-simulation, the in-process fake device
(sdac/runtime/fake_device.py) and a board (``PynqPort``).

It is self-contained on purpose (numpy and the standard library; pynq is
imported lazily by ``PynqPort``): ``sdac deploy`` copies it, with the generated
register map ``csr_map.py`` (``python -m sdac.isa.gen`` from isa.toml), next to
the on-board runner, where sdac itself is not installed. Inside sdac it raises
``sdac.errors.DeviceError``; standalone, a local class of the same shape.
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

try:                                            # inside the sdac package
    from ..errors import DeviceError, SdacError
except ImportError:                             # copied onto a board without sdac
    class SdacError(Exception):
        exit_code = 2

    class DeviceError(SdacError):
        exit_code = 1

        def __init__(self, code: str, message: str, index: int | None = None):
            self.code, self.index = code, index
            where = f"instruction {index}: " if index is not None else ""
            super().__init__(f"{code}: {where}{message}")

# The register map and the ISA constants, generated from isa/isa.toml (never written here by hand).
try:                                            # inside the sdac package
    from . import csr_map as CSR
except ImportError:                             # on a board: csr_map.py next to this file
    import csr_map as CSR

ERROR_NAMES = CSR.ERROR_NAMES
ISA_VERSION = CSR.ISA_VERSION
ISA_RUNS = CSR.ISA_RUNS         # versions whose programs version ISA_VERSION runs unchanged
WORD_BYTES = CSR.WORD_BYTES
PROG_ALIGN = 4096


def layout_fingerprint(opcodes, version: int) -> str:
    """A program's encoding fingerprint from the generated per-opcode layouts (as sdac.isa.spec computes it):
    META.isa_layout of a bundle this driver decodes the same way."""
    import hashlib
    ops = CSR.ISA_OP_LAYOUTS.get(version, {})
    text = "\n".join([CSR.ISA_LAYOUT_BASE] + ["%d:%s" % (c, ops.get(c, "unknown")) for c in sorted(set(opcodes))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_opcodes(text: bytes) -> set:
    mask = (1 << CSR.OPCODE_BITS) - 1
    return {b & mask for b in set(memoryview(text)[::WORD_BYTES])}


class RegisterPort(Protocol):
    """What the driver needs from a device: 32-bit CSR access and device DRAM access (device addresses)."""

    dram_size: int                                      # bytes of device DRAM reachable from address 0

    def read32(self, offset: int) -> int: ...
    def write32(self, offset: int, value: int) -> None: ...
    def dram_write(self, addr: int, data: bytes) -> None: ...
    def dram_read(self, addr: int, n: int) -> bytes: ...


# ---------------------------------------------------------------- bundle image (no sdac needed)

@dataclass
class IOSpec:
    name: str
    shape: tuple
    dtype: str
    layout: str
    dram: int
    rows: int
    cols: int
    scales: tuple

    def nbytes(self, lanes: int) -> int:
        return self.rows * (-(-self.cols // lanes)) * lanes


@dataclass
class Image:
    """What a device needs from a bundle: memory map, DRAM contents, program words, IO descriptions."""

    lanes: int
    isa_version: int
    dram_size: int
    data_base: int
    data: bytes
    step_base: int
    step_table: bytes
    n_steps: int
    text: bytes
    inputs: list
    outputs: list
    machine: dict

    @property
    def n_instrs(self) -> int:
        return len(self.text) // WORD_BYTES

    @property
    def prog_addr(self) -> int:
        """The program words go right after the bundle's DRAM (rounded up to 4 KiB)."""
        return -(-self.dram_size // PROG_ALIGN) * PROG_ALIGN

    @property
    def device_bytes(self) -> int:
        return self.prog_addr + len(self.text)

    @staticmethod
    def from_bundle(b) -> "Image":
        """From an sdac.bundle.Bundle (inside sdac)."""
        from dataclasses import asdict
        from ..isa.encoding import encode_program, program_version
        io = lambda t: IOSpec(t.name, tuple(t.shape), t.dtype, t.layout, t.dram, t.rows, t.cols,  # noqa: E731
                              tuple(t.scales))
        # the version the bundle's header would say (the oldest that runs the program), not this driver's
        return Image(b.machine.lanes, program_version(b.instrs), b.dram_size, b.data_base, bytes(b.data), b.step_base,
                     bytes(b.step_table), b.n_steps, encode_program(b.instrs), [io(t) for t in b.inputs],
                     [io(t) for t in b.outputs], asdict(b.machine))

    @staticmethod
    def from_file(path) -> "Image":
        with open(path, "rb") as f:
            return Image.from_bytes(f.read(), str(path))

    @staticmethod
    def from_bytes(blob: bytes, name: str = "<bytes>") -> "Image":
        """Minimal .sdab reader (header, section table, CRCs, META); sdac.bundle has the full checks."""
        def fail(msg):
            raise SdacError(f"{name}: {msg}")
        if blob[:8] != b"SDAB\x00\r\n\x1a":
            fail("not an sdac bundle (bad magic number)")
        if len(blob) < 64:
            fail("truncated")
        _, version, hsize, count, _, toff, fsize, isa_version, table_crc = struct.unpack_from("<8sHHIIIQII", blob)
        if version != 1 or fsize != len(blob) or count > 8:
            fail(f"unsupported or truncated bundle (format {version}, {fsize} bytes in header, {len(blob)} in file)")
        if isa_version not in ISA_RUNS:
            fail(f"compiled for ISA version {isa_version}, this driver implements {ISA_VERSION} (and runs "
                 f"versions {', '.join(map(str, ISA_RUNS))})")
        table = blob[toff:toff + 32 * count]
        if zlib.crc32(table) != table_crc:
            fail("corrupted: section table CRC mismatch")
        sec = {}
        for i in range(count):
            kind, _, off, size, crc, _ = struct.unpack_from("<4sIQQII", table, 32 * i)
            payload = blob[off:off + size]
            if len(payload) != size or zlib.crc32(payload) != crc:
                fail(f"corrupted: section {kind.decode('latin-1')} CRC mismatch")
            sec[kind] = payload
        for k in (b"META", b"TEXT", b"DATA", b"STEP"):
            if k not in sec:
                fail(f"missing section {k.decode()}")
        m = json.loads(sec[b"META"].decode("utf-8"))
        layout = m.get("isa_layout")
        if layout is not None and layout not in {layout_fingerprint(text_opcodes(sec[b"TEXT"]), v) for v in ISA_RUNS}:
            fail(f"TEXT was encoded with another layout of ISA version {isa_version} than this driver's "
                 f"(isa_layout {layout!r}): they come from different isa/isa.toml files; recompile the model and "
                 f"deploy the driver of the same sdac")
        io = lambda d: IOSpec(d["name"], tuple(d["shape"]), d["dtype"], d["layout"], d["dram"], d["rows"],  # noqa
                              d["cols"], tuple(d["scales"]))
        return Image(m["machine"]["lanes"], isa_version, m["dram_size"], m["data_base"], sec[b"DATA"],
                     m["step_base"], sec[b"STEP"], m["n_steps"], sec[b"TEXT"], [io(d) for d in m["inputs"]],
                     [io(d) for d in m["outputs"]], m["machine"])


# ---------------------------------------------------------------- host tensors (as sdac.runtime.host)

def _scale(io: IOSpec, step: int) -> float:
    s = io.scales
    if not s:
        raise SdacError(f"tensor {io.name!r} has no quantization scale")
    if len(s) == 1:
        return float(s[0])
    if not 0 <= step < len(s):
        raise SdacError(f"tensor {io.name!r}: step {step} is outside 0..{len(s) - 1}")
    return float(s[step])


def to_lines(io: IOSpec, x, step: int, lanes: int) -> bytes:
    """Float host tensor -> int8 device lines (NCHW -> NHWC rows; q = clip(round(x / scale)))."""
    x = np.asarray(x)
    if tuple(x.shape) != tuple(io.shape):
        raise SdacError(f"input {io.name!r}: expected shape {tuple(io.shape)}, got {tuple(x.shape)}")
    if io.layout == "nchw":
        x = np.moveaxis(x, 1, -1)
    m = x.reshape(io.rows, io.cols)
    q = np.clip(np.round(np.asarray(m, np.float64) / _scale(io, step)), -128, 127).astype(np.int8)
    lines = np.zeros((io.rows, -(-io.cols // lanes) * lanes), np.int8)
    lines[:, :io.cols] = q
    return lines.tobytes()


def from_lines(io: IOSpec, raw: bytes, step: int, lanes: int) -> np.ndarray:
    width = -(-io.cols // lanes) * lanes
    a = np.frombuffer(raw, np.int8, io.rows * width).reshape(io.rows, width)[:, :io.cols]
    m = a.astype(np.float32) * np.float32(_scale(io, step))
    shape = tuple(io.shape)
    if io.layout == "nchw":
        m = np.moveaxis(m.reshape(shape[0], *shape[2:], shape[1]), -1, 1)
    return np.ascontiguousarray(m.reshape(shape)).astype(io.dtype or "float32", copy=False)


# ---------------------------------------------------------------- the driver

@dataclass
class RunInfo:
    step: int
    cycles: int                 # CSR CYCLES_HI:CYCLES_LO (device clock cycles from START to DONE)
    retired: int                # CSR EXECUTED (instructions executed, halt included)
    seconds: float              # host wall time from START to DONE


@dataclass(frozen=True)
class DeviceId:
    """The CSR ID fields."""
    version: int
    lanes: int
    array_rows: int
    array_cols: int


def _field(value: int, name: str) -> int:
    lsb, bits = getattr(CSR, f"{name}_LSB"), getattr(CSR, f"{name}_BITS")
    return (value >> lsb) & ((1 << bits) - 1)


class Driver:
    """Load a bundle image, run steps, read outputs, over any RegisterPort.

    The register block has no soft reset, interrupt enable or write-1-to-clear: START clears the
    previous run's STATUS and counters, and STATUS.DONE stays set until the next START. ``irq``: an
    optional object with ``.wait()`` (a PYNQ interrupt wired to irq_done) waited on before polling.
    ``allow_unsupported``: accept runs that set STATUS.UNSUPPORTED (a hardware build that skipped
    instructions; outputs are then wrong, cycle counts still useful), else DeviceError UNSUPPORTED.
    """

    def __init__(self, port: RegisterPort, *, timeout: float = 60.0, poll: float = 0.0005, irq=None,
                 allow_unsupported: bool = False):
        self.port = port
        self.timeout = timeout
        self.poll = poll
        self.irq = irq
        self.allow_unsupported = allow_unsupported
        self.image: Image | None = None
        self.last: RunInfo | None = None

    def identify(self) -> DeviceId:
        """The ID register's fields; raises if the register block does not look like an sdac accelerator."""
        v = self.port.read32(CSR.ID)
        ident = DeviceId(_field(v, "ID_VERSION"), _field(v, "ID_LANES"), _field(v, "ID_ARRAY_ROWS"),
                         _field(v, "ID_ARRAY_COLS"))
        if v == 0xFFFFFFFF or 0 in (ident.version, ident.lanes, ident.array_rows, ident.array_cols):
            raise DeviceError("NO_DEVICE", f"ID register reads {v:#010x}, not an sdac accelerator "
                              "(version | lanes << 8 | array rows << 16 | array columns << 24, none zero)")
        return ident

    def reset(self) -> None:
        """Forget the previous run. The accelerator has no soft reset (a hung device needs the PL reset or
        the bitstream reloaded); START clears its status, so there is nothing to write."""
        self.last = None

    def load(self, image: Image) -> None:
        ident = self.identify()
        want = DeviceId(image.isa_version, image.lanes, int(image.machine.get("array_rows", ident.array_rows)),
                        int(image.machine.get("array_cols", ident.array_cols)))
        # a device of a later version this driver knows runs the older bundle's program unchanged
        runs = ident.version in ISA_RUNS and image.isa_version in ISA_RUNS and image.isa_version <= ident.version
        if not runs or (ident.lanes, ident.array_rows, ident.array_cols) != (want.lanes, want.array_rows,
                                                                            want.array_cols):
            raise DeviceError("MISMATCH", f"the device implements ISA version {ident.version} with {ident.lanes} "
                              f"lanes and a {ident.array_rows}x{ident.array_cols} array, the bundle needs version "
                              f"{want.version} with {want.lanes} lanes and a {want.array_rows}x{want.array_cols} "
                              "array")
        if image.device_bytes > self.port.dram_size:
            raise DeviceError("NO_MEMORY", f"the bundle needs {image.device_bytes} bytes of device DRAM "
                              f"(program included), the device buffer has {self.port.dram_size}")
        # The RW registers take writes while a run is in flight (the fetch reads INSTR_COUNT live) and
        # its DMA would read the new image half-written: never load under a running (or hung) program.
        if self.port.read32(CSR.STATUS) & CSR.STATUS_BUSY:
            raise DeviceError("BUSY", "the accelerator is still running a program (a hung run needs the PL "
                              "reset or the bitstream reloaded before a new load)")
        self.port.dram_write(image.data_base, image.data)
        self.port.dram_write(image.step_base, image.step_table)
        self.port.dram_write(image.prog_addr, image.text)
        self.port.write32(CSR.INSTR_BASE, image.prog_addr)
        self.port.write32(CSR.INSTR_COUNT, image.n_instrs)
        self.port.write32(CSR.DRAM_SIZE, image.dram_size)        # DMA stays in the bundle's DRAM
        self.image = image

    def _need(self) -> Image:
        if self.image is None:
            raise SdacError("no bundle loaded (call load first)")
        return self.image

    def write_inputs(self, inputs: dict, step: int) -> None:
        img = self._need()
        want = {t.name for t in img.inputs}
        missing, extra = want - set(inputs), set(inputs) - want
        if missing or extra:
            raise SdacError(f"inputs: missing {sorted(missing)}, unexpected {sorted(extra)} "
                            f"(the bundle takes {sorted(want)})")
        for t in img.inputs:
            self.port.dram_write(t.dram, to_lines(t, inputs[t.name], step, img.lanes))

    def read_outputs(self, step: int) -> dict:
        img = self._need()
        return {t.name: from_lines(t, self.port.dram_read(t.dram, t.nbytes(img.lanes)), step, img.lanes)
                for t in img.outputs}

    def start(self, step: int) -> None:
        img = self._need()
        if not 0 <= step < max(1, img.n_steps):
            raise SdacError(f"step {step} is outside 0..{img.n_steps - 1}")
        p = self.port
        if p.read32(CSR.STATUS) & CSR.STATUS_BUSY:
            raise DeviceError("BUSY", "the accelerator is still running a program (START would be ignored)")
        p.write32(CSR.STEP, step)
        p.write32(CSR.CTRL, CSR.CTRL_START)

    def wait(self, step: int, t0: float) -> RunInfo:
        p = self.port
        deadline = t0 + self.timeout
        if self.irq is not None:
            self.irq.wait()
        while True:
            s = p.read32(CSR.STATUS)
            if s & CSR.STATUS_DONE and not s & CSR.STATUS_BUSY:
                break
            if time.perf_counter() > deadline:
                raise DeviceError("TIMEOUT", f"no DONE after {self.timeout:g} s (STATUS {s:#x}); the accelerator "
                                  "has no soft reset: reset the PL or reload the bitstream")
            if self.poll:
                time.sleep(self.poll)
        executed = p.read32(CSR.EXECUTED)
        if s & CSR.STATUS_ERROR:
            code = p.read32(CSR.ERROR)
            index = p.read32(CSR.ERR_INDEX)
            name = ERROR_NAMES.get(code, f"ERROR_{code}")
            raise DeviceError(name, f"the accelerator stopped with error code {code} ({name}) after "
                              f"{executed} executed instructions", index)
        if s & CSR.STATUS_UNSUPPORTED and not self.allow_unsupported:
            raise DeviceError("UNSUPPORTED", "the hardware skipped instructions this build does not implement "
                              "(outputs are wrong; pass allow_unsupported=True to time the program anyway)")
        cycles = p.read32(CSR.CYCLES_LO) | (p.read32(CSR.CYCLES_HI) << 32)
        info = RunInfo(step, cycles, executed, time.perf_counter() - t0)
        self.last = info
        return info

    def run(self, step: int = 0) -> RunInfo:
        t0 = time.perf_counter()
        self.start(step)
        return self.wait(step, t0)

    def step(self, inputs: dict, step: int = 0) -> dict:
        self.write_inputs(inputs, step)
        self.run(step)
        return self.read_outputs(step)


# ---------------------------------------------------------------- PYNQ (Zynq UltraScale+)

def import_pynq():
    try:
        import pynq
    except ImportError:
        raise SdacError("the board backend needs the pynq package: run on a PYNQ image for Zynq UltraScale+ "
                        "(e.g. ZCU102/ZCU104), or use backend='golden' / 'fake' off-board") from None
    return pynq


class PynqPort:
    """RegisterPort on a PYNQ board: MMIO for the AXI-Lite CSRs, one contiguous buffer as device DRAM.

    The buffer is allocated with pynq.allocate (physically contiguous, CMA); device address 0 is its
    first byte (``physical_base``, which the accelerator's AXI master must add: see docs/deploy.md).
    ``overlay``: a bitstream path or a loaded pynq.Overlay; ``ip``: the CSR block's name in the overlay
    (or ``csr_base`` for a raw MMIO physical address); ``irq``: the overlay's interrupt name (optional).
    """

    def __init__(self, overlay=None, *, ip: str = "sdac_0", csr_base: int | None = None, dram_bytes: int,
                 irq: str | None = None, pynq_module=None):
        pynq = pynq_module or import_pynq()
        self.pynq = pynq
        if csr_base is not None:
            self.mmio = pynq.MMIO(csr_base, CSR.CSR_SPAN)
            self.overlay = None
        else:
            ov = pynq.Overlay(overlay) if isinstance(overlay, str) or overlay is None else overlay
            self.overlay = ov
            try:
                self.mmio = getattr(ov, ip).mmio
            except AttributeError:
                raise SdacError(f"the overlay has no IP named {ip!r} (pass ip=... or csr_base=...)") from None
        self.buf = pynq.allocate(shape=(dram_bytes,), dtype=np.uint8)
        self.dram_size = dram_bytes
        self.physical_base = int(getattr(self.buf, "physical_address", getattr(self.buf, "device_address", 0)))
        self.interrupt = getattr(self.overlay, irq) if (irq and self.overlay is not None) else None

    def read32(self, offset: int) -> int:
        return int(self.mmio.read(offset)) & 0xFFFFFFFF

    def write32(self, offset: int, value: int) -> None:
        self.mmio.write(offset, int(value) & 0xFFFFFFFF)

    def dram_write(self, addr: int, data: bytes) -> None:
        self.buf[addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        self.buf.flush()                       # caches -> DRAM before the accelerator reads

    def dram_read(self, addr: int, n: int) -> bytes:
        self.buf.invalidate()                  # drop stale cache lines after the accelerator wrote
        return bytes(self.buf[addr:addr + n])

    def close(self) -> None:
        self.buf.freebuffer()


class _IrqWaiter:
    """Blocks on a PYNQ interrupt (asyncio) with the driver's timeout."""

    def __init__(self, interrupt, timeout: float):
        self.interrupt, self.timeout = interrupt, timeout

    def wait(self) -> None:
        import asyncio

        async def w():
            await asyncio.wait_for(self.interrupt.wait(), self.timeout)
        try:
            asyncio.run(w())
        except asyncio.TimeoutError:
            pass                               # the STATUS poll that follows reports the timeout


def open_board(image: Image, overlay=None, *, ip: str = "sdac_0", csr_base: int | None = None,
               irq: str | None = None, timeout: float = 60.0, slack: int = 1 << 20, pynq_module=None,
               allow_unsupported: bool = False) -> Driver:
    """A Driver on a PYNQ board with the image loaded (buffer = the bundle's DRAM + program + slack)."""
    port = PynqPort(overlay, ip=ip, csr_base=csr_base, dram_bytes=image.device_bytes + slack, irq=irq,
                    pynq_module=pynq_module)
    waiter = _IrqWaiter(port.interrupt, timeout) if port.interrupt is not None else None
    drv = Driver(port, timeout=timeout, irq=waiter, allow_unsupported=allow_unsupported)
    drv.reset()
    drv.load(image)
    return drv
