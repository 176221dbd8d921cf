"""The golden model: a bit-exact, vectorized interpreter of the sdac ISA.

``Golden(machine, dram_size).run(instrs, step=...)`` executes a program over a
DRAM image and the on-chip buffers exactly as isa/isa.toml defines it; every
SFU value comes from the functions in ``sdac.isa.numerics``. docs/golden.md
describes the execution model (fetch, queues, tokens, the interleaving chosen
here), the error reporting, why the BLAS path is exact, and the trace format.

Speed: every instruction is a handful of numpy operations on whole tiles
(strided views for gathers, BLAS for the integer products), never a Python
loop per element or per PE.
"""
from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import DeviceError
from ..isa import numerics as N
from ..isa import tables
from ..isa.encoding import DecodeError, EncodeError, Instr, decode_program, encode_int
from ..isa.machine import Machine
from ..isa.spec import SPEC
from .golden_wgt import WeightLines

QUEUES = ("ld", "cmp", "sfu", "st")
_QI = {q: i for i, q in enumerate(QUEUES)}
_DTYPES = {"act": np.int8, "wgt": np.int8, "acc": np.int32, "prm": np.uint32}
# Largest |sum| for which an integer dot product is exact in float32 / float64:
# every partial sum is an integer of at most this magnitude, so no rounding occurs.
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
_SFU_BLOCK = 1 << 16        # elements per block of an SFU instruction (see Golden._sfu)
# Fast paths that tests switch off to compare with the plain ones (tests/runtime/test_golden_fastpaths.py):
_LAZY_WGT = True            # contiguous weight loads decoded when first needed (runtime/golden_wgt.py)
_SFU_DIRECT = True          # SFU results written straight into the buffer when no operand aliases D
_FLOAT_SCALE = True         # deq / add scale in float64 where FloatScale proves it exact


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class TraceRecord:
    """Work done by one executed instruction (the performance model's input)."""

    index: int                  # instruction index in the program
    op: str
    queue: str                  # ld | cmp | sfu | st
    macs: int = 0               # multiply-accumulates (mm, conv; padding taps included)
    dram_bytes: int = 0         # bytes moved between DRAM and a buffer
    sfu_elems: int = 0          # elements through the SFU (rows * cols)
    lines: dict[str, int] = field(default_factory=dict)   # buffer line accesses (reads + writes) per buffer

    def to_json(self) -> dict:
        return {"index": self.index, "op": self.op, "queue": self.queue, "macs": self.macs,
                "dram_bytes": self.dram_bytes, "sfu_elems": self.sfu_elems, "lines": dict(self.lines)}


@dataclass
class RunResult:
    """Counts of one run; ``trace`` (trace=True) lists the instructions in execution order."""

    step: int
    instructions: int = 0                                   # executed, halt included
    by_op: dict[str, int] = field(default_factory=dict)
    by_queue: dict[str, int] = field(default_factory=dict)
    macs: int = 0
    dram_read: int = 0
    dram_written: int = 0
    sfu_elems: int = 0
    trace: list[TraceRecord] | None = None

    @property
    def dram_bytes(self) -> int:
        return self.dram_read + self.dram_written

    def to_json(self) -> dict:
        d = {"format": "sdac-trace", "version": 1, "step": self.step, "instructions": self.instructions,
             "by_op": dict(self.by_op), "by_queue": dict(self.by_queue), "macs": self.macs,
             "dram_read": self.dram_read, "dram_written": self.dram_written, "sfu_elems": self.sfu_elems}
        if self.trace is not None:
            d["trace"] = [r.to_json() for r in self.trace]
        return d


@dataclass
class _Dec:
    """An instruction decoded once: queue number, token masks as tuples, fields as a dict."""

    index: int
    op: str
    q: int                      # -1 for halt (control)
    pops: tuple[int, ...]
    pushes: tuple[int, ...]
    a: dict


def _unblock_f32(W: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    """Weight blocks (nb, *rows, L) (block b holds columns b*L..b*L+L-1) -> the (prod(rows), n) matrix
    in float32 (or dtype), converted and transposed in one pass (int4 values are exact in float32)."""
    nb, L = W.shape[0], W.shape[-1]
    out = np.empty((*W.shape[1:-1], nb, L), dtype=dtype)
    out[...] = np.moveaxis(W, 0, -2)
    return out.reshape(-1, nb * L)[:, :n]


def _widen(v: np.ndarray) -> np.ndarray:
    """v in a signed type whose abs() cannot overflow: int16 for 1-byte values, else int64."""
    return v.astype(np.int16 if v.dtype.itemsize == 1 else np.int64)


def _sum_bound(x: np.ndarray, w: np.ndarray, xmax: int, wmax: int, k: int) -> int:
    """An upper bound on |partial sum| of any x @ w entry: the smaller of k*max|x|*max|w| and the
    largest row sum of |x| times max|w| (or column sum of |w| times max|x|). The second is what
    keeps softmax(QK^T) @ V (probabilities summing to ~127) on the float32 path."""
    bound = k * xmax * wmax
    if bound >= _F32_EXACT and x.size and w.size:
        # int8 operands (the machine's): |v| <= 128 fits int16, a quarter of int64's traffic
        rows = int(np.abs(_widen(x)).sum(axis=1, dtype=np.int64).max())
        cols = int(np.abs(_widen(w)).sum(axis=0, dtype=np.int64).max())
        bound = min(bound, rows * wmax, cols * xmax)
    return bound


def _imatmul(x: np.ndarray, w: np.ndarray, xmax: int, wmax: int, k: int) -> np.ndarray:
    """Exact integer x @ w as int64: BLAS in float32/float64 when the sum bound proves it exact."""
    P = _imatmul_any(x, w, xmax, wmax, k)
    # float32 products: |entries| < 2**24, int32 holds them (same values modulo 2**32)
    return P.astype(np.int32) if P.dtype == np.float32 else P


def _imatmul_any(x: np.ndarray, w: np.ndarray, xmax: int, wmax: int, k: int) -> np.ndarray:
    """Exact integer x @ w: float32 holding integers of magnitude < 2**24 (the float32 path), else int64."""
    bound = _sum_bound(x, w, xmax, wmax, k)
    if bound < _F32_EXACT:
        return _fmatmul(x.astype(np.float32), w.astype(np.float32, copy=False))
    if bound < _F64_EXACT:
        return _fmatmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    # int64 products wrap modulo 2**64, which keeps the result modulo 2**32 exact.
    return x.astype(np.int64) @ w.astype(np.int64)


# Large float products go through onnxruntime's MatMul (MLAS), about twice as fast as the
# OpenBLAS numpy ships; any correct float GEMM is exact here (see docs/golden.md).
# SDAC_GOLDEN_BLAS=numpy turns it off; SDAC_GOLDEN_THREADS=n sets its thread count (default: all cores).
_ORT_MIN_MACS = 1 << 22
_ort_sessions: dict = {}


def _ort_session(dtype):
    key = np.dtype(dtype).name
    if key not in _ort_sessions:
        _ort_sessions[key] = None
        if os.environ.get("SDAC_GOLDEN_BLAS", "ort") != "numpy":
            try:
                import onnxruntime as ort
                from onnx import TensorProto, helper
                et = TensorProto.FLOAT if key == "float32" else TensorProto.DOUBLE
                g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sdac_golden_matmul",
                                      [helper.make_tensor_value_info("a", et, [None, None]),
                                       helper.make_tensor_value_info("b", et, [None, None])],
                                      [helper.make_tensor_value_info("c", et, [None, None])])
                model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
                so = ort.SessionOptions()
                so.log_severity_level = 3
                # onnxruntime's default uses every physical core; SDAC_GOLDEN_THREADS=n pins the GEMM threads
                threads = os.environ.get("SDAC_GOLDEN_THREADS", "")
                if threads.isdigit():
                    so.intra_op_num_threads = int(threads)
                _ort_sessions[key] = ort.InferenceSession(model.SerializeToString(), so,
                                                          providers=["CPUExecutionProvider"])
            except Exception:          # onnxruntime missing or broken: numpy's BLAS is exact too
                _ort_sessions[key] = None
    return _ort_sessions[key]


def _fmatmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float x @ w (both holding integers whose partial sums are proven exact in their type)."""
    if x.shape[0] * x.shape[1] * w.shape[1] >= _ORT_MIN_MACS:
        sess = _ort_session(x.dtype)
        if sess is not None:
            return sess.run(None, {"a": np.ascontiguousarray(x), "b": np.ascontiguousarray(w)})[0]
    return x @ w


# Exact int8 products through an integer GEMM (torch._int_mm: oneDNN's int8 kernels, ~5x faster
# than the float32 GEMM here). Used only where every intermediate is provably exact: the CPU has
# VNNI (vpdpbusd: groups of four u8 x s8 products summed into int32 without the int16 saturation
# of the older vpmaddubsw kernels) and k * 255 * 255 < 2**31, so no int32 partial sum wraps even
# when a kernel shifts an int8 operand by +128 to make it unsigned and compensates afterwards.
# A self-test of worst-case operands at first use is the second guard. docs/golden.md has the
# argument; SDAC_GOLDEN_INT=0 turns this path off (then the float path above does everything).
_INT_MIN_MACS = 1 << 20       # smaller products stay on the float path (small programs never import torch)
_INT_MAX_K = ((1 << 31) - 1) // (255 * 255)     # 33025
_int_backend_fn: list = []    # [] not decided yet, [None] unavailable, [fn] available


def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


def _int_selftest(fn) -> bool:
    """fn(x, w) against exact int64 products on worst-case and random int8 operands of several shapes."""
    rng = np.random.default_rng(0)
    for m, k, n in ((1, 64, 8), (17, 300, 33), (40, 768, 840), (256, 4608, 64), (64, 20000, 24)):
        for fill in ((-128, -128), (-128, 127), (127, -128), (127, 127), None, "large"):
            if fill is None:
                x = rng.integers(-128, 128, (m, k), dtype=np.int8)
                w = rng.integers(-128, 128, (k, n), dtype=np.int8)
            elif fill == "large":           # large odd sums: what a float32 GEMM would round
                x = rng.integers(100, 128, (m, k), dtype=np.int8)
                w = rng.integers(100, 128, (k, n), dtype=np.int8)
            else:
                x, w = np.full((m, k), fill[0], np.int8), np.full((k, n), fill[1], np.int8)
            want = x.astype(np.float64) @ w.astype(np.float64)     # |sums| < 2**53: exact
            got = fn(x, w)
            if got.dtype != np.int32 or got.shape != want.shape or not np.array_equal(got, want):
                return False
    return True


def prepare_backends() -> bool:
    """Set up the exact int8 GEMM backend now (the torch import and its self-test, about 1 s once per
    process) rather than at the first large product; True when it is available."""
    return _int_backend() is not None


def _int_backend():
    """The exact int8 x int8 -> int32 GEMM, or None (no VNNI, no torch, turned off, self-test failed)."""
    if not _int_backend_fn:
        fn = None
        if os.environ.get("SDAC_GOLDEN_INT", "1") != "0" and os.environ.get("SDAC_GOLDEN_BLAS") != "numpy" \
                and _cpu_has_vnni():
            try:
                import torch
                threads = os.environ.get("SDAC_GOLDEN_THREADS", "")
                if threads.isdigit():
                    torch.set_num_threads(int(threads))

                def fn(x, w):
                    n = w.shape[1]
                    if _int_width(n) != n:          # zero columns, sliced off again: same products
                        w = _pad_cols(w, _int_width(n))
                    c = torch._int_mm(torch.from_numpy(_plain(x)), torch.from_numpy(_plain(w))).numpy()
                    return c if c.shape[1] == n else c[:, :n]
                if not _int_selftest(fn):
                    fn = None
            except Exception:          # torch missing or without _int_mm: the float path is exact too
                fn = None
        _int_backend_fn.append(fn)
    return _int_backend_fn[0]


def _int_width(n: int) -> int:
    """Columns to give the integer GEMM for n: oneDNN's int8 kernels are 2-3x slower on 33..63
    columns that are not a multiple of 16 (the compiler's 40-column tiles) than on the next multiple."""
    return -(-n // 16) * 16 if 32 < n < 64 else n


def _pad_cols(w: np.ndarray, n: int) -> np.ndarray:
    """w with zero columns appended up to n (np.pad costs ~100 us of Python per call)."""
    out = np.zeros((w.shape[0], n), dtype=w.dtype)
    out[:, :w.shape[1]] = w
    return out


def _plain(x: np.ndarray) -> np.ndarray:
    """x as a writeable C-ordered matrix with its canonical strides (torch wants writeable memory,
    though it only reads it, and misreads the stride-0 rows numpy calls contiguous)."""
    x = np.ascontiguousarray(x)
    if not x.flags.writeable or x.strides != (x.shape[1] * x.itemsize, x.itemsize):
        x = x.copy()
    return x


def _int_path(macs: int, k: int) -> bool:
    return macs >= _INT_MIN_MACS and k <= _INT_MAX_K and _int_backend() is not None


def _absmax(x: np.ndarray) -> int:
    if x.size == 0:
        return 0
    return max(-int(x.min()), int(x.max()))


_FAST_SPECS: dict = {}


def _fast_spec(op: str):
    """Per instruction: its field names, (name, min, max, enum names, enum codes) per field, its queue."""
    ent = _FAST_SPECS.get(op)
    if ent is None:
        ispec = SPEC.by_name(op)
        ints, enums = [], []
        for f in ispec.fields:
            if f.kind == "enum":
                members = SPEC.enums[f.enum]
                enums.append((f.name, frozenset(members), frozenset(members.values())))
            else:
                ints.append((f.name, f.min, f.max))
        ent = _FAST_SPECS[op] = (frozenset(f.name for f in ispec.fields), tuple(ints), tuple(enums), ispec.queue)
    return ent


_QUEUE_NAMES = frozenset(SPEC.enums["queue"])


def _surely_valid(ins: Instr) -> bool:
    """True only when encode_int(ins) accepts ins: a stricter, cheaper form of its checks (plain int
    or enum-name values in range, the exact field set, token queues that exist and are not the own
    queue). False means "ask encode_int", which raises the precise error (or accepts)."""
    try:
        names, ints, enums, q = _fast_spec(ins.op)
    except (KeyError, TypeError):
        return False
    args = ins.args
    if args.keys() != names:
        return False
    for name, lo, hi in ints:
        v = args[name]
        if type(v) is not int or v < lo or v > hi:
            return False
    for name, enum_names, enum_codes in enums:
        v = args[name]
        if not ((type(v) is str and v in enum_names) or (type(v) is int and v in enum_codes)):
            return False
    if ins.pop or ins.push:
        own = str(args[q[6:]]) if q.startswith("field:") else q
        if own == "ctl":
            return False
        for t in (ins.pop, ins.push):
            for x in t:
                if type(x) is not str or x not in _QUEUE_NAMES or x == own:
                    return False
    return True


@dataclass
class Prepared:
    """A checked program, decoded once: reuse it to run several steps without re-checking."""

    instrs: list[_Dec]

    def __len__(self) -> int:
        return len(self.instrs)


def prepare(instrs) -> Prepared:
    """Check every instruction against the spec (BAD_OPCODE / BAD_FIELD with its index) and decode it."""
    checked = False
    if isinstance(instrs, (bytes, bytearray, memoryview)):
        try:
            instrs = decode_program(bytes(instrs))     # decoding checks every field
        except DecodeError as e:
            code = "BAD_OPCODE" if e.reason.startswith("BAD_OPCODE") else "BAD_FIELD"
            raise DeviceError(code, e.reason.split(": ", 1)[-1], e.index) from None
        checked = True
    prog = []
    for i, ins in enumerate(instrs):
        if not isinstance(ins, Instr):
            raise DeviceError("BAD_OPCODE", f"not an instruction: {ins!r}", i)
        if not checked and not _surely_valid(ins):
            try:
                encode_int(ins)       # checks every field range, enum and token mask against the spec
            except EncodeError as e:
                raise DeviceError("BAD_FIELD", str(e), i) from None
            except KeyError:
                raise DeviceError("BAD_OPCODE", f"unknown instruction {ins.op!r}", i) from None
        q = _OP_QUEUE.get(ins.op)
        if q is None:
            q = _OP_QUEUE[ins.op] = -1 if ins.op == "halt" else (
                -2 if SPEC.by_name(ins.op).queue.startswith("field:") else _QI[ins.queue])
        if q == -2:                   # (sync: the queue is a field)
            q = _QI[ins.queue]
        prog.append(_Dec(i, ins.op, q, _token_queues(ins.pop), _token_queues(ins.push), dict(ins.args)))
    return Prepared(prog)


_OP_QUEUE: dict = {}          # op -> queue index (-1 halt, -2 "the q field says")
_TOKEN_QUEUES: dict = {}


def _token_queues(mask) -> tuple[int, ...]:
    """A checked pop / push set as sorted queue indices (a handful of distinct sets per program)."""
    if type(mask) is not frozenset:
        mask = frozenset(mask)
    t = _TOKEN_QUEUES.get(mask)
    if t is None:
        t = _TOKEN_QUEUES[mask] = tuple(sorted(_QI[p] for p in mask))
    return t


class Golden:
    """Machine state and the interpreter. State persists across ``run`` calls; tokens and queues reset."""

    def __init__(self, machine: Machine, dram_size: int, *, trace: bool = False):
        if dram_size <= 0:
            raise ValueError(f"dram_size must be positive, got {dram_size}")
        self.machine = machine
        self.L = L = machine.lanes
        # zeroed memory that numpy does not advise as huge pages: on the shared VM, faulting in
        # 0.4 GiB of huge pages (direct compaction) took 1.3-1.6 s, plain pages 0.3 s
        self.dram = np.frombuffer(bytearray(dram_size), dtype=np.uint8)
        self.act = np.zeros((machine.act_lines, L), dtype=np.int8)
        self.wgt = np.zeros((machine.wgt_lines, L), dtype=np.int8)     # int4 values
        self.acc = np.zeros((machine.acc_lines, L), dtype=np.int32)
        self.prm = np.zeros((machine.prm_lines, L), dtype=np.uint32)
        self.stat_sum = np.zeros(machine.stat_groups, dtype=np.int64)
        self.stat_sq = np.zeros(machine.stat_groups, dtype=np.int64)
        self.step_off = 0
        self.tokens = [[0] * 4 for _ in range(4)]                     # tokens[src][dst]
        self.trace = trace
        self._bufs = {"act": self.act, "wgt": self.wgt, "acc": self.acc, "prm": self.prm}
        self._flat = {b: v.reshape(-1) for b, v in self._bufs.items()}         # views, not copies
        self._nlines = {b: machine.buf_lines(b) for b in self._bufs}
        self._rec: TraceRecord | None = None
        self._csr_step = 0
        # lazy weight loads and the float32 weight-matrix cache (runtime/golden_wgt.py)
        self._wl = WeightLines(machine.line_bytes("wgt"), self._decode_wgt_lines)

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.stat_sum, self.stat_sq

    # ------------------------------------------------------------ decoding
    @staticmethod
    def prepare(instrs) -> "Prepared":
        """Check and decode a program once (Instr list or encoded TEXT); ``run`` accepts the result too."""
        return prepare(instrs)

    # ------------------------------------------------------------ scheduling
    def run(self, instrs: "Sequence[Instr] | bytes | Prepared", *, step: int = 0,
            priority: Sequence[str] = QUEUES) -> RunResult:
        """Execute a program (Instr list or encoded TEXT) with CSR STEP = ``step``.

        Interleaving (deterministic): fetch as far as possible (until halt, the
        end of the program or a full FIFO), then execute one instruction: the
        head of the first queue in ``priority`` order (default ld, cmp, sfu, st)
        whose tokens are all available; repeat. A correctly tokenized program
        gives the same result for every priority order.
        """
        if sorted(priority) != sorted(QUEUES):
            raise ValueError(f"priority must order the four queues {QUEUES}, got {tuple(priority)}")
        order = [_QI[q] for q in priority]
        prog = (instrs if isinstance(instrs, Prepared) else prepare(instrs)).instrs
        m = self.machine
        res = RunResult(step=step, trace=[] if self.trace else None)
        self._csr_step = int(step)
        self.step_off = 0
        tok = self.tokens = [[0] * 4 for _ in range(4)]
        fifos = [deque() for _ in range(4)]
        depth, tmax = m.queue_depth, m.token_max
        n = len(prog)
        self._wl.reset()
        try:
            self._schedule(prog, res, order, fifos, tok, depth, tmax)
        finally:
            # every lazily loaded weight line decoded (also after an error); the matrices go (they
            # only serve this run: the caller may change DRAM before the next one)
            self._wl.reset()
        return res

    def _schedule(self, prog, res, order, fifos, tok, depth, tmax) -> None:
        n = len(prog)
        pc = 0
        halted = False
        halt_index = -1
        while True:
            while not halted:                                  # fetch
                if pc >= n:
                    raise DeviceError("FETCH_OOB", f"fetch ran past the end of the {n}-instruction program "
                                      "without halt", pc)
                d = prog[pc]
                if d.q < 0:
                    halted, halt_index = True, pc
                    pc += 1
                    break
                f = fifos[d.q]
                if len(f) >= depth:
                    break
                f.append(d)
                pc += 1
            for q in order:                                    # execute one ready head
                f = fifos[q]
                if f and all(tok[s][q] > 0 for s in f[0].pops):
                    break
            else:
                if halted and not any(fifos):
                    break
                raise self._deadlock(fifos, prog, pc, halted)
            d = f.popleft()
            for s in d.pops:
                tok[s][q] -= 1
            self._exec(d, res)
            for t in d.pushes:
                tok[q][t] += 1
                if tok[q][t] > tmax:
                    raise DeviceError("TOKEN_OVERFLOW", f"{d.op} pushes a token {QUEUES[q]}->{QUEUES[t]}: "
                                      f"counter would be {tok[q][t]} > token_max {tmax}", d.index)
        leaks = [f"{QUEUES[s]}->{QUEUES[t]}={tok[s][t]}" for s in range(4) for t in range(4) if tok[s][t]]
        if leaks:
            raise DeviceError("TOKEN_LEAK", f"halt with non-zero token counters: {', '.join(leaks)}", halt_index)
        res.instructions += 1
        res.by_op["halt"] = res.by_op.get("halt", 0) + 1

    def _deadlock(self, fifos, prog, pc, halted) -> DeviceError:
        tok = self.tokens
        waits, first = [], None
        for q in range(4):
            if not fifos[q]:
                continue
            d = fifos[q][0]
            missing = [QUEUES[s] for s in d.pops if tok[s][q] == 0]
            waits.append(f"instruction {d.index} ({d.op} in {QUEUES[q]}) waits for a token from "
                         + " and ".join(f"{s} ({s}->{QUEUES[q]} = 0)" for s in missing))
            first = d.index if first is None else min(first, d.index)
        if not halted and pc < len(prog):
            d = prog[pc]
            waits.append(f"fetch stalled at instruction {d.index} ({d.op}): the {QUEUES[d.q]} FIFO is full "
                         f"({self.machine.queue_depth} entries)")
        return DeviceError("DEADLOCK", "no queue can make progress: " + "; ".join(waits), first)

    def _exec(self, d: _Dec, res: RunResult) -> None:
        rec = None
        if self.trace:
            rec = self._rec = TraceRecord(d.index, d.op, QUEUES[d.q])
        self._work = [0, 0, 0, 0]          # macs, dram read, dram written, sfu elements
        getattr(self, "_op_" + d.op)(d, d.a)
        w = self._work
        res.instructions += 1
        res.by_op[d.op] = res.by_op.get(d.op, 0) + 1
        res.by_queue[QUEUES[d.q]] = res.by_queue.get(QUEUES[d.q], 0) + 1
        res.macs += w[0]
        res.dram_read += w[1]
        res.dram_written += w[2]
        res.sfu_elems += w[3]
        if rec is not None:
            rec.macs, rec.dram_bytes, rec.sfu_elems = w[0], w[1] + w[2], w[3]
            res.trace.append(rec)
            self._rec = None

    # ------------------------------------------------------------ memory access
    def _check_lines(self, d: _Dec, buf: str, first: int, last: int, what: str) -> None:
        lines = self._nlines[buf]
        if last >= lines:
            raise DeviceError("OOB_BUF", f"{d.op}: {what} touches {buf} lines {first}..{last}, "
                              f"the buffer has {lines}", d.index)

    def _count(self, buf: str, n: int) -> None:
        if self._rec is not None:
            self._rec.lines[buf] = self._rec.lines.get(buf, 0) + n

    def _region(self, d: _Dec, buf: str, base: int, dims: Sequence[tuple[int, int]], cols: int, what: str,
                access: str = "r"):
        """Bounds-check a region of rows; returns (flat buffer, element offset, element strides).
        ``access`` ("r", "w", or "" for the lazy weight load) tells the weight-line tracker what comes."""
        L = self.L
        nl = -(-cols // L)
        last = base + nl - 1
        n = nl
        for c, s in dims:
            last += (c - 1) * s
            n *= c
        if last >= self._nlines[buf]:
            self._check_lines(d, buf, base, last, what)
        if buf == "wgt" and access and self._wl.segs:
            if access == "r":
                self._wl.before_read(base, last)
            else:
                self._wl.before_write(base, last)
        if self._rec is not None:
            self._count(buf, n)
        return self._flat[buf], base * L, [s * L for _, s in dims]

    def _read(self, d, buf, base, dims, cols, what, writeable=False) -> np.ndarray:
        """Element [*idx, c] = buf line (base + sum(idx*stride) + c//L), lane c%L; a read-only view
        (writeable=True only for operands handed to code that reads them but wants writeable memory)."""
        flat, off, strides = self._region(d, buf, base, dims, cols, what)
        return _view(flat, off, [c for c, _ in dims], strides, cols, writeable=writeable)

    def _write(self, d, buf, base, dims, cols, values, what) -> None:
        flat, off, strides = self._region(d, buf, base, dims, cols, what, "w")
        _scatter(flat, off, [c for c, _ in dims], strides, cols, values)

    def _prmw(self, d: _Dec, x: int, what: str) -> int:
        """PRMW[x]: prm word x = prm[x // L][x % L]."""
        self._check_lines(d, "prm", x // self.L, x // self.L, what)
        self._count("prm", 1)
        return int(self.prm[x // self.L, x % self.L])

    def _check_dram(self, d: _Dec, first: int, last: int) -> None:
        if last >= self.dram.size:
            raise DeviceError("OOB_DRAM", f"{d.op} touches DRAM bytes {first:#x}..{last:#x}, "
                              f"the device memory has {self.dram.size:#x} bytes", d.index)

    # ------------------------------------------------------------ load / store
    def _op_setstep(self, d, a) -> None:
        s = self._csr_step if a["src"] == "csr" else a["step"]
        self.step_off = int(s) * int(a["bank"])

    def _op_sync(self, d, a) -> None:
        pass

    def _dma_dims(self, d, a, line_bytes):
        nz, ny, run = a["nz"], a["ny"], a["run"]
        dram = a["dram"] + (self.step_off if a.get("step") else 0)
        last = dram + (nz - 1) * a["dz"] + (ny - 1) * a["dy"] + run * line_bytes - 1
        return dram, last, [(nz, a["sz"]), (ny, a["sy"]), (run, 1)]

    def _op_load(self, d, a) -> None:
        buf, L = a["buf"], self.L
        B = self.machine.line_bytes(buf)
        nz, ny, run = a["nz"], a["ny"], a["run"]
        dram, last, dims = self._dma_dims(d, a, B)
        if a["zero"]:
            lines = np.zeros((nz, ny, run, L), dtype=_DTYPES[buf])
        else:
            self._check_dram(d, dram, last)
            raw = _view(self.dram, dram, [nz, ny], [a["dz"], a["dy"]], run * B, writeable=False)
            raw = raw.reshape(nz, ny, run, B)
            self._work[1] += nz * ny * run * B
            if buf == "wgt" and _LAZY_WGT and _contiguous(dims[:2], run) \
                    and _contiguous([(nz, a["dz"]), (ny, a["dy"])], run * B):
                # lines [sram, sram + nz*ny*run) from consecutive DRAM bytes: decoded when first needed
                self._region(d, "wgt", a["sram"], dims, L, "the destination", "")
                self._wl.load(a["sram"], a["sram"] + nz * ny * run, dram)
                return
            if buf == "wgt" and B % 2 == 0 and self._decode_wgt_into(d, a, dims, raw):
                return
            lines = _decode_lines(buf, raw, L)
        self._write(d, buf, a["sram"], dims, L, lines, "the destination")

    def _decode_wgt_into(self, d, a, dims, raw) -> bool:
        """Decode int4 weight lines straight into a contiguous destination (the common weight load):
        the same values as _decode_lines + _write without the intermediate copy. False: not applicable."""
        flat, off, strides = self._region(d, "wgt", a["sram"], dims, self.L, "the destination", "w")
        dest = _view(flat, off, [c for c, _ in dims], strides, self.L, writeable=True)
        if not dest.flags.c_contiguous:
            self._count("wgt", -dest.size // self.L)       # _write counts these lines again
            return False
        np.take(_NIBBLE_QUADS, raw.view(np.uint16), out=dest.view(np.uint32), mode="clip")
        return True

    def _decode_wgt_lines(self, lo: int, hi: int, dram: int) -> None:
        """wgt lines [lo, hi) = the int4 lines of DRAM bytes [dram, dram + (hi-lo)*B) (a lazy load)."""
        B = self.machine.line_bytes("wgt")
        raw = self.dram[dram:dram + (hi - lo) * B].reshape(hi - lo, B)
        if B % 2 == 0:
            np.take(_NIBBLE_QUADS, raw.view(np.uint16), out=self.wgt[lo:hi].view(np.uint32), mode="clip")
        else:
            self.wgt[lo:hi] = _decode_lines("wgt", raw, self.L)

    def _wgt_matrix(self, d, key, first: int, last: int, what: str, build):
        """(float32 matrix, max|w|) of the weight lines first..last as mm/conv use them: from the cache
        when those lines hold a known DRAM source (runtime/golden_wgt.py), else build() from the buffer."""
        wl = self._wl
        src = wl.source(first, last) if wl.segs and wl.budget else None
        if src is not None:
            key = (src, *key)
            hit = wl.get(key)
            if hit is not None:
                self._check_lines(d, "wgt", first, last, what)     # what _read would check and count
                self._count("wgt", key[-1])
                return hit
        Wf, wmax = build()
        if src is not None:
            Wf = np.ascontiguousarray(Wf)      # (writeable for torch, which only reads it; nothing writes it)
            wl.put(key, (Wf, wmax), src, src + (last - first + 1) * wl.B, Wf.nbytes)
        return Wf, wmax

    def _op_store(self, d, a) -> None:
        buf, L = a["buf"], self.L
        B = self.machine.line_bytes(buf)
        nz, ny, run = a["nz"], a["ny"], a["run"]
        dram, last, dims = self._dma_dims(d, a, B)
        lines = self._read(d, buf, a["sram"], dims, L, "the source")
        self._check_dram(d, dram, last)
        raw = _encode_lines(buf, lines).reshape(nz, ny, run * B)
        if self._wl.segs or self._wl.cache:
            self._wl.before_dram_write(dram, last)
        _scatter(self.dram, dram, [nz, ny], [a["dz"], a["dy"]], run * B, raw)
        self._work[2] += nz * ny * run * B

    # ------------------------------------------------------------ systolic array
    def _op_mm(self, d, a) -> None:
        L = self.L
        m, n, k = a["m"], a["n"], a["k"]
        exact_int = _int_path(m * n * k, k)
        A = self._read(d, "act", a["a"], [(m, a["ars"])], k, "A", writeable=exact_int)
        wsrc = a["wsrc"]
        if wsrc == "wgt":
            nb = _cdiv(n, L)
            form = np.int8 if exact_int else np.float32

            def build():
                Wb = self._read(d, "wgt", a["w"], [(nb, a["ws"]), (k, 1)], L, "W")
                W = _unblock_f32(Wb, n, form)
                wmax = _absmax(Wb if nb * L == n else W)     # the int8 blocks: a quarter of the traffic
                if exact_int and _int_width(n) != n:       # the GEMM's preferred width, zero columns
                    W = _pad_cols(W, _int_width(n))
                return W, wmax
            first = a["w"]
            W, wmax = self._wgt_matrix(d, ("mm", exact_int, nb, a["ws"], k, n, nb * k), first,
                                       first + (nb - 1) * a["ws"] + k - 1, "W", build)
        else:
            if wsrc == "act":
                W = self._read(d, "act", a["w"], [(k, a["ws"])], n, "W", writeable=exact_int)
            else:
                W = self._read(d, "act", a["w"], [(n, a["ws"])], k, "W", writeable=exact_int).T
            wmax = None if exact_int else _absmax(W)
        if exact_int:
            P = _int_backend()(A, W)[:, :n]
        else:
            # |A| <= 128 (int8): the static bound spares a pass over A when it already proves float32 exact
            amax = 128 if k * 128 * wmax < _F32_EXACT else _absmax(A)
            P = _imatmul_any(A, W, amax, wmax, k)
        self._accumulate(d, a["c"], [(m, a["crs"])], n, P, a["acc"], "C")
        self._work[0] += m * n * k

    def _accumulate(self, d, base, dims, cols, P, acc_flag, what) -> None:
        """C = P (+ C when acc_flag), modulo 2**32. P: exact products, float32 holding integers of
        magnitude < 2**24 (converted exactly) or an integer array (wrapped modulo 2**32)."""
        if P.dtype != np.int32 and (P.dtype != np.float32 or acc_flag):
            P = P.astype(np.int32)
        counts = [c for c, _ in dims]
        if acc_flag:
            C = self._read(d, "acc", base, dims, cols, what)
            flat, off, strides = self._region(d, "acc", base, dims, cols, what, "w")
            if _disjoint(counts, strides, cols):     # in place: every element read before it is written
                np.add(C, P, out=_view(flat, off, counts, strides, cols, writeable=True))
                return
            # int32 + int32 wraps modulo 2**32: the accumulator's values
            _scatter(flat, off, counts, strides, cols, P + C)
            return
        flat, off, strides = self._region(d, "acc", base, dims, cols, what, "w")
        if P.dtype in (np.float32, np.int32) and _disjoint(counts, strides, cols):
            np.copyto(_view(flat, off, counts, strides, cols, writeable=True), P, casting="unsafe")
            return
        _scatter(flat, off, counts, strides, cols, P.astype(np.int32, copy=False))

    def _op_conv(self, d, a) -> None:
        L = self.L
        oh, ow, cin, cout, st = a["oh"], a["ow"], a["cin"], a["cout"], a["stride"]
        pt, pl = a["pt"], a["pl"]
        hp, wp = (oh - 1) * st + 3, (ow - 1) * st + 3            # padded extent the taps reach
        ny = max(0, min(a["ih"], hp - pt))                       # input rows / columns actually read
        nx = max(0, min(a["iw"], wp - pl))
        nb = _cdiv(cout, L)
        exact_int = _int_path(oh * ow * cout * 9 * cin, 9 * cin)
        form = np.int8 if exact_int else np.float32

        def build():
            Wt = self._read(d, "wgt", a["w"], [(nb, a["wbs"]), (9, a["wts"]), (cin, 1)], L, "the weights")
            Wf = _unblock_f32(Wt, cout, form)       # (9*cin, cout), rows tap-major
            wmax = _absmax(Wt if nb * L == cout else Wf)
            if exact_int and _int_width(cout) != cout:     # the GEMM's preferred width, zero columns
                Wf = _pad_cols(Wf, _int_width(cout))
            return Wf, wmax
        first = a["w"]
        Wf, wmax = self._wgt_matrix(d, ("conv", exact_int, nb, a["wbs"], a["wts"], cin, cout, nb * 9 * cin), first,
                                    first + (nb - 1) * a["wbs"] + 8 * a["wts"] + cin - 1, "the weights", build)
        if ny and nx:
            I = self._read(d, "act", a["i"], [(ny, a["irs"]), (nx, a["ips"])], cin, "the input")
        else:
            I = np.zeros((0, 0, cin), dtype=np.int8)
        # im2col: one product of (oh*ow) x (9*cin) by (9*cin) x cout; the same sums as nine taps.
        # int8 values and sums of up to 9*4095*128 < 2**24 of them are exact in float32.
        P = np.zeros((hp, wp, cin), dtype=form)
        P[pt:pt + ny, pl:pl + nx] = I
        # cols[y, x, ky, kx, :] = P[y*st + ky, x*st + kx, :]: one strided view, one copy
        isz = P.itemsize
        taps = np.ndarray((oh, ow, 3, 3, cin), P.dtype, buffer=P,
                          strides=(st * wp * cin * isz, st * cin * isz, wp * cin * isz, cin * isz, isz))
        cols = np.ascontiguousarray(taps).reshape(oh * ow, 9 * cin)
        if exact_int:
            S = _int_backend()(cols, Wf)[:, :cout].reshape(oh, ow, cout)
            self._accumulate(d, a["o"], [(oh, a["ors"]), (ow, a["ops"])], cout, S, a["acc"], "O")
            self._work[0] += oh * ow * cout * 9 * cin
            return
        bound = 9 * cin * _absmax(I) * wmax
        if bound >= _F32_EXACT:
            bound = min(bound, int(np.abs(cols).sum(axis=1).max()) * wmax)
        # |sum| <= 9 * 4095 * 128 * 8 < 2**53: float64 always suffices
        if bound < _F32_EXACT:
            S = _fmatmul(cols, Wf).reshape(oh, ow, cout)    # exact integers < 2**24 (_accumulate converts)
        else:
            S = _fmatmul(cols.astype(np.float64), Wf.astype(np.float64))
            S = S.astype(np.int32).reshape(oh, ow, cout)    # |sums| < 2**31 (the bound above)
        self._accumulate(d, a["o"], [(oh, a["ors"]), (ow, a["ops"])], cout, S, a["acc"], "O")
        self._work[0] += oh * ow * cout * 9 * cin

    # ------------------------------------------------------------ SFU
    # SFU instructions compute in blocks of rows (~64k elements) so the int64 temporaries of the
    # numerics functions stay in cache (a 4096 x 4096 softmax is ~8x faster this way); every
    # function is element- or row-wise, so blocking changes no value. The result is assembled
    # and written once, after all operands were read.

    def _sfu(self, d, a, rows, cols, out_buf, compute, stats=False, srcs=(), into=None) -> None:
        """D[r0:r1] = compute(r0, r1) (int64, already saturated) over row blocks; statistics; write D.
        ``srcs``: the (buffer, first line, row count, row stride) of every buffer operand; when none
        shares a line with D and D's rows do not overlap, the blocks go straight into the buffer (each
        block is computed from operands D does not touch, so nothing is read after being written).
        ``into(r0, r1, out)`` (no statistics) may replace compute: it writes the block into ``out``."""
        L = self.L
        dlast = a["d"] + (rows - 1) * a["drs"] + _cdiv(cols, L) - 1
        self._check_lines(d, out_buf, a["d"], dlast, "D")
        if stats and a["st"]:
            gmax = a["gbase"] + (rows - 1 if a["st_mode"] == "row" else (cols - 1) // a["gsize"])
            if gmax >= self.machine.stat_groups:
                raise DeviceError("OOB_STAT", f"{d.op}: statistics registers {a['gbase']}..{gmax}, the file has "
                                  f"{self.machine.stat_groups}", d.index)
        if stats and a["st_clr"]:
            self.stat_sum[:] = 0
            self.stat_sq[:] = 0
        accumulate = stats and a["st"]
        direct = _SFU_DIRECT and _disjoint([rows], [a["drs"] * L], cols) and not any(
            b == out_buf and first <= dlast and a["d"] <= first + (n - 1) * rs + _cdiv(cols, L) - 1
            for b, first, n, rs in srcs)
        if direct:
            flat, off, strides = self._region(d, out_buf, a["d"], [(rows, a["drs"])], cols, "D", "w")
            D = _view(flat, off, [rows], strides, cols, writeable=True)
        else:
            D = np.empty((rows, cols), dtype=_DTYPES[out_buf])
        step = max(1, _SFU_BLOCK // cols)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            if into is not None and not accumulate:
                into(r0, r1, D[r0:r1])
                continue
            blk = compute(r0, r1)
            if accumulate:
                stats_add(self.stat_sum, self.stat_sq, blk, a["st_mode"], a["gsize"],
                          a["gbase"] + (r0 if a["st_mode"] == "row" else 0))
            D[r0:r1] = blk
        if not direct:
            self._write(d, out_buf, a["d"], [(rows, a["drs"])], cols, D, "D")
        self._work[3] += rows * cols

    def _sat_out(self, a, x):
        """Saturate to the output type: act int8, acc int16 (held in int32)."""
        return N.sat8(x) if a["out"] == "act" else N.sat16(x)

    def _dequantize(self, d, a):
        """deq's operands (S, its scale, its bias, in that order of checks) and its value per row block:
        (compute, into), compute(r0, r1) = sat16(apply_scale(S, E) + Bc) as exact integers (int32, int64
        or float64), into(r0, r1, out) writes them into out (None: use compute)."""
        rows, cols = a["rows"], a["cols"]
        S = self._read(d, a["sbuf"], a["s"], [(rows, a["srs"])], cols, "S")
        if a["per_ch"]:
            E = self._read(d, "prm", a["sc"], [(1, 0)], cols, "the scale vector")[0].astype(np.int64)
        else:
            E = self._prmw(d, a["sc"], "the scale entry")
        Bc = self._read(d, "prm", a["bb"], [(1, 0)], cols, "the bias")[0].view(np.int32).astype(np.int64) \
            if a["bias"] else 0
        i32 = _int32_scale(E, S.dtype, Bc)
        fs = None if i32 is not None else FloatScale.of(E, _absmax_int(S))

        if i32 is not None:             # int8 S (a requantized tile): the same values in int32
            mul, half, sh = i32
            B32 = np.asarray(Bc, np.int32) if a["bias"] else None

            def compute(r0, r1):
                v = np.multiply(S[r0:r1], mul, dtype=np.int32)
                v += half
                v >>= sh
                if B32 is not None:
                    v += B32
                return _uclip(v, -32768, 32767, out=v)

            def into(r0, r1, out):
                np.copyto(out, compute(r0, r1), casting="unsafe")
            return compute, into
        if fs is None:
            def compute(r0, r1):        # N.sat16(N.apply_scale(S, E) + Bc)
                v = scale_inplace(S[r0:r1].astype(np.int64), E)
                v += Bc
                return _clip(v, 16)
            return compute, None
        Bf = np.asarray(Bc, dtype=np.float64)

        def scaled(r0, r1):             # the same values in float64 (FloatScale says why exact)
            f = fs.apply(S[r0:r1])
            f += Bf
            return _uclip(f, -32768.0, 32767.0, out=f)

        def into(r0, r1, out):
            np.copyto(out, scaled(r0, r1), casting="unsafe")
        return scaled, into

    def _op_deq(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        value, into = self._dequantize(d, a)

        def compute(r0, r1):
            v = value(r0, r1)
            return v.astype(np.int64) if v.dtype == np.float64 else v
        self._sfu(d, a, rows, cols, "acc", compute, stats=True, srcs=[(a["sbuf"], a["s"], rows, a["srs"])],
                  into=into)

    def _op_deqact(self, d, a) -> None:
        """deq then act with the int16 value kept in the pipeline (isa.toml: the same D as the pair)."""
        rows, cols = a["rows"], a["cols"]
        value, _ = self._dequantize(d, a)
        compute, into = self._activation(a, self._prmw(d, a["osc"], "the output scale entry"), value)
        self._sfu(d, a, rows, cols, a["out"], compute, srcs=[(a["sbuf"], a["s"], rows, a["srs"])], into=into)

    def _activation(self, a, e, x):
        """act's stage after its input: D = sat_out(apply_scale(fn_q(fn, X, frac), e)) of the int16 values
        X = x(r0, r1) (exact integers of any dtype), per row block: (compute, into) as _sfu takes them (into
        only for fn none, where D is computed in exact float64)."""
        fs = FloatScale.of(e, 32768) if a["fn"] == "none" else None
        if fs is None:
            def compute(r0, r1):
                Y = N.fn_q(a["fn"], np.asarray(x(r0, r1), dtype=np.int64), a["frac"])
                return self._sat_out(a, N.apply_scale(Y, e))
            return compute, None
        lim = 127.0 if a["out"] == "act" else 32767.0

        def scaled(r0, r1):             # sat_out(apply_scale(X, e)) in exact float64 (FloatScale says why)
            f = fs.apply(x(r0, r1))
            return _uclip(f, -lim - 1, lim, out=f)

        def into(r0, r1, out):
            np.copyto(out, scaled(r0, r1), casting="unsafe")
        return (lambda r0, r1: scaled(r0, r1).astype(np.int64)), into

    def _op_add(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        A = self._read(d, "acc", a["a"], [(rows, a["ars"])], cols, "A")
        B = self._read(d, a["bbuf"], a["b"], [(rows, a["brs"])], cols, "B")
        e = self._prmw(d, a["sc"], "the scale entry")
        fs = FloatScale.of(e, _absmax_int(B))

        if fs is None:
            def compute(r0, r1):        # N.sat16(A + N.apply_scale(B, e))
                v = scale_inplace(B[r0:r1].astype(np.int64), e)
                v += A[r0:r1]
                return _clip(v, 16)
            into = None
        else:
            def scaled(r0, r1):         # the same values in float64 (FloatScale says why exact)
                f = fs.apply(B[r0:r1])
                f += A[r0:r1]           # |A| < 2**31: exact
                return _uclip(f, -32768.0, 32767.0, out=f)

            def compute(r0, r1):
                return scaled(r0, r1).astype(np.int64)

            def into(r0, r1, out):
                np.copyto(out, scaled(r0, r1), casting="unsafe")
        self._sfu(d, a, rows, cols, "acc", compute, stats=True,
                  srcs=[("acc", a["a"], rows, a["ars"]), (a["bbuf"], a["b"], rows, a["brs"])], into=into)

    def _op_act(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        if a["st"] and a["out"] == "act":
            raise DeviceError("BAD_FIELD", "act: statistics (st=1) need out=acc", d.index)
        S = self._read(d, a["sbuf"], a["s"], [(rows, a["srs"])], cols, "S")
        e = self._prmw(d, a["sc"], "the scale entry")

        def sat16(r0, r1):          # int8 inputs need no saturation
            blk = S[r0:r1]
            return blk if blk.dtype == np.int8 else _uclip(blk, -32768, 32767)
        compute, into = self._activation(a, e, sat16)
        self._sfu(d, a, rows, cols, a["out"], compute, stats=True, srcs=[(a["sbuf"], a["s"], rows, a["srs"])],
                  into=into)

    def _op_geglu(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        A = self._read(d, "acc", a["a"], [(rows, a["ars"])], cols, "A")
        B = self._read(d, "acc", a["b"], [(rows, a["brs"])], cols, "B")
        e = self._prmw(d, a["sc"], "the scale entry")

        def compute(r0, r1):
            Y = N.geglu_q(N.sat16(A[r0:r1].astype(np.int64)), N.sat16(B[r0:r1].astype(np.int64)), a["frac"])
            return self._sat_out(a, N.apply_scale(Y, e))
        self._sfu(d, a, rows, cols, a["out"], compute,
                  srcs=[("acc", a["a"], rows, a["ars"]), ("acc", a["b"], rows, a["brs"])])

    def _op_norm(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        X = self._read(d, "acc", a["s"], [(rows, a["srs"])], cols, "the input")
        row_mode = a["st_mode"] == "row"
        ng = rows if row_mode else (cols - 1) // a["gsize"] + 1
        gbase = a["gbase"]
        if gbase + ng > self.machine.stat_groups:
            raise DeviceError("OOB_STAT", f"norm: statistics registers {gbase}..{gbase + ng - 1}, the file has "
                              f"{self.machine.stat_groups}", d.index)
        nd = a["nd"]
        inv_n = self._prmw(d, nd, "the descriptor")
        eps = self._prmw(d, nd + 1, "the descriptor")
        nsh = (self._prmw(d, nd + 2, "the descriptor") ^ 0x80000000) - 0x80000000    # int32(PRMW[nd+2])
        gamma = self._read(d, "prm", a["gamma"], [(1, 0)], cols, "gamma")[0].view(np.int32).astype(np.int64)
        beta = self._read(d, "prm", a["beta"], [(1, 0)], cols, "beta")[0].view(np.int32).astype(np.int64)
        e = self._prmw(d, a["sc"], "the scale entry")
        # mean and reciprocal standard deviation once per statistics group
        g = np.arange(gbase, gbase + ng)
        mu, rm, re = N.norm_params(self.stat_sum[g], self.stat_sq[g], inv_n, eps)
        if not row_mode:
            col_group = np.arange(cols) // a["gsize"]
            mu, rm, re = mu[col_group][None, :], rm[col_group][None, :], re[col_group][None, :]

        def compute(r0, r1):
            if row_mode:
                m_, r_, e_ = mu[r0:r1, None], rm[r0:r1, None], re[r0:r1, None]
            else:
                m_, r_, e_ = mu, rm, re
            Z = N.norm_q(N.sat16(X[r0:r1].astype(np.int64)), m_, r_, e_, gamma, beta, nsh)
            return self._sat_out(a, N.apply_scale(N.fn_q(a["fn"], Z, a["frac"]), e))
        self._sfu(d, a, rows, cols, a["out"], compute, srcs=[("acc", a["s"], rows, a["srs"])])

    def _op_softmax(self, d, a) -> None:
        rows, cols = a["rows"], a["cols"]
        S = self._read(d, "acc", a["s"], [(rows, a["srs"])], cols, "the scores")
        e = self._prmw(d, a["sc"], "the scale entry")
        if a["pre"]:                    # sat16(apply_scale(S, PRMW[psc])), as a deq (int16 fits int32)
            e1 = self._prmw(d, a["psc"], "the first scale entry")
            S = _clip(scale_inplace(S.astype(np.int64), e1), 16).astype(np.int32)
        self._sfu(d, a, rows, cols, "act", lambda r0, r1: softmax_fast(S[r0:r1], e),
                  srcs=[("acc", a["s"], rows, a["srs"])], into=lambda r0, r1, out: softmax_fast(S[r0:r1], e, out))

    def _op_transpose(self, d, a) -> None:
        rows, cols, L = a["rows"], a["cols"], self.L
        S = self._read(d, "act", a["s"], [(rows, a["srs"])], cols, "S")
        # D's lines are checked before the overlap test so the error names the real problem first.
        self._check_lines(d, "act", a["d"], a["d"] + (cols - 1) * a["drs"] + _cdiv(rows, L) - 1, "D")
        s_lines = (a["s"] + a["srs"] * np.arange(rows)[:, None] + np.arange(_cdiv(cols, L))[None, :]).ravel()
        d_lines = (a["d"] + a["drs"] * np.arange(cols)[:, None] + np.arange(_cdiv(rows, L))[None, :]).ravel()
        common = np.intersect1d(s_lines, d_lines)
        if common.size:
            raise DeviceError("OVERLAP", f"transpose: source and destination share act line {int(common[0])} "
                              f"({common.size} lines in common)", d.index)
        self._write(d, "act", a["d"], [(cols, a["drs"])], rows, np.ascontiguousarray(S.T), "D")
        self._work[3] += rows * cols


# ------------------------------------------------------------------ fast equivalents of numerics.py
# Same values as the numerics.py functions they replace (tests/runtime/test_golden_fastpaths.py
# compares them on random and edge inputs); fewer int64 passes and temporaries.

def _exp_table() -> np.ndarray:
    """rshift_round(EXP2[u & 255], min(u >> 8, 31)) for every u in [0, 32*256), from numerics itself.
    For u >= 31*256 the shift is 31 and EXP2 <= 2**15, so the value is 0: u clamps to the last entry."""
    u = np.arange(32 << N.EXP_FRAC, dtype=np.int64)
    t = N.rshift_round(tables.EXP2[(u & 255).astype(np.intp)].astype(np.int64), np.minimum(u >> N.EXP_FRAC, 31))
    assert not t[31 << N.EXP_FRAC:].any(), "EXP2 table too large for the clamped lookup"
    return t


_EXP = _exp_table()


try:                        # the clip ufunc itself: np.clip adds ~10 us of Python checks per call
    from numpy._core.umath import clip as _uclip
except ImportError:          # numpy < 2
    _uclip = np.clip


def _absmax_int(x: np.ndarray) -> int:
    """max |x| of an integer array (int8 needs no pass: 128 bounds it)."""
    if x.dtype == np.int8:
        return 128
    return _absmax(x)


def _int32_scale(e, dtype, bias) -> tuple | None:
    """(mul, 2**(sh-1), sh) when N.apply_scale(q, e) + bias of any int8 q is exact in int32: one scale
    entry, |q * mul| + 2**(sh-1) < 2**31 and the shifted value plus |bias| < 2**31 (then
    (q * mul + 2**(sh-1)) >> sh is rshift_round itself). None otherwise, or with the fast paths off."""
    if not _FLOAT_SCALE or dtype != np.int8 or np.ndim(e) != 0:
        return None
    e = int(e) & 0xFFFFFFFF
    mul, sh = e & 0xFFFFFF, (e >> 24) & 63
    half = (1 << sh) >> 1
    bmax = int(np.max(np.abs(bias))) if np.ndim(bias) else abs(int(bias))
    if sh > 30 or 128 * mul + half >= 1 << 31 or ((128 * mul + half) >> sh) + bmax >= 1 << 31:
        return None
    return np.int32(mul), np.int32(half), sh


_float_scales: dict = {}


@dataclass
class FloatScale:
    """apply_scale(x, e) = rshift_round(x * mul, sh) in float64: floor(x * c + h) with
    c = mul * 2**-sh and h = 0.5 (0 where sh = 0). Exact when |x| * mul + 2**(sh-1) < 2**53:
    c is exact (a power-of-two scaling of mul < 2**24), x * c = (x*mul) * 2**-sh exactly (|x*mul|
    < 2**53), and + h gives (x*mul + 2**(sh-1)) * 2**-sh with an integer numerator below 2**53,
    exact; floor of that is the arithmetic shift. ``of`` returns None when the bound fails."""

    c: np.ndarray | float
    h: np.ndarray | float

    @staticmethod
    def of(e, xmax: int) -> "FloatScale | None":
        if not _FLOAT_SCALE:
            return None
        if np.ndim(e) == 0:           # one entry: plain Python (the vector code costs ~50 us)
            e = int(e) & 0xFFFFFFFF
            mul, sh = e & 0xFFFFFF, min((e >> 24) & 63, 62)
            if xmax * mul + ((1 << sh) >> 1) >= 1 << 53:
                return None
            return FloatScale(math.ldexp(mul, -sh), 0.5 if sh else 0.0)
        # a vector of entries (per channel): the same vector serves many instructions, so its
        # float form is cached by content
        key = np.asarray(e, dtype=np.int64).tobytes()
        ent = _float_scales.get(key)
        if ent is None:
            mul, sh = N.scale_fields(e)
            sh = np.minimum(sh, 62)
            c = np.ldexp(np.asarray(mul, dtype=np.float64), -np.asarray(sh))
            h = np.where(np.asarray(sh) > 0, 0.5, 0.0)
            ent = (FloatScale(c, h), int(np.max(mul)), int(np.max(sh)))
            if len(_float_scales) >= 1024:
                _float_scales.clear()
            _float_scales[key] = ent
        fs, mmax, smax = ent
        if xmax * mmax + ((1 << smax) >> 1) >= 1 << 53:
            return None
        return fs

    def apply(self, x: np.ndarray) -> np.ndarray:
        f = np.multiply(x, self.c, dtype=np.float64)
        f += self.h
        return np.floor(f, out=f)


def stats_add(s1: np.ndarray, s2: np.ndarray, d: np.ndarray, mode: str, gsize: int, gbase: int) -> None:
    """N.stats_accumulate(s1, s2, d, N.group_index(rows, cols, mode, gsize, gbase)) with reductions
    instead of np.add.at: per row (mode "row") or per group of gsize columns. Integer sums: any order
    gives the same values (d int16-ranged int64; the registers cannot overflow, numerics.py)."""
    d = np.asarray(d, dtype=np.int64)
    sq = d * d
    if mode == "row":
        n = d.shape[0]
        s1[gbase:gbase + n] += d.sum(axis=1)
        s2[gbase:gbase + n] += sq.sum(axis=1)
        return
    starts = np.arange(0, d.shape[1], gsize)
    n = starts.size
    s1[gbase:gbase + n] += np.add.reduceat(d.sum(axis=0), starts)
    s2[gbase:gbase + n] += np.add.reduceat(sq.sum(axis=0), starts)


def _clip(v: np.ndarray, bits: int) -> np.ndarray:
    """N.sat(v, bits) in place (v int64)."""
    return _uclip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, out=v)


def scale_inplace(v: np.ndarray, e) -> np.ndarray:
    """v = N.apply_scale(v, e) in place: v int64 with |v| < 2**32; e a scale entry or a vector of them
    (broadcast along the last axis). rshift_round's half is (1 << s) >> 1, i.e. 0 for s = 0."""
    if np.ndim(e) == 0:
        e = int(e) & 0xFFFFFFFF
        v *= e & 0xFFFFFF
        sh = min((e >> 24) & 63, 62)
        if sh:
            v += 1 << (sh - 1)
            v >>= sh
        return v
    mul, sh = N.scale_fields(e)
    sh = np.minimum(sh, 62)
    v *= mul
    v += (np.int64(1) << sh) >> 1
    v >>= sh
    return v


_SOFTMAX_TABLE_MAX = 1 << 22       # entries of a per-scale exp table (int32: 16 MiB at most)
_softmax_tables: dict = {}
_EXP_ZERO_FROM = int(np.flatnonzero(_EXP)[-1]) + 1     # _EXP[u] = 0 for every u >= this (clamped too)


def softmax_exp_table(e: int) -> np.ndarray | None:
    """T[z] = the SoftMax exponent term of a score z below the row maximum, for scale entry e:
    _EXP[u(z)] with u(z) = -apply_scale(-z, e); the last entry and every z beyond it give 0.
    float64 (exact: integers <= 2**15). None when that takes more than _SOFTMAX_TABLE_MAX entries
    (tiny multipliers). Cached per e."""
    e = int(e) & 0xFFFFFFFF
    t = _softmax_tables.get(e, False)
    if t is not False:
        return t
    mul, sh = e & 0xFFFFFF, min((e >> 24) & 63, 62)
    zero_at = _EXP_ZERO_FROM
    # the first z with u(z) >= zero_at: u(z) = (z*mul + 2**(sh-1) - 1) >> sh is non-decreasing in z
    n = None if mul == 0 else _cdiv((zero_at << sh) - (((1 << sh) >> 1) - 1 if sh else 0), mul) + 1
    if n is None or n > _SOFTMAX_TABLE_MAX:
        t = None
    else:
        z = np.arange(n, dtype=np.int64)
        z *= mul
        if sh:
            z += (1 << (sh - 1)) - 1
            z >>= sh
        t = np.take(_EXP, z, mode="clip").astype(np.float64)
        assert t[-1] == 0
    if sum(v.size for v in _softmax_tables.values() if v is not None) > 2 * _SOFTMAX_TABLE_MAX:
        _softmax_tables.clear()         # (a program uses a few dozen scales; keep the memory bounded)
    _softmax_tables[e] = t
    return t


def softmax_fast(x: np.ndarray, e: int, out: np.ndarray | None = None) -> np.ndarray:
    """N.softmax_q(x, e) (x int32 scores, rows along the last axis): an int64 result, or written into
    ``out`` (any integer array of x's shape; the values are in [0, 127]) and returned.

    The exponent terms come from the per-scale table; the normalization runs in float64, exactly:
    p = rshift_round(ex * c, s) with c = RECIP[.] * 127 < 2**22, ex <= 2**15 and s = 15 + k <= 53
    is floor(ex * (c * 2**-s) + 0.5): c * 2**-s is exact (a power-of-two scaling), ex * that is
    (ex*c) * 2**-s exactly (ex*c < 2**37), and adding 0.5 gives (ex*c + 2**(s-1)) * 2**-s with a
    numerator below 2**53, exact; the float -> int conversion truncates, i.e. floors (values >= 0).
    Rows whose sum needs s > 53 (more than 2**23 terms) take the integer path."""
    table = softmax_exp_table(e)
    if table is None or x.shape[-1] >= 1 << 23:
        r = _softmax_shift(x, e)
        if out is None:
            return r
        out[...] = r
        return out
    mx = x.max(axis=-1, keepdims=True)
    if x.size and int(mx.max()) - int(x.min()) < 1 << 31:
        v = np.subtract(mx, x)                  # z = mx - x in [0, 2**31): int32 holds it
    else:
        v = np.subtract(mx, x, dtype=np.int64)
    ex = np.take(table, v, mode="clip")         # z past the table's end reads its last entry, 0
    total = ex.sum(axis=-1, keepdims=True)      # integers, >= 2**15 and < 2**38: exact in float64
    k = (np.frexp(total)[1] - 1).astype(np.int64)     # floor(log2 total) = N._bitlen - 1
    rl = tables.RECIP[((total.astype(np.int64) >> (k - 9)) - 512).astype(np.intp)].astype(np.int64)
    cs = np.ldexp((rl * N.SOFTMAX_ONE).astype(np.float64), -(15 + k))
    if ex.ndim == 2 and ex.shape[1] >= 1024:    # wide rows: a scalar multiply per row is ~2x faster
        for r, c in enumerate(cs[:, 0].tolist()):
            ex[r] *= c
    else:
        ex *= cs
    ex += 0.5
    # only rows whose largest possible term (2**15) could round above 127 need the clamp
    big = (cs * float(1 << 15) + 0.5 >= N.SOFTMAX_ONE + 1).reshape(-1)
    if big.any():
        rows = ex.reshape(-1, ex.shape[-1])
        for r in np.flatnonzero(big).tolist():
            np.minimum(rows[r], float(N.SOFTMAX_ONE), out=rows[r])
    if out is None:
        return ex.astype(np.int64)
    np.copyto(out, ex, casting="unsafe")
    return out


def _softmax_shift(x: np.ndarray, e: int) -> np.ndarray:
    """N.softmax_q(x, e) without a per-scale table (any e), int64 result."""
    mul, sh = int(e) & 0xFFFFFF, (int(e) >> 24) & 63
    v = np.empty(x.shape, dtype=np.int64)
    np.subtract(x.max(axis=-1, keepdims=True), x, out=v, dtype=np.int64)     # z = mx - x >= 0
    v *= mul
    if sh > 0:
        # u = -apply_scale(-z, e) = -((-z*mul + h) >> s) = (z*mul + h - 1) >> s  (h = 2**(s-1))
        sh = min(sh, 62)
        v += (1 << (sh - 1)) - 1
        v >>= sh
    # u >= 0; u past the table's end reads its last entry (0), as the table's docstring shows
    ex = np.take(_EXP, v, mode="clip")
    total = ex.sum(axis=-1, keepdims=True)       # >= 2**15, < 2**53 (exact in float64)
    k = (np.frexp(total.astype(np.float64))[1] - 1).astype(np.int64)    # floor(log2 total) = N._bitlen - 1
    rl = tables.RECIP[((total >> (k - 9)) - 512).astype(np.intp)].astype(np.int64)
    s = np.minimum(15 + k, 62)
    ex *= rl * N.SOFTMAX_ONE
    ex += (np.int64(1) << s) >> 1
    ex >>= s
    np.minimum(ex, N.SOFTMAX_ONE, out=ex)
    return ex


# ------------------------------------------------------------------ helpers

def _view(flat: np.ndarray, off: int, counts, strides, width: int, *, writeable: bool) -> np.ndarray:
    """View of flat[off + sum(idx*stride) + j] with shape (*counts, width); bounds checked by the caller."""
    isz = flat.itemsize
    shape, st = (*counts, width), (*(s * isz for s in strides), isz)
    if 0 in shape:
        return as_strided(flat[off:], shape=shape, strides=st, writeable=writeable)
    # the ndarray constructor is ~4x cheaper than as_strided (and checks the extent against flat once more)
    v = np.ndarray(shape, flat.dtype, buffer=flat, offset=off * isz, strides=st)
    if not writeable:
        v.flags.writeable = False
    return v


def _scatter(flat: np.ndarray, off: int, counts, strides, width: int, values) -> None:
    """flat[off + sum(idx*stride) + j] = values[*idx, j]; when rows overlap, the later row (C order) wins."""
    values = np.asarray(values)
    if values.shape != (*counts, width):
        values = np.broadcast_to(values, (*counts, width))
    if _disjoint(counts, strides, width):
        _view(flat, off, counts, strides, width, writeable=True)[...] = values
        return
    starts = np.zeros(1, dtype=np.int64)
    for c, s in zip(counts, strides):
        starts = (starts[:, None] + s * np.arange(c, dtype=np.int64)[None, :]).ravel()
    if starts.size > 1:
        srt = np.sort(starts)
        overlap = bool((np.diff(srt) < width).any())
    else:
        overlap = False
    if not overlap:
        _view(flat, off, counts, strides, width, writeable=True)[...] = values
        return
    idx = (off + starts[:, None] + np.arange(width, dtype=np.int64)[None, :]).ravel()
    vals = values.reshape(-1)
    # Keep only the last write to each element (the loop order of the instruction).
    _, first_rev = np.unique(idx[::-1], return_index=True)
    keep = idx.size - 1 - first_rev
    flat[idx[keep]] = vals[keep]


def _contiguous(outer, inner: int) -> bool:
    """True when rows of ``inner`` consecutive units, repeated over the (count, stride) dimensions
    ``outer`` (outermost first), are consecutive: each stride is the extent of everything inside it."""
    extent = inner
    for c, s in reversed(outer):
        if c > 1 and s != extent:
            return False
        extent *= c
    return True


def _disjoint(counts, strides, width: int) -> bool:
    """True when the rows provably do not overlap (nested strides each clear the extent below them)."""
    extent = width
    for c, s in sorted(((c, s) for c, s in zip(counts, strides) if c > 1), key=lambda cs: cs[1]):
        if s < extent:
            return False
        extent = s * (c - 1) + extent
    return True


def _nibble_pairs() -> np.ndarray:
    """Byte b -> its two sign-extended nibbles (low nibble first, lane 2j), as one 2-byte word."""
    b = np.arange(256)
    pairs = np.stack([((b & 0xF) ^ 8) - 8, ((b >> 4) ^ 8) - 8], axis=1).astype(np.int8)
    return pairs.view(np.uint16).reshape(256)       # native view: indexing yields the pair's bytes in order


_NIBBLE_PAIRS = _nibble_pairs()
# Two bytes (read as one native uint16) -> their four lanes as one uint32: a 256 KiB table that
# stays in cache; np.take on it is ~9x faster than unpacking nibbles with whole-array passes.
_NIBBLE_QUADS = _NIBBLE_PAIRS[np.arange(1 << 16, dtype=np.uint16).reshape(-1, 1).view(np.uint8)] \
    .view(np.uint32).reshape(1 << 16)


def _decode_lines(buf: str, raw: np.ndarray, L: int) -> np.ndarray:
    """DRAM bytes [..., B] -> buffer lines [..., L] (a view of raw where the bytes are the values)."""
    if buf == "act":
        return raw.view(np.int8)                    # same item size: a view even when raw is strided
    if buf == "wgt":
        # one table lookup per byte gives both lanes (a gather instead of six whole-array passes)
        if raw.shape[-1] % 2 == 0 and raw.strides[-1] == 1:
            return np.take(_NIBBLE_QUADS, raw.view(np.uint16)).view(np.int8)
        return np.take(_NIBBLE_PAIRS, raw).view(np.int8)
    dt = "<i4" if buf == "acc" else "<u4"
    return np.ascontiguousarray(raw).view(dt).astype(_DTYPES[buf], copy=False)


def _encode_lines(buf: str, lines: np.ndarray) -> np.ndarray:
    """Buffer lines [..., L] -> DRAM bytes [..., B] (uint8)."""
    if buf == "act":
        return np.ascontiguousarray(lines).view(np.uint8)
    if buf == "wgt":
        v = lines.astype(np.uint8) & 0xF
        return v[..., 0::2] | (v[..., 1::2] << 4)
    dt = "<i4" if buf == "acc" else "<u4"
    return np.ascontiguousarray(lines.astype(dt)).view(np.uint8)


# ------------------------------------------------------------------ bundles

def load_bundle_image(bundle, *, trace: bool = False) -> Golden:
    """A Golden whose DRAM holds the bundle's static image (DATA at data_base, STEP at step_base)."""
    from ..errors import BundleError
    g = Golden(bundle.machine, bundle.dram_size, trace=trace)
    for name, base, blob in (("data", bundle.data_base, bundle.data), ("step table", bundle.step_base,
                                                                        bundle.step_table)):
        if base + len(blob) > bundle.dram_size:
            raise BundleError(f"bundle {name} [{base:#x}, {base + len(blob):#x}) lies outside dram_size "
                              f"{bundle.dram_size:#x}")
        g.dram[base:base + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
    return g


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(float16)": np.float16}


def _host_session(model: bytes):
    """An onnxruntime session of the bundle's host prologue (cached: one per model)."""
    key = hash(model)
    cached = _host_sessions.get(key)
    if cached is not None and cached[0] == model:
        return cached[1]
    import onnxruntime as ort
    from ..errors import BundleError
    try:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BundleError(f"the bundle's host prologue is not a valid ONNX model ({str(e).splitlines()[0]})") \
            from None
    _host_sessions.clear()
    _host_sessions[key] = (model, sess)
    return sess


_host_sessions: dict = {}


def expected_inputs(bundle) -> dict[str, tuple | None]:
    """The inputs a caller gives, by ONNX name: shape, or None when the host prologue takes it
    (symbolic dimensions). Host prologue outputs are computed here, not given."""
    want: dict[str, tuple | None] = {}
    produced: set[str] = set()
    if bundle.host:
        sess = _host_session(bundle.host)
        produced = {o.name for o in sess.get_outputs()}
        for i in sess.get_inputs():
            want[i.name] = tuple(i.shape) if all(isinstance(d, int) for d in i.shape) else None
    for t in bundle.inputs:
        if t.name not in produced:
            want[t.name] = tuple(t.shape)
    return want


def check_inputs(bundle, inputs: dict) -> None:
    """Missing, unexpected or mis-shaped inputs are user errors (SdacError) naming the tensor."""
    from ..errors import SdacError
    want = expected_inputs(bundle)
    missing = [n for n in want if n not in inputs]
    extra = [n for n in inputs if n not in want]
    if missing:
        raise SdacError(f"missing input(s): {', '.join(missing)} (the bundle takes {', '.join(want)})")
    if extra:
        raise SdacError(f"unexpected input(s): {', '.join(extra)} (the bundle takes {', '.join(want)})")
    for n, shape in want.items():
        got = tuple(np.shape(inputs[n]))
        if shape is not None and got != shape:
            raise SdacError(f"input {n!r}: expected shape {shape}, got {got}")


def device_inputs(bundle, inputs: dict) -> dict:
    """Inputs by ONNX name -> the bundle's device inputs: runs the host prologue (onnxruntime) if any."""
    from ..errors import SdacError
    check_inputs(bundle, inputs)
    dev = dict(inputs)
    if bundle.host:
        sess = _host_session(bundle.host)
        feed = {i.name: np.asarray(inputs[i.name]).astype(_ORT_TYPES.get(i.type, np.float32))
                for i in sess.get_inputs()}
        try:
            outs = sess.run(None, feed)
        except Exception as e:
            raise SdacError(f"the host prologue failed on these inputs ({str(e).splitlines()[0]})") from None
        dev.update(zip([o.name for o in sess.get_outputs()], outs))
    for t in bundle.inputs:
        x = np.asarray(dev[t.name])
        if tuple(x.shape) != tuple(t.shape):
            raise SdacError(f"device input {t.name!r} (from the host prologue): shape {tuple(x.shape)}, the bundle "
                            f"expects {tuple(t.shape)}")
    return {t.name: dev[t.name] for t in bundle.inputs}


def execute_bundle(bundle, inputs: dict, step: int = 0, *, trace: bool = False,
                   priority: Sequence[str] = QUEUES):
    """Run one denoising step of a bundle on the golden model: (outputs by name, RunResult).

    ``inputs`` are keyed by ONNX graph input name (host layout, float); a host prologue in the
    bundle runs first on onnxruntime and feeds the device inputs it produces. ``priority``: the
    queue order of the interleaving (see Golden.run)."""
    from ..errors import SdacError
    from .host import from_device, to_device
    if not 0 <= step < max(1, bundle.n_steps):
        raise SdacError(f"step {step} is outside 0..{bundle.n_steps - 1}")
    dev = device_inputs(bundle, inputs)
    L = bundle.machine.lanes
    g = load_bundle_image(bundle, trace=trace)
    for t in bundle.inputs:
        raw = to_device(t, np.asarray(dev[t.name]), step, L)
        if t.dram + len(raw) > g.dram.size:
            raise SdacError(f"input {t.name!r} at {t.dram:#x} ({len(raw)} bytes) lies outside device DRAM")
        g.dram[t.dram:t.dram + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    result = g.run(_prepared(bundle.instrs), step=step, priority=priority)
    outputs = {}
    for t in bundle.outputs:
        n = t.rows * _cdiv(t.cols, L) * L
        if t.dram + n > g.dram.size:
            raise SdacError(f"output {t.name!r} at {t.dram:#x} ({n} bytes) lies outside device DRAM")
        outputs[t.name] = from_device(t, g.dram[t.dram:t.dram + n], step, L)
    return outputs, result


_last_program: tuple = ((), None)


def _prepared(instrs) -> Prepared:
    """prepare(), remembering the last program: a sampler runs the same bundle at every step.
    The cache holds the Instr objects themselves, so identity means the same (frozen) program."""
    global _last_program
    seen, prog = _last_program
    if prog is not None and len(seen) == len(instrs) and all(a is b for a, b in zip(seen, instrs)):
        return prog
    prog = prepare(instrs)
    _last_program = (tuple(instrs), prog)
    return prog


def run_bundle(bundle, inputs: dict, step: int = 0, trace: bool = False) -> dict:
    """Run one step; outputs by ONNX name as float32 host tensors (see execute_bundle for the RunResult)."""
    return execute_bundle(bundle, inputs, step, trace=trace)[0]
