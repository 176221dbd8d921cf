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
from ..isa.encoding import FIXED_QUEUE, queue_of
from ..isa.spec import QUEUES, SPEC
from .shadow import Segments


class VerifyError(SdacError):
    """The program violates an invariant (a compiler bug); ``index`` is the instruction."""

    exit_code = 3

    def __init__(self, index: int, message: str):
        self.index = index
        self.detail = message
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
    fp = _FOOTPRINT.get(ins.op)
    return fp(ins.args, L) if fp is not None else []


# One function per mnemonic (a dispatch, not a chain of tests, per instruction). Each span is
# (space, first, one past the last, write), made with tuple.__new__ (Span(...) without its __new__).

def _fp_dma(load: bool):
    def fp(a, L):
        buf, sram, run = a["buf"], a["sram"], a["run"]
        nz1, ny1 = a["nz"] - 1, a["ny"] - 1
        out = [_new_span(Span, (buf, sram, sram + nz1 * a["sz"] + ny1 * a["sy"] + run, load))]
        if not (load and a["zero"]):
            lb = L // 2 if buf == "wgt" else (L if buf == "act" else 4 * L)      # bytes per line
            dram = a["dram"]
            out.append(_new_span(Span, ("dram", dram, dram + nz1 * a["dz"] + ny1 * a["dy"] + run * lb, not load)))
        return out
    return fp


def _fp_mm(a, L):
    k, n, m1 = a["k"], a["n"], a["m"] - 1
    ck, cn = -(-k // L), -(-n // L)
    x, w, c = a["a"], a["w"], a["c"]
    wsrc = a["wsrc"]
    if wsrc == "wgt":
        ws = ("wgt", w, w + (cn - 1) * a["ws"] + k, False)
    elif wsrc == "act":
        ws = ("act", w, w + (k - 1) * a["ws"] + cn, False)
    else:
        ws = ("act", w, w + (n - 1) * a["ws"] + ck, False)
    return [_new_span(Span, ("act", x, x + m1 * a["ars"] + ck, False)), _new_span(Span, ws),
            _new_span(Span, ("acc", c, c + m1 * a["crs"] + cn, True))]


def _fp_conv(a, L):
    cout, cin = a["cout"], a["cin"]
    co = -(-cout // L)
    i, w, o = a["i"], a["w"], a["o"]
    return [_new_span(Span, ("act", i, i + (a["ih"] - 1) * a["irs"] + (a["iw"] - 1) * a["ips"] + -(-cin // L), False)),
            _new_span(Span, ("wgt", w, w + (co - 1) * a["wbs"] + 8 * a["wts"] + cin, False)),
            _new_span(Span, ("acc", o, o + (a["oh"] - 1) * a["ors"] + (a["ow"] - 1) * a["ops"] + co, True))]


def _fp_sfu(op: str):
    """The element-wise SFU instructions: source(s), result, parameter lines."""
    two = op in ("add", "geglu")
    src_f, srs_f = ("a", "ars") if two else ("s", "srs")
    src_from_field = op in ("deq", "act", "deqact")

    def fp(a, L):
        rows, cols = a["rows"], a["cols"]
        r1 = rows - 1
        c = -(-cols // L)
        src = a[src_f]
        src_buf = a["sbuf"] if src_from_field else ("act" if op == "transpose" else "acc")
        out = [_new_span(Span, (src_buf, src, src + r1 * a[srs_f] + c, False))]
        if op == "add":
            b = a["b"]
            out.append(_new_span(Span, (a["bbuf"], b, b + r1 * a["brs"] + c, False)))
        elif op == "geglu":
            b = a["b"]
            out.append(_new_span(Span, ("acc", b, b + r1 * a["brs"] + c, False)))
        d = a["d"]
        if op == "transpose":
            out.append(_new_span(Span, ("act", d, d + (cols - 1) * a["drs"] + -(-rows // L), True)))
            return out
        dst_buf = "act" if op == "softmax" else ("acc" if op in ("deq", "add") else a["out"])
        out.append(_new_span(Span, (dst_buf, d, d + r1 * a["drs"] + c, True)))
        if op in ("deq", "deqact"):
            sc = a["sc"]
            if a["per_ch"]:
                out.append(_new_span(Span, ("prm", sc, sc + c, False)))
            else:
                out.append(_new_span(Span, ("prm", sc // L, sc // L + 1, False)))
            if a["bias"]:
                bb = a["bb"]
                out.append(_new_span(Span, ("prm", bb, bb + c, False)))
            if op == "deqact":
                osc = a["osc"] // L
                out.append(_new_span(Span, ("prm", osc, osc + 1, False)))
        elif op == "norm":
            nd, g, bt = a["nd"], a["gamma"], a["beta"]
            out.append(_new_span(Span, ("prm", nd // L, (nd + 2) // L + 1, False)))
            out.append(_new_span(Span, ("prm", g, g + c, False)))
            out.append(_new_span(Span, ("prm", bt, bt + c, False)))
        else:
            sc = a["sc"] // L
            out.append(_new_span(Span, ("prm", sc, sc + 1, False)))
            if op == "softmax" and a["pre"]:
                psc = a["psc"] // L
                out.append(_new_span(Span, ("prm", psc, psc + 1, False)))
        return out
    return fp


_FOOTPRINT = {"load": _fp_dma(True), "store": _fp_dma(False), "mm": _fp_mm, "conv": _fp_conv,
              **{op: _fp_sfu(op) for op in ("deq", "add", "act", "deqact", "geglu", "norm", "softmax", "transpose")}}


def _sfu_operands(ins, L: int) -> list[tuple[str, int, int, int, int, bool]]:
    """(buffer, base, row stride, rows, lines per row, write) of an element-wise SFU instruction."""
    a, op = ins.args, ins.op
    rows, c = a["rows"], _cl(a["cols"], L)
    if op in ("deq", "act", "deqact"):
        src = [(a["sbuf"], a["s"], a["srs"])]
    elif op == "add":
        src = [("acc", a["a"], a["ars"]), (a["bbuf"], a["b"], a["brs"])]
    elif op == "geglu":
        src = [("acc", a["a"], a["ars"]), ("acc", a["b"], a["brs"])]
    else:   # norm
        src = [("acc", a["s"], a["srs"])]
    dst = "acc" if op in ("deq", "add") else a["out"]
    return [(b, base, rs, rows, c, False) for b, base, rs in src] + [(dst, a["d"], a["drs"], rows, c, True)]


_SFU_ALIASED = frozenset(("deq", "add", "act", "deqact", "geglu", "norm"))
_DMA = frozenset(("load", "store"))     # the instructions with a DRAM address (their footprints vary most)
_QUEUE_INDEX = {i.name: QUEUES.index(i.queue) for i in SPEC.instrs if i.queue in QUEUES}
_QI_CTL = {**{q: j for j, q in enumerate(QUEUES)}, "ctl": -1}


def check_sfu_aliasing(ins, L: int) -> str | None:
    """A result region must coincide with a source line for line (in place) or share no line with it.

    The SFU streams rows in order: a partial overlap would let a later row read a line an earlier row
    already wrote (isa.toml: in place or disjoint). Returns what is wrong, or None.
    """
    if ins.op not in _SFU_ALIASED:
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


def _readonly_ranges(bundle) -> tuple[tuple[int, int], ...]:
    return tuple((lo, lo + n) for lo, n in ((bundle.data_base, len(bundle.data)),
                                            (bundle.step_base, len(bundle.step_table))) if n)


def queue_program(instrs, queues: list | None = None) -> list[tuple]:
    """What simulate_queues needs of each instruction: (queue index or -1 for control, halt?, popped and
    pushed token channels as producer * len(QUEUES) + consumer). queues: each instruction's, if known."""
    qi = {q: j for j, q in enumerate(QUEUES)}
    nq = len(QUEUES)
    out = []
    seen: dict = {}        # (queue, pop, push) -> entry: programs repeat a few token patterns
    for i, ins in enumerate(instrs):
        q = queues[i] if queues is not None else (FIXED_QUEUE.get(ins.op) or ins.queue)
        if q == "ctl":
            out.append((-1, ins.op == "halt", (), ()))
            continue
        pop, push = ins.pop, ins.push
        if not isinstance(pop, frozenset) or not isinstance(push, frozenset):
            pop, push = frozenset(pop), frozenset(push)
        key = (q, pop, push)        # (a frozenset keeps its hash: the compiled program shares its sets)
        e = seen.get(key)
        if e is None:
            j = qi[q]
            e = seen[key] = (j, False, tuple(qi[p] * nq + j for p in sorted(pop, key=qi.__getitem__)),
                             tuple(j * nq + qi[r] for r in sorted(push, key=qi.__getitem__)))
        out.append(e)
    return out


def simulate_queues(instrs, depth: int, token_max: int, priority: tuple[str, ...], prog=None) -> None:
    """Abstract run of fetch, FIFOs and tokens (no data). Raises VerifyError on deadlock, overflow or leak.
    prog: queue_program(instrs), when the caller simulates the same program more than once.

    Each round, fetch moves instructions in program order into their queue's FIFO until one is full (or
    halt), then every unit, in priority order, runs its FIFO's head if the tokens it pops are there. A
    FIFO holds the next instructions of its queue in order, so it is a window [head, fetched) over the
    queue's instruction list."""
    prog = queue_program(instrs) if prog is None else prog
    nq = len(QUEUES)
    members = [[] for _ in QUEUES]      # per queue: its instructions' indices, pops and pushes, in order
    pops_of = [[] for _ in QUEUES]
    pushes_of = [[] for _ in QUEUES]
    for i, (j, _, pops, pushes) in enumerate(prog):
        if j >= 0:
            members[j].append(i)
            pops_of[j].append(pops)
            pushes_of[j].append(pushes)
    heads = [0] * nq
    fetched = [0] * nq
    tokens = [0] * (nq * nq)        # channel producer * nq + consumer
    order = [(j, pops_of[j], pushes_of[j]) for j in map(QUEUES.index, priority)]
    pc, n, halted = 0, len(prog), False
    while True:
        while not halted and pc < n:
            j, halt, _, _ = prog[pc]
            if j < 0:
                halted = halted or halt
                pc += 1
                continue
            if fetched[j] - heads[j] >= depth:
                break
            fetched[j] += 1
            pc += 1
        progressed = False
        for j, pops_j, pushes_j in order:     # one instruction per unit per round: interleave the units
            h = heads[j]
            if h == fetched[j]:
                continue
            pops = pops_j[h]
            for c in pops:
                if not tokens[c]:
                    break
            else:
                for c in pops:
                    tokens[c] -= 1
                for c in pushes_j[h]:
                    tokens[c] += 1
                    if tokens[c] > token_max:
                        raise VerifyError(members[j][h], f"push {QUEUES[c // nq]}->{QUEUES[c % nq]} raises the "
                                                         f"token counter above {token_max}")
                heads[j] = h + 1
                progressed = True
        if not progressed:
            busy = [members[j][heads[j]] for j in range(nq) if heads[j] < fetched[j]]
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


class ProgramChecker:
    """The per-instruction half of the verifier, over the instructions in program order: buffer lines and
    statistics registers in bounds, the SFU's operand rules, and no data race (vector clocks over the
    FIFO-matched tokens: a write must happen after the last write and every read since it, a read after the
    last write; earlier accesses are ordered before those, or were reported).

    verify() gives it the whole program at once. A streaming caller (verify_worker.py) gives it kernel by
    kernel while the lowering is still emitting (``readonly=None``), and then
      * each pop comes with the index of the instruction whose push it takes (``sources``): the builder sets
        push bits on earlier instructions when a later one needs them. finish() proves that the pushes so
        announced are exactly the program's push bits, and add() that each channel's come in program order,
        so the k-th pop takes the k-th push, as the hardware's FIFO matching does;
      * ``deferred`` instructions get their DRAM address when the layout is known (the loads of static data
        and step table): finish() proves they only read the read-only ranges, whose reads are not tracked;
      * DRAM writes are checked against the read-only ranges in finish().
    DRAM bounds need the final size: finish(). A violation raises VerifyError with the instruction's index."""

    def __init__(self, machine, readonly: tuple[tuple[int, int], ...] | None = (), operands: bool = True):
        """readonly: DRAM ranges no instruction may write (static data, step table); None while streaming.
        operands: check buffer bounds and the SFU's operand rules (off: the race check alone)."""
        self.m, self.L = machine, machine.lanes
        self.caps = {b: machine.buf_lines(b) for b in ("act", "wgt", "acc", "prm")}
        self.readonly = readonly
        self.streaming = readonly is None
        self.operands = operands
        nq = self.nq = len(QUEUES)
        self.last_vc = [(0,) * nq] * nq         # per queue: the vector clock of its latest instruction
        self.push_vcs: dict[int, list] = {}     # whole program: per channel (producer * nq + consumer), the vector
                                                # clocks of its pushes, in order (streaming: a pop names its pusher)
        self.pop_count = [0] * (nq * nq)
        self.qpos = [0] * nq
        self.shadow: dict[str, Segments] = {}
        self.ops: list[str] = []                # each instruction's mnemonic (messages)
        self.queues: list[int] = []             # each instruction's queue index (-1: control)
        self.vcs: list = []                     # streaming: each instruction's vector clock (pushes come later)
        self.announced: dict[int, int] = {}     # streaming: instruction -> push bits (bit = consumer queue) its
                                                # pops announced
        self.last_source = [-1] * (nq * nq)     # streaming: per channel, the latest pushing instruction
        self.dram_max = (0, 0, -1, "")          # (hi, lo, index, op): the DRAM access reaching farthest
        self.step_max = (0, 0, -1, "")          # the same for step-relative loads (before the steps are added)
        self.late_writes: list = []             # streaming: (index, op, lo, hi) of every DRAM write
        self.deferred: dict[int, str] = {}      # streaming: index -> op, DRAM address pending
        self._checked: dict = {}                # (op, field names, values) -> footprint, operands checked
        self._channels: dict = {}               # (queue, pop mask) -> popped channels

    def add(self, ops, pop_masks, push_masks=None, sources=None, deferred=frozenset(), footprints=None,
            queues=None) -> None:
        """The next instructions: ops[k] = (mnemonic, fields); pop_masks[k]: bit p = pops a token pushed by queue
        p (QUEUES order); then either push_masks[k] (bit r = pushes a token to queue r: the whole program is
        known) or sources[k] (streaming: per popped queue, ascending, the index of the instruction whose push
        it takes). deferred: indices (program-wide) of instructions whose DRAM address is set later
        (streaming). footprints[k]: footprint() of each, if the caller has them (else computed here);
        queues[k]: the queue of each (else from the mnemonic and fields)."""
        nq, caps, L = self.nq, self.caps, self.L
        last_vc, push_vcs, pop_count, qpos, shadow = self.last_vc, self.push_vcs, self.pop_count, self.qpos, self.shadow
        readonly, vcs, streaming, operands = self.readonly, self.vcs, self.streaming, self.operands
        checked, channels = self._checked, self._channels
        names, queue_list = self.ops, self.queues
        last_source, announced = self.last_source, self.announced
        base = len(names)
        for k, (op, a) in enumerate(ops):
            i = base + k
            if queues is not None:
                j = _QI_CTL[queues[k]]
            else:
                j = _QUEUE_INDEX.get(op)
                if j is None:
                    j = _QI_CTL[queue_of(op, a)]
            names.append(op)
            queue_list.append(j)
            if j < 0:
                if streaming:
                    vcs.append(None)
                continue
            late = i in deferred
            if late:
                self.deferred[i] = op
            if footprints is not None or op in _DMA:
                fp = footprints[k] if footprints is not None else _FOOTPRINT[op](a, L)
                if operands:
                    self._check_operands(i, op, a, fp, late)
            else:
                # the footprint and the operand checks are functions of the fields alone: once per distinct
                # instruction (SD-v1.5: 64 k non-DMA instructions, 9 k distinct)
                key = (op, tuple(a), tuple(a.values()))
                fp = checked.get(key)
                if fp is None:
                    fp = checked[key] = footprint(_Ins(op, a), L)
                    if operands:
                        self._check_operands(i, op, a, fp, late)
            # vector clock: the queue's previous instruction joined with the pushes this one pops
            vc = last_vc[j]
            mask = pop_masks[k]
            if mask:
                pops = channels.get((j, mask))
                if pops is None:
                    pops = channels[(j, mask)] = tuple(p * nq + j for p in range(nq) if mask >> p & 1)
                if sources is not None:     # streaming: each pop names its pusher (checked here)
                    for c, x in zip(pops, sources[k]):
                        if not (last_source[c] < x < i and queue_list[x] == c // nq):
                            self._bad_source(i, c, x)
                        last_source[c] = x
                        announced[x] = announced.get(x, 0) | (1 << j)
                        vc = tuple(map(max, vc, vcs[x]))
                else:
                    for c in pops:
                        n = pop_count[c]
                        got = push_vcs.get(c, ())
                        if n >= len(got):
                            raise VerifyError(i, f"pops a token {QUEUES[c // nq]}->{QUEUES[j]} that no earlier "
                                                 f"instruction pushes")
                        pop_count[c] = n + 1
                        vc = tuple(map(max, vc, got[n]))
            pos = qpos[j]
            vc = vc[:j] + (pos + 1,) + vc[j + 1:]
            last_vc[j] = vc
            if streaming:
                vcs.append(vc)
            elif push_masks[k]:
                m = push_masks[k]
                for r in range(nq):
                    if m >> r & 1:
                        c = j * nq + r
                        if c in push_vcs:
                            push_vcs[c].append(vc)
                        else:
                            push_vcs[c] = [vc]
            me = (j, pos, i)
            qpos[j] = pos + 1
            for space, slo, shi, write in fp:
                if shi <= slo:
                    continue
                if space == "dram":
                    if late:
                        continue
                    if streaming:
                        if write:
                            self.late_writes.append((i, op, slo, shi))
                    elif readonly and self._reads_readonly(i, op, slo, shi, write):
                        continue
                sh = shadow.get(space)
                if sh is None:
                    sh = shadow[space] = Segments()
                a_seg, b_seg = sh.span(slo, shi)    # segments a_seg..b_seg-1 cover exactly [slo, shi)
                info = sh.info
                for s in range(a_seg, b_seg):
                    writer, readers = info[s]
                    if writer and writer[0] != j and vc[writer[0]] <= writer[1]:
                        self._race(i, space, sh, s, slo, shi, writer)
                    if write and readers:
                        for other in readers.values():
                            if other[0] != j and vc[other[0]] <= other[1]:
                                self._race(i, space, sh, s, slo, shi, other)
                if write:
                    sh.set_writer(a_seg, b_seg, me)
                else:
                    sh.add_reader(a_seg, b_seg, j, me)

    def _check_operands(self, i: int, op: str, a, fp, late: bool) -> None:
        """Buffer lines in bounds (DRAM: the farthest access, checked in finish()), the SFU's operand rules."""
        caps = self.caps
        for space, lo, hi, _ in fp:
            if space == "dram":
                if late:
                    continue
                if op == "load" and a.get("step"):
                    if hi > self.step_max[0]:
                        self.step_max = (hi, lo, i, op)
                elif hi > self.dram_max[0]:
                    self.dram_max = (hi, lo, i, op)
            elif hi > caps[space]:
                raise VerifyError(i, f"{op} touches {space} lines [{lo}, {hi}) beyond the buffer's "
                                     f"{caps[space]} lines")
        if op in _SFU_ALIASED:
            self._check_sfu(i, _Ins(op, a))

    def _bad_source(self, i: int, c: int, x: int) -> None:
        """Streaming: instruction i pops channel c naming instruction x as its pusher, which is not an earlier
        instruction of the producer queue after the channel's previous pusher."""
        nq = self.nq
        raise VerifyError(i, f"pops {QUEUES[c // nq]}->{QUEUES[c % nq]} from instruction {x}: not an earlier "
                             f"instruction of {QUEUES[c // nq]} after the channel's previous pusher "
                             f"({self.last_source[c]})")

    def _reads_readonly(self, i: int, op: str, slo: int, shi: int, write: bool) -> bool:
        """True for a read inside a read-only range (not tracked); a write into one is an error."""
        for lo, hi in self.readonly:
            if slo < hi and lo < shi:
                if write:
                    raise VerifyError(i, f"{op} writes DRAM [{max(lo, slo)}, {min(hi, shi)}) of the "
                                         f"read-only static data or step table")
                if lo <= slo and shi <= hi:
                    return True
        return False

    def _check_sfu(self, i: int, ins) -> None:
        alias = check_sfu_aliasing(ins, self.L)
        if alias:
            raise VerifyError(i, f"{ins.op}: {alias}")
        st = _stat_range(ins)
        if st and st[1] > self.m.stat_groups:
            raise VerifyError(i, f"{ins.op} uses statistics registers [{st[0]}, {st[1]}) of {self.m.stat_groups}")

    def _race(self, i, space, sh, s, slo, shi, other) -> None:
        oq, _, oi = other
        lo = max(sh.starts[s], slo)
        hi = min(sh.starts[s + 1], shi) if s + 1 < len(sh.starts) else shi
        raise VerifyError(i, f"{self.ops[i]} ({QUEUES[self.queues[i]]}) and instruction {oi} ({self.ops[oi]}, "
                             f"{QUEUES[oq]}) race on {space} [{lo}, {hi}): no token orders them")

    def finish(self, dram_size: int, step_extra: int = 0, readonly=(), deferred_args=None,
               push_masks=None) -> None:
        """The checks that need the final layout. step_extra: (steps - 1) * step bank, how far past its
        address a step-relative load reaches. Streaming: readonly (the ranges), deferred_args (index -> final
        fields of each deferred instruction) and push_masks (every instruction's push bits, bit = consumer
        queue, as add() takes them)."""
        if self.operands:
            for hi, lo, i, op in (self.dram_max, (self.step_max[0] + step_extra, *self.step_max[1:])):
                if i >= 0:
                    _check_dram_end(i, op, lo, hi, dram_size)
        if not self.streaming:
            return
        self.readonly = tuple(readonly)
        for i, op, lo, hi in self.late_writes:
            self._reads_readonly(i, op, lo, hi, True)
        for i, op in sorted(self.deferred.items()):
            a = deferred_args.get(i)
            if a is None:
                raise VerifyError(i, f"{op}: its DRAM address was never set")
            for space, lo, hi, write in footprint(_Ins(op, a), self.L):
                if space != "dram":
                    continue
                if op == "load" and a.get("step"):
                    hi += step_extra
                _check_dram_end(i, op, lo, hi, dram_size)
                if write or not any(r0 <= lo and hi <= r1 for r0, r1 in self.readonly):
                    raise VerifyError(i, f"{op}: its DRAM address, set after the program was checked, must only "
                                         f"read the static data or step table (reads [{lo:#x}, {hi:#x}))")
        if push_masks is not None:
            if len(push_masks) != len(self.ops):
                raise VerifyError(len(self.ops) - 1, f"{len(push_masks)} push masks for {len(self.ops)} instructions")
            for i, mask in enumerate(push_masks):
                if mask != self.announced.get(i, 0):
                    raise VerifyError(i, f"push bits {mask:#x}, but the pops that take its tokens announced "
                                         f"{self.announced.get(i, 0):#x}")


def _check_dram_end(i: int, op: str, lo: int, hi: int, dram_size: int) -> None:
    if hi > dram_size:
        raise VerifyError(i, f"{op} touches DRAM [{lo:#x}, {hi:#x}) beyond the {dram_size:#x} bytes of device memory")


class _Ins(NamedTuple):
    """What footprint() and the SFU checks read of an instruction."""
    op: str
    args: dict


def _feed_whole(checker: ProgramChecker, instrs, footprints: list | None = None, queues=None) -> None:
    bit = {q: 1 << j for j, q in enumerate(QUEUES)}
    masks: dict = {}        # frozenset of queues -> bits
    pops, pushes = [], []
    for ins in instrs:
        for qs, out in ((ins.pop, pops), (ins.push, pushes)):
            m = masks.get(qs)
            if m is None:
                m = masks[qs] = sum(bit[q] for q in qs)
            out.append(m)
    checker.add([(ins.op, ins.args) for ins in instrs], pops, push_masks=pushes, footprints=footprints,
                queues=queues)


def check_races(instrs, L: int, readonly: tuple[tuple[int, int], ...] = (), footprints: list | None = None,
                queues: list | None = None) -> None:
    """The race check of ProgramChecker alone, on a whole program. ``readonly``: DRAM ranges no instruction may
    write (the static data, the step table); reads of them cannot race and are not tracked. footprints,
    queues: footprint() and the queue of every instruction, if the caller has them already."""
    import dataclasses

    from ..isa.machine import DEFAULT
    fps = footprints if footprints is not None else [footprint(ins, L) for ins in instrs]
    _feed_whole(ProgramChecker(dataclasses.replace(DEFAULT, lanes=L), readonly, operands=False), instrs, fps,
                queues if queues is not None else [ins.queue for ins in instrs])


def verify(bundle) -> None:
    """Raise VerifyError unless the bundle's program is in bounds, deadlock-free and race-free."""
    check_queues(bundle)
    check_program(bundle)


def check_program(bundle) -> None:
    """ProgramChecker over the whole program: bounds, SFU operand rules, races."""
    checker = ProgramChecker(bundle.machine, _readonly_ranges(bundle))
    _feed_whole(checker, bundle.instrs)
    checker.finish(bundle.dram_size, (bundle.n_steps - 1) * bundle.step_bank)


PRIORITIES = (("ld", "cmp", "sfu", "st"), ("st", "sfu", "cmp", "ld"), ("cmp", "sfu", "st", "ld"))


def check_queues(bundle) -> None:
    """Tokens balanced, no deadlock or token-counter overflow, under each of PRIORITIES."""
    m = bundle.machine
    prog = queue_program(bundle.instrs)
    for prio in PRIORITIES:
        simulate_queues(bundle.instrs, m.queue_depth, m.token_max, prio, prog)
