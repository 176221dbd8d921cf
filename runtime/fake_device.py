"""An in-process fake accelerator: the CSR map of isa/isa.toml [csr] (``SPEC.csr``) on the golden model.

``FakeDevice(machine, dram_bytes)`` is a ``RegisterPort`` (sdac/runtime/board.py): the
register-level driver that runs the RTL co-simulation and the board runs
against it unchanged, so start / done / error / timeout paths are tested
without hardware. It implements exactly the registers the spec lists (offsets
and bits from ``SPEC.csr``, as the RTL's from the generated package), as
hw/rtl/sdac_csr.sv and sdac_top.sv do:

* CTRL.START (W; reads 0) runs INSTR_COUNT words at INSTR_BASE of the fake's
  memory on the golden model with CSR STEP, DMA limited to [0, DRAM_SIZE)
  (else OOB_DRAM); ignored while BUSY. START clears the previous run's status
  and counters; there is no soft reset, interrupt enable or write-1-to-clear.
* STATUS (R): BUSY for the first ``busy_polls`` reads after START (the run
  itself is synchronous), then DONE, plus ERROR if the run stopped on an error;
  DONE stays set until the next START. UNSUPPORTED is never set (the golden
  model implements every instruction).
* ERROR / ERR_INDEX: the golden model's DeviceError (code number from
  isa.toml, instruction index); a program running past the memory is FETCH_OOB.
* EXECUTED: executed instructions (halt included); after an error, the error's index.
* CYCLES_LO/HI: the cycle model's estimate of the program (sdac.perf), so the
  fake reports plausible cycle counts.
* ID: VERSION | LANES | ARRAY_ROWS | ARRAY_COLS of the machine.
* INSTR_BASE, INSTR_COUNT, STEP, DRAM_SIZE (RW): plain registers, 0 after reset.
Offsets the spec does not list read 0 and ignore writes. ``interrupt`` stands in for
the irq_done line (it follows STATUS.DONE). ``hang=True`` makes START never finish
(for timeout tests): the device then stays BUSY, as hardware would.
"""
from __future__ import annotations

import types

import numpy as np

from ..errors import DeviceError
from ..isa.machine import Machine
from ..isa.spec import SPEC
from .golden import Golden, prepare

CSR = SPEC.csr
BY_OFFSET = {r.offset: r for r in CSR.values()}
OFF = {name: r.offset for name, r in CSR.items()}
# registers whose value the fake computes (the RW ones are plain storage)
COMPUTED = ("STATUS", "ERROR", "ERR_INDEX", "EXECUTED", "CYCLES_LO", "CYCLES_HI", "ID")


class FakeInterrupt:
    """Stands in for a PYNQ Interrupt on irq_done: wait() returns while STATUS.DONE is set."""

    def __init__(self, dev: "FakeDevice"):
        self.dev = dev
        self.waited = 0

    def wait(self) -> None:
        if not self.dev.done and not self.dev.hang:
            raise AssertionError("interrupt waited for without a run that will finish (it would block forever)")
        self.waited += 1


class FakeDevice:
    def __init__(self, machine: Machine, dram_bytes: int, *, busy_polls: int = 2, hang: bool = False,
                 model_cycles: bool = True):
        self.machine = machine
        self.golden = Golden(machine, dram_bytes)
        self.mem = self.golden.dram                 # all device memory; a run's DMA sees mem[:DRAM_SIZE]
        self.dram_size = dram_bytes
        self.busy_polls = busy_polls
        self.hang = hang
        self.model_cycles = model_cycles
        self.regs = {name: 0 for name, r in CSR.items() if r.access == "RW"}
        unhandled = {n for n, r in CSR.items() if r.readable and n not in self.regs and n not in COMPUTED}
        unhandled |= {n for n, r in CSR.items() if r.writable and n not in self.regs and n != "CTRL"}
        if unhandled:
            raise NotImplementedError(f"fake device: isa.toml [csr] registers not implemented: {sorted(unhandled)}")
        self.interrupt = FakeInterrupt(self)
        self.starts = 0
        self._cache: tuple[bytes, object, int] | None = None
        self._clear()

    def _clear(self) -> None:
        self.busy = 0                               # STATUS reads left that report BUSY
        self.running = False                        # a hung run (hang=True)
        self.done = False
        self.error_code = self.error_index = self.executed = self.cycles = 0

    def _busy(self) -> bool:
        return self.busy > 0 or self.running

    # ---------------------------------------------------------------- RegisterPort
    def read32(self, offset: int) -> int:
        reg = BY_OFFSET.get(offset)
        if reg is None or not reg.readable:
            return 0
        name = reg.name
        if name in self.regs:
            return self.regs[name]
        if name == "STATUS":
            busy = self._busy()
            if self.busy > 0:
                self.busy -= 1
            settled = self.done and not busy
            return reg.pack(DONE=int(settled), BUSY=int(busy), ERROR=int(settled and self.error_code != 0))
        if name == "ID":
            m = self.machine
            return reg.pack(VERSION=SPEC.version, LANES=m.lanes, ARRAY_ROWS=m.array_rows, ARRAY_COLS=m.array_cols)
        value = {"ERROR": self.error_code, "ERR_INDEX": self.error_index, "EXECUTED": self.executed,
                 "CYCLES_LO": self.cycles, "CYCLES_HI": self.cycles >> 32}[name]
        return value & 0xFFFFFFFF

    def write32(self, offset: int, value: int) -> None:
        value &= 0xFFFFFFFF
        reg = BY_OFFSET.get(offset)
        if reg is None or not reg.writable:
            return
        if reg.name == "CTRL":
            if reg.field("START").get(value) and not self._busy():
                self._start()
        else:
            self.regs[reg.name] = value

    def dram_write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.dram_size:
            raise IndexError(f"fake device: DRAM write [{addr:#x}, {addr + len(data):#x}) outside {self.dram_size:#x}")
        self.mem[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)

    def dram_read(self, addr: int, n: int) -> bytes:
        if addr < 0 or addr + n > self.dram_size:
            raise IndexError(f"fake device: DRAM read [{addr:#x}, {addr + n:#x}) outside {self.dram_size:#x}")
        return self.mem[addr:addr + n].tobytes()

    # ---------------------------------------------------------------- execution
    def _program(self, addr: int, count: int):
        wb = SPEC.word_bytes
        end = min(addr + count * wb, self.dram_size)
        nwords = max(0, (end - addr) // wb)
        text = self.mem[addr:addr + nwords * wb].tobytes()
        if self._cache is None or self._cache[0] != text:
            prepared = prepare(text)                 # raises BAD_OPCODE / BAD_FIELD with the index
            cycles = 0
            if self.model_cycles:
                try:
                    from ..perf.model import estimate
                    cycles = estimate([_instr(d) for d in prepared.instrs], self.machine).total_cycles
                except DeviceError:
                    cycles = 0
            self._cache = (text, prepared, cycles)
        return self._cache[1], self._cache[2], nwords

    def _start(self) -> None:
        self._clear()
        self.starts += 1
        if self.hang:
            self.running = True
            return
        self.busy = self.busy_polls
        r = self.regs
        self.golden.dram = self.mem[:min(r["DRAM_SIZE"], self.dram_size)]     # DMA bound = DRAM_SIZE
        try:
            prepared, cycles, nwords = self._program(r["INSTR_BASE"], r["INSTR_COUNT"])
            res = self.golden.run(prepared, step=r["STEP"])
            self.executed, self.cycles = res.instructions, cycles
        except DeviceError as e:
            self.error_code = SPEC.errors[e.code][0] if e.code in SPEC.errors else 0xFF
            self.error_index = e.index if e.index is not None else 0
            self.executed = self.error_index
        finally:
            self.golden.dram = self.mem
        self.done = True


def fake_pynq(dev: FakeDevice):
    """A stand-in for the pynq package whose MMIO, contiguous buffer and interrupt are the fake device's
    (Overlay(path).sdac_0.mmio, Overlay.sdac_irq, MMIO(base, span), allocate(shape, dtype)): runs the
    board code path (PynqPort, the deploy runner) in-process."""
    class Buffer(np.ndarray):
        physical_address = 0x7000_0000
        flushed = invalidated = 0

        def flush(self):
            type(self).flushed += 1

        def invalidate(self):
            type(self).invalidated += 1

        def freebuffer(self):
            pass

    class MMIO:
        def __init__(self, base, span):
            assert span >= max(OFF.values()) + 4
        def read(self, o): return dev.read32(o)
        def write(self, o, v): dev.write32(o, v)

    class IP:
        mmio = MMIO(0, 0x1000)

    class Interrupt:                         # pynq.Interrupt.wait() is a coroutine
        waited = 0

        async def wait(self):
            type(self).waited += 1
            dev.interrupt.wait()

    class Overlay:
        def __init__(self, path):
            self.path = path
            self.sdac_0 = IP()
            self.sdac_irq = Interrupt()

    def allocate(shape, dtype):
        assert dtype == np.uint8 and shape[0] <= dev.dram_size
        return dev.mem[:shape[0]].view(Buffer)

    return types.SimpleNamespace(MMIO=MMIO, Overlay=Overlay, allocate=allocate, Buffer=Buffer, Interrupt=Interrupt)


def _instr(d):
    from ..isa.encoding import Instr
    from .golden import QUEUES
    return Instr(d.op, d.a, frozenset(QUEUES[q] for q in d.pops), frozenset(QUEUES[q] for q in d.pushes))
