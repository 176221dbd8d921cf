"""The lowering of each kernel kind (registered with @kernel_lowering).

Tiles are ranges of rows (pixels or tokens) of one batch element; every tile
gets all columns, so row-wise SFU operations (LayerNorm, GeGLU) see whole
rows. Consecutive tiles alternate between two buffer slots so that the load
queue can fetch tile t+1 while the array computes tile t.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ...errors import CompileError
from ..kernels import Act, AddTensor, AddVec, Emit, Kernel
from ..weights import stored_int4
from .epilogue import EpiloguePlan, plan_epilogue
from .cost import TileWork, best_rows, choose_rows, conv_cycles, mm_cycles
from .fixed import scale_entries
from .lowering import Lowerer, deq_scale_fields, kernel_lowering
from .params import PrmImage
from .program import Access, R, W


@dataclass
class Tile:
    image: int      # batch element
    r0: int         # first output row (global)
    rows: int
    first: bool     # first tile of its image
    last: bool


def _tiles(n_images: int, image_rows: int, tm: int) -> list[Tile]:
    out = []
    for b in range(n_images):
        for r in range(0, image_rows, tm):
            n = min(tm, image_rows - r)
            out.append(Tile(b, b * image_rows + r, n, r == 0, r + n >= image_rows))
    return out


def _counted(values) -> list[tuple[int, int]]:
    """(value, count) of each distinct value: cost sums over weight groups and chunks evaluate each distinct
    width once (the widths repeat but for the last; the cycle counts are ints, so the sum is the same)."""
    return sorted(collections.Counter(values).items())


def _round_tile(tm: int, limit: int, granule: int) -> int:
    tm = max(1, min(tm, limit))
    if tm >= granule and tm < limit:
        tm -= tm % granule
    return tm


def _prm(low: Lowerer) -> PrmImage:
    return PrmImage(low.L, low.kg.n_steps)


def _place_prm(low: Lowerer, k: Kernel, prm: PrmImage) -> None:
    half = low.m.prm_lines // 2
    if prm.lines > half:
        raise CompileError(f"kernel {k.name}: needs {prm.lines} parameter lines, the prm buffer half has {half}")
    prm.base = (low.kernel_index % 2) * half
    low.load_prm(prm)


def _steps(a: Act, n_steps: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(a.scales, np.float64), (n_steps,))


# ------------------------------------------------------------------ driver

def _run_tiles(low: Lowerer, k: Kernel, plan: EpiloguePlan, prm: PrmImage, tiles: list[Tile], image_rows: int,
               cols: int, main, act_base: int, act_limit: int, tm: int, recompute: bool = False) -> None:
    """Main op + planned epilogue over the tiles. main(tile, v, slot) emits the array work into acc at v
    and returns the act address of the int8 source (for 'act8' mains) or None.
    recompute: when a GroupNorm image does not fit acc, the second pass runs main and the ops before the
    norm again (cheap when main only loads an int8 tensor) instead of spilling int32 values to DRAM."""
    m = low.m
    cl_v = low.cl(cols)
    # act slots for operands and outputs, double-buffered
    a = act_base
    operand_slot: dict[int, list[int]] = {}
    out_slot: dict[str, list[int]] = {}
    for j, op in enumerate(plan.ops):
        if op.operand is not None:
            n = low.cl(op.operand.channels) * (1 if op.vec else tm)
            operand_slot[j] = [a, a + n]
            a += 2 * n
        if op.out_act is not None and not op.on_chip and op.out_act.name not in out_slot:
            n = low.cl(op.out_act.channels) * tm
            out_slot[op.out_act.name] = [a, a + n]
            a += 2 * n
    # on-chip temporaries (see _tmp_lines): in the last output's slot, or one shared single-buffered region
    home = _tmp_home(plan)
    for op in plan.ops:
        if op.on_chip:
            fits = home is not None and low.cl(op.out_act.channels) <= low.cl(home.channels)
            out_slot[op.out_act.name] = out_slot[home.name] if fits else [a, a]
    a += _tmp_lines(low, plan) * tm
    if a > act_limit:
        raise CompileError(f"kernel {k.name}: tiles of {tm} rows need {a} act lines, the buffer has {act_limit}")
    # acc: the whole image resident (GroupNorm without spilling) or two tile slots
    resident = plan.gn and image_rows * cl_v <= m.acc_lines
    spill = plan.gn and not resident and not recompute
    if not resident and 2 * tm * cl_v > m.acc_lines:
        raise CompileError(f"kernel {k.name}: a tile of {tm} rows x {cols} columns does not fit the acc buffer")

    # a GroupNorm image that does not fit: the acc beyond the two slots keeps the image's last tiles, which
    # the second pass then normalizes first (no spill or recompute) while the others come back
    keep_n = (m.acc_lines - 2 * tm * cl_v) // (tm * cl_v) if plan.gn and not resident else 0
    kept: dict[int, int] = {}       # tile r0 -> acc address

    def v_addr(t: Tile, slot: int) -> int:
        if resident:
            return (t.r0 - t.image * image_rows) * cl_v
        if t.r0 in kept:
            return kept[t.r0]
        return slot * tm * cl_v

    def run_ops(ops_range, t: Tile, slot: int, v: int, src, stats: bool = True) -> None:
        for j in ops_range:
            op = plan.ops[j] if stats else dataclasses.replace(plan.ops[j], st=None)
            kw = {}
            if op.operand is not None:
                dst = operand_slot[j][slot]
                if op.vec:
                    low.load_rows(op.operand, dst, t.image, 1)
                    kw.update(operand=dst, ors=0)
                else:
                    low.load_rows(op.operand, dst, t.r0, t.rows)
                    kw.update(operand=dst, ors=low.cl(op.operand.channels))
            if op.out_act is not None:
                kw.update(out=out_slot[op.out_act.name][slot], outrs=low.cl(op.out_act.channels))
            if op.src_tmp is not None:
                kw.update(src=out_slot[op.src_tmp.name][slot], srs=low.cl(op.src_tmp.channels))
            elif op.src_act:
                kw.update(src=src, srs=cl_v)
            st_first = op.st is not None and (t.first or op.st.mode == "row")
            low.sfu(op, prm, v=v, vrs=cl_v, rows=t.rows, cols=cols_at[j], st_first=st_first, **kw)
            if op.out_act is not None and not op.on_chip:
                low.store_rows(op.out_act, out_slot[op.out_act.name][slot], t.r0, t.rows)

    # columns of the value seen by each op (GeGLU halves them)
    cols_at, c = [], cols
    for op in plan.ops:
        cols_at.append(c)
        if op.kind == "geglu":
            c = op.cols_out

    scratch = low.scratch.get(k.name, 0)
    acc_line_bytes = m.line_bytes("acc")

    def move_spill(op: str, t: Tile, v: int) -> None:
        """A tile's pre-norm int16 values (int32 acc lines) to or from its place in the DRAM spill area."""
        off = scratch + (t.r0 - t.image * image_rows) * cl_v * acc_line_bytes
        n = t.rows * cl_v
        load = op == "load"
        acc = [Access("acc", v, v + n, load), Access("dram", off, off + n * acc_line_bytes, not load)]
        low._chunked(op, acc, off, v, run=n, ny=1, dy=0, sy=0, buf="acc")
    by_image: dict[int, list[Tile]] = {}
    for t in tiles:
        by_image.setdefault(t.image, []).append(t)
    slot_counter = low.tile_slot        # continue the previous kernel's alternation: its last tile's slots
    for b, image_tiles in by_image.items():
        last = image_tiles[len(image_tiles) - min(keep_n, len(image_tiles) - 1):] if keep_n else []
        kept.clear()
        kept.update((t.r0, (2 + j) * tm * cl_v) for j, t in enumerate(last))
        for t in image_tiles:
            slot = slot_counter % 2
            slot_counter += 1
            v = v_addr(t, slot)
            src = main(t, v, slot)
            if plan.gn:
                run_ops(range(plan.split), t, slot, v, src)
                if spill and t.r0 not in kept:
                    move_spill("store", t, v)
            else:
                run_ops(range(len(plan.ops)), t, slot, v, src)
        if plan.gn:
            for t in last + [t for t in image_tiles if t.r0 not in kept]:
                slot = slot_counter % 2
                slot_counter += 1
                v = v_addr(t, slot)
                if t.r0 in kept or resident:
                    pass
                elif spill:
                    move_spill("load", t, v)
                else:                       # recompute the pre-norm values (the statistics are complete)
                    run_ops(range(plan.split), t, slot, v, main(t, v, slot), stats=False)
                run_ops(range(plan.split, len(plan.ops)), t, slot, v, None)
    low.tile_slot = slot_counter % 2


def _tile_act_lines(low: Lowerer, plan: EpiloguePlan) -> int:
    """act lines per tile row for the operands and stored int8 results of the epilogue (each double-buffered)."""
    outs = {op.out_act.name: op.out_act.channels for op in plan.ops if op.out_act is not None and not op.on_chip}
    return sum(low.cl(c) for c in outs.values()) + sum(
        low.cl(op.operand.channels) for op in plan.ops if op.operand is not None)


def _tmp_home(plan: EpiloguePlan) -> Act | None:
    """The stored output of the kernel's last op, whose slot can hold on-chip int8 temporaries: each is
    written and read back by the SFU before the last op writes that output. None when there is none."""
    return plan.ops[-1].out_act if plan.ops and not plan.ops[-1].on_chip else None


def _tmp_lines(low: Lowerer, plan: EpiloguePlan) -> int:
    """act lines per tile row of the one region shared by the on-chip int8 temporaries (requant_inside) that
    do not fit the slot of the kernel's last output (_tmp_home); the SFU runs in order, so that region needs
    no second buffer."""
    home = _tmp_home(plan)
    room = low.cl(home.channels) if home is not None else 0
    return max([low.cl(op.out_act.channels) for op in plan.ops
                if op.on_chip and low.cl(op.out_act.channels) > room], default=0)


def _act_rows(low: Lowerer, plan: EpiloguePlan, per_row: int = 1) -> int:
    """The most tile rows (of per_row image rows) whose double-buffered operand/result tiles and shared
    temporaries fit the upper half of act."""
    return (low.m.act_lines // 2) // (per_row * (2 * max(1, _tile_act_lines(low, plan)) + _tmp_lines(low, plan)))


def _max_rows(low: Lowerer, plan: EpiloguePlan, in_lines: int, acc_lines: int) -> tuple[int, int]:
    """The most rows a tile can have: input slot (a quarter of act), two acc slots, LayerNorm statistics
    registers, and double-buffered operand/result tiles in the other half of act. Also returns the act
    lines per row of those operand/result tiles."""
    m = low.m
    tm = min((m.act_lines // 4) // in_lines, m.acc_lines // (2 * acc_lines), 0xFFFF)
    if any(op.st is not None and op.st.mode == "row" for op in plan.ops):
        tm = min(tm, m.stat_groups)
    return min(tm, _act_rows(low, plan)), _tile_act_lines(low, plan)


# ------------------------------------------------------------------ weights

class WeightStream:
    """Column blocks of L output channels, each `block_lines` wgt lines, loaded in groups that fit a slot."""

    def __init__(self, low: Lowerer, k: Kernel, blocks, block_lines: int,
                 groups: list[tuple[int, int]] | None = None, nblk: int | None = None):
        """blocks: [nblk, block_lines, L/2] packed int4 (_packed_blocks), or a function making them when first
        loaded (then nblk is given: candidate tilings are compared without building every candidate's weights).
        groups: the [first, end) block ranges that one pass over the columns visits (default: as many
        blocks per group as fit a slot); when all blocks fit a slot they are loaded once (resident)."""
        self.low, self.k = low, k
        self.nblk = blocks.shape[0] if nblk is None else nblk
        self.block_lines = block_lines
        half = low.m.wgt_lines // 2
        self.per_group = half // block_lines
        if self.per_group == 0:
            raise CompileError(f"kernel {k.name}: one block of {block_lines} weight lines exceeds the wgt slot "
                               f"of {half} lines")
        self.half = half
        self.resident = self.nblk <= self.per_group
        if groups is None:
            # groups of equal size: the load of group g+1 overlaps the array work of group g, and a short
            # last group would leave the next tile's first (long) load exposed
            per = -(-self.nblk // -(-self.nblk // self.per_group))
            groups = [(g, min(g + per, self.nblk)) for g in range(0, self.nblk, per)]
        if any(g1 - g0 > self.per_group for g0, g1 in groups):
            raise CompileError(f"kernel {k.name}: a weight group exceeds the wgt slot of {half} lines")
        self.groups = groups
        # DATA: all blocks contiguous (packed when first loaded)
        self.blocks = blocks
        self.nbytes = self.nblk * block_lines * low.L // 2
        self.offsets = None

    def _load(self, g0: int, g1: int, dst: int) -> None:
        low = self.low
        lb = low.m.line_bytes("wgt")
        if self.offsets is None:
            self.offsets = len(low.data)
            blocks, self.blocks = self.blocks, None

            def blob() -> np.ndarray:     # on the DATA image's writer thread once the image is large
                b = blocks() if callable(blocks) else blocks
                return np.ascontiguousarray(b).reshape(-1).view(np.uint8)
            low.data.append(self.nbytes, blob)
            low.data += bytes(-len(low.data) % 64)
        lines = (g1 - g0) * self.block_lines
        i = 0
        while i < lines:
            n = min(0xFFFF, lines - i)
            idx = low.emit("load", [W("wgt", dst + i, n)], buf="wgt", dram=0, sram=dst + i, run=n)
            from .lowering import Reloc
            low.relocs.append(Reloc(idx, "data", self.offsets + (g0 * self.block_lines + i) * lb))
            i += n

    def _next_slot(self) -> int:
        """The wgt half after the one loaded last (by any kernel): a kernel's first weights then load while
        the previous kernel still computes with its last ones."""
        h = self.low.wgt_half
        self.low.wgt_half ^= 1
        return h * self.half

    def start(self) -> None:
        if self.resident:
            self.resident_at = self._next_slot()
            self._load(0, self.nblk, self.resident_at)

    def each_group(self):
        """Yield (first block, blocks, wgt address) for one pass over the columns, loading as needed."""
        for g0, g1 in self.groups:
            if self.resident:
                yield g0, g1 - g0, self.resident_at + g0 * self.block_lines
            else:
                dst = self._next_slot()
                self._load(g0, g1, dst)
                yield g0, g1 - g0, dst


def _packed_blocks(w: np.ndarray, L: int) -> np.ndarray:
    """w [N, *rows] int4 values, output channel first (any strides) -> [nblk, rows, L/2] bytes: blocks of L
    output channels (the last one zero padded), one wgt line per row, lane 2j in the low nibble of byte j.

    The lanes are paired in w's own layout (one pass over the int8 values) and only the packed half is
    transposed into blocks."""
    n = w.shape[0]
    nblk = -(-n // L)
    if nblk * L != n:
        w = np.concatenate([w, np.zeros((nblk * L - n,) + w.shape[1:], np.int8)])
    u = w.view(np.uint8).reshape((nblk, L // 2, 2) + w.shape[1:])
    b = (u[:, :, 0] & 0xF) | (u[:, :, 1] << 4)          # [nblk, L/2, *rows]
    return np.ascontiguousarray(np.moveaxis(b, 1, -1)).reshape(nblk, -1, L // 2)


def _matmul_blocks(wq, L: int, rows: int | None = None) -> np.ndarray:
    """[K, N] int4 weights -> [nblk, rows, L/2] packed blocks (_packed_blocks of wq.T, K zero padded to rows).
    A stored int4 tensor with whole bytes per row is already paired along N: its bytes are only regrouped."""
    K, N = np.shape(wq)
    rows = K if rows is None else rows
    nblk = -(-N // L)
    stored = stored_int4(wq)
    if stored is None or N % 2:
        q = np.asarray(wq, np.int8)
        if rows != K:
            q = np.concatenate([q, np.zeros((rows - K, N), np.int8)])
        return _packed_blocks(q.T, L)
    b = stored.reshape(K, N // 2)
    if rows != K or nblk * L != N:
        b = np.zeros((rows, nblk * L // 2), np.uint8)
        b[:K, :N // 2] = stored.reshape(K, N // 2)
    # one block line (L/2 bytes) is one element of the transposing copy (2.5x faster than byte by byte)
    lines = np.ascontiguousarray(b.reshape(-1).view(f"V{L // 2}").reshape(rows, nblk).T)
    return lines.view(np.uint8).reshape(nblk, rows, L // 2)


_LOW_NIBBLES, _HIGH_NIBBLES, _FOUR = np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(0xF0F0F0F0F0F0F0F0), np.uint64(4)


def _conv_blocks(wq, L: int) -> np.ndarray:
    """[Cout, Cin, 3, 3] int4 weights -> [nblk, 9 Cin, L/2] packed blocks, rows (ky, kx, ci) (_packed_blocks of
    wq.transpose(0, 2, 3, 1)). A stored int4 tensor with whole bytes per output channel pairs taps of one
    channel; output channels 2j and 2j+1 are paired nibble by nibble from its bytes without unpacking."""
    cout, cin = np.shape(wq)[:2]
    stored = stored_int4(wq)
    if stored is None or (9 * cin) % 2:
        return _packed_blocks(np.asarray(wq, np.int8).transpose(0, 2, 3, 1), L)
    nblk, h, R = -(-cout // L), L // 2, 9 * cin // 2
    n = nblk * h * R
    s = stored.reshape(cout, R)
    # channels 2j and 2j+1 of each block as 64-bit words: views of the stored rows when they are whole words,
    # else copied apart into word-aligned buffers (np.empty, not np.zeros: calloc's fresh pages cost more
    # than the copy; zero rows pad the last block)
    if nblk * L == cout and R % 8 == 0:
        pairs = s.reshape(nblk * h, 2, R)
        a, b = pairs[:, 0].view(np.uint64), pairs[:, 1].view(np.uint64)
    else:
        a, b = np.empty(-(-n // 8) * 8, np.uint8), np.empty(-(-n // 8) * 8, np.uint8)
        for c, half in ((0, a), (1, b)):
            rows = s[c::2]
            half[:rows.size].reshape(rows.shape)[...] = rows
            half[rows.size:] = 0
        a, b = a.view(np.uint64), b.view(np.uint64)
    # the nibble pairing, 16 nibbles per operation (byte by byte it took 2x the time of the rest)
    even = a & _LOW_NIBBLES                             # tap 2e: both low nibbles
    even |= (b & _LOW_NIBBLES) << _FOUR
    odd = a >> _FOUR                                    # tap 2e+1: both high nibbles
    odd &= _LOW_NIBBLES
    odd |= b & _HIGH_NIBBLES
    # byte e of channel ci's row holds taps (2e, 2e+1) of the flat index f = 9 ci + tap: for an even ci
    # (ci = 2c) the even taps are in `even` at e = 9c + tap/2 and the odd ones in `odd` at 9c + (tap-1)/2; for
    # an odd ci the other way round, at 9c + 4 + tap/2 and 9c + (tap+9)/2. Four strided copies put them at
    # rows (tap, ci) with the lane pairs innermost (one pass, instead of interleaving and then transposing).
    ev = even.reshape(-1).view(np.uint8)[:n].reshape(nblk, h, cin // 2, 9)
    od = odd.reshape(-1).view(np.uint8)[:n].reshape(nblk, h, cin // 2, 9)
    out = np.empty((nblk, 9, cin // 2, 2, h), np.uint8)       # [block, tap, c, ci - 2c, lane pair]
    lanes_last = (0, 3, 2, 1)
    out[:, 0::2, :, 0] = ev[..., 0:5].transpose(lanes_last)
    out[:, 1::2, :, 0] = od[..., 0:4].transpose(lanes_last)
    out[:, 0::2, :, 1] = od[..., 4:9].transpose(lanes_last)
    out[:, 1::2, :, 1] = ev[..., 5:9].transpose(lanes_last)
    return out.reshape(nblk, 9 * cin, h)


# ------------------------------------------------------------------ matmul

@kernel_lowering("matmul")
def lower_matmul(low: Lowerer, k: Kernel) -> None:
    m, L = low.m, low.L
    x = k.inputs[0]
    K = x.channels
    q = k.weights.q                                 # read when the weights are first loaded
    if np.shape(q)[0] != K:
        raise CompileError(f"kernel {k.name}: weights have {np.shape(q)[0]} rows for {K} input channels")
    N = np.shape(q)[1]
    n_images = x.shape[0]
    image_rows = math.prod(x.shape[1:-1]) if len(x.shape) > 2 else 1
    cl_in, cl_n = low.cl(K), low.cl(N)
    n_steps = low.kg.n_steps
    prm = _prm(low)
    main_scale = _steps(x, n_steps)[:, None] * np.asarray(k.weights.scale, np.float64)[None, :]
    plan = plan_epilogue(k, prm, "acc32", main_scale, N, image_rows)
    _place_prm(low, k, prm)
    chunk_ops = _geglu_chunk_ops(plan)
    if chunk_ops is not None:
        _lower_geglu_matmul(low, k, plan, chunk_ops, prm, q, n_images, image_rows)
        return
    # MM-OS, or CONV-WS as a stride-3 3x3 conv (no per-tile fill and readout; the reduction padded to nine
    # taps of whole lines): whichever the cost model finds faster, unless an option forces the dataflow
    forced = k.dataflow_reason.startswith("overridden")
    forms = [f for f in (_matmul_form(low, k, plan, q, df, image_rows)
                         for df in ([k.dataflow] if forced else ["os", "ws"])) if f is not None]
    if not forms:
        raise CompileError(f"kernel {k.name}: a single row does not fit the on-chip buffers")
    f = min(forms, key=lambda f: f.cycles)
    low.debug_extra["dataflow"] = f.df
    ws, R_in, cinl = f.ws, f.in_lines, f.cinl
    ws.start()
    act_quarter = m.act_lines // 4
    tiles = _tiles(n_images, image_rows, f.tm)

    def main(t: Tile, v: int, slot: int):
        a = slot * act_quarter
        low.load_rows(x, a, t.r0, t.rows, sram_stride=R_in)
        for g0, nb, wa in ws.each_group():
            ncols = min(N, (g0 + nb) * L) - g0 * L
            _emit_linear(low, f.df, a, R_in, cl_in, cinl, wa, nb, ws.block_lines, v + g0, cl_n, t.rows, ncols, K)
        return None

    _run_tiles(low, k, plan, prm, tiles, image_rows, N, main, 2 * act_quarter, m.act_lines, f.tm)


@dataclass
class _MatmulForm:
    df: str
    ws: "WeightStream"
    in_lines: int       # act lines per input row in the tile (CONV-WS: nine taps of cinl lines)
    cinl: int           # CONV-WS: lines per tap
    tm: int
    cycles: float


def _matmul_form(low: Lowerer, k: Kernel, plan: EpiloguePlan, q, df: str,
                 image_rows: int) -> _MatmulForm | None:
    """The weights, tile height and estimated cycles of a matmul run as MM-OS or as CONV-WS.

    CONV-WS computes Y = X W as a 3x3 convolution of stride 3 over a one-column image: token r is input
    rows 3r..3r+2, each tap reads cinl = ceil(K_lines / 9) lines of the token's row (laid out with a row
    stride of 9 cinl lines) and W is padded with zero rows to 9 cinl L. Lines past K read whatever the slot
    holds, times zero weights."""
    m, L = low.m, low.L
    K, N = np.shape(q)
    cl_in, cl_n = low.cl(K), low.cl(N)
    cinl = 0
    if df == "ws":
        cinl = -(-cl_in // 9)
        kp = 9 * cinl * L
        if cinl > 0xFF or cinl * L > 0xFFF:
            return None
        ws = WeightStream(low, k, lambda: _matmul_blocks(q, L, kp), kp, nblk=cl_n)
        in_lines = 9 * cinl
    else:
        ws = WeightStream(low, k, lambda: _matmul_blocks(q, L), K, nblk=cl_n)
        in_lines = cl_in
    tm, out_lines = _max_rows(low, plan, in_lines, cl_n)
    if df == "ws":
        tm = min(tm, 0xFFF // 3)                # ih = 3 rows per token
    if tm < 1:
        return None
    wbytes = 0 if ws.resident else ws.nbytes
    sfu_ops = len(plan.ops)
    group_cols = _counted(min(N, g1 * L) - g0 * L for g0, g1 in ws.groups)

    def work(r: int) -> TileWork:
        if df == "ws":
            array = sum(n * conv_cycles(m, r, cinl * L, c, "ws") for c, n in group_cols)
        else:
            array = sum(n * mm_cycles(m, r, c, K) for c, n in group_cols)
        return TileWork(r, N, r * K * N, r * cl_in * L + wbytes + r * out_lines * L, r * N * sfu_ops,
                        2 + len(ws.groups) * (1 + (not ws.resident)) + 2 * sfu_ops, array=array,
                        lead_bytes=r * cl_in * L + wbytes // len(ws.groups))

    tm, cycles = best_rows(m, tm, image_rows, work, m.tile_m)
    cycles += (ws.nbytes if ws.resident else 0) / m.dma_bytes_per_cycle
    return _MatmulForm(df, ws, in_lines, cinl, tm, cycles)


def _geglu_chunk_ops(plan: EpiloguePlan):
    """A GeGLU projection whose epilogue is dequantize, [round to an int8 grid and back]*, GeGLU, emit:
    every output column j needs only columns j (value) and H + j (gate) of the product, so it runs in column
    chunks. Returns (deq, [(round, back)], geglu, rest) or None. (The roundings are requant_inside's
    Requant steps: an emit to an on-chip int8 tile and a deq of it, element by element.)"""
    ops = plan.ops
    if plan.gn or len(ops) < 2 or ops[0].kind != "deq" or ops[0].src_act:
        return None
    deq, i, rounds = ops[0], 1, []
    while i + 1 < len(ops) and ops[i].on_chip:
        rq, back = ops[i], ops[i + 1]
        if rq.kind != "act" or rq.fn != "none" or back.kind != "deq" or back.src_tmp is not rq.out_act:
            return None
        rounds.append((rq, back))
        i += 2
    gg, rest = (ops[i], ops[i + 1:]) if i < len(ops) else (None, [])
    if gg is None or gg.kind != "geglu" or len(rest) > 1:
        return None
    if any(op.st is not None or op.operand is not None for op in ops) or any(op.src_act for op in [gg, *rest]):
        return None
    last = ops[-1]
    if last.out_act is None or last.on_chip:
        return None
    if rest and (gg.out_act is not None or last.kind != "act"):
        return None
    return deq, rounds, gg, rest


def _lower_geglu_matmul(low: Lowerer, k: Kernel, plan: EpiloguePlan, chunk_ops, prm: PrmImage, q,
                        n_images: int, image_rows: int) -> None:
    """matmul + bias + GeGLU + emit in column chunks: chunk c computes the value columns [j, j+n) and the
    gate columns [H+j, H+j+n) (lines) with one mm (their weight blocks are stored next to each other), then
    dequantizes both halves, applies GeGLU and emits n lines of the output. The acc tile holds one chunk,
    not 2H columns, so tiles keep full array heights and weights are re-fetched for fewer row tiles.
    The product runs as MM-OS or CONV-WS (see _matmul_form), whichever the cost model prefers."""
    m, L = low.m, low.L
    x = k.inputs[0]
    K = x.channels
    cl_in = low.cl(K)
    deq, rounds, gg, rest = chunk_ops          # _geglu_chunk_ops(plan)
    out = plan.ops[-1].out_act
    H = plan.out_cols
    hl = H // L
    act_quarter = m.act_lines // 4
    forced = k.dataflow_reason.startswith("overridden")
    best = None
    for df in ([k.dataflow] if forced else ["os", "ws"]):
        cinl = -(-cl_in // 9) if df == "ws" else 0
        kp = 9 * cinl * L if df == "ws" else K
        if df == "ws" and (cinl > 0xFF or cinl * L > 0xFFF):
            continue
        in_lines = 9 * cinl if df == "ws" else cl_in
        half = m.wgt_lines // 2
        cc = hl if 2 * hl * kp <= half else max(1, half // (2 * kp))
        cc = -(-hl // -(-hl // cc))                      # chunks of equal width (see WeightStream)
        chunks = [(j, min(cc, hl - j)) for j in range(0, hl, cc)]
        tm = min(act_quarter // in_lines, m.acc_lines // (4 * cc), (m.act_lines // 2) // (2 * cc), 0xFFFF)
        if df == "ws":
            tm = min(tm, 0xFFF // 3)
        if tm < 1:
            continue
        resident = 2 * hl * kp <= half
        wbytes = 0 if resident else 2 * hl * kp * L // 2

        chunk_widths = _counted(n for _, n in chunks)

        def work(r: int, df=df, chunks=chunks, chunk_widths=chunk_widths, cinl=cinl, resident=resident,
                 wbytes=wbytes) -> TileWork:
            if df == "ws":
                array = sum(c * conv_cycles(m, r, cinl * L, 2 * n * L, "ws") for n, c in chunk_widths)
            else:
                array = sum(c * mm_cycles(m, r, 2 * n * L, K) for n, c in chunk_widths)
            return TileWork(r, 2 * H, r * K * 2 * H, r * cl_in * L + wbytes + r * hl * L,
                            r * (4 + 2 * len(rounds)) * H,
                            1 + len(chunks) * (5 + 2 * len(rounds) + len(rest) + (not resident)), array=array,
                            lead_bytes=r * cl_in * L + wbytes // len(chunks))

        tm, cycles = best_rows(m, tm, image_rows, work, m.tile_m)
        if best is None or cycles < best[0]:
            best = (cycles, df, cinl, kp, in_lines, cc, chunks, tm)
    if best is None:
        raise CompileError(f"kernel {k.name}: a single row does not fit the on-chip buffers")
    _, df, cinl, kp, in_lines, cc, chunks, tm = best
    low.debug_extra["dataflow"] = df
    order = [b for j, n in chunks for b in (*range(j, j + n), *range(hl + j, hl + j + n))]
    ws = WeightStream(low, k, lambda: _matmul_blocks(q, L, kp)[order], kp, nblk=len(order),
                      groups=[(2 * j, 2 * (j + n)) for j, n in chunks])
    ws.start()
    prm_acc = R("prm", prm.base, prm.lines)
    n_chunk = low.tile_slot
    first_slot = low.tile_slot
    for ti, t in enumerate(_tiles(n_images, image_rows, tm)):
        a = ((ti + first_slot) % 2) * act_quarter
        low.tile_slot = (ti + first_slot + 1) % 2
        low.load_rows(x, a, t.r0, t.rows, sram_stride=in_lines)
        for (j, n), (g0, nb, wa) in zip(chunks, ws.each_group()):
            slot = n_chunk % 2
            n_chunk += 1
            v, vrs = slot * tm * 2 * cc, 2 * n
            o = 2 * act_quarter + slot * tm * cc
            vlines = t.rows * vrs
            _emit_linear(low, df, a, in_lines, cl_in, cinl, wa, nb, kp, v, vrs, t.rows, 2 * n * L, K)
            for off, line0 in ((0, j), (n, hl + j)):      # value half, gate half: their columns' scales
                src, src_acc = dict(sbuf="acc", s=v + off, srs=vrs), R("acc", v, vlines)
                scale = deq_scale_fields(deq, line0)
                for rq, back in rounds:
                    # dequantize (or bring back) and round to the model's int8 grid in one pass, into the
                    # chunk's output slot (the GeGLU writes it only later)
                    low.emit("deqact", [src_acc, W("act", o, t.rows * n), prm_acc], **src, out="act", d=o, drs=n,
                             rows=t.rows, cols=n * L, **scale, fn=rq.fn, frac=rq.frac, osc=rq.sc.word)
                    src, src_acc = dict(sbuf="act", s=o, srs=n), R("act", o, t.rows * n)
                    scale = deq_scale_fields(back, line0)
                low.emit("deq", [src_acc, W("acc", v + off, vlines - off), prm_acc], **src, d=v + off, drs=vrs,
                         rows=t.rows, cols=n * L, **scale)
            if rest:
                dst, acc_out = dict(out="acc", d=v, drs=vrs), W("acc", v, vlines)
            else:
                dst, acc_out = dict(out="act", d=o, drs=n), W("act", o, t.rows * n)
            low.emit("geglu", [R("acc", v, vlines), acc_out, prm_acc], a=v, ars=vrs, b=v + n, brs=vrs,
                     rows=t.rows, cols=n * L, frac=gg.frac, sc=gg.sc.word, **dst)
            for op in rest:
                low.sfu(op, prm, v=v, vrs=vrs, rows=t.rows, cols=n * L, st_first=False, out=o, outrs=n)
            low.store_rows(out, o, t.r0, t.rows, line0=j, lines=n)


def _emit_linear(low: Lowerer, df: str, a: int, in_lines: int, cl_in: int, cinl: int, wa: int, nblk: int,
                 block_lines: int, c: int, crs: int, rows: int, ncols: int, K: int) -> None:
    """acc[c..] = X W for `rows` input rows at act a (in_lines apart) and the nblk weight blocks at wa:
    an mm (MM-OS) or the stride-3 conv of _matmul_form (CONV-WS)."""
    L = low.L
    acc = [R("act", a, rows * in_lines), R("wgt", wa, nblk * block_lines), W("acc", c, rows * crs)]
    if df == "ws":
        # token r, tap t = 3 ky + kx reads lines [9 r cinl + t cinl, + cinl): input pixel (3 r + ky, kx)
        low.emit("conv", acc, df="ws", i=a, ips=cinl, irs=3 * cinl, ih=3 * rows, iw=3, w=wa, wbs=block_lines,
                 wts=cinl * L, o=c, ops=crs, ors=crs, oh=rows, ow=1, cin=cinl * L, cout=ncols, stride=3, pt=0,
                 pl=0, acc=0)
        low.debug_extra["linear_k"] = K     # the cycle model counts oh x cout x K useful MACs per conv
    else:
        low.emit("mm", acc, a=a, ars=in_lines, wsrc="wgt", w=wa, ws=block_lines, c=c, crs=crs, m=rows, n=ncols,
                 k=K)


# ------------------------------------------------------------------ conv3x3

@kernel_lowering("conv3x3")
def lower_conv3x3(low: Lowerer, k: Kernel) -> None:
    m, L = low.m, low.L
    x = k.inputs[0]
    B, H, Wd, Cin = x.shape
    wshape = tuple(np.shape(k.weights.q))         # (Cout, Cin, 3, 3)
    Cout = wshape[0]
    if wshape[1:] != (Cin, 3, 3):
        raise CompileError(f"kernel {k.name}: weights {wshape} do not match {Cin} input channels")
    s, p = k.stride, k.pad
    if not 1 <= s <= 3 or not 0 <= p <= 1:
        raise CompileError(f"kernel {k.name}: stride {s} / padding {p} not supported (stride 1-3, padding 0-1)")
    Ho, Wo = (H + 2 * p - 3) // s + 1, (Wd + 2 * p - 3) // s + 1
    cl_in, cl_out = low.cl(Cin), low.cl(Cout)
    # CONV-WS fills only Cin of the X PE rows: with few input channels (conv_in: 4) MM-OS is faster; the cost
    # model decides unless an option pins the dataflow
    df = k.dataflow if k.dataflow_reason.startswith("overridden") else \
        min(("ws", "os"), key=lambda d: conv_cycles(m, Ho * Wo, Cin, Cout, d))
    low.debug_extra["dataflow"] = df
    n_steps = low.kg.n_steps
    prm = _prm(low)
    main_scale = _steps(x, n_steps)[:, None] * np.asarray(k.weights.scale, np.float64)[None, :]
    image_rows = Ho * Wo
    plan = plan_epilogue(k, prm, "acc32", main_scale, Cout, image_rows)
    _place_prm(low, k, prm)
    # weights: Wt[t, ci, co] at wgt[w + (co//L)*9*Cin + t*Cin + ci]: rows (ky, kx, ci) of each block
    ws = WeightStream(low, k, lambda: _conv_blocks(k.weights.q, L), 9 * Cin, nblk=cl_out)
    ws.start()
    act_quarter = m.act_lines // 4
    # Input channels in chunks of `cc` lines when three input rows of all channels do not fit the input slot
    # (each chunk accumulates into the same outputs: conv acc=1).
    cc = min(cl_in, max(1, act_quarter // (3 * Wd)))
    if Cin % L and cc < cl_in:
        raise CompileError(f"kernel {k.name}: {Cin} input channels (not a multiple of the {L} lanes) do not fit "
                           f"the input buffer in one pass")
    row_in = Wd * cc
    th = min((act_quarter // row_in - 3) // s + 1, m.acc_lines // (2 * Wo * cl_out), 0xFFF, Ho)
    out_lines = _tile_act_lines(low, plan)
    th = min(th, _act_rows(low, plan, Wo))
    if th < 1:
        raise CompileError(f"kernel {k.name}: one output row does not fit the on-chip buffers")
    chunks = [(c0, min(cc, cl_in - c0)) for c0 in range(0, cl_in, cc)]
    wbytes = 0 if ws.resident else ws.nbytes * len(chunks)
    sfu_ops = len(plan.ops)

    group_cols = _counted(min(Cout, g1 * L) - g0 * L for g0, g1 in ws.groups)
    chunk_cin = _counted(min(Cin - c0 * L, n * L) for c0, n in chunks)

    def work(r: int) -> TileWork:      # r output image rows
        return TileWork(r * Wo, Cout, r * Wo * 9 * Cin * Cout, ((r - 1) * s + 3) * Wd * cl_in * L + wbytes
                        + r * Wo * out_lines * L, r * Wo * Cout * sfu_ops,
                        2 + len(chunks) * len(ws.groups) * (1 + (not ws.resident)) + 2 * sfu_ops,
                        array=sum(ni * nc * conv_cycles(m, r * Wo, ci, c, df) for ci, ni in chunk_cin
                                  for c, nc in group_cols),
                        lead_bytes=((r - 1) * s + 3) * Wd * cc * L + wbytes // (len(chunks) * len(ws.groups)))

    th = choose_rows(m, th, Ho, work, 1)
    tm = th * Wo
    tiles = _tiles(B, image_rows, tm)

    def main(t: Tile, v: int, slot: int):
        a = slot * act_quarter
        oy0 = (t.r0 - t.image * image_rows) // Wo
        oh = t.rows // Wo
        iy0 = oy0 * s - p
        iy1 = (oy0 + oh - 1) * s - p + 3
        y0, y1 = max(iy0, 0), min(iy1, H)
        for c0, n in chunks:
            low.load_rows(x, a, t.image * H * Wd + y0 * Wd, (y1 - y0) * Wd, line0=c0, lines=n)
            cin = min(Cin - c0 * L, n * L)
            for g0, nb, wa in ws.each_group():
                ncols = min(Cout, (g0 + nb) * L) - g0 * L
                low.emit("conv", [R("act", a, (y1 - y0) * Wd * n), R("wgt", wa, nb * 9 * Cin),
                                  W("acc", v + g0, t.rows * cl_out)],
                         df=df, i=a, ips=n, irs=Wd * n, ih=y1 - y0, iw=Wd, w=wa + c0 * L, wbs=9 * Cin,
                         wts=Cin, o=v + g0, ops=cl_out, ors=Wo * cl_out, oh=oh, ow=Wo, cin=cin, cout=ncols,
                         stride=s, pt=y0 - iy0, pl=p, acc=int(c0 > 0))
        return None

    _run_tiles(low, k, plan, prm, tiles, image_rows, Cout, main, 2 * act_quarter, m.act_lines, tm)


# ------------------------------------------------------------------ norm / add (int8 input)

def _act8_kernel(low: Lowerer, k: Kernel, x: Act, k_eff: Kernel) -> None:
    m = low.m
    n_images = x.shape[0]
    image_rows = math.prod(x.shape[1:-1]) if len(x.shape) > 2 else 1
    C = x.channels
    cl = low.cl(C)
    prm = _prm(low)
    plan = plan_epilogue(k_eff, prm, "act8", None, C, image_rows, in_act=x)
    _place_prm(low, k, prm)
    act_quarter = m.act_lines // 4
    tm = _round_tile(_max_rows(low, plan, cl, cl)[0], image_rows, m.tile_m)
    tiles = _tiles(n_images, image_rows, tm)

    def main(t: Tile, v: int, slot: int):
        a = slot * act_quarter
        low.load_rows(x, a, t.r0, t.rows)
        return a

    _run_tiles(low, k, plan, prm, tiles, image_rows, C, main, 2 * act_quarter, m.act_lines, tm, recompute=True)


@kernel_lowering("norm")
def lower_norm(low: Lowerer, k: Kernel) -> None:
    _act8_kernel(low, k, k.inputs[0], k)


@kernel_lowering("add")
def lower_add(low: Lowerer, k: Kernel) -> None:
    a, b = k.inputs
    extra = AddVec(b) if len(b.shape) == 2 and len(a.shape) > 2 else AddTensor(b)
    extra.absmax = k.main_absmax
    eff = Kernel(k.name, "norm", [a], [extra, *k.epilogue], main_absmax=k.main_absmax)
    _act8_kernel(low, k, a, eff)


# ------------------------------------------------------------------ attention

@kernel_lowering("attention")
def lower_attention(low: Lowerer, k: Kernel) -> None:
    m, L = low.m, low.L
    qa, ka, va = k.inputs
    B, T, HD = qa.shape
    S = ka.shape[1]
    h = k.heads
    d = HD // h
    if HD % h or d % L:
        raise CompileError(f"kernel {k.name}: head dimension {d} ({HD} channels / {h} heads) must be a multiple "
                           f"of the {L} lanes")
    if len(k.epilogue) != 1 or not isinstance(k.epilogue[0], Emit):
        raise CompileError(f"kernel {k.name}: attention supports only an Emit epilogue")
    out = k.epilogue[0].out
    n_steps = low.kg.n_steps
    dl, cs = d // L, low.cl(S)
    prm = _prm(low)
    sq, sk, sv = _steps(qa, n_steps), _steps(ka, n_steps), _steps(va, n_steps)
    score_rq = None
    if k.score_scales is not None:
        # the model rounds the scores to its int8 grid (requant_inside): the SoftMax's first scale (pre) puts
        # them on that grid (saturating at int16, not int8: they differ only past the calibrated range)
        ss = np.broadcast_to(np.asarray(k.score_scales, np.float64), (n_steps,))
        score_rq = prm.word(scale_entries(sq * sk * k.sm_scale / ss, f"kernel {k.name} scores"))
        sm = prm.word(scale_entries(ss * math.log2(math.e) * 256.0, f"kernel {k.name} softmax"))
    else:
        sm = prm.word(scale_entries(sq * sk * k.sm_scale * math.log2(math.e) * 256.0, f"kernel {k.name} softmax"))
    plan = plan_epilogue(k, prm, "acc32", sv / 127.0, d, T)
    _place_prm(low, k, prm)
    # act layout: K_h, V_h (S x d each; two sets when that leaves room for full array tiles, so the next
    # head's keys load while this head computes), then per slot: Q tile, P tile, output tile
    per_row_act = dl + cs + dl
    kv_sets = 1
    for sets in (2, 1):
        free = m.act_lines - 2 * sets * S * dl
        tq = min(free // (2 * per_row_act), m.acc_lines // (2 * (cs + dl)), T) if free > 0 else 0
        if tq >= min(T, m.tile_m) or (sets == 1 and tq >= 1):
            kv_sets = sets
            break
    else:
        tq = 0
    if tq < 1:
        raise CompileError(f"kernel {k.name}: {S} keys do not fit the act buffer")
    tq = _round_tile(tq, T, m.tile_m)
    slot_base = 2 * kv_sets * S * dl
    cl_out = low.cl(out.channels)
    tiles = [(b, hh, t0) for b in range(B) for hh in range(h) for t0 in range(0, T, tq)]

    def addrs(i):
        b, hh, t0 = tiles[i]
        slot = i % 2
        kv = ((b * h + hh) % kv_sets) * 2 * S * dl
        qs = slot_base + slot * tq * per_row_act
        sc_acc = slot * tq * (cs + dl)
        return dict(b=b, hh=hh, t0=t0, n=min(tq, T - t0), kbase=kv, vbase=kv + S * dl, qs=qs, ps=qs + tq * dl,
                    os=qs + tq * dl + tq * cs, sc_acc=sc_acc, o_acc=sc_acc + tq * cs)

    def scores(i):      # load Q (and this head's K), Q.K^T on the array, SoftMax on the SFU
        a = addrs(i)
        if a["t0"] == 0:
            low.load_rows(ka, a["kbase"], a["b"] * S, S, line0=a["hh"] * dl, lines=dl)
        n, qs, sc_acc, ps = a["n"], a["qs"], a["sc_acc"], a["ps"]
        low.load_rows(qa, qs, a["b"] * T + a["t0"], n, line0=a["hh"] * dl, lines=dl)
        low.emit("mm", [R("act", qs, n * dl), R("act", a["kbase"], S * dl), W("acc", sc_acc, n * cs)],
                 a=qs, ars=dl, wsrc="act_t", w=a["kbase"], ws=dl, c=sc_acc, crs=cs, m=n, n=S, k=d)
        pre = {} if score_rq is None else dict(pre=1, psc=score_rq.word)    # rounded to the grid in the same pass
        low.emit("softmax", [R("acc", sc_acc, n * cs), W("act", ps, n * cs), R("prm", prm.base, prm.lines)],
                 s=sc_acc, srs=cs, d=ps, drs=cs, rows=n, cols=S, sc=sm.word, **pre)

    def values(i):      # (this head's V,) P.V on the array, dequantize and emit the head's columns, store
        a = addrs(i)
        if a["t0"] == 0:
            # loaded here, not with K: the load waits for the previous head's last P.V (same V slot), and
            # in the load queue it would hold back the next Q tiles behind it
            low.load_rows(va, a["vbase"], a["b"] * S, S, line0=a["hh"] * dl, lines=dl)
        n, o_acc = a["n"], a["o_acc"]
        low.emit("mm", [R("act", a["ps"], n * cs), R("act", a["vbase"], S * dl), W("acc", o_acc, n * dl)],
                 a=a["ps"], ars=cs, wsrc="act", w=a["vbase"], ws=dl, c=o_acc, crs=dl, m=n, n=d, k=S)
        for op in plan.ops:     # the Emit's op writes the tile's output slot
            kw = dict(out=a["os"], outrs=dl) if op.out_act is not None else {}
            low.sfu(op, prm, v=o_acc, vrs=dl, rows=n, cols=d, st_first=False, **kw)
        r0 = a["b"] * T + a["t0"]
        dram = low.addr[out.name] + (r0 * cl_out + a["hh"] * dl) * L
        low._chunked("store", [R("act", a["os"], n * dl), W("dram", dram, ((n - 1) * cl_out + dl) * L)],
                     dram, a["os"], run=dl, ny=n, dy=cl_out * L, sy=dl)

    # software pipeline: the array computes the scores of tile i+1 while the SFU runs tile i's SoftMax
    scores(0)
    for i in range(1, len(tiles)):
        scores(i)
        values(i - 1)
    values(len(tiles) - 1)


# ------------------------------------------------------------------ concat / upsample (data movement)

def _requant_word(low: Lowerer, prm: PrmImage, src: Act, dst: Act, k: Kernel):
    n = low.kg.n_steps
    return prm.word(scale_entries(_steps(src, n) / _steps(dst, n), f"kernel {k.name} requantize {src.name}"))


@kernel_lowering("concat")
def lower_concat(low: Lowerer, k: Kernel) -> None:
    m, L = low.m, low.L
    if len(k.epilogue) != 1 or not isinstance(k.epilogue[0], Emit):
        raise CompileError(f"kernel {k.name}: concat supports only an Emit epilogue")
    out = k.epilogue[0].out
    for a in k.inputs[:-1]:
        if a.channels % L:
            raise CompileError(f"kernel {k.name}: concatenating {a.channels} channels needs a multiple of the "
                               f"{L} lanes")
    prm = _prm(low)
    words = [_requant_word(low, prm, a, out, k) for a in k.inputs]
    _place_prm(low, k, prm)
    x0 = k.inputs[0]
    n_images = x0.shape[0]
    image_rows = math.prod(x0.shape[1:-1]) if len(x0.shape) > 2 else 1
    cl_out = low.cl(out.channels)
    cl_sum = sum(low.cl(a.channels) for a in k.inputs)
    tm = _round_tile(min((m.act_lines // 2) // (cl_sum + cl_out), 0xFFFF), image_rows, m.tile_m)
    counter = 0
    for t in _tiles(n_images, image_rows, tm):
        slot = counter % 2
        counter += 1
        base = slot * (m.act_lines // 2)
        o = base + tm * cl_sum
        a_addr, line0 = base, 0
        for a, w in zip(k.inputs, words):
            c = low.cl(a.channels)
            low.load_rows(a, a_addr, t.r0, t.rows)
            low.emit("act", [R("act", a_addr, t.rows * c), W("act", o + line0, t.rows * cl_out - line0),
                             R("prm", prm.base, prm.lines)],
                     sbuf="act", s=a_addr, srs=c, out="act", d=o + line0, drs=cl_out, rows=t.rows, cols=a.channels,
                     fn="none", frac=0, sc=w.word)
            a_addr += t.rows * c
            line0 += c
        low.store_rows(out, o, t.r0, t.rows)


@kernel_lowering("upsample")
def lower_upsample(low: Lowerer, k: Kernel) -> None:
    m, L = low.m, low.L
    if len(k.epilogue) != 1 or not isinstance(k.epilogue[0], Emit):
        raise CompileError(f"kernel {k.name}: upsample supports only an Emit epilogue")
    x = k.inputs[0]
    out = k.epilogue[0].out
    B, H, Wd, C = x.shape
    cl = low.cl(C)
    prm = _prm(low)
    w = _requant_word(low, prm, x, out, k)
    _place_prm(low, k, prm)
    rows_per_tile = max(1, min(H, (m.act_lines // 4) // (Wd * cl)))
    counter = 0
    lb = L
    for b in range(B):
        for y0 in range(0, H, rows_per_tile):
            ny = min(rows_per_tile, H - y0)
            slot = counter % 2
            counter += 1
            a = slot * (m.act_lines // 4)
            o = (m.act_lines // 2) + a
            r0 = b * H * Wd + y0 * Wd
            low.load_rows(x, a, r0, ny * Wd)
            low.emit("act", [R("act", a, ny * Wd * cl), W("act", o, ny * Wd * cl), R("prm", prm.base, prm.lines)],
                     sbuf="act", s=a, srs=cl, out="act", d=o, drs=cl, rows=ny * Wd, cols=C, fn="none", frac=0,
                     sc=w.word)
            for y in range(ny):
                for dy2 in range(2):
                    oy = 2 * (y0 + y) + dy2
                    dram = low.addr[out.name] + ((b * 2 * H + oy) * 2 * Wd) * cl * lb
                    src = o + y * Wd * cl
                    # i: the lines of a pixel; y loop: the pixel twice (buffer stride 0); z loop: the pixels
                    low.emit("store", [R("act", src, Wd * cl), W("dram", dram, 2 * Wd * cl * lb)],
                             buf="act", dram=dram, sram=src, run=cl, ny=2, dy=cl * lb, sy=0, nz=Wd,
                             dz=2 * cl * lb, sz=cl)
