"""KernelGraph -> instruction stream, DRAM image and per-step table (a Bundle).

Per kernel: plan the epilogue (epilogue.py), choose a row tiling that fits the
on-chip buffers (double-buffered), and emit per tile: loads (ld), the array
operation (cmp), the SFU operations (sfu) and stores (st). Dependency tokens
come from the access sets (program.py). DRAM holds the activations (placed
with liveness-based reuse), then the per-step table, then the static data.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ... import __version__
from ...bundle import Bundle, DataImage, IOTensor
from ...errors import CompileError
from ...isa.machine import Machine
from ..kernels import Act, Kernel, KernelGraph
from .epilogue import EpiloguePlan, SfuOp, plan_epilogue
from .fixed import scale_entries
from .params import PrmImage
from .program import Access, R, W, ProgramBuilder, _new

ALIGN = 64


def _align(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


@dataclass
class Reloc:
    index: int
    section: str        # data | step
    offset: int


@dataclass
class Lowerer:
    kg: KernelGraph
    m: Machine
    pb: ProgramBuilder = field(default_factory=ProgramBuilder)
    data: DataImage = field(default_factory=DataImage)   # spills to a temporary file when large
    step_parts: list = field(default_factory=list)    # (offset, PrmImage)
    step_size: int = 0
    relocs: list = field(default_factory=list)
    addr: dict = field(default_factory=dict)          # act name -> DRAM address
    scratch: dict = field(default_factory=dict)       # kernel name -> DRAM address of its spill area
    act_end: int = 0
    debug: list = field(default_factory=list)
    debug_extra: dict = field(default_factory=dict)   # what a kernel's lowering chose (into its debug entry)
    kernel_index: int = 0
    wgt_half: int = 0                                  # the wgt half the next weight load goes to
    tile_slot: int = 0                                 # the tile slot (act / acc) the next kernel starts in

    @property
    def L(self) -> int:
        return self.m.lanes

    def cl(self, cols: int) -> int:
        return -(-cols // self.L)

    # ------------------------------------------------------------ DRAM
    def act_bytes(self, a: Act) -> int:
        rows = math.prod(a.shape[:-1])
        return rows * self.cl(a.channels) * self.L

    def plan_dram(self) -> None:
        """Liveness-based placement of activations; graph inputs and outputs stay live throughout."""
        kg = self.kg
        n = len(kg.kernels)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        acts: dict[str, Act] = {}
        for a in kg.inputs:
            acts[a.name] = a
            first[a.name], last[a.name] = -1, n
        for i, k in enumerate(kg.kernels):
            for a in _kernel_reads(k):
                if a.name not in acts:
                    raise CompileError(f"kernel {k.name}: input {a.name} is produced by no earlier kernel")
                last[a.name] = max(last[a.name], i)
            for a in k.outputs:
                if a.name in acts:
                    raise CompileError(f"kernel {k.name}: output {a.name} is written twice")
                acts[a.name] = a
                first[a.name], last[a.name] = i, i
        for a in kg.outputs:
            if a.name not in acts:
                raise CompileError(f"graph output {a.name} is produced by no kernel")
            last[a.name] = n
        free: list[tuple[int, int]] = []     # (addr, size) holes
        live: list[tuple[int, str, int, int]] = []   # (last use, name, addr, size)
        top = 0

        def alloc(size: int) -> int:
            nonlocal top
            for j, (a, s) in enumerate(free):
                if s >= size:
                    free[j] = (a + size, s - size)
                    if free[j][1] == 0:
                        free.pop(j)
                    return a
            a = top
            top += size
            return a

        def release(before: int) -> None:
            for item in [x for x in live if x[0] < before]:
                live.remove(item)
                free.append((item[2], item[3]))
            free.sort()
            merged: list[tuple[int, int]] = []
            for a, s in free:
                if merged and merged[-1][0] + merged[-1][1] == a:
                    merged[-1] = (merged[-1][0], merged[-1][1] + s)
                else:
                    merged.append((a, s))
            free[:] = merged

        for a in kg.inputs:
            size = _align(self.act_bytes(a))
            self.addr[a.name] = alloc(size)
            live.append((last[a.name], a.name, self.addr[a.name], size))
        for i, k in enumerate(kg.kernels):
            release(i)
            for a in k.outputs:
                size = _align(self.act_bytes(a))
                self.addr[a.name] = alloc(size)
                live.append((last[a.name], a.name, self.addr[a.name], size))
            spill = self.spill_bytes(k)
            if spill:
                self.scratch[k.name] = alloc(_align(spill))
                live.append((i, f"{k.name}/spill", self.scratch[k.name], _align(spill)))
        self.act_end = _align(top)

    # ------------------------------------------------------------ emission helpers
    # emit(op, accesses, **fields) -> instruction index: ProgramBuilder.emit, bound once (one call per
    # instruction, not two)
    emit: Callable = field(init=False, repr=False)

    def __post_init__(self):
        self.emit = self.pb.emit

    def load_rows(self, a: Act, dst: int, r0: int, rows: int, line0: int = 0, lines: int | None = None,
                  sram_stride: int | None = None) -> None:
        """Rows [r0, r0+rows) of tensor a (lines [line0, line0+lines) of each row) into act at dst, packed
        (or sram_stride lines apart)."""
        self._rows("load", a, dst, r0, rows, line0, lines, sram_stride)

    def store_rows(self, a: Act, src: int, r0: int, rows: int, line0: int = 0, lines: int | None = None) -> None:
        """The packed rows at act src into rows [r0, r0+rows) of tensor a (the inverse of load_rows)."""
        self._rows("store", a, src, r0, rows, line0, lines)

    def _rows(self, op: str, a: Act, sram: int, r0: int, rows: int, line0: int, lines: int | None,
              sram_stride: int | None = None) -> None:
        cl = self.cl(a.channels)
        lines = cl if lines is None else lines
        sy = lines if sram_stride is None else sram_stride
        dram = self.addr[a.name] + (r0 * cl + line0) * self.L
        nbytes = ((rows - 1) * cl + lines) * self.L
        load = op == "load"
        acc = [_new(Access, ("act", sram, sram + (rows - 1) * sy + lines, load)),
               _new(Access, ("dram", dram, dram + nbytes, not load))]
        if lines == cl and sy == cl and rows * cl <= 0xFFFF:
            self.emit(op, acc, buf="act", dram=dram, sram=sram, run=rows * cl)
        else:
            self._chunked(op, acc, dram, sram, lines, rows, cl * self.L, sy)

    def _chunked(self, op, acc, dram, sram, run, ny, dy, sy, buf="act"):
        if run > 0xFFFF:
            raise CompileError(f"a row of {run} lines is longer than one DMA run allows")
        done = 0
        while done < ny:
            n = min(0xFFFF, ny - done)
            self.emit(op, acc, buf=buf, dram=dram + done * dy, sram=sram + done * sy, run=run, ny=n, dy=dy, sy=sy)
            done += n

    def load_const(self, buf: str, dst: int, blob: bytes, lines: int) -> None:
        """Static data (weights, static parameters) appended to DATA and loaded into buf at dst."""
        off = len(self.data)
        self.data += blob
        self.data += bytes(_align(len(self.data)) - len(self.data))
        i = 0
        lb = self.m.line_bytes(buf)
        while i < lines:
            n = min(0xFFFF, lines - i)
            idx = self.emit("load", [W(buf, dst + i, n)], buf=buf, dram=0, sram=dst + i, run=n)
            self.relocs.append(Reloc(idx, "data", off + i * lb))
            i += n

    def load_prm(self, prm: PrmImage) -> None:
        if prm.static:
            self.load_const("prm", prm.base_of(False), prm.static_bytes(), len(prm.static))
        if prm.stepped:
            off = self.step_size
            self.step_parts.append((off, prm))
            n = len(prm.stepped)
            self.step_size += n * self.m.line_bytes("prm")
            idx = self.emit("load", [W("prm", prm.base_of(True), n)], buf="prm", step=1, dram=0,
                            sram=prm.base_of(True), run=n)
            self.relocs.append(Reloc(idx, "step", off))

    # ------------------------------------------------------------ SFU emission
    def sfu(self, op: SfuOp, prm: PrmImage, *, v: int, vrs: int, rows: int, cols: int, st_first: bool,
            src: int = 0, srs: int = 0, operand: int = 0, ors: int = 0, out: int = 0, outrs: int = 0,
            stat_base: int = 0) -> None:
        """One planned SFU op on a tile: value at acc v (row stride vrs), rows x cols."""
        prm_acc = R("prm", prm.base, prm.lines)
        vlines = rows * vrs
        st = {}
        if op.st is not None:
            st = dict(st=1, st_clr=int(st_first), st_mode=op.st.mode, gsize=op.st.gsize, gbase=stat_base)
        if op.kind == "deq":
            args = deq_scale_fields(op)
            if op.src_act:
                acc = [R("act", src, rows * srs), W("acc", v, vlines), prm_acc]
                self.emit("deq", acc, sbuf="act", s=src, srs=srs, d=v, drs=vrs, rows=rows, cols=cols, **args, **st)
            else:
                acc = [R("acc", v, vlines), W("acc", v, vlines), prm_acc]
                self.emit("deq", acc, sbuf="acc", s=v, srs=vrs, d=v, drs=vrs, rows=rows, cols=cols, **args, **st)
        elif op.kind == "add":
            acc = [R("acc", v, vlines), W("acc", v, vlines), R("act", operand, max(ors * rows, self.cl(cols))),
                   prm_acc]
            self.emit("add", acc, a=v, ars=vrs, bbuf="act", b=operand, brs=ors, d=v, drs=vrs, rows=rows,
                      cols=cols, sc=op.sc.word, **st)
        elif op.kind == "act":
            if op.out_act is not None:
                acc = [R("acc", v, vlines), W("act", out, rows * outrs), prm_acc]
                self.emit("act", acc, sbuf="acc", s=v, srs=vrs, out="act", d=out, drs=outrs, rows=rows, cols=cols,
                          fn=op.fn, frac=op.frac, sc=op.sc.word)
            else:
                acc = [R("acc", v, vlines), W("acc", v, vlines), prm_acc]
                self.emit("act", acc, sbuf="acc", s=v, srs=vrs, out="acc", d=v, drs=vrs, rows=rows, cols=cols,
                          fn=op.fn, frac=op.frac, sc=op.sc.word, **st)
        elif op.kind == "deqact":
            deq, act = op.parts
            if op.src_act:
                src_buf, s, rs = "act", src, srs
            else:
                src_buf, s, rs = "acc", v, vrs
            if op.out_act is not None:
                dst_buf, d, drs = "act", out, outrs
            else:
                dst_buf, d, drs = "acc", v, vrs
            c = self.cl(cols)
            if src_buf == dst_buf and (s, rs) != (d, drs) and s < d + (rows - 1) * drs + c and \
                    d < s + (rows - 1) * rs + c:
                # an int8 temporary read where the result goes, at another stride: the pair, through acc
                kw = dict(src=src, srs=srs, out=out, outrs=outrs)
                self.sfu(deq, prm, v=v, vrs=vrs, rows=rows, cols=cols, st_first=False, **kw)
                self.sfu(act, prm, v=v, vrs=vrs, rows=rows, cols=cols, st_first=False, **kw)
                return
            acc = [R(src_buf, s, rows * rs), W(dst_buf, d, rows * drs), prm_acc]
            self.emit("deqact", acc, sbuf=src_buf, s=s, srs=rs, out=dst_buf, d=d, drs=drs, rows=rows, cols=cols,
                      **deq_scale_fields(deq), fn=act.fn, frac=act.frac, osc=act.sc.word)
        elif op.kind in ("norm", "geglu"):
            # int8 into an act tile, or int16 back in place
            if op.out_act is not None:
                acc = [R("acc", v, vlines), W("act", out, rows * outrs), prm_acc]
                dst = dict(out="act", d=out, drs=outrs)
            else:
                acc = [R("acc", v, vlines), W("acc", v, vlines), prm_acc]
                dst = dict(out="acc", d=v, drs=vrs)
            if op.kind == "norm":
                self.emit("norm", acc, s=v, srs=vrs, rows=rows, cols=cols, nd=op.nd.word, gamma=op.gamma.line,
                          beta=op.beta.line, fn=op.fn, frac=op.frac, sc=op.sc.word, st_mode=op.group.mode,
                          gsize=op.group.gsize, gbase=0, **dst)
            else:
                self.emit("geglu", acc, a=v, ars=vrs, b=v + self.cl(op.cols_out), brs=vrs, rows=rows,
                          cols=op.cols_out, frac=op.frac, sc=op.sc.word, **dst)
        else:
            raise AssertionError(op.kind)

    # ------------------------------------------------------------ kernels
    def spill_bytes(self, k: Kernel) -> int:
        """DRAM for a GroupNorm kernel whose pre-norm image does not fit the acc buffer (second pass)."""
        from ..kernels import Norm
        if k.kind in ("norm", "add") or not any(isinstance(e, Norm) and e.kind == "gn" for e in k.epilogue):
            return 0        # (kernels reading an int8 tensor recompute their pre-norm values instead)
        x = k.inputs[0]
        if k.kind == "conv3x3":
            s, p = k.stride, k.pad
            rows = ((x.shape[1] + 2 * p - 3) // s + 1) * ((x.shape[2] + 2 * p - 3) // s + 1)
            cols = k.weights.q.shape[0]
        else:
            rows = math.prod(x.shape[1:-1]) if len(x.shape) > 2 else 1
            cols = k.weights.q.shape[1] if k.kind == "matmul" else x.channels
        lines = rows * self.cl(cols)
        return lines * self.m.line_bytes("acc") if lines > self.m.acc_lines else 0

    def lower(self, progress=None, defer_data: bool = False, sink=None) -> Bundle:
        """sink: a verify_worker.StreamingVerifier, given each kernel's instructions when they are done."""
        import time
        kg = self.kg
        n_relocs = 0
        last_report = time.perf_counter()
        self.plan_dram()
        pb = self.pb
        pb.emit("setstep", (), src="csr", step=0, bank=0)   # bank patched in finish()
        for i, k in enumerate(kg.kernels):
            self.kernel_index = i
            self.debug_extra = {}
            first = len(pb)
            lower_kernel = KERNELS.get(k.kind)
            if lower_kernel is None:
                raise CompileError(f"kernel {k.name}: kind {k.kind!r} has no lowering")
            lower_kernel(self, k)
            self.debug.append({"kernel": k.name, "kind": k.kind, "first": first, "last": len(pb) - 1,
                               "sources": list(k.sources), **self.debug_extra})
            if sink is not None:
                sink.send(pb, len(pb), [r.index for r in self.relocs[n_relocs:]])
                n_relocs = len(self.relocs)
            if progress and (time.perf_counter() - last_report > 2.0 or i + 1 == len(kg.kernels)):
                last_report = time.perf_counter()
                progress(f"lowering: kernel {i + 1}/{len(kg.kernels)} ({k.name}), {len(pb)} instructions")
        pb.emit("halt")
        if sink is not None:
            sink.send(pb, len(pb), [r.index for r in self.relocs[n_relocs:]])
        return self.finish(defer_data)

    def finish(self, defer_data: bool = False) -> Bundle:
        kg, m = self.kg, self.m
        n_steps = kg.n_steps
        bank = _align(self.step_size)
        step_base = self.act_end
        data_base = _align(step_base + n_steps * bank)
        table = bytearray(n_steps * bank)
        for off, prm in self.step_parts:
            for s in range(n_steps):
                blob = prm.step_bytes(s)
                table[s * bank + off:s * bank + off + len(blob)] = blob
        ops = self.pb.ops
        ops[0][1]["bank"] = bank
        for r in self.relocs:
            base = data_base if r.section == "data" else step_base
            ops[r.index][1]["dram"] = base + r.offset
        instrs = self.pb.finish()
        dram_size = _align(data_base + len(self.data), 4096)

        def io(a: Act, layout_name: str) -> IOTensor:
            name = kg.io_names.get(a.name, a.name)
            shape = tuple(int(s) for s in a.shape)
            if len(shape) == 4:       # kernels are channels-last; the host sees NCHW
                host, layout = (shape[0], shape[3], shape[1], shape[2]), "nchw"
            else:
                host, layout = shape, "rows"
            return IOTensor(name=name, shape=host, dtype="float32", layout=layout, dram=self.addr[a.name],
                            rows=math.prod(shape[:-1]), cols=shape[-1],
                            scales=tuple(float(s) for s in np.broadcast_to(a.scales, (n_steps,))))

        data = self.data if defer_data else self.data.finish()
        return Bundle(machine=m, instrs=instrs, dram_size=dram_size, data=data, data_base=data_base,
                      n_steps=n_steps, step_base=step_base, step_bank=bank, step_table=bytes(table),
                      inputs=[io(a, "in") for a in kg.inputs], outputs=[io(a, "out") for a in kg.outputs],
                      host=kg.host_prologue, debug=self.debug,
                      meta={"compiler": f"sdac {__version__}", "kernels": len(kg.kernels)})


def _kernel_reads(k: Kernel) -> list[Act]:
    from ..kernels import AddTensor, AddVec
    reads = list(k.inputs)
    for e in k.epilogue:
        if isinstance(e, AddVec):
            reads.append(e.v)
        elif isinstance(e, AddTensor):
            reads.append(e.r)
    return reads


KERNELS: dict = {}


def kernel_lowering(kind: str):
    def deco(fn):
        KERNELS[kind] = fn
        return fn
    return deco


def deq_scale_fields(op: SfuOp, line0: int = 0) -> dict:
    """A deq's (or deqact's) scale and bias fields, for the columns from line line0 of its per-column
    vectors on."""
    args = dict(sc=op.sc.line + line0, per_ch=1) if op.per_ch else dict(sc=op.sc.word)
    if op.bias is not None:
        args.update(bias=1, bb=op.bias.line + line0)
    return args


def lower(kg: KernelGraph, machine: Machine, progress=None, defer_data: bool = False, sink=None) -> Bundle:
    """Lower a KernelGraph for a machine into a Bundle (not yet verified; see verify.py).

    defer_data: the Bundle's ``data`` is the DataImage itself, its writer thread possibly still packing and
    writing weights (it has the final ``len``, which is all the verifier reads); the caller replaces it with
    ``bundle.data.finish()`` (the bytes, or raises what the writer raised) before anything else reads it."""
    from . import kernels_impl  # noqa: F401  (registers the per-kind lowerings)
    return Lowerer(kg, machine).lower(progress, defer_data, sink)
