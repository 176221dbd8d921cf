"""The cycle model's parameters (one table) and the latency of every instruction from its fields.

``Timing`` holds every number the cycle model uses: the timing fields of the
``Machine`` (copied, so a bundle's machine description drives the model) plus
the few micro-architectural constants the ISA leaves open (array pipeline
depth, result readout, fetch rate, SoftMax passes...). Adjusting the model to
the RTL means changing this table (``Timing.from_machine(m, **overrides)`` or
``sdac report --timing overrides.json``), never the formulas.
docs/performance.md states the same formulas in words.

``latencies(instrs, timing)`` returns, per instruction, its latency in cycles
and the work it does (MACs, DRAM bytes, SFU elements), computed from the
instruction fields alone.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..errors import SdacError
from ..isa.machine import Machine
from ..isa.spec import SPEC

QUEUES = ("ld", "cmp", "sfu", "st")
QINDEX = {q: i for i, q in enumerate(QUEUES)}

# Copied from the Machine (so a bundle's own description times it).
_MACHINE_FIELDS = ("array_rows", "array_cols", "macs_per_pe", "lanes", "clock_mhz", "queue_depth",
                   "dma_bytes_per_cycle", "dma_latency", "dma_burst_bytes", "dma_burst_gap",
                   "sfu_lines_per_cycle", "sfu_pipeline", "instr_overhead")


@dataclass(frozen=True)
class Timing:
    """Every parameter of the cycle model. Defaults follow isa/machine.py and hw/rtl/sdac_array.sv."""

    # --- from the Machine ---------------------------------------------------
    array_rows: int = 20            # X
    array_cols: int = 10            # Y
    macs_per_pe: int = 4
    lanes: int = 20                 # L
    clock_mhz: float = 250.0
    queue_depth: int = 64
    dma_bytes_per_cycle: int = 16
    dma_latency: int = 64
    dma_burst_bytes: int = 256
    dma_burst_gap: int = 2
    sfu_lines_per_cycle: int = 1
    sfu_pipeline: int = 12
    instr_overhead: int = 4
    # --- micro-architecture the ISA leaves open --------------------------------
    pe_latency: int = 6             # PE operands -> accumulator (sdac_pe), part of the array fill
    mm_drain_rows_per_cycle: int = 1     # result rows of an OS tile read out of the array per cycle
    mm_drain_overlap: bool = True        # two accumulator sets: a tile streams while the previous one is read out
    mm_pass_refill: bool = False         # True: each int8 pass of a tile pays the fill and the readout again
    mm_pass_is_tile: bool = False        # True (with mm_drain_overlap): each int8 pass takes an accumulator set
    #                                      like a tile (it waits for the previous unit's readout)
    os_fill_includes_x: bool = True      # False: the OS fill is Y + pe_latency (row pair x is read as it finishes)
    array_start_cycles: int = 0          # fixed extra cycles per mm / conv instruction
    ws_weight_lines_per_cycle: int = 1   # wgt lines per cycle when loading a WS weight block into the array
    ws_weight_overlap: bool = True       # True: shadow weight registers load block b+1 while block b streams
    ws_drain_tail: float = 0.0           # cycles per pixel of the last job (<= 4X pixels) drained after its stream
    dma_load_line_cycles: float = 0.5    # cycles per buffer line a load writes at least (buffer port)
    dma_store_line_cycles: float = 0.5   # cycles per buffer line a store reads at least
    dma_burst_min_cycles: int = 0        # cycles a contiguous DRAM segment holds the channel at least
    zero_lines_per_cycle: int = 1        # lines per cycle of a zero-fill load (no DRAM access)
    fetch_bytes_per_cycle: int = 16      # instruction fetch bandwidth (own AXI read channel)
    fetch_interval_cycles: int = 0       # cycles between instruction words (0: from fetch_bytes_per_cycle)
    dma_shared: bool = False             # True: loads and stores share one DMA engine (one memory port)
    fetch_latency: int = 64              # cycles from START to the first instruction word
    softmax_passes: int = 3              # max; exp2 + sum; reciprocal x exp2 (each a pass over the row)
    geglu_passes: int = 1                # lines of the result per cycle ^-1 (A and B read in parallel)
    norm_group_cycles: int = 0           # per statistics group: mean / rsqrt (pipelined with the data if 0)
    transpose_block_latency: int = 20    # an L x L block is written out after it is read in
    sfu_stat_groups_per_cycle: int = 0   # channel-mode statistics groups summed per cycle (0: every group of a line)
    halt_cycles: int = 4                 # token check and DONE after the last unit is idle
    conv_ws_as_os: bool = False          # True: the array implements only MM-OS; conv df=ws is timed as os
    # Per-op SFU costs replacing the formula above: (op, cycles per line, cycles per row, fixed cycles);
    # for transpose "lines" counts the lines read plus the lines written. An entry "op+field" holds the
    # costs of that op's instructions whose (bool) field is set, e.g. "softmax+pre".
    sfu_costs: tuple = ()
    # Extra SFU cycles per line for instruction options: (feature, cycles per line), feature one of
    # silu, gelu (fn of act / norm), st (statistics), per_ch (deq scale vector), bias (deq bias).
    sfu_extra: tuple = ()

    @staticmethod
    def from_machine(m: Machine, **overrides) -> "Timing":
        base = {k: getattr(m, k) for k in _MACHINE_FIELDS}
        base["fetch_latency"] = m.dma_latency
        base["transpose_block_latency"] = m.lanes
        unknown = set(overrides) - {f.name for f in fields(Timing)}
        if unknown:
            raise SdacError(f"timing: unknown parameter(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(f.name for f in fields(Timing))})")
        base.update(overrides)
        for k in ("sfu_costs", "sfu_extra"):                                      # JSON gives lists
            base[k] = tuple(tuple(c) for c in base.get(k, ()))
        return Timing(**base)

    @staticmethod
    def load_overrides(path: str | Path) -> dict:
        """A JSON object of Timing fields (e.g. fitted to the RTL)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SdacError(f"{p}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SdacError(f"{p}: not a JSON object of timing parameters ({e})") from None
        if not isinstance(d, dict):
            raise SdacError(f"{p}: expected a JSON object of timing parameters")
        return d

    @staticmethod
    def resolve(machine: Machine, spec: str | None) -> "Timing":
        """Timing for a machine from a profile name (PROFILES), a JSON file of overrides, or None."""
        if not spec:
            return Timing.from_machine(machine)
        if spec in PROFILES:
            return Timing.from_machine(machine, **PROFILES[spec])
        return Timing.from_machine(machine, **Timing.load_overrides(spec))

    def replace(self, **changes) -> "Timing":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    # derived
    @property
    def tile_m(self) -> int:
        return 2 * self.array_rows

    @property
    def tile_n(self) -> int:
        return 2 * self.array_cols

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.array_rows * self.array_cols * self.macs_per_pe

    @property
    def array_fill(self) -> int:
        """Cycles from the first operand entering the array to the last PE's first result (skew + PE)."""
        return self.array_rows + self.array_cols + self.pe_latency

    @property
    def fetch_interval(self) -> int:
        return self.fetch_interval_cycles or -(-SPEC.word_bytes // self.fetch_bytes_per_cycle)

    def line_bytes(self, buf: str) -> int:
        return {"act": self.lanes, "wgt": self.lanes // 2, "acc": 4 * self.lanes, "prm": 4 * self.lanes}[buf]


# Named override sets. "rtl-cosim": the RTL as of hw/rtl/sdac_top.sv (DMA, mm, conv, SFU) inside
# hw/tb/sdac_tb_top.sv, whose AXI4 DRAM slave (default: no stalls, first R beat / B response one cycle after
# the request) serves reads and writes on independent channels, measured by micro-programs
# (tests/perf/test_model_vs_rtl.py holds the model within 10% of it). AXI: INCR bursts of up to 16 lines
# back to back (1 line per cycle, ~6 cycles from issue to the first beat / last B); fetch prefetches bursts
# of 4 instruction words (1 word per cycle once the first burst is in); a unit holds a sync 2 cycles.
PROFILES: dict[str, dict] = {
    "rtl-cosim": dict(instr_overhead=2, fetch_latency=4, fetch_interval_cycles=1, halt_cycles=2, dma_shared=False,
                      dma_latency=6, dma_bytes_per_cycle=1 << 10, dma_burst_gap=0,
                      dma_load_line_cycles=1, dma_store_line_cycles=1, zero_lines_per_cycle=1,
                      pe_latency=5, os_fill_includes_x=False, array_start_cycles=1, mm_drain_overlap=True,
                      mm_pass_is_tile=True, conv_ws_as_os=False, dma_burst_min_cycles=2, ws_drain_tail=0.5,
                      sfu_stat_groups_per_cycle=2,
                      # SFU pipeline: 1 line/cycle (geglu 2: A and B share the acc port; add with bbuf=acc
                      # too, not modelled), fixed = setup + pipeline depth; norm 1 cycle per group; softmax
                      # 3 passes per row, each of the last two after the previous has drained
                      sfu_costs=(("deq", 1, 0, 7), ("act", 1, 0, 11), ("deqact", 1, 0, 19), ("add", 1, 0, 7),
                                 ("geglu", 2, 0, 14), ("softmax", 3, 8, 9), ("softmax+pre", 3, 10, 12),
                                 ("norm", 1, 1, 28),
                                 ("transpose", 1.25, 0, 5)),
                      sfu_extra=()),
}


def _cdiv(a, b):
    return -(-a // b)


@dataclass
class Work:
    """Per-instruction arrays (length = program length)."""

    queue: np.ndarray        # int8: 0..3, -1 for halt
    latency: np.ndarray      # int64 cycles the instruction occupies its unit
    macs: np.ndarray         # int64 multiply-accumulates (as the golden model counts them)
    pass_macs: np.ndarray    # int64 MACs x array passes (int8 x int8 counts twice): the array's real work
    dram_read: np.ndarray    # int64 bytes
    dram_written: np.ndarray
    sfu_elems: np.ndarray    # int64 rows * cols through the SFU
    is_array: np.ndarray     # bool: mm / conv
    ops: list[str]


def _arr(instrs, idx, name) -> np.ndarray:
    return np.fromiter((instrs[i].args[name] for i in idx), dtype=np.int64, count=len(idx))


def latencies(instrs, t: Timing) -> Work:
    """Latency and work of every instruction, from its fields alone (vectorized per opcode)."""
    n = len(instrs)
    ops = [ins.op for ins in instrs]
    queue = np.full(n, -1, dtype=np.int8)
    lat = np.zeros(n, dtype=np.int64)
    macs = np.zeros(n, dtype=np.int64)
    pmacs = np.zeros(n, dtype=np.int64)
    rd = np.zeros(n, dtype=np.int64)
    wr = np.zeros(n, dtype=np.int64)
    sfu = np.zeros(n, dtype=np.int64)
    by_op: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        by_op.setdefault(op, []).append(i)
    for op, idx in by_op.items():
        qspec = SPEC.by_name(op).queue
        if qspec.startswith("field:"):          # sync: the queue is a field
            fname = qspec.split(":", 1)[1]
            queue[idx] = [QINDEX[instrs[i].args[fname]] for i in idx]
        elif qspec != "ctl":
            queue[idx] = QINDEX[qspec]
    O = t.instr_overhead
    L = t.lanes
    costs = {c[0]: tuple(c[1:]) for c in t.sfu_costs}
    for op, idx in by_op.items():
        ix = np.asarray(idx, dtype=np.int64)
        a = lambda name: _arr(instrs, idx, name)      # noqa: E731
        if op == "halt":
            lat[ix] = t.halt_cycles
        elif op in ("sync", "setstep"):
            lat[ix] = O
        elif op in ("load", "store"):
            run, ny, nz = a("run"), a("ny"), a("nz")
            dy, dz = a("dy"), a("dz")
            B = np.array([t.line_bytes(instrs[i].args["buf"]) for i in idx], dtype=np.int64)
            lines = run * ny * nz
            nbytes = lines * B
            # contiguous DRAM segments: y runs merge when dy == run*B, z planes when dz == ny*dy as well
            run_b = run * B
            my = (ny == 1) | (dy == run_b)
            mz = my & ((nz == 1) | (dz == ny * run_b))
            seg = np.where(mz, nbytes, np.where(my, run_b * ny, run_b))
            nseg = lines * B // seg
            beats = nseg * _cdiv(seg, t.dma_bytes_per_cycle)
            bursts = nseg * _cdiv(seg, t.dma_burst_bytes)
            per_line = t.dma_load_line_cycles if op == "load" else t.dma_store_line_cycles
            data = np.maximum(np.maximum(beats, np.ceil(lines * per_line).astype(np.int64)),
                              nseg * t.dma_burst_min_cycles)
            dma = O + t.dma_latency + data + bursts * t.dma_burst_gap
            if op == "load":
                zero = a("zero").astype(bool)
                lat[ix] = np.where(zero, O + _cdiv(lines, t.zero_lines_per_cycle), dma)
                rd[ix] = np.where(zero, 0, nbytes)
            else:
                lat[ix] = dma
                wr[ix] = nbytes
        elif op == "mm":
            m, nn, k = a("m"), a("n"), a("k")
            passes = np.array([1 if instrs[i].args["wsrc"] == "wgt" else 2 for i in idx], dtype=np.int64)
            lat[ix] = O + t.array_start_cycles + os_cycles(t, m, nn, k, passes)
            macs[ix] = m * nn * k
            pmacs[ix] = m * nn * k * passes
        elif op == "conv":
            oh, ow, cin, cout = a("oh"), a("ow"), a("cin"), a("cout")
            P = oh * ow
            ws = np.array([instrs[i].args["df"] == "ws" and not t.conv_ws_as_os for i in idx], dtype=bool)
            os_c = os_cycles(t, P, cout, 9 * cin, 1)
            ws_c = ws_cycles(t, P, cin, cout)
            lat[ix] = O + t.array_start_cycles + np.where(ws, ws_c, os_c)
            macs[ix] = P * cout * 9 * cin
            pmacs[ix] = macs[ix]
        elif op in costs:
            rows, cols = a("rows"), a("cols")
            lines = rows * _cdiv(cols, L)
            if op == "transpose":
                lines = lines + cols * _cdiv(rows, L)
            per_line, per_group, fixed = costs[op]
            for name, (pl, pg, fx) in costs.items():       # variants: "op+field" where the field is set
                if name.startswith(op + "+"):
                    on = a(name.split("+", 1)[1]).astype(bool)
                    per_line, per_group, fixed = (np.where(on, pl, per_line), np.where(on, pg, per_group),
                                                  np.where(on, fx, fixed))
            groups = rows
            if op == "norm":              # per statistics group: rows (LayerNorm) or channel groups (GroupNorm)
                groups = _norm_groups(instrs, idx)
            per_line = np.maximum(per_line, _stat_line_cycles(t, instrs, idx))
            lat[ix] = O + fixed + np.ceil(per_line * lines + per_group * groups
                                          + _sfu_extra(t, instrs, idx) * lines).astype(np.int64)
            sfu[ix] = rows * cols
        elif op in ("deq", "add", "act", "deqact", "geglu", "norm", "softmax"):
            rows, cols = a("rows"), a("cols")
            lines = rows * _cdiv(cols, L)
            passes = {"softmax": t.softmax_passes, "geglu": t.geglu_passes}.get(op, 1)
            extra = 0
            if op == "norm" and t.norm_group_cycles:
                groups = _norm_groups(instrs, idx)
                extra = groups * t.norm_group_cycles
            line_cycles = np.maximum(_cdiv(lines * passes, t.sfu_lines_per_cycle),
                                     lines * _stat_line_cycles(t, instrs, idx))
            lat[ix] = O + t.sfu_pipeline + line_cycles + extra \
                + np.ceil(_sfu_extra(t, instrs, idx) * lines).astype(np.int64)
            sfu[ix] = rows * cols
        elif op == "transpose":
            rows, cols = a("rows"), a("cols")
            lines = np.maximum(rows * _cdiv(cols, L), cols * _cdiv(rows, L))
            lat[ix] = O + t.sfu_pipeline + t.transpose_block_latency + _cdiv(lines, t.sfu_lines_per_cycle)
            sfu[ix] = rows * cols
        else:
            raise SdacError(f"performance model: instruction {idx[0]}: no timing for opcode {op!r}")
    is_array = np.array([op in ("mm", "conv") for op in ops], dtype=bool)
    return Work(queue, lat, macs, pmacs, rd, wr, sfu, is_array, ops)


def _norm_groups(instrs, idx) -> np.ndarray:
    """Statistics groups of each norm: its rows (LayerNorm) or its channel groups (GroupNorm)."""
    return np.array([instrs[i].args["rows"] if instrs[i].args["st_mode"] == "row"
                     else _cdiv(instrs[i].args["cols"], instrs[i].args["gsize"]) for i in idx])


def _stat_line_cycles(t: Timing, instrs, idx) -> np.ndarray | int:
    """Cycles per line at least of SFU instructions summing channel-mode statistics: the groups a line
    holds, Timing.sfu_stat_groups_per_cycle at a time (0: no limit)."""
    if not t.sfu_stat_groups_per_cycle:
        return 0
    out = np.zeros(len(idx), dtype=np.int64)
    for j, i in enumerate(idx):
        a = instrs[i].args
        if a.get("st") and a.get("st_mode") == "chan":
            groups = _cdiv(min(t.lanes, a["cols"]), a["gsize"])
            out[j] = _cdiv(groups, t.sfu_stat_groups_per_cycle)
    return out


def _sfu_extra(t: Timing, instrs, idx) -> np.ndarray | float:
    """Per-line extra cycles of each SFU instruction from its options (Timing.sfu_extra)."""
    if not t.sfu_extra:
        return 0.0
    cost = dict(t.sfu_extra)
    out = np.zeros(len(idx))
    for j, i in enumerate(idx):
        a = instrs[i].args
        fn = a.get("fn", "none")
        x = cost.get(fn, 0.0) if fn != "none" else 0.0
        for feat in ("st", "per_ch", "bias"):
            if a.get(feat):
                x += cost.get(feat, 0.0)
        out[j] = x
    return out


def ws_cycles(t: Timing, pixels, cin, cout):
    """CONV-WS array time: two output pixels per cycle stream past each X x 2Y weight block, which cannot go
    faster than the block loads (also the compiler's cost model: sdac.compiler.lower.cost.conv_cycles)."""
    blocks = 9 * _cdiv(cin, t.array_rows) * _cdiv(cout, 2 * t.array_cols)
    stream = _cdiv(pixels, 2)
    wload = _cdiv(t.array_rows, t.ws_weight_lines_per_cycle)
    tail = 0
    if t.ws_drain_tail:      # jobs of at most 4X pixels (a partial-sum bank), balanced; the last one drains
        jobs = _cdiv(pixels, 4 * t.array_rows)
        tail = np.ceil(t.ws_drain_tail * (pixels - (jobs - 1) * _cdiv(pixels, jobs))).astype(np.int64)
    if t.ws_weight_overlap:
        return wload + blocks * np.maximum(stream, wload) + t.array_fill + tail
    return blocks * (stream + wload) + t.array_fill + tail


def os_cycles(t: Timing, m, n, k, passes):
    """Output-stationary array time: ceil(m/2X) x ceil(n/2Y) tiles, each streaming passes x k cycles
    (also the compiler's cost model: sdac.compiler.lower.cost.mm_cycles)."""
    tm, tn = t.tile_m, t.tile_n
    col_tiles = _cdiv(n, tn)
    full, rem = m // tm, m % tm
    row_tiles = full + (rem > 0)
    tiles = row_tiles * col_tiles
    r = t.mm_drain_rows_per_cycle
    drain_full = _cdiv(tm, r)
    drain = col_tiles * (full * drain_full + _cdiv(rem, r))      # read out only the rows present
    stream = passes * k
    fill = t.array_fill if t.os_fill_includes_x else t.array_cols + t.pe_latency
    if t.mm_drain_overlap:
        # two accumulator sets: a unit (a tile, or each int8 pass of it with mm_pass_is_tile) streams while
        # the previous unit's rows are read out; the first streams at once, the last one's readout ends it
        units = passes if t.mm_pass_is_tile else 1
        s = k if t.mm_pass_is_tile else stream
        drain_rem = _cdiv(rem, r)
        partial = np.where(rem > 0, np.maximum(s, drain_rem), 0)
        last = np.where(rem > 0, drain_rem, drain_full)
        waits = col_tiles * units * (full * np.maximum(s, drain_full) + partial) - np.maximum(s, last)
        return fill + s + waits + last
    if t.mm_pass_refill:              # every pass: stream, fill, readout (the last readout counted in drain)
        return tiles * passes * (k + fill) + passes * drain
    return tiles * (stream + fill) + drain
