"""Graph passes: each small, named for what it does, leaving the graph valid.

A pass is a plain function ``(graph, ctx) -> bool`` (True if it changed the
graph). ``run_passes`` runs the pipeline ``PIPELINE`` in order, checks the
graph with ``verify_graph`` between passes in debug mode, dumps the graph after
the passes named in ``dump_after`` (DOT and ONNX, or the kernel list once the
kernels exist), and reports a failure together with the passes that already ran.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from ...errors import CompileError, SdacError
from ..ir import Graph, dump, verify_graph


@dataclass
class PassContext:
    """Options and results shared by the passes."""

    dataflow: dict[str, str] = field(default_factory=dict)   # kernel or ONNX node name -> "os" | "ws" (override)
    dump_dir: str = "."
    lanes: int = 20
    # round the value flowing inside a kernel to the int8 grid wherever the QDQ model quantizes it
    # (kernels.Requant), so the kernel computes exactly what the model says between fused operators;
    # False keeps those values at the SFU's 16-bit precision (closer to the float model, fewer SFU passes)
    requant_inside: bool = True
    kernel_graph: object | None = None     # set by form_kernels (a kernels.KernelGraph)
    ran: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    dumped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    progress: object | None = None         # callable(str): one line per pass (long compiles show progress)
    on_loaded: object | None = None        # callable(Graph): called once the model is imported, before the passes

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)


def _pipeline():
    from . import (canonicalize, choose_dataflow, fold_constants, fold_qdq, form_kernels, fuse_attention,
                   split_host, to_channels_last)
    return [
        ("fold_qdq", fold_qdq.run),
        ("fold_constants", fold_constants.run),
        ("split_host", split_host.run),
        ("canonicalize", canonicalize.run),
        ("fuse_attention", fuse_attention.run),
        ("check_canonical", canonicalize.check),
        ("to_channels_last", to_channels_last.run),
        ("form_kernels", form_kernels.run),
        ("choose_dataflow", choose_dataflow.run),
    ]


def pass_names() -> list[str]:
    return [n for n, _ in _pipeline()]


def run_passes(graph: Graph, ctx: PassContext | None = None, dump_after: set[str] | frozenset = frozenset(),
               debug: bool = True, stop_after: str | None = None):
    """Run the pipeline on ``graph`` (modified in place); return the KernelGraph.

    ``stop_after`` ends early (returning None) after the named pass, for tests and dumps.
    """
    ctx = ctx or PassContext()
    names = pass_names()
    unknown = set(dump_after) - set(names)
    if unknown:
        raise SdacError(f"--dump-after: unknown pass {sorted(unknown)}; passes are {', '.join(names)}")
    for name, fn in _pipeline():
        t0 = time.perf_counter()
        try:
            fn(graph, ctx)
            if debug and ctx.kernel_graph is None:
                verify_graph(graph)
        except SdacError as e:
            ran = ", ".join(ctx.ran) or "none"
            raise type(e)(f"{e} [in pass {name}; passes already run: {ran}]") from e
        ctx.ran.append(name)
        ctx.timings[name] = time.perf_counter() - t0
        if ctx.progress:
            ctx.progress(f"pass {name}: {ctx.timings[name]:.2f} s")
        if name in dump_after:
            ctx.dumped.extend(dump_stage(graph, ctx, name))
        if name == stop_after:
            return None
    return ctx.kernel_graph


def dump_stage(graph: Graph, ctx: PassContext, name: str) -> list[str]:
    """Write the state after pass ``name`` into ctx.dump_dir; returns the paths written."""
    os.makedirs(ctx.dump_dir, exist_ok=True)
    base = os.path.join(ctx.dump_dir, f"{os.path.splitext(graph.source)[0]}.{name}")
    if ctx.kernel_graph is not None:
        from .explain import kernel_graph_text
        path = base + ".txt"
        with open(path, "w") as f:
            f.write(kernel_graph_text(ctx.kernel_graph))
        return [path]
    return [dump(graph, base + ".dot"), dump(graph, base + ".onnx")]


def compile_graph(model, step_scales=None, ctx: PassContext | None = None, dump_after=frozenset(), debug=True):
    """Frontend + passes: ONNX file (or ModelProto) -> (KernelGraph, Graph)."""
    from ..frontend import load_model
    graph = load_model(model, step_scales)
    if ctx is not None and ctx.on_loaded is not None:
        ctx.on_loaded(graph)
    kg = run_passes(graph, ctx, dump_after=dump_after, debug=debug)
    return kg, graph


__all__ = ["PassContext", "run_passes", "compile_graph", "pass_names", "CompileError"]
