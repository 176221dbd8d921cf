"""The static verifier accepts compiled programs and rejects each class of broken program."""
import dataclasses

import numpy as np
import pytest

from sdac.compiler import kernels as K
from sdac.compiler.calibrate import calibrate_absmax
from sdac.compiler.lower import lower
from sdac.compiler.verify import VerifyError, verify
from sdac.isa.encoding import Instr
from sdac.isa.machine import DEFAULT


@pytest.fixture(scope="module")
def bundle():
    rng = np.random.default_rng(0)
    x = K.Act("x", (1, 8, 8, 40), np.full(1, 0.05, np.float32))
    y = K.Act("y", (1, 8, 8, 40), np.full(1, 0.05, np.float32))
    z = K.Act("z", (1, 8, 8, 40), np.full(1, 0.05, np.float32))
    w = K.Weights(rng.integers(-7, 8, (40, 40, 3, 3)).astype(np.int8), np.full(40, 0.01, np.float32))
    ks = [K.Kernel("c1", "conv3x3", [x], [K.Norm("gn", 4, 1e-5, np.ones(40), np.zeros(40)), K.Emit(y)], weights=w),
          K.Kernel("c2", "conv3x3", [y], [K.AddTensor(x), K.Emit(z)], weights=w)]
    kg = K.KernelGraph(ks, [x], [z])
    calibrate_absmax(kg, [{"x": rng.normal(0, 1, x.shape)}])
    return lower(kg, DEFAULT)


def replace(b, i, ins):
    instrs = list(b.instrs)
    instrs[i] = ins
    return dataclasses.replace(b, instrs=instrs)


def test_compiled_program_verifies(bundle):
    verify(bundle)
    assert any(i.pop for i in bundle.instrs) and any(i.push for i in bundle.instrs)


def test_missing_token_is_a_race_or_deadlock(bundle):
    # drop the first token pair: the consumer no longer waits for the producer
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.pop)
    p = sorted(bundle.instrs[i].pop)[0]
    q = bundle.instrs[i].queue
    j = max(k for k in range(i) if bundle.instrs[k].queue == p and q in bundle.instrs[k].push)
    b = replace(bundle, i, bundle.instrs[i].replace(pop=bundle.instrs[i].pop - {p}))
    b = replace(b, j, b.instrs[j].replace(push=b.instrs[j].push - {q}))
    with pytest.raises(VerifyError, match="race|no earlier"):
        verify(b)


def test_unmatched_push_leaks(bundle):
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.queue == "cmp")
    b = replace(bundle, i, bundle.instrs[i].replace(push=bundle.instrs[i].push | {"st"}))
    with pytest.raises(VerifyError, match="tokens left"):
        verify(b)


def test_pop_without_push_deadlocks(bundle):
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.queue == "ld")
    b = replace(bundle, i, bundle.instrs[i].replace(pop=bundle.instrs[i].pop | {"st"}))
    with pytest.raises(VerifyError, match="deadlock") as e:
        verify(b)
    assert e.value.index == i


def test_out_of_bounds_buffer_and_dram(bundle):
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.op == "conv")
    b = replace(bundle, i, bundle.instrs[i].replace(o=DEFAULT.acc_lines - 1))
    with pytest.raises(VerifyError, match=f"instruction {i}: conv touches acc"):
        verify(b)
    j = next(j for j, ins in enumerate(bundle.instrs) if ins.op == "store")
    b = replace(bundle, j, bundle.instrs[j].replace(dram=bundle.dram_size - 8))
    with pytest.raises(VerifyError, match="DRAM"):
        verify(b)


def test_missing_halt(bundle):
    b = dataclasses.replace(bundle, instrs=list(bundle.instrs[:-1]))
    with pytest.raises(VerifyError, match="halt"):
        verify(b)


def test_sfu_partial_overlap_is_rejected_in_place_and_disjoint_are_fine(bundle):
    from sdac.compiler.verify import check_sfu_aliasing
    L = DEFAULT.lanes
    base = dict(sbuf="acc", s=100, srs=2, d=100, drs=2, rows=8, cols=40)
    assert check_sfu_aliasing(Instr.make("deq", **base), L) is None                     # in place
    assert check_sfu_aliasing(Instr.make("deq", **{**base, "d": 200}), L) is None       # disjoint
    assert "partly overlap" in check_sfu_aliasing(Instr.make("deq", **{**base, "d": 102}), L)
    assert check_sfu_aliasing(Instr.make("deq", **{**base, "d": 101, "cols": 20, "srs": 2, "drs": 2}),
                              L) is None                                                 # interleaved rows
    g = dict(a=0, ars=4, b=2, brs=4, d=0, drs=4, rows=5, cols=40, out="acc")
    assert check_sfu_aliasing(Instr.make("geglu", **g), L) is None                      # the lowering's GeGLU
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.op == "deq")
    bad = replace(bundle, i, bundle.instrs[i].replace(d=bundle.instrs[i].s + 1))
    with pytest.raises(VerifyError, match=f"instruction {i}: deq"):
        verify(bad)


# ------------------------------------------------- race checker against a brute-force reference

@dataclasses.dataclass
class _FakeIns:
    queue: str
    op: str
    pop: frozenset
    push: frozenset
    spans: list
    args: dict = dataclasses.field(default_factory=dict)


def _random_program(rng, n=14):
    from sdac.compiler.verify import Span
    queues = ("ld", "cmp", "sfu", "st")
    pushed = {}           # channel -> pushes not yet popped
    prog = []
    for _ in range(n):
        q = queues[rng.integers(4)]
        pop = frozenset(p for p in queues if p != q and pushed.get((p, q), 0) and rng.random() < 0.9)
        for p in pop:
            pushed[(p, q)] -= 1
        push = frozenset(r for r in queues if r != q and rng.random() < 0.5)
        for r in push:
            pushed[(q, r)] = pushed.get((q, r), 0) + 1
        spans = []
        for _ in range(rng.integers(1, 3)):
            lo = int(rng.integers(0, 120))
            spans.append(Span(("act", "dram")[rng.integers(2)], lo, lo + int(rng.integers(1, 12)),
                              bool(rng.random() < 0.4)))
        prog.append(_FakeIns(q, "op", pop, push, spans))
    return prog


def _has_race_brute_force(prog) -> bool:
    """Happens-before as reachability over queue order and FIFO-matched tokens; every conflicting pair."""
    n = len(prog)
    succ = [set() for _ in range(n)]
    last, pushes, pops = {}, {}, {}
    for i, ins in enumerate(prog):
        if ins.queue in last:
            succ[last[ins.queue]].add(i)
        last[ins.queue] = i
        for p in sorted(ins.pop):
            k = pops.get((p, ins.queue), 0)
            pops[(p, ins.queue)] = k + 1
            succ[pushes[(p, ins.queue)][k]].add(i)
        for r in ins.push:
            pushes.setdefault((ins.queue, r), []).append(i)
    reach = [set() for _ in range(n)]
    for i in reversed(range(n)):
        for j in succ[i]:
            reach[i] |= {j} | reach[j]
    for j in range(n):
        for i in range(j):
            if prog[i].queue == prog[j].queue or j in reach[i]:
                continue
            for a in prog[i].spans:
                for b in prog[j].spans:
                    if a.space == b.space and a.lo < b.hi and b.lo < a.hi and (a.write or b.write):
                        return True
    return False


@pytest.mark.parametrize("streaming", [False, True])
def test_race_checker_agrees_with_brute_force(monkeypatch, streaming):
    """The whole-program check, and the streaming one (pops announced with their pushers, kernel by kernel)."""
    from sdac.compiler import verify as V
    monkeypatch.setattr(V, "footprint", lambda ins, L: ins.spans)
    if streaming:
        from tests.compiler.test_verify_stream import _streaming_checker
        check = lambda prog: _streaming_checker(prog, caps=False)   # noqa: E731
    else:
        check = lambda prog: V.check_races(prog, 20)                # noqa: E731
    rng = np.random.default_rng(3)
    found = {True: 0, False: 0}
    for _ in range(400):
        prog = _random_program(rng)
        expect = _has_race_brute_force(prog)
        try:
            check(prog)
            got = False
        except VerifyError as e:
            assert "race" in str(e)
            got = True
        assert got == expect
        found[got] += 1
    assert min(found.values()) > 40          # both outcomes were exercised


def test_write_to_static_data_is_rejected(bundle):
    st = next(i for i, ins in enumerate(bundle.instrs) if ins.op == "store")
    bad = dataclasses.replace(bundle.instrs[st], args={**bundle.instrs[st].args, "dram": bundle.data_base})
    with pytest.raises(VerifyError, match=f"instruction {st}: store writes DRAM .* read-only"):
        verify(replace(bundle, st, bad))


# ------------------------------------------------- footprint: the per-mnemonic functions against the plain one

def _cl(n, L):
    return -(-n // L)


def _footprint_plain(ins, L):
    """The verifier's footprint as one chain of tests (its definition before the per-mnemonic dispatch)."""
    from sdac.compiler.verify import Span
    a = ins.args
    op = ins.op
    out = []

    def rng(space, base, last_off, n, write):
        out.append(Span(space, base, base + last_off + n, write))

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
    elif op in ("deq", "add", "act", "deqact", "geglu", "norm", "softmax", "transpose"):
        rows, cols = a["rows"], a["cols"]
        c = _cl(cols, L)
        src_buf = a["sbuf"] if op in ("deq", "act", "deqact") else ("act" if op == "transpose" else "acc")
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
        if op in ("deq", "deqact"):
            if a["per_ch"]:
                rng("prm", a["sc"], 0, c, False)
            else:
                rng("prm", a["sc"] // L, 0, 1, False)
            if a["bias"]:
                rng("prm", a["bb"], 0, c, False)
            if op == "deqact":
                rng("prm", a["osc"] // L, 0, 1, False)
        elif op == "norm":
            rng("prm", a["nd"] // L, (a["nd"] + 2) // L - a["nd"] // L, 1, False)
            rng("prm", a["gamma"], 0, c, False)
            rng("prm", a["beta"], 0, c, False)
        elif op != "transpose":
            rng("prm", a["sc"] // L, 0, 1, False)
            if op == "softmax" and a["pre"]:
                rng("prm", a["psc"] // L, 0, 1, False)
    return out


@pytest.mark.parametrize("L", [20, 4, 7])
def test_footprint_equals_the_plain_definition(bundle, L):
    from sdac.compiler.verify import footprint
    from sdac.isa.spec import SPEC
    rng = np.random.default_rng(L)
    for ins in bundle.instrs:
        assert footprint(ins, L) == _footprint_plain(ins, L), ins
    for ispec in SPEC.instrs:
        for _ in range(300):
            args = {}
            for f in ispec.fields:
                if f.kind == "enum":
                    args[f.name] = rng.choice(list(SPEC.enums[f.enum]))
                else:
                    hi = min(f.max, 300 if rng.random() < 0.8 else f.max)
                    args[f.name] = int(rng.integers(max(f.min, 0), max(f.min, 0) + hi + 1)) if hi else f.min
            ins = Instr.make(ispec.name, **{k: (str(v) if isinstance(v, np.str_) else v) for k, v in args.items()})
            assert footprint(ins, L) == _footprint_plain(ins, L), ins


# ------------------------------------------------- the program builder's tokens against a per-address reference

def _reference_tokens(prog):
    """The builder's rule on a per-address shadow (no segments): each instruction waits for the latest
    conflicting access of every other queue (the last writer; on a write also the latest reader of each queue
    since that write), unless an earlier token on that channel already orders it; accesses are recorded
    after all of the instruction's accesses are checked, in order."""
    from sdac.isa.spec import QUEUES
    writer, readers = {}, {}          # (space, address) -> (queue, position) / {queue: position}
    by_queue = {q: [] for q in QUEUES}
    last_push = {}
    pops, pushes = [], []
    for idx, (q, accesses) in enumerate(prog):
        pos = len(by_queue[q])
        by_queue[q].append(idx)
        pops.append(set())
        pushes.append(set())
        need = {}
        for space, lo, hi, write in accesses:
            for x in range(lo, hi):
                w = writer.get((space, x))
                if w and w[0] != q:
                    need[w[0]] = max(need.get(w[0], -1), w[1])
                if write:
                    for rq, rpos in readers.get((space, x), {}).items():
                        if rq != q:
                            need[rq] = max(need.get(rq, -1), rpos)
        for p, xpos in need.items():
            if last_push.get((p, q), -1) < xpos:
                pushes[by_queue[p][xpos]].add(q)
                pops[idx].add(p)
                last_push[(p, q)] = xpos
        for space, lo, hi, write in accesses:
            for x in range(lo, hi):
                if write:
                    writer[(space, x)], readers[(space, x)] = (q, pos), {}
                else:
                    readers.setdefault((space, x), {})[q] = pos
    return pops, pushes


def test_program_builder_tokens_equal_the_per_address_reference():
    from sdac.compiler.lower.program import Access, ProgramBuilder
    rng = np.random.default_rng(5)
    op_of = {"ld": "load", "cmp": "mm", "sfu": "deq", "st": "store"}
    for _ in range(300):
        prog = []
        for _ in range(int(rng.integers(5, 40))):
            q = ("ld", "cmp", "sfu", "st")[rng.integers(4)]
            accesses = []
            for _ in range(int(rng.integers(0, 4))):
                lo = int(rng.integers(0, 40))
                accesses.append(Access(("act", "acc", "dram")[rng.integers(3)], lo, lo + int(rng.integers(0, 9)),
                                       bool(rng.random() < 0.45)))
            prog.append((q, accesses))
        pb = ProgramBuilder()
        for q, accesses in prog:
            pb.emit(op_of[q], accesses)
        instrs = pb.finish()
        pops, pushes = _reference_tokens(prog)
        assert [set(i.pop) for i in instrs] == pops and [set(i.push) for i in instrs] == pushes
