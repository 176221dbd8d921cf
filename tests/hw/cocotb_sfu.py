"""cocotb bench for sdac_sfu.sv: random SFU instructions against the golden model, bit for bit.

The act / acc / prm buffers live in Python (numpy) and answer the SFU's line requests with
random grant stalls and read latencies. Every instruction also runs on a
sdac.runtime.golden.Golden holding the same buffer contents and statistics; afterwards every
buffer line (all of act, acc, prm), the statistics registers the instruction could touch and
the error code must be identical.

Environment: SDAC_SFU_L, SDAC_SFU_ACC, SDAC_SFU_ACT, SDAC_SFU_PRM, SDAC_SFU_NSTAT (the build's
parameters), SDAC_SFU_N (random instructions per op), SDAC_SFU_OPS (comma list, default all),
SDAC_SFU_SEED, SDAC_SFU_STALL (probability of withholding a grant).
"""
from __future__ import annotations

import os
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, Timer

from sdac.errors import DeviceError
from sdac.isa import numerics as N
from sdac.isa.encoding import Instr, encode_int
from sdac.isa.machine import Machine
from sdac.isa.spec import SPEC
from sdac.runtime.golden import Golden

L = int(os.environ.get("SDAC_SFU_L", "20"))
ACC_N = int(os.environ.get("SDAC_SFU_ACC", "1024"))
ACT_N = int(os.environ.get("SDAC_SFU_ACT", "1024"))
PRM_N = int(os.environ.get("SDAC_SFU_PRM", "256"))
NSTAT = int(os.environ.get("SDAC_SFU_NSTAT", "64"))
N_PER_OP = int(os.environ.get("SDAC_SFU_N", "100"))
OPS = [o for o in os.environ.get("SDAC_SFU_OPS", "deq,add,act,deqact,geglu,norm,softmax,transpose").split(",")
       if o]
SEED = int(os.environ.get("SDAC_SFU_SEED", "1"))
STALL = float(os.environ.get("SDAC_SFU_STALL", "0.25"))

MACHINE = Machine(lanes=L, acc_lines=ACC_N, act_lines=ACT_N, prm_lines=PRM_N, stat_groups=NSTAT)
HALT = Instr.make("halt")
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------ line packing

def pack(line: np.ndarray) -> int:
    dt = {np.dtype(np.int8): "<i1", np.dtype(np.int32): "<i4", np.dtype(np.uint32): "<u4"}[line.dtype]
    return int.from_bytes(np.ascontiguousarray(line.astype(dt)).tobytes(), "little")


def unpack(value: int, dtype, lanes: int = L) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(value.to_bytes(size * lanes, "little"), dtype=dtype).copy()


# ------------------------------------------------------------------ buffers in Python

class Buffers:
    """The SFU's view of act / acc / prm: answers requests at falling edges.

    A request seen (req=1) at a falling edge gets gnt=1 with probability 1 - STALL; it is
    accepted at the next rising edge. Read data arrive 1 + k cycles after acceptance
    (k random when stalling), as the protocol allows."""

    def __init__(self, dut, rng):
        self.dut = dut
        self.rng = rng
        self.acc = np.zeros((ACC_N, L), dtype=np.int32)
        self.act = np.zeros((ACT_N, L), dtype=np.int8)
        self.prm = np.zeros((PRM_N, L), dtype=np.uint32)
        self.stall = STALL
        self.done = Event()
        self.cycles = 0
        self.reads = {"acc": dut.acc_rd_req, "act": dut.act_rd_req, "prm": dut.prm_rd_req}
        self.writes = {"acc": dut.acc_wr_req, "act": dut.act_wr_req}
        self.mem = {"acc": self.acc, "act": self.act, "prm": self.prm}
        self.deadline = None     # cycle count at which a running instruction counts as hung
        self.timed_out = False
        self.gnt = {}            # signal -> last driven value
        self.valid = {}

    def _drive(self, sig, value, cache):
        if cache.get(sig) != value:
            sig.value = value
            cache[sig] = value

    async def run(self):
        dut = self.dut
        pending = {}             # port -> [cycles to wait, packed data]
        acc_rd, acc_wr = {}, {}  # granted at the last falling edge -> accepted at the rising edge since
        for p in ("acc", "act", "prm"):
            self._drive(getattr(dut, f"{p}_rd_gnt"), 0, self.gnt)
            self._drive(getattr(dut, f"{p}_rd_valid"), 0, self.valid)
        for p in ("acc", "act"):
            self._drive(getattr(dut, f"{p}_wr_gnt"), 0, self.gnt)
        while True:
            await FallingEdge(dut.clk)
            self.cycles += 1
            for p, addr in acc_rd.items():
                delay = 0 if self.rng.random() >= self.stall else int(self.rng.integers(0, 3))
                pending[p] = [delay, pack(self.mem[p][addr])]
            for p, (addr, data, be) in acc_wr.items():
                lanes = np.array([(be >> i) & 1 for i in range(L)], dtype=bool)
                line = unpack(data, self.mem[p].dtype)
                self.mem[p][addr][lanes] = line[lanes]
            acc_rd.clear()
            acc_wr.clear()
            for p in ("acc", "act", "prm"):
                vsig = getattr(dut, f"{p}_rd_valid")
                if p in pending:
                    if pending[p][0] == 0:
                        getattr(dut, f"{p}_rd_data").value = pending[p][1]
                        self._drive(vsig, 1, self.valid)
                        del pending[p]
                    else:
                        pending[p][0] -= 1
                        self._drive(vsig, 0, self.valid)
                else:
                    self._drive(vsig, 0, self.valid)
            for p, req in self.reads.items():
                g = 0
                if int(req.value) and p not in pending and self.rng.random() >= self.stall:
                    g = 1
                    acc_rd[p] = int(getattr(dut, f"{p}_rd_addr").value)
                self._drive(getattr(dut, f"{p}_rd_gnt"), g, self.gnt)
            for p, req in self.writes.items():
                g = 0
                if int(req.value) and self.rng.random() >= self.stall:
                    g = 1
                    acc_wr[p] = (int(getattr(dut, f"{p}_wr_addr").value), int(getattr(dut, f"{p}_wr_data").value),
                                 int(getattr(dut, f"{p}_wr_be").value))
                self._drive(getattr(dut, f"{p}_wr_gnt"), g, self.gnt)
            if int(dut.done.value):
                self.done.set()
            elif self.deadline is not None and self.cycles > self.deadline:
                self.timed_out = True
                self.done.set()


# ------------------------------------------------------------------ random values

def rand_i32(rng, n, cls=None) -> np.ndarray:
    """int32 values of a random magnitude class, with the edge values sprinkled in."""
    cls = cls or rng.choice(["small", "i16", "wide", "full"], p=[0.25, 0.35, 0.2, 0.2])
    lim = {"small": 1 << 7, "i16": 1 << 15, "wide": 1 << 20, "full": 1 << 31}[cls]
    v = rng.integers(-lim, lim, n, dtype=np.int64)
    edges = np.array([-32768, 32767, 32768, -32769, 0, 1, -1, I32_MIN, I32_MAX, -128, 127], dtype=np.int64)
    if cls != "full":
        edges = edges[np.abs(edges) <= max(lim, 32769)]
    k = rng.random(n) < 0.08
    v[k] = rng.choice(edges, int(k.sum()))
    return v.astype(np.int32)


def rand_i8(rng, n) -> np.ndarray:
    v = rng.integers(-128, 128, n)
    k = rng.random(n) < 0.1
    v[k] = rng.choice([-128, 127, 0, -1], int(k.sum()))
    return v.astype(np.int8)


def rand_scale(rng, sh_range=(0, 40)) -> int:
    """A scale entry: mul (24 bits), sh (6 bits) and random junk in the ignored bits 30-31."""
    mul = int(rng.choice([0, 1, (1 << 24) - 1, int(rng.integers(0, 1 << 24)), int(rng.integers(0, 1 << 12)),
                          int(rng.integers(1 << 14, 1 << 17))]))
    r = rng.random()
    sh = int(rng.choice([0, 1, 62, 63])) if r < 0.1 else int(rng.integers(sh_range[0], sh_range[1] + 1))
    return (int(rng.integers(0, 4)) << 30) | (sh << 24) | mul


def rand_scale_vec(rng, n, sh_range=(0, 40)) -> np.ndarray:
    return np.array([rand_scale(rng, sh_range) for _ in range(n)], dtype=np.uint32)


# ------------------------------------------------------------------ regions

class Case:
    """Instruction fields and buffer contents of one random test."""

    def __init__(self, op):
        self.op = op
        self.fields = {}
        self.acc_fill = []       # (line, values[L]) to write before running
        self.act_fill = []
        self.prm_fill = []
        self.prm_used = set()
        self.stats = {}          # group -> (s1, s2) to preload
        self.note = ""

    def prm_lines(self, rng, n, lo=0, hi=None):
        """n consecutive prm lines no other operand of this case uses."""
        hi = PRM_N if hi is None else hi
        for _ in range(100):
            base = int(rng.integers(lo, hi - n + 1))
            if not self.prm_used & set(range(base, base + n)):
                self.prm_used |= set(range(base, base + n))
                return base
        raise ValueError("prm allocation failed")


def pick_region(rng, lo, hi, rows, nl, rs=None, oob=False, nlines=None):
    """A row stride and base so that rows x nl lines at stride rs lie in [lo, hi) (or, with oob,
    end just past the buffer of nlines lines)."""
    if rs is None:
        r = rng.random()
        if r < 0.1:
            rs = 0
        elif r < 0.2 and nl > 1:
            rs = int(rng.integers(1, nl))            # rows share lines
        else:
            rs = nl + int(rng.integers(0, 3))
    span = (rows - 1) * rs + nl
    if span > hi - lo:
        rs = nl
        span = (rows - 1) * rs + nl
        if span > hi - lo:
            raise ValueError("region does not fit")
    if oob:
        base = nlines - span + 1 + int(rng.integers(0, 3))
        return min(base, 0xFFFFF), rs
    return int(rng.integers(lo, hi - span + 1)), rs


def fill_rows(case, buf, base, rows, rs, cols, gen) -> np.ndarray:
    """Random values for every line of the region (all L lanes, padding too); returns the
    rows x cols matrix the instruction reads (int64)."""
    nl = cdiv(cols, L)
    n = {"acc": ACC_N, "act": ACT_N, "prm": PRM_N}[buf]
    lines = {}
    for r in range(rows):
        for j in range(nl):
            line = base + r * rs + j
            if line in lines or line >= n:             # OOB cases: nothing to fill
                continue
            lines[line] = np.asarray(gen(L))
            getattr(case, f"{buf}_fill").append((line, lines[line]))
    m = np.zeros((rows, cols), dtype=np.int64)
    for r in range(rows):
        for cc in range(cols):
            line = base + r * rs + cc // L
            if line in lines:
                m[r, cc] = int(lines[line][cc % L])
    return m


def rand_shape(rng, max_rows=8, max_cols=3 * 20 + 7):
    r = rng.random()
    if r < 0.15:
        cols = int(rng.choice([1, L, L + 1, 2 * L, 2 * L - 1]))
    else:
        cols = int(rng.integers(1, max_cols + 1))
    rows = int(rng.integers(1, max_rows + 1))
    return rows, cols


def stat_fields(rng, rows, cols, case, allow_oob=True):
    st = int(rng.random() < 0.6)
    st_clr = int(rng.random() < 0.3)
    chan = rng.random() < 0.5
    gsize = int(rng.choice([1, 2, 3, L, L + 3, int(rng.integers(1, cols + 3))]))
    gsize = max(1, min(gsize, 4095))
    ng = rows if not chan else (cols - 1) // gsize + 1
    if allow_oob and rng.random() < 0.04:
        gbase = int(rng.integers(max(0, NSTAT - ng + 1), NSTAT + 5))
        case.note += " stat-oob?"
    else:
        gbase = int(rng.integers(0, max(1, NSTAT - ng + 1))) if ng <= NSTAT else 0
    return dict(st=st, st_clr=st_clr, st_mode="chan" if chan else "row", gsize=gsize, gbase=gbase)


def scalar_word(rng, case, value, oob=False):
    """A prm word address holding `value` (other lanes of its line: junk)."""
    if oob:
        return PRM_N * L + int(rng.integers(0, 2 * L))
    line = case.prm_lines(rng, 1)
    lane = int(rng.integers(0, L))
    vals = rand_scale_vec(rng, L)
    vals[lane] = value & 0xFFFFFFFF
    case.prm_fill.append((line, vals))
    return line * L + lane


def calibrated_scale(rng, ymax, target_bits, spread=1.5) -> int:
    """A scale entry mapping |y| <= ymax to about 2**target_bits (within 2**+-spread), so that
    most results land between saturation and zero."""
    want = target_bits - max(int(ymax), 1).bit_length() + rng.uniform(-spread, spread)
    mbits = int(rng.integers(10, 24))
    sh = int(np.clip(round(mbits - want), 0, 63))
    mul = int(np.clip(round(2.0 ** (want + sh)), 1, (1 << 24) - 1))
    return (int(rng.integers(0, 4)) << 30) | (sh << 24) | mul


def maybe_calibrated(rng, y, target_bits, sh_range=(0, 40)) -> int:
    if rng.random() < 0.8:
        return calibrated_scale(rng, np.abs(y).max() if np.size(y) else 1, target_bits)
    return rand_scale(rng, sh_range)


def fn_frac(rng, x) -> int:
    """Fractional bits that put x around the bend of the hard activations (|x| ~ 3 * 2**frac)."""
    if rng.random() < 0.25:
        return int(rng.integers(0, 32))
    return int(np.clip(max(int(np.abs(x).max()), 1).bit_length() - int(rng.integers(1, 5)), 0, 31))


# Buffer zones (acc / act): A sources, B second sources, D results.
def zones(n):
    t = n // 3
    return (0, t), (t, 2 * t), (2 * t, n)


def deq_operands(rng, c, which):
    """The source, scale and bias of a deq or deqact (which: 0 source, 2 scale, 3 bias out of bounds):
    their fields, the region's rows / cols / nl, and the dequantized value X (for calibrating what follows)."""
    rows, cols = rand_shape(rng)
    nl = cdiv(cols, L)
    sbuf = "act" if rng.random() < 0.35 else "acc"
    za, _, zd = zones(ACC_N if sbuf == "acc" else ACT_N)
    s, srs = pick_region(rng, *za, rows, nl, oob=which == 0, nlines=ACC_N if sbuf == "acc" else ACT_N)
    if sbuf == "acc":
        S = fill_rows(c, "acc", s, rows, srs, cols, lambda n: rand_i32(rng, n))
    else:
        S = fill_rows(c, "act", s, rows, srs, cols, lambda n: rand_i8(rng, n))
    per_ch = int(rng.random() < 0.5)
    sh_range = (0, 24) if sbuf == "act" else (8, 40)
    E = np.zeros(cols, np.int64)
    if per_ch:
        if which == 2:
            sc = PRM_N - nl + 1
        else:
            sc = c.prm_lines(rng, nl)
            for j in range(nl):
                vec = rand_scale_vec(rng, L, sh_range)
                for lane in range(L):
                    col = j * L + lane
                    if col < cols and rng.random() < 0.8:
                        vec[lane] = calibrated_scale(rng, np.abs(S[:, col]).max(), 14)
                c.prm_fill.append((sc + j, vec))
                E[j * L:(j + 1) * L] = vec[:cols - j * L]
    else:
        e = maybe_calibrated(rng, S, 14, sh_range)
        sc = scalar_word(rng, c, e, oob=which == 2)
        E[:] = e & 0xFFFFFFFF
    bias = int(rng.random() < 0.5)
    bb = 0
    B = np.zeros(cols, np.int64)
    if which == 3:
        bias, bb = 1, PRM_N - nl + int(rng.integers(1, 3))
    elif bias:
        bb = c.prm_lines(rng, nl)
        cls = rng.choice(["small", "i16", "full"], p=[0.45, 0.45, 0.1])
        for j in range(nl):
            v = rand_i32(rng, L, cls)
            c.prm_fill.append((bb + j, v.view(np.uint32)))
            B[j * L:(j + 1) * L] = v[:cols - j * L]
    X = N.sat16(N.apply_scale(S.astype(np.int64), E[None, :]) + B[None, :])
    fields = dict(sbuf=sbuf, s=s, srs=srs, rows=rows, cols=cols, sc=sc, per_ch=per_ch, bias=bias, bb=bb)
    return fields, nl, X


def gen_deq(rng):
    c = Case("deq")
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 4)) if oob else -1
    f, nl, _ = deq_operands(rng, c, which)
    rows, cols, s, srs = f["rows"], f["cols"], f["s"], f["srs"]
    inplace = f["sbuf"] == "acc" and srs >= nl and rng.random() < 0.2 and which < 0
    if inplace:
        d, drs = s, srs
    else:
        d, drs = pick_region(rng, *zones(ACC_N)[2], rows, nl, oob=which == 1, nlines=ACC_N)
    c.fields = dict(f, d=d, drs=drs, **stat_fields(rng, rows, cols, c))
    return c


def gen_deqact(rng):
    c = Case("deqact")
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 5)) if oob else -1
    f, nl, X = deq_operands(rng, c, which)
    rows, s, srs = f["rows"], f["s"], f["srs"]
    out = "act" if rng.random() < 0.6 else "acc"
    ndst = ACC_N if out == "acc" else ACT_N
    if f["sbuf"] == out and srs >= nl and rng.random() < 0.25 and which < 0:
        d, drs = s, srs                                         # in place
    else:
        d, drs = pick_region(rng, *zones(ndst)[2], rows, nl, oob=which == 1, nlines=ndst)
    fn = str(rng.choice(["none", "silu", "gelu"]))
    frac = fn_frac(rng, X)
    Y = N.fn_q(fn, X, frac)
    osc = scalar_word(rng, c, maybe_calibrated(rng, Y, 7 if out == "act" else 14, (0, 24)), oob=which == 4)
    c.fields = dict(f, out=out, d=d, drs=drs, fn=fn, frac=frac, osc=osc)
    return c


def gen_add(rng):
    c = Case("add")
    rows, cols = rand_shape(rng)
    nl = cdiv(cols, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 4)) if oob else -1
    za, zb, zd = zones(ACC_N)
    a, ars = pick_region(rng, *za, rows, nl, oob=which == 0, nlines=ACC_N)
    fill_rows(c, "acc", a, rows, ars, cols, lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "i16", "full"])))
    bbuf = "act" if rng.random() < 0.35 else "acc"
    zb = zones(ACT_N)[1] if bbuf == "act" else zb
    brs = 0 if rng.random() < 0.3 else None
    b, brs = pick_region(rng, *zb, rows, nl, rs=brs, oob=which == 1, nlines=ACC_N if bbuf == "acc" else ACT_N)
    if bbuf == "acc":
        B = fill_rows(c, "acc", b, rows, brs, cols, lambda n: rand_i32(rng, n))
    else:
        B = fill_rows(c, "act", b, rows, brs, cols, lambda n: rand_i8(rng, n))
    if ars >= nl and rng.random() < 0.25 and which < 0:
        d, drs = a, ars                                         # in place
    else:
        d, drs = pick_region(rng, *zd, rows, nl, oob=which == 2, nlines=ACC_N)
    sc = scalar_word(rng, c, maybe_calibrated(rng, B, 14, (0, 30)), oob=which == 3)
    c.fields = dict(a=a, ars=ars, bbuf=bbuf, b=b, brs=brs, d=d, drs=drs, rows=rows, cols=cols, sc=sc,
                    **stat_fields(rng, rows, cols, c))
    return c


def gen_act(rng):
    c = Case("act")
    rows, cols = rand_shape(rng)
    nl = cdiv(cols, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 3)) if oob else -1
    sbuf = "act" if rng.random() < 0.3 else "acc"
    out = "act" if rng.random() < 0.45 else "acc"
    nsrc = ACC_N if sbuf == "acc" else ACT_N
    s, srs = pick_region(rng, *zones(nsrc)[0], rows, nl, oob=which == 0, nlines=nsrc)
    if sbuf == "acc":
        S = fill_rows(c, "acc", s, rows, srs, cols, lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "full"])))
    else:
        S = fill_rows(c, "act", s, rows, srs, cols, lambda n: rand_i8(rng, n))
    ndst = ACC_N if out == "acc" else ACT_N
    if sbuf == out and srs >= nl and rng.random() < 0.25 and which < 0:
        d, drs = s, srs
    else:
        d, drs = pick_region(rng, *zones(ndst)[2], rows, nl, oob=which == 1, nlines=ndst)
    fn = str(rng.choice(["none", "silu", "gelu"]))
    X = N.sat16(S)
    frac = fn_frac(rng, X)
    Y = N.fn_q(fn, X, frac)
    sc = scalar_word(rng, c, maybe_calibrated(rng, Y, 7 if out == "act" else 14, (0, 24)), oob=which == 2)
    st = stat_fields(rng, rows, cols, c)
    if out == "act" and rng.random() > 0.05:
        st["st"] = 0                                            # st with out=act is BAD_FIELD
    c.fields = dict(sbuf=sbuf, s=s, srs=srs, out=out, d=d, drs=drs, rows=rows, cols=cols, fn=fn, frac=frac,
                    sc=sc, **st)
    return c


def gen_geglu(rng):
    c = Case("geglu")
    rows, cols = rand_shape(rng)
    nl = cdiv(cols, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 4)) if oob else -1
    za, zb, zd = zones(ACC_N)
    a, ars = pick_region(rng, *za, rows, nl, oob=which == 0, nlines=ACC_N)
    b, brs = pick_region(rng, *zb, rows, nl, oob=which == 1, nlines=ACC_N)
    A = fill_rows(c, "acc", a, rows, ars, cols, lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "i16", "full"])))
    B = fill_rows(c, "acc", b, rows, brs, cols, lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "i16", "full"])))
    out = "act" if rng.random() < 0.5 else "acc"
    ndst = ACC_N if out == "acc" else ACT_N
    if out == "acc" and ars >= nl and rng.random() < 0.25 and which < 0:
        d, drs = a, ars
    else:
        d, drs = pick_region(rng, *zones(ndst)[2], rows, nl, oob=which == 2, nlines=ndst)
    frac = fn_frac(rng, N.sat16(B))
    Y = N.geglu_q(N.sat16(A), N.sat16(B), frac)
    sc = scalar_word(rng, c, maybe_calibrated(rng, Y, 7 if out == "act" else 14, (0, 30)), oob=which == 3)
    c.fields = dict(a=a, ars=ars, b=b, brs=brs, out=out, d=d, drs=drs, rows=rows, cols=cols, frac=frac, sc=sc)
    return c


def realistic_stats(rng, n_groups):
    """(S1, S2) as accumulated from n int16 values of some mean and spread."""
    out = []
    for _ in range(n_groups):
        n = int(rng.integers(1, 5000))
        spread = int(rng.choice([1, 16, 256, 4096, 32767]))
        v = rng.integers(-spread, spread + 1, n) + int(rng.integers(-spread, spread + 1)) // 2
        v = np.clip(v, -32768, 32767).astype(np.int64)
        out.append((int(v.sum()), int((v * v).sum()), n))
    return out


def gen_norm(rng):
    """Realistic (statistics of the very input, nsh = 12 + FG - FO) or arbitrary parameters."""
    c = Case("norm")
    rows, cols = rand_shape(rng)
    nl = cdiv(cols, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 6)) if oob else -1
    realistic = rng.random() < 0.7
    za, _, zd = zones(ACC_N)
    s, srs = pick_region(rng, *za, rows, nl, oob=which == 0, nlines=ACC_N)
    S = fill_rows(c, "acc", s, rows, srs, cols,
                  lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "i16", "full"])))
    X = N.sat16(S)
    out = "act" if rng.random() < 0.5 else "acc"
    ndst = ACC_N if out == "acc" else ACT_N
    if out == "acc" and srs >= nl and rng.random() < 0.25 and which < 0:
        d, drs = s, srs
    else:
        d, drs = pick_region(rng, *zones(ndst)[2], rows, nl, oob=which == 1, nlines=ndst)
    st = stat_fields(rng, rows, cols, c, allow_oob=which < 0)
    chan = st["st_mode"] == "chan"
    ng = rows if not chan else (cols - 1) // st["gsize"] + 1
    gidx = N.group_index(rows, cols, st["st_mode"], st["gsize"], 0)
    if realistic:
        FG, FO = int(rng.integers(2, 15)), int(rng.integers(1, 12))
        n_el = int(rng.integers(1, cols * rows + 1)) if rng.random() < 0.2 else (cols if not chan else rows * st["gsize"])
        inv_n = round(2 ** 32 / max(n_el, 1))
        eps = int(rng.integers(0, 1 << 8))
        nsh = 12 + FG - FO
        for i in range(ng):
            if st["gbase"] + i < NSTAT:
                v = X[gidx == i]
                c.stats[st["gbase"] + i] = (int(v.sum()), int((v * v).sum()))
        gamma_v = rng.integers(-(2 << FG), (2 << FG) + 1, (nl * L,))
        beta_v = rng.integers(-(4 << FO), (4 << FO) + 1, (nl * L,))
        frac = FO
    else:
        s1s2 = realistic_stats(rng, ng)
        if rng.random() < 0.7:
            for i, (s1, s2, _) in enumerate(s1s2):
                if st["gbase"] + i < NSTAT:
                    if rng.random() < 0.1:    # arbitrary 64-bit register contents
                        s1, s2 = int(rng.integers(-(1 << 62), 1 << 62)), int(rng.integers(-(1 << 62), 1 << 62))
                    c.stats[st["gbase"] + i] = (s1, s2)
        n = int(rng.integers(1, 5000))
        inv_n = round(2 ** 32 / n) if rng.random() < 0.8 else int(rng.integers(0, 1 << 32))
        eps = int(rng.choice([0, 1, int(rng.integers(0, 1 << 10)), int(rng.integers(0, 1 << 32))]))
        nsh = int(rng.integers(-8, 40)) if rng.random() < 0.7 else int(rng.integers(I32_MIN, I32_MAX + 1))
        gcls = rng.choice(["small", "i16", "full"], p=[0.5, 0.4, 0.1])
        gamma_v = rand_i32(rng, nl * L, gcls)
        beta_v = rand_i32(rng, nl * L, rng.choice(["small", "i16", "full"]))
        frac = int(rng.integers(0, 32)) if rng.random() < 0.2 else int(rng.integers(0, 14))
    desc = [inv_n & 0xFFFFFFFF, eps & 0xFFFFFFFF, nsh & 0xFFFFFFFF]
    if which == 2:
        nd = PRM_N * L - int(rng.integers(0, 3))
    else:
        line = c.prm_lines(rng, 2)
        nd = line * L + int(rng.integers(0, L))                 # may straddle two lines
        vals = np.concatenate([rand_scale_vec(rng, L), rand_scale_vec(rng, L)])
        vals[nd - line * L:nd - line * L + 3] = desc
        c.prm_fill += [(line, vals[:L]), (line + 1, vals[L:])]
    gamma = PRM_N - nl + 1 if which == 3 else c.prm_lines(rng, nl)
    beta = PRM_N - nl + 1 if which == 4 else c.prm_lines(rng, nl)
    for j in range(nl):
        if which != 3:
            c.prm_fill.append((gamma + j, gamma_v[j * L:(j + 1) * L].astype(np.int32).view(np.uint32)))
        if which != 4:
            c.prm_fill.append((beta + j, beta_v[j * L:(j + 1) * L].astype(np.int32).view(np.uint32)))
    fn = str(rng.choice(["none", "silu", "gelu"]))
    # the output scale from the values the golden model will produce (registers preloaded or not)
    Y = np.zeros(1, dtype=np.int64)
    if which < 0 and len(c.stats) == ng:
        g = np.arange(ng)
        s1 = np.array([c.stats[st["gbase"] + i][0] for i in g], dtype=np.int64)
        s2 = np.array([c.stats[st["gbase"] + i][1] for i in g], dtype=np.int64)
        mu, rm, re = N.norm_params(s1, s2, inv_n, eps)
        Z = N.norm_q(X, mu[gidx], rm[gidx], re[gidx], gamma_v[:cols][None, :].astype(np.int32),
                     beta_v[:cols][None, :].astype(np.int32), np.int64(np.int32(np.uint32(nsh & 0xFFFFFFFF))))
        Y = N.fn_q(fn, Z, frac)
    sc = scalar_word(rng, c, maybe_calibrated(rng, Y, 7 if out == "act" else 14, (0, 24)), oob=which == 5)
    c.note = " realistic" if realistic else " arbitrary"
    c.fields = dict(s=s, srs=srs, out=out, d=d, drs=drs, rows=rows, cols=cols, st_mode=st["st_mode"],
                    gsize=st["gsize"], gbase=st["gbase"], nd=nd, gamma=gamma, beta=beta, fn=fn, frac=frac, sc=sc)
    return c


def gen_softmax(rng):
    c = Case("softmax")
    rows, cols = rand_shape(rng, max_rows=6, max_cols=4 * L + 5)
    nl = cdiv(cols, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 4)) if oob else -1
    s, srs = pick_region(rng, *zones(ACC_N)[0], rows, nl, oob=which == 0, nlines=ACC_N)
    S = fill_rows(c, "acc", s, rows, srs, cols,
                  lambda n: rand_i32(rng, n, rng.choice(["small", "i16", "wide", "full"])))
    d, drs = pick_region(rng, *zones(ACT_N)[2], rows, nl, oob=which == 1, nlines=ACT_N)
    pre = dict(pre=0, psc=0)
    if rng.random() < 0.5 or which == 3:
        # the scores first put on a grid (as a deq in place would: saturating at int16)
        e1 = maybe_calibrated(rng, S, int(rng.integers(7, 15)), (8, 40))
        pre = dict(pre=1, psc=scalar_word(rng, c, e1, oob=which == 3))
        S = N.sat16(N.apply_scale(S.astype(np.int64), e1))
    if rng.random() < 0.75:
        # map the score range to a few (1..14) octaves of exponent: most probabilities in between
        span = int((S.max(axis=1) - S.min(axis=1)).max()) if S.size else 1
        e = calibrated_scale(rng, max(span, 1), 8 + int(np.log2(rng.uniform(1, 14))), spread=0.5)
    else:
        e = rand_scale(rng, (0, 30))
    sc = scalar_word(rng, c, e, oob=which == 2)
    c.fields = dict(s=s, srs=srs, d=d, drs=drs, rows=rows, cols=cols, sc=sc, **pre)
    return c


def gen_transpose(rng):
    c = Case("transpose")
    rows, cols = rand_shape(rng, max_rows=3 * L + 5, max_cols=3 * L + 5)
    nl, nlr = cdiv(cols, L), cdiv(rows, L)
    oob = rng.random() < 0.06
    which = int(rng.integers(0, 2)) if oob else -1
    r = rng.random()
    half = ACT_N // 2
    s, srs = pick_region(rng, 0, half, rows, nl, oob=which == 0, nlines=ACT_N)
    if r < 0.15 and which < 0:
        # overlapping (or interleaved) placement: often OVERLAP, sometimes disjoint runs
        drs = int(rng.integers(0, nlr + 3))
        span = (cols - 1) * drs + nlr
        lo = max(0, s - span)
        d = int(rng.integers(lo, min(ACT_N - span, s + (rows - 1) * srs + nl) + 1))
        c.note = " overlap?"
    else:
        d, drs = pick_region(rng, half, ACT_N, cols, nlr, oob=which == 1, nlines=ACT_N)
    fill_rows(c, "act", s, rows, srs, cols, lambda n: rand_i8(rng, n))
    c.fields = dict(s=s, srs=srs, d=d, drs=drs, rows=rows, cols=cols)
    return c


GENERATORS = {"deq": gen_deq, "add": gen_add, "act": gen_act, "deqact": gen_deqact, "geglu": gen_geglu,
              "norm": gen_norm, "softmax": gen_softmax, "transpose": gen_transpose}


# ------------------------------------------------------------------ running one case

async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.instr.value = 0
    dut.stat_wr.value = 0
    dut.stat_idx.value = 0
    dut.stat_wr_s1.value = 0
    dut.stat_wr_s2.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def write_stats(dut, stats: dict):
    for g, (s1, s2) in stats.items():
        dut.stat_idx.value = g
        dut.stat_wr_s1.value = s1
        dut.stat_wr_s2.value = s2
        dut.stat_wr.value = 1
        await FallingEdge(dut.clk)
    dut.stat_wr.value = 0


async def read_stats(dut, groups) -> dict:
    out = {}
    for g in groups:
        dut.stat_idx.value = g
        await Timer(1, unit="ns")
        out[g] = (dut.stat_rd_s1.value.to_signed(), dut.stat_rd_s2.value.to_signed())
    await FallingEdge(dut.clk)       # back in step with the clock (inputs change at falling edges)
    return out


def wrap64(v: int) -> int:
    return ((v + (1 << 63)) % (1 << 64)) - (1 << 63)


def first_diff(name, got, want):
    bad = np.argwhere(got != want)
    line, lane = (int(x) for x in bad[0])
    return (f"{name}: {len(bad)} lanes differ, first line {line} lane {lane}: rtl {got[line, lane]} "
            f"golden {want[line, lane]}")


class Bench:
    def __init__(self, dut, rng):
        self.dut = dut
        self.rng = rng
        self.bufs = Buffers(dut, rng)
        self.gold = Golden(MACHINE, 64)
        self.failures = []
        self.counts = {}
        self.errors = {}
        self.coverage = {}       # op -> result lanes [saturated, zero, in between]

    def touched_groups(self, case) -> range:
        f = case.fields
        if "gbase" not in f:
            return range(0)
        if f.get("st_mode", "row") == "row":
            ng = f["rows"]
        else:
            ng = (f["cols"] - 1) // f["gsize"] + 1
        return range(min(f["gbase"], NSTAT), min(f["gbase"] + ng, NSTAT))

    async def run_case(self, case):
        dut, g, b = self.dut, self.gold, self.bufs
        for buf in ("acc", "act", "prm"):
            for line, vals in getattr(case, f"{buf}_fill"):
                vals = np.asarray(vals).astype(b.mem[buf].dtype)
                b.mem[buf][line] = vals
                getattr(g, buf)[line] = vals
        if case.stats:
            await write_stats(dut, case.stats)
            for grp, (s1, s2) in case.stats.items():
                g.stat_sum[grp] = s1
                g.stat_sq[grp] = s2
        ins = Instr.make(case.op, **case.fields)
        want_err = "OK"
        try:
            g.run([ins, HALT])
        except DeviceError as e:
            want_err = e.code
        b.done.clear()
        dut.instr.value = encode_int(ins)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        t0 = b.cycles
        f = case.fields
        b.deadline = t0 + 200 + 60 * f["rows"] * f["cols"]
        b.timed_out = False
        await b.done.wait()
        b.deadline = None
        cycles = b.cycles - t0
        if b.timed_out:
            dut._log.error(f"hung in state {int(dut.state.value)} r {int(dut.r.value)} j {int(dut.j.value)} "
                           f"lines to enter {int(dut.hleft.value)} to leave {int(dut.tleft.value)}")
            self.failures.append(f"{ins.op} {dict(ins.args)}: no done after {cycles} cycles")
            raise AssertionError("\n".join(self.failures[-8:]))
        got_err = SPEC.error_name(int(dut.err_code.value)) if int(dut.error.value) else "OK"
        self.counts[case.op] = self.counts.get(case.op, 0) + 1
        self.errors.setdefault(case.op, {}).setdefault(want_err, 0)
        self.errors[case.op][want_err] += 1
        if want_err == "OK" and case.op != "transpose":
            self.tally(case)
        problems = []
        if got_err != want_err:
            problems.append(f"error: rtl {got_err} golden {want_err}")
        for buf in ("acc", "act"):
            if not np.array_equal(b.mem[buf], getattr(g, buf)):
                problems.append(first_diff(buf, b.mem[buf], getattr(g, buf)))
        f = case.fields
        if f.get("st") or f.get("st_clr") or case.op == "norm":
            groups = list(self.touched_groups(case))
            if f.get("st_clr"):
                groups += [int(x) for x in self.rng.integers(0, NSTAT, 4)]
            got = await read_stats(dut, groups)
            for grp in groups:
                want = (int(g.stat_sum[grp]), int(g.stat_sq[grp]))
                if got[grp] != want:
                    problems.append(f"stats[{grp}]: rtl {got[grp]} golden {want}")
                    break
        if problems:
            self.failures.append(f"{ins.op} {dict(ins.args)}{case.note}: " + "; ".join(problems))
            # resynchronize so one bug does not cascade
            b.acc[:] = g.acc
            b.act[:] = g.act
            await write_stats(dut, {i: (int(g.stat_sum[i]), int(g.stat_sq[i])) for i in range(NSTAT)})
        return cycles

    def tally(self, case):
        """Coverage of the result values: saturated, zero or in between."""
        f = case.fields
        out = "acc" if case.op in ("deq", "add") else "act" if case.op == "softmax" else f["out"]
        buf = getattr(self.gold, out)
        r = np.arange(f["rows"])[:, None]
        c = np.arange(f["cols"])[None, :]
        v = buf[f["d"] + r * f["drs"] + c // L, c % L].astype(np.int64)
        lo, hi = (-128, 127) if out == "act" else (-32768, 32767)
        if case.op == "softmax":
            lo = 0
        t = self.coverage.setdefault(case.op, np.zeros(3, dtype=np.int64))
        sat = (v == lo) | (v == hi)
        zero = (v == 0) & ~sat
        t += [int(sat.sum()), int(zero.sum()), int((~sat & ~zero).sum())]

    async def check_all_stats(self):
        got = await read_stats(self.dut, range(NSTAT))
        for grp in range(NSTAT):
            want = (int(self.gold.stat_sum[grp]), int(self.gold.stat_sq[grp]))
            if got[grp] != want:
                self.failures.append(f"final stats[{grp}]: rtl {got[grp]} golden {want}")
                break


@cocotb.test()
async def sfu_random_against_golden(dut):
    rng = np.random.default_rng(SEED)
    await reset(dut)
    bench = Bench(dut, rng)
    cocotb.start_soon(bench.bufs.run())
    t0 = time.perf_counter()
    total_cycles = 0
    elems = 0
    for op in OPS:
        cyc = 0
        for i in range(N_PER_OP):
            bench.bufs.stall = STALL if rng.random() < 0.5 else 0.0
            case = GENERATORS[op](rng)
            c = await bench.run_case(case)
            cyc += c
            elems += case.fields["rows"] * case.fields["cols"]
            if len(bench.failures) > 20:
                break
        total_cycles += cyc
        cov = bench.coverage.get(op, np.zeros(3, dtype=np.int64))
        dut._log.info(f"{op}: {bench.counts.get(op, 0)} instructions, outcomes {bench.errors.get(op)}, "
                      f"{cyc} cycles; result lanes saturated/zero/in between {cov.tolist()}")
        await bench.check_all_stats()
    dt = time.perf_counter() - t0
    dut._log.info(f"{sum(bench.counts.values())} instructions, {total_cycles} cycles in {dt:.1f} s "
                  f"({total_cycles / max(dt, 1e-9):.0f} cycles/s)")
    assert not bench.failures, f"{len(bench.failures)} mismatching instructions:\n" + "\n".join(bench.failures[:8])


# Variants timed by sfu_throughput: (label, op, fields set on a random instance of op).
THROUGHPUT_CASES = [
    ("deq", "deq", dict(per_ch=0, bias=0)),
    ("deq per_ch+bias", "deq", dict(per_ch=1, bias=1)),
    ("deq st chan", "deq", dict(per_ch=0, bias=0, st=1, st_mode="chan", gsize=10, gbase=0)),
    ("add bbuf=act", "add", dict(bbuf="act")),
    ("add bbuf=acc", "add", dict(bbuf="acc")),
    ("act", "act", dict(fn="none")),
    ("act silu", "act", dict(fn="silu")),
    ("act gelu", "act", dict(fn="gelu")),
    ("deqact per_ch+bias", "deqact", dict(per_ch=1, bias=1, fn="none", out="act")),
    ("deqact gelu", "deqact", dict(per_ch=0, bias=0, fn="gelu", out="acc")),
    ("geglu", "geglu", {}),
    ("norm row silu", "norm", dict(st_mode="row", fn="silu")),
    ("softmax", "softmax", dict(pre=0)),
    ("softmax pre", "softmax", dict(pre=1)),
    ("transpose", "transpose", {}),
]


@cocotb.test()
async def sfu_throughput(dut):
    """Cycles per result line without stalls, 8 x 3L instructions (transpose 4L x 4L), checked as well."""
    rng = np.random.default_rng(SEED + 1)
    await reset(dut)
    bench = Bench(dut, rng)
    bench.bufs.stall = 0.0
    cocotb.start_soon(bench.bufs.run())
    report = []
    for label, op, extra in THROUGHPUT_CASES:
        if op not in OPS:
            continue
        for _ in range(50):                     # a valid instance of the wanted shape
            case = GENERATORS[op](rng)
            f = case.fields
            if op == "transpose":
                f.update(rows=4 * L, cols=4 * L, srs=4, drs=4, s=0, d=ACT_N // 2)
                case.act_fill = [(i, rand_i8(rng, L)) for i in range(16 * L)]
            else:
                f.update(rows=8, cols=3 * L)
                for k in ("srs", "ars", "brs", "drs"):
                    if k in f:
                        f[k] = 4
                for k in ("st", "st_clr"):
                    if k in f:
                        f[k] = 0
                f.update(extra)
                # disjoint regions: A / S at 0, B at a third, D at two thirds of their buffers
                size = {"acc": ACC_N, "act": ACT_N}
                f.update({k: 0 for k in ("s", "a") if k in f})
                if "b" in f:
                    f["b"] = size[f.get("bbuf", "acc")] // 3
                f["d"] = 2 * size["act" if op == "softmax" else f.get("out", "acc")] // 3
                if f.get("bias"):
                    f["bb"] = PRM_N - 3         # the last prm lines: in bounds (contents: whatever is there)
                if f.get("per_ch"):
                    f["sc"] = PRM_N - 6
            try:
                Golden(MACHINE, 64).run([Instr.make(op, **f), HALT])
                break
            except DeviceError:
                continue
        else:
            continue
        bench.gold.stat_sum[:] = 0
        bench.gold.stat_sq[:] = 0
        cycles = await bench.run_case(case)
        lines = f["rows"] * cdiv(f["cols"], L)
        report.append(f"{label} {cycles / lines:.2f}")
    dut._log.info("cycles per result line (rows x cols = 8 x 3L; transpose 4L x 4L: per source line, "
                  "each read once and written once): " + ", ".join(report))
    assert not bench.failures, "\n".join(bench.failures[:8])
