"""Static verifier of a compiled bundle, run before any bundle is written.

Independently of how the lowering built the program, it recomputes every
instruction's footprint from its fields and proves:
  * every buffer line, statistics register and DRAM byte touched is inside
    its memory (for every denoising step of step-relative loads);
  * dependency tokens are balanced (every push has its pop) and no queue can
    deadlock or overflow a token counter with finite instruction FIFOs
    (simulated under several unit priorities);
  * no data race: two instructions of different queues that touch the same
    buffer lines or DRAM bytes, one of them writing, are ordered by tokens
    (happens-before by vector clocks over the FIFO-matched tokens).
A violation is a compiler bug: VerifyError names the instruction index.
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import SdacError
from ..isa.spec import QUEUES
from .shadow import Segments


class VerifyError(SdacError):
    """The program violates an invariant (a compiler bug); ``index`` is the instruction."""

    exit_code = 3

    def __init__(self, index: int, message: str):
        self.index = index
        super().__init__(f"verifier: instruction {index}: {message} (this is a compiler bug; please report it)")


class Span(NamedTuple):
    space: str
    lo: int
    hi: int
    write: bool


_new_span = tuple.__new__


def _cl(n: int, L: int) -> int:
    return -(-n // L)


def footprint(ins, L: int) -> list[Span]:
    """Bounding line/byte ranges of every memory an instruction touches (strides are non-negative)."""
    a = ins.args
    op = ins.op
    out: list[Span] = []

    def rng(space, base, last_off, n, write):
        out.append(_new_span(Span, (space, base, base + last_off + n, write)))   # Span(...) without its __new__

    if op in ("load", "store"):
        buf = a["buf"]
        last = (a["nz"] - 1) * a["sz"] + (a["ny"] - 1) * a["sy"]
        rng(buf, a["sram"], last, a["run"], op == "load")
        lb = {"act": L, "wgt": L // 2, "acc": 4 * L, "prm": 4 * L}[buf]
        dlast = (a["nz"] - 1) * a["dz"] + (a["ny"] - 1) * a["dy"] + (a["run"] - 1) * lb
        if not (op == "load" and a["zero"]):
            out.append(Span("dram", a["dram"], a["dram"] + dlast + lb, op == "store"))
    elif op == "mm":
        rng("act", a["a"], (a["m"] - 1) * a["ars"], _cl(a["k"], L), False)
        if a["wsrc"] == "wgt":
            rng("wgt", a["w"], (_cl(a["n"], L) - 1) * a["ws"], a["k"], False)
        elif a["wsrc"] == "act":
            rng("act", a["w"], (a["k"] - 1) * a["ws"], _cl(a["n"], L), False)
        else:
            rng("act", a["w"], (a["n"] - 1) * a["ws"], _cl(a["k"], L), False)
        rng("acc", a["c"], (a["m"] - 1) * a["crs"], _cl(a["n"], L), True)
    elif op == "conv":
        rng("act", a["i"], (a["ih"] - 1) * a["irs"] + (a["iw"] - 1) * a["ips"], _cl(a["cin"], L), False)
        rng("wgt", a["w"], (_cl(a["cout"], L) - 1) * a["wbs"] + 8 * a["wts"], a["cin"], False)
        rng("acc", a["o"], (a["oh"] - 1) * a["ors"] + (a["ow"] - 1) * a["ops"], _cl(a["cout"], L), True)
    elif op in ("deq", "add", "act", "geglu", "norm", "softmax", "transpose"):
        rows, cols = a["rows"], a["cols"]
        c = _cl(cols, L)
        src_buf = a["sbuf"] if op in ("deq", "act") else ("act" if op == "transpose" else "acc")
        src = a["a"] if op in ("add", "geglu") else a["s"]
        srs = a["ars"] if op in ("add", "geglu") else a["srs"]
        rng(src_buf, src, (rows - 1) * srs, c, False)
        if op == "add":
            rng(a["bbuf"], a["b"], (rows - 1) * a["brs"], c, False)
        if op == "geglu":
            rng("acc", a["b"], (rows - 1) * a["brs"], c, False)
        dst_buf = "act" if op in ("softmax", "transpose") else ("acc" if op in ("deq", "add") else a["out"])
        if op == "transpose":
            rng("act", a["d"], (cols - 1) * a["drs"], _cl(rows, L), True)
        else:
            rng(dst_buf, a["d"], (rows - 1) * a["drs"], c, True)
        if op == "deq":
            if a["per_ch"]:
                rng("prm", a["sc"], 0, c, False)
            else:
                rng("prm", a["sc"] // L, 0, 1, False)
            if a["bias"]:
                rng("prm", a["bb"], 0, c, False)
        elif op == "norm":
            rng("prm", a["nd"] // L, (a["nd"] + 2) // L - a["nd"] // L, 1, False)
            rng("prm", a["gamma"], 0, c, False)
            rng("prm", a["beta"], 0, c, False)
        elif op != "transpose":
            rng("prm", a["sc"] // L, 0, 1, False)
    return out


def _sfu_operands(ins, L: int) -> list[tuple[str, int, int, int, int, bool]]:
    """(buffer, base, row stride, rows, lines per row, write) of an element-wise SFU instruction."""
    a, op = ins.args, ins.op
    rows, c = a["rows"], _cl(a["cols"], L)
    if op in ("deq", "act"):
        src = [(a["sbuf"], a["s"], a["srs"])]
    elif op == "add":
        src = [("acc", a["a"], a["ars"]), (a["bbuf"], a["b"], a["brs"])]
    elif op == "geglu":
        src = [("acc", a["a"], a["ars"]), ("acc", a["b"], a["brs"])]
    else:   # norm
        src = [("acc", a["s"], a["srs"])]
    dst = "acc" if op in ("deq", "add") else a["out"]
    return [(b, base, rs, rows, c, False) for b, base, rs in src] + [(dst, a["d"], a["drs"], rows, c, True)]


def check_sfu_aliasing(ins, L: int) -> str | None:
    """A result region must coincide with a source line for line (in place) or share no line with it.

    The SFU streams rows in order: a partial overlap would let a later row read a line an earlier row
    already wrote (isa.toml: in place or disjoint). Returns what is wrong, or None.
    """
    if ins.op not in ("deq", "add", "act", "geglu", "norm"):
        return None
    ops = _sfu_operands(ins, L)
    dst = ops[-1]
    for buf, base, rs, rows, c, _ in ops[:-1]:
        if buf != dst[0]:
            continue
        if base == dst[1] and rs == dst[2]:
            continue                                        # in place
        lo1, hi1 = base, base + (rows - 1) * rs + c
        lo2, hi2 = dst[1], dst[1] + (rows - 1) * dst[2] + dst[4]
        if hi1 <= lo2 or hi2 <= lo1:
            continue                                        # disjoint ranges
        if rs != dst[2] or rs == 0:
            return f"result {buf} [{lo2}, {hi2}) partly overlaps a source [{lo1}, {hi1}) with another stride"
        delta = dst[1] - base                               # row r' of the result vs row r of the source
        for k in range(-(rows - 1), rows):
            off = delta + k * rs
            if -dst[4] < off < c:
                return (f"result {buf} rows partly overlap source rows (offset {delta} lines, stride {rs}): "
                        f"only in place (same address and stride) or disjoint is allowed")
    return None


def _stat_range(ins) -> tuple[int, int] | None:
    a = ins.args
    uses = ins.op == "norm" or (ins.op in ("deq", "add", "act") and a.get("st"))
    if not uses:
        return None
    n = a["rows"] if a["st_mode"] == "row" else _cl(a["cols"], a["gsize"])
    return a["gbase"], a["gbase"] + n


def check_bounds(bundle, footprints: list | None = None) -> None:
    """footprints: footprint() of every instruction, if the caller has them already."""
    m = bundle.machine
    L = m.lanes
    caps = {b: m.buf_lines(b) for b in ("act", "wgt", "acc", "prm")}
    step_extra = (bundle.n_steps - 1) * bundle.step_bank
    for i, ins in enumerate(bundle.instrs):
        for s in (footprints[i] if footprints is not None else footprint(ins, L)):
            if s.space == "dram":
                hi = s.hi + (step_extra if ins.op == "load" and ins.args.get("step") else 0)
                if hi > bundle.dram_size:
                    raise VerifyError(i, f"{ins.op} touches DRAM [{s.lo:#x}, {hi:#x}) beyond the "
                                         f"{bundle.dram_size:#x} bytes of device memory")
            elif s.hi > caps[s.space]:
                raise VerifyError(i, f"{ins.op} touches {s.space} lines [{s.lo}, {s.hi}) beyond the buffer's "
                                     f"{caps[s.space]} lines")
        alias = check_sfu_aliasing(ins, L)
        if alias:
            raise VerifyError(i, f"{ins.op}: {alias}")
        st = _stat_range(ins)
        if st and st[1] > m.stat_groups:
            raise VerifyError(i, f"{ins.op} uses statistics registers [{st[0]}, {st[1]}) of {m.stat_groups}")


def queue_program(instrs) -> list[tuple]:
    """What simulate_queues needs of each instruction: (queue index or -1 for control, halt?, popped and
    pushed token channels as producer * len(QUEUES) + consumer)."""
    qi = {q: j for j, q in enumerate(QUEUES)}
    nq = len(QUEUES)
    out = []
    seen: dict = {}        # (queue, pop, push) -> entry: programs repeat a few token patterns
    for ins in instrs:
        q = ins.queue
        if q == "ctl":
            out.append((-1, ins.op == "halt", (), ()))
            continue
        key = (q, frozenset(ins.pop), frozenset(ins.push))
        e = seen.get(key)
        if e is None:
            j = qi[q]
            e = seen[key] = (j, False, tuple(qi[p] * nq + j for p in ins.pop), tuple(j * nq + qi[r] for r in ins.push))
        out.append(e)
    return out


def simulate_queues(instrs, depth: int, token_max: int, priority: tuple[str, ...], prog=None) -> None:
    """Abstract run of fetch, FIFOs and tokens (no data). Raises VerifyError on deadlock, overflow or leak.
    prog: queue_program(instrs), when the caller simulates the same program more than once."""
    prog = queue_program(instrs) if prog is None else prog
    nq = len(QUEUES)
    fifo = [[] for _ in QUEUES]
    heads = [0] * nq
    tokens = [0] * (nq * nq)        # channel producer * nq + consumer
    order = [QUEUES.index(q) for q in priority]
    pc, n, halted = 0, len(prog), False
    while True:
        while not halted and pc < n:
            j, halt, _, _ = prog[pc]
            if j < 0:
                halted = halted or halt
                pc += 1
                continue
            if len(fifo[j]) - heads[j] >= depth:
                break
            fifo[j].append(pc)
            pc += 1
        progressed = False
        for j in order:     # one instruction per unit per round: interleave the units
            h = heads[j]
            if h == len(fifo[j]):
                continue
            i = fifo[j][h]
            _, _, pops, pushes = prog[i]
            for c in pops:
                if not tokens[c]:
                    break
            else:
                for c in pops:
                    tokens[c] -= 1
                for c in pushes:
                    tokens[c] += 1
                    if tokens[c] > token_max:
                        raise VerifyError(i, f"push {QUEUES[c // nq]}->{QUEUES[c % nq]} raises the token counter "
                                             f"above {token_max}")
                heads[j] = h + 1
                progressed = True
        if not progressed:
            busy = [fifo[j][heads[j]] for j in range(nq) if heads[j] < len(fifo[j])]
            if busy or (not halted and pc < n):
                at = min(busy) if busy else pc
                raise VerifyError(at, f"deadlock: queues cannot progress (priority {'>'.join(priority)})")
            break
    if not halted:
        raise VerifyError(n - 1, "the program does not end with halt")
    leaks = [f"{QUEUES[p]}->{QUEUES[q]}={tokens[p * nq + q]}" for p in range(nq) for q in range(nq)
             if p != q and tokens[p * nq + q]]
    if leaks:
        raise VerifyError(n - 1, f"tokens left at halt: {', '.join(leaks)}")


def check_races(instrs, L: int, readonly: tuple[tuple[int, int], ...] = (), footprints: list | None = None) -> None:
    """Conflicting accesses of different queues must be ordered by tokens (vector clocks).

    A write must happen after the last write and every read since it; a read after the last write (earlier
    accesses are ordered before those, or were reported). ``readonly``: DRAM ranges no instruction may write
    (the static data, the step table); reads of them cannot race and are not tracked."""
    qi = {q: j for j, q in enumerate(QUEUES)}
    last_vc = {q: (0, 0, 0, 0) for q in QUEUES}
    push_vcs: dict[tuple[str, str], list] = {}
    pop_count: dict[tuple[str, str], int] = {}
    qpos = {q: 0 for q in QUEUES}
    shadow: dict[str, Segments] = {}
    for i, ins in enumerate(instrs):
        q = ins.queue
        if q == "ctl":
            continue
        vc = last_vc[q]
        for p in ins.pop:
            k = pop_count.get((p, q), 0)
            pushes = push_vcs.get((p, q), [])
            if k >= len(pushes):
                raise VerifyError(i, f"pops a token {p}->{q} that no earlier instruction pushes")
            pop_count[(p, q)] = k + 1
            vc = tuple(map(max, vc, pushes[k]))
        j = qi[q]
        vc = vc[:j] + (qpos[q] + 1,) + vc[j + 1:]
        last_vc[q] = vc
        for r in ins.push:
            push_vcs.setdefault((q, r), []).append(vc)
        me = (j, qpos[q], i)
        qpos[q] += 1
        for space, slo, shi, write in (footprints[i] if footprints is not None else footprint(ins, L)):
            if shi <= slo:
                continue
            if space == "dram" and readonly:
                inside = [(lo, hi) for lo, hi in readonly if slo < hi and lo < shi]
                if inside and write:
                    lo, hi = inside[0]
                    raise VerifyError(i, f"{ins.op} writes DRAM [{max(lo, slo)}, {min(hi, shi)}) of the "
                                         f"read-only static data or step table")
                if any(lo <= slo and shi <= hi for lo, hi in inside):
                    continue
            sh = shadow.get(space)
            if sh is None:
                sh = shadow[space] = Segments()
            a, b = sh.span(slo, shi)        # segments a..b-1: exactly [slo, shi)
            info = sh.info
            for k in range(a, b):
                writer, readers = info[k]
                if writer and writer[0] != j and vc[writer[0]] <= writer[1]:
                    _race(instrs, i, q, space, sh, k, slo, shi, writer)
                if write and readers:
                    for other in readers.values():
                        if other[0] != j and vc[other[0]] <= other[1]:
                            _race(instrs, i, q, space, sh, k, slo, shi, other)
            if write:
                sh.set_writer(a, b, me)
            else:
                sh.add_reader(a, b, j, me)


def _race(instrs, i, q, space, sh, k, slo, shi, other) -> None:
    oq, _, oi = other
    lo = max(sh.starts[k], slo)
    hi = min(sh.starts[k + 1], shi) if k + 1 < len(sh.starts) else shi
    raise VerifyError(i, f"{instrs[i].op} ({q}) and instruction {oi} ({instrs[oi].op}, {QUEUES[oq]}) race on "
                         f"{space} [{lo}, {hi}): no token orders them")


def verify(bundle) -> None:
    """Raise VerifyError unless the bundle's program is in bounds, deadlock-free and race-free."""
    m = bundle.machine
    footprints = [footprint(ins, m.lanes) for ins in bundle.instrs]     # used by the bounds and the race checks
    check_bounds(bundle, footprints)
    prog = queue_program(bundle.instrs)
    for prio in (("ld", "cmp", "sfu", "st"), ("st", "sfu", "cmp", "ld"), ("cmp", "sfu", "st", "ld")):
        simulate_queues(bundle.instrs, m.queue_depth, m.token_max, prio, prog)
    readonly = tuple((lo, lo + n) for lo, n in ((bundle.data_base, len(bundle.data)),
                                                 (bundle.step_base, len(bundle.step_table))) if n)
    check_races(bundle.instrs, m.lanes, readonly, footprints)
