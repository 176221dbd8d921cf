"""An in-process fake accelerator: the CSR map of INTERFACES.md on top of the golden model.

``FakeDevice(machine, dram_bytes)`` is a ``RegisterPort`` (sdac/runtime/board.py): the
register-level driver that runs the RTL co-simulation and the board runs
against it unchanged, so start / done / error / timeout paths are tested
without hardware. Behaviour, register by register:

* CTRL (W): bit0 START decodes PROG_COUNT words at PROG_ADDR from the fake's
  DRAM and runs them on the golden model with CSR STEP (ignored while BUSY);
  bit1 IRQ_EN arms ``interrupt`` for that run; bit2 SOFT_RESET clears
  BUSY/DONE/ERROR, ERROR_CODE/INDEX, RETIRED and CYCLES.
* STATUS (R): BUSY for the first ``busy_polls`` reads after START (the run
  itself is synchronous), then DONE or ERROR (sticky; write 1 to clear).
* ERROR_CODE / ERROR_INDEX: the golden model's DeviceError (code number from
  isa.toml, instruction index); a program running past the DRAM is FETCH_OOB.
* RETIRED: executed instructions (halt included); after an error, the error's index.
* CYCLES_LO/HI: the cycle model's estimate of the program (sdac.perf), so the
  fake reports plausible cycle counts.
* ID: 0x5DAC0000 | ISA version << 8 | lanes.
``hang=True`` makes START never finish (for timeout tests).
"""
from __future__ import annotations

import types

import numpy as np

from ..errors import DeviceError
from ..isa.machine import Machine
from ..isa.spec import SPEC
from . import board as B
from .golden import Golden, prepare


class FakeInterrupt:
    """Stands in for a PYNQ Interrupt: wait() returns once the device raised it."""

    def __init__(self, dev: "FakeDevice"):
        self.dev = dev
        self.raised = 0

    def wait(self) -> None:
        if not self.dev.irq_pending and not self.dev.hang:
            raise AssertionError("interrupt waited for without a pending run")
        self.dev.irq_pending = False


class FakeDevice:
    def __init__(self, machine: Machine, dram_bytes: int, *, busy_polls: int = 2, hang: bool = False,
                 model_cycles: bool = True):
        self.machine = machine
        self.golden = Golden(machine, dram_bytes)
        self.dram_size = dram_bytes
        self.busy_polls = busy_polls
        self.hang = hang
        self.model_cycles = model_cycles
        self.regs = {B.PROG_ADDR: 0, B.PROG_COUNT: 0, B.STEP: 0}
        self.ctrl_irq = False
        self.irq_pending = False
        self.interrupt = FakeInterrupt(self)
        self.starts = 0
        self._cache: tuple[bytes, object, int] | None = None
        self._clear()

    def _clear(self) -> None:
        self.busy = 0
        self.done = self.error = False
        self.error_code = self.error_index = self.retired = self.cycles = 0

    # ---------------------------------------------------------------- RegisterPort
    def read32(self, offset: int) -> int:
        if offset == B.STATUS:
            busy = self.busy > 0 or self.hang and self.starts > 0 and not (self.done or self.error)
            if self.busy > 0:
                self.busy -= 1
            return (B.STATUS_BUSY if busy else 0) | (B.STATUS_DONE if self.done and not busy else 0) | \
                (B.STATUS_ERROR if self.error and not busy else 0)
        if offset == B.ERROR_CODE:
            return self.error_code
        if offset == B.ERROR_INDEX:
            return self.error_index & 0xFFFFFFFF
        if offset == B.RETIRED:
            return self.retired & 0xFFFFFFFF
        if offset == B.CYCLES_LO:
            return self.cycles & 0xFFFFFFFF
        if offset == B.CYCLES_HI:
            return (self.cycles >> 32) & 0xFFFFFFFF
        if offset == B.ID:
            return B.ID_MAGIC | (SPEC.version << 8) | self.machine.lanes
        if offset in self.regs:
            return self.regs[offset]
        if offset == B.CTRL:
            return B.CTRL_IRQ_EN if self.ctrl_irq else 0      # START and SOFT_RESET self-clear
        return 0

    def write32(self, offset: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if offset == B.CTRL:
            self.ctrl_irq = bool(value & B.CTRL_IRQ_EN)
            if value & B.CTRL_SOFT_RESET:
                self._clear()
                self.starts = 0
                self.irq_pending = False
            if value & B.CTRL_START and not self.busy:
                self._start()
        elif offset == B.STATUS:
            if value & B.STATUS_DONE:
                self.done = False
            if value & B.STATUS_ERROR:
                self.error = False
        elif offset in self.regs:
            self.regs[offset] = value

    def dram_write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.dram_size:
            raise IndexError(f"fake device: DRAM write [{addr:#x}, {addr + len(data):#x}) outside {self.dram_size:#x}")
        self.golden.dram[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)

    def dram_read(self, addr: int, n: int) -> bytes:
        if addr < 0 or addr + n > self.dram_size:
            raise IndexError(f"fake device: DRAM read [{addr:#x}, {addr + n:#x}) outside {self.dram_size:#x}")
        return self.golden.dram[addr:addr + n].tobytes()

    # ---------------------------------------------------------------- execution
    def _program(self, addr: int, count: int):
        end = min(addr + count * B.WORD_BYTES, self.dram_size)
        nwords = max(0, (end - addr) // B.WORD_BYTES)
        text = self.golden.dram[addr:addr + nwords * B.WORD_BYTES].tobytes()
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
            return
        self.busy = self.busy_polls
        try:
            prepared, cycles, nwords = self._program(self.regs[B.PROG_ADDR], self.regs[B.PROG_COUNT])
            res = self.golden.run(prepared, step=self.regs[B.STEP])
            self.retired, self.cycles, self.done = res.instructions, cycles, True
        except DeviceError as e:
            self.error = True
            self.error_code = SPEC.errors[e.code][0] if e.code in SPEC.errors else 0xFF
            self.error_index = e.index if e.index is not None else 0
            self.retired = self.error_index
        self.irq_pending = self.ctrl_irq


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
            assert span >= 0x2C
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
        return dev.golden.dram[:shape[0]].view(Buffer)

    return types.SimpleNamespace(MMIO=MMIO, Overlay=Overlay, allocate=allocate, Buffer=Buffer, Interrupt=Interrupt)


def _instr(d):
    from ..isa.encoding import Instr
    from .golden import QUEUES
    return Instr(d.op, d.a, frozenset(QUEUES[q] for q in d.pops), frozenset(QUEUES[q] for q in d.pushes))
