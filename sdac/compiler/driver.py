"""The whole compiler as one function: ONNX -> KernelGraph -> Bundle (verified).

Stages: frontend + passes (compile_graph) -> calibration of in-kernel formats
the model's scales leave open -> lowering -> static verifier. ``progress``
receives one line per stage (and per kernel on large models).
"""
from __future__ import annotations

import contextlib
import gc
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SdacError
from ..isa.machine import DEFAULT, Machine
from .kernels import KernelGraph


@dataclass
class CompileResult:
    bundle: object
    kernel_graph: KernelGraph
    explain: str = ""
    dumped: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    verifier_peak_rss: int = 0      # bytes: the verifier process's peak (verify_in_parallel), else 0


def _needs_calibration(kg: KernelGraph) -> bool:
    for k in kg.kernels:
        if k.kind in ("conv3x3", "matmul", "attention", "norm", "add") and not k.main_absmax:
            return True
    return False


def synthetic_samples(kg: KernelGraph, n: int = 2, seed: int = 0) -> list[dict]:
    """Inputs spread over a quarter of each input's int8 range (used when no calibration data is given)."""
    rng = np.random.default_rng(seed)
    return [{a.name: rng.normal(0, 32 * float(np.max(a.scales)), a.shape) for a in kg.inputs} for _ in range(n)]


def load_samples(path: str, kg: KernelGraph) -> list[dict]:
    from ..files import read_npz
    z = read_npz(path)
    by_onnx = {kg.io_names.get(a.name, a.name): a for a in kg.inputs}
    sample = {}
    for name, a in by_onnx.items():
        if name not in z:
            raise SdacError(f"{path}: no array named {name!r} (inputs: {', '.join(by_onnx)})")
        x = np.asarray(z[name], np.float64)
        if x.ndim == 4:
            x = np.moveaxis(x, 1, -1)       # host NCHW -> channels-last
        if x.shape != tuple(a.shape):
            raise SdacError(f"{path}: {name!r} has shape {x.shape}, expected {a.shape} (channels-last)")
        sample[a.name] = x
    return [sample]


@contextlib.contextmanager
def compiling_runtime():
    """Interpreter settings for the length of a compile, restored after it:
    * no cyclic-GC passes: the compiler makes millions of small objects and few reference cycles; the
      collector's passes over them cost about 1 s of an SD-v1.5 compile and free nothing (same peak memory);
    * a 0.5 ms GIL switch interval (5 ms by default): the DATA image's writer thread (bundle.DataImage) needs
      the GIL between its numpy calls and otherwise waits up to 5 ms each time for the lowering's thread."""
    enabled, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(min(interval, 0.0005))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


def compile_model(model, *, step_scales=None, machine: Machine = DEFAULT, dataflow: dict | None = None,
                  dump_after=frozenset(), dump_dir: str = ".", calib: str | None = None,
                  verify_program: bool = True, requant_inside: bool = True, debug: bool = False,
                  verify_in_parallel: bool | None = None, progress=lambda msg: None) -> CompileResult:
    """debug: check the graph's invariants (ir.verify_graph) after every pass (the static verifier of the
    program runs either way, unless verify_program is False).

    requant_inside (default): round wherever the QDQ model quantizes a value inside a fusion group (its
    rounding points: conv/matmul outputs, inside GroupNorm the normalized value and its product with gamma,
    the attention scores; GeGLU gates and LayerNorm interiors keep full precision), at the cost of two more
    SFU passes per such value (one for the scores). False keeps those values at the SFU's 16-bit precision:
    closer to the float model than the QDQ model is, and faster on SFU-bound kernels.

    verify_in_parallel: run the verifier's per-instruction checks in a second process, fed while the lowering
    emits (verify_worker.py); None: on large models (an imported graph of PARALLEL_VERIFY_NODES nodes or
    more: SD-v1.5 has 11,763), where it saves most of the verifier's time. The worker starts as soon as the
    model is imported, so its start-up overlaps the passes. Either way the same checks run and the bundle is
    the same."""
    with compiling_runtime():
        return _compile(model, step_scales, machine, dataflow, dump_after, dump_dir, calib, verify_program,
                        requant_inside, debug, verify_in_parallel, progress)


PARALLEL_VERIFY_NODES = 4000


def _compile(model, step_scales, machine, dataflow, dump_after, dump_dir, calib, verify_program, requant_inside,
             debug, verify_in_parallel, progress) -> CompileResult:
    from .calibrate import calibrate_absmax
    from .lower import lower
    from .passes import PassContext, compile_graph
    from .passes.explain import explain

    timings = {}
    t = time.perf_counter()
    name = Path(model).name if isinstance(model, (str, Path)) else "model"
    progress(f"importing {name}")
    stream = None       # the StreamingVerifier, once the imported graph shows the model is large
    with contextlib.ExitStack() as cleanup:

        def start_verifier(graph) -> None:
            nonlocal stream
            big = len(graph.nodes()) >= PARALLEL_VERIFY_NODES
            if verify_program and (verify_in_parallel or (verify_in_parallel is None and big)):
                from .verify_worker import StreamingVerifier
                try:
                    stream = StreamingVerifier(machine)
                except OSError as e:    # no second interpreter here: the verifier runs after the lowering
                    warnings.warn(f"streaming verifier not started ({e}); verifying after the lowering",
                                  RuntimeWarning)
                    return
                cleanup.callback(stream.close)      # stops the worker whatever fails (harmless once finished)

        ctx = PassContext(dataflow=dict(dataflow or {}), dump_dir=dump_dir, lanes=machine.lanes,
                          requant_inside=requant_inside, progress=progress, on_loaded=start_verifier)
        kg, graph = compile_graph(model, step_scales, ctx=ctx, dump_after=set(dump_after), debug=debug)
        timings["frontend+passes"] = time.perf_counter() - t
        progress(f"passes done: {len(kg.kernels)} kernels ({timings['frontend+passes']:.2f} s)")
        explained = explain(kg, graph)
        del graph           # the float weights of the graph are not needed past the kernels (GBs for SD-v1.5)
        if calib or _needs_calibration(kg):
            t = time.perf_counter()
            samples = load_samples(calib, kg) if calib else synthetic_samples(kg)
            calibrate_absmax(kg, samples)
            timings["calibrate"] = time.perf_counter() - t
            progress(f"calibrated in-kernel formats ({timings['calibrate']:.2f} s)")
        t = time.perf_counter()
        bundle = lower(kg, machine, progress=progress, defer_data=True, sink=stream)
        timings["lower"] = time.perf_counter() - t
        bundle.meta["requant_inside"] = requant_inside      # the numerics-changing option (sdac info shows it)
        # the DATA image's writer thread goes on packing and writing weights while the verifier runs (it reads
        # only the image's length); it is joined below, whatever the verifier found
        try:
            _finish_program(bundle, step_scales, verify_program, timings, progress, stream)
        except BaseException:
            with contextlib.suppress(Exception):     # the writer stops; the verifier's error is the one to report
                bundle.data.finish()
            raise
        t = time.perf_counter()
        image = bundle.data
        bundle.data = image.finish()
        timings["data wait"] = time.perf_counter() - t
        timings["data cpu"] = image.cpu         # CPU (not wall) time: packing, checksumming, storing weights
        return CompileResult(bundle, kg, explained, list(ctx.dumped), timings,
                             stream.peak_rss if stream is not None else 0)


def _finish_program(bundle, step_scales, verify_program, timings, progress, stream) -> None:
    from .verify import verify
    if step_scales:
        # the sampler needs the timesteps the scale banks were calibrated at (and their scheduler)
        import json
        table = step_scales if isinstance(step_scales, dict) else json.loads(Path(step_scales).read_text())
        for key in ("timesteps", "scheduler"):
            if key in table:
                bundle.meta[key] = table[key]
    progress(f"lowered: {len(bundle.instrs)} instructions ({timings['lower']:.2f} s)")
    if verify_program:
        t = time.perf_counter()
        if stream is not None:
            stream.finish(bundle)   # the rest of the checks (the worker did most while lowering ran)
        else:
            verify(bundle)
        timings["verify"] = time.perf_counter() - t
        progress(f"verified ({timings['verify']:.2f} s"
                 + (", after a worker process checked alongside the lowering)" if stream is not None else ")"))
