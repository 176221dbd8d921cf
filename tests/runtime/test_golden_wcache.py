"""Lazy weight loads, the float32 weight-matrix cache (runtime/golden_wgt.py) and direct SFU writes
change nothing: random programs give the same machine state, counters, trace and errors as the
plain paths (eager decode, no cache, SFU results assembled then written), and directed cases check
the invalidation rules against numpy references.
"""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.runtime import golden as G

M = dataclasses.replace(DEFAULT, act_lines=256, wgt_lines=256, acc_lines=256, prm_lines=16, stat_groups=16)
L, B = M.lanes, M.lanes // 2
DRAM = 1 << 14
WLO, WHI = 4096, 12288          # DRAM bytes the weight loads read from (stores hit them too)


def serialize(instrs):
    """Tokens that make the queues execute the program in program order (RAW/WAR on everything)."""
    out = [ins for ins in instrs]
    for i in range(len(out) - 1):
        qa, qb = out[i].queue, out[i + 1].queue
        if qa != qb:
            out[i] = out[i].replace(push=set(out[i].push) | {qb})
            out[i + 1] = out[i + 1].replace(pop=set(out[i + 1].pop) | {qa})
    return out + [Instr.make("halt")]


def machine(seed, plain: bool, monkeypatch=None) -> G.Golden:
    rng = np.random.default_rng(seed)
    g = G.Golden(M, DRAM, trace=True)
    g.dram[:] = rng.integers(0, 256, DRAM)
    g.act[:] = rng.integers(-128, 128, g.act.shape)
    g.wgt[:] = rng.integers(-8, 8, g.wgt.shape)
    g.acc[:] = rng.integers(-3000, 3000, g.acc.shape)
    g.prm[:, :] = rng.integers(0, 1 << 32, g.prm.shape, dtype=np.uint64).astype(np.uint32)
    if plain:
        g._wl.budget = 0
    return g


def state(g):
    return [g.dram.copy(), g.act.copy(), g.wgt.copy(), g.acc.copy(), g.prm.copy(), g.stat_sum.copy(),
            g.stat_sq.copy()]


def run_both(seed, prog, monkeypatch, budget=None, host_change=False):
    """Run prog (twice, the host rewriting weight DRAM in between when asked) on the fast and the
    plain golden model; compare everything. Returns the fast model."""
    results = []
    for plain in (False, True):
        monkeypatch.setattr(G, "_LAZY_WGT", not plain)
        monkeypatch.setattr(G, "_SFU_DIRECT", not plain)
        monkeypatch.setattr(G, "_FLOAT_SCALE", not plain)
        g = machine(seed, plain)
        if budget is not None and not plain:
            g._wl.budget = budget
        outs = []
        for rep in range(2 if host_change else 1):
            if rep:
                g.dram[WLO:WHI] = np.random.default_rng(seed + 99).integers(0, 256, WHI - WLO)
            try:
                r = g.run(prog)
                outs.append(("ok", r.to_json()))
            except DeviceError as e:
                outs.append(("error", e.code, e.index, str(e)))
            outs.append(state(g))
        results.append((g, outs))
    (fast, a), (_, b) = results
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, list):
            for u, v in zip(x, y):
                assert np.array_equal(u, v)
        else:
            assert x == y
    return fast


def random_program(rng, n=40, error_at_end=False):
    prog, products = [], []
    for _ in range(n):
        kind = rng.choice(["wload", "wload", "wload_strided", "wload_2d", "wzero", "store_act", "store_wgt",
                           "mm", "mm", "conv", "reuse", "reuse", "reread", "deq"])
        if kind == "reread" and products:
            # a product seen before, on whatever its lines hold now (a hit unless they were rewritten)
            prog.append(products[int(rng.integers(len(products)))][1])
            continue
        if kind == "reuse" and products:
            # a weight load seen before, into the same or other lines, and the same product over it:
            # a cache hit unless something in between forbids it
            ld, op, off = products[int(rng.integers(len(products)))]
            sram = int(rng.integers(0, M.wgt_lines - ld.run)) if rng.random() < 0.5 else ld.sram
            prog.append(ld.replace(sram=sram))
            prog.append(op.replace(w=sram + off))
            continue
        if kind in ("wload", "reuse") or (kind in ("mm", "conv") and not prog):
            run = int(rng.integers(1, 90))
            sram = int(rng.integers(0, M.wgt_lines - run))
            dram = int(rng.integers(WLO, WHI - run * B))
            prog.append(Instr.make("load", buf="wgt", dram=dram, sram=sram, run=run))
        if kind == "wload_strided":
            run, ny = int(rng.integers(1, 20)), int(rng.integers(2, 4))
            sy, dy = int(rng.integers(0, 25)), int(rng.integers(0, 300))
            prog.append(Instr.make("load", buf="wgt", dram=int(rng.integers(WLO, WHI - 1000)),
                                   sram=int(rng.integers(0, M.wgt_lines - 90)), run=run, ny=ny, sy=sy, dy=dy))
        elif kind == "wload_2d":         # consecutive in lines and in DRAM over two dimensions: lazy too
            run, ny, nz = int(rng.integers(1, 10)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
            prog.append(Instr.make("load", buf="wgt", dram=int(rng.integers(WLO, WHI - 1000)),
                                   sram=int(rng.integers(0, M.wgt_lines - 90)), run=run, ny=ny, sy=run,
                                   dy=run * B, nz=nz, sz=ny * run, dz=ny * run * B))
        elif kind == "wzero":
            prog.append(Instr.make("load", buf="wgt", zero=1, sram=int(rng.integers(0, M.wgt_lines - 30)),
                                   run=int(rng.integers(1, 30))))
        elif kind == "store_act":        # overwrites weight bytes in DRAM
            run = int(rng.integers(1, 40))
            prog.append(Instr.make("store", buf="act", sram=int(rng.integers(0, M.act_lines - run)),
                                   dram=int(rng.integers(WLO - 200, WHI - run * L)), run=run))
        elif kind == "store_wgt":        # reads (possibly pending) weight lines
            run = int(rng.integers(1, 60))
            prog.append(Instr.make("store", buf="wgt", sram=int(rng.integers(0, M.wgt_lines - run)),
                                   dram=int(rng.integers(0, WLO - run * B)), run=run))
        elif kind == "mm":
            k, n, m = int(rng.integers(1, 40)), int(rng.integers(1, 45)), int(rng.integers(1, 9))
            nb = -(-n // L)
            ws = k if rng.random() < 0.6 else int(rng.integers(k, k + 10))
            last = prog[-1] if prog[-1].op == "load" and prog[-1].buf == "wgt" else None
            w = last.sram if last is not None and rng.random() < 0.7 else int(rng.integers(0, 100))
            w = min(w, M.wgt_lines - ((nb - 1) * ws + k))
            prog.append(Instr.make("mm", a=int(rng.integers(0, 100)), ars=2, wsrc="wgt", w=w, ws=ws,
                                   c=int(rng.integers(0, 100)), crs=int(rng.integers(0, 4)), m=m, n=n, k=k,
                                   acc=int(rng.integers(0, 2))))
            if last is not None and 0 <= w - last.sram and w + (nb - 1) * ws + k <= last.sram + last.run:
                products.append((last, prog[-1], w - last.sram))
        elif kind == "conv":
            cin, cout = int(rng.integers(1, 12)), int(rng.integers(1, 25))
            oh, ow = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            ips, ops = -(-cin // L), -(-cout // L)
            wts = cin + int(rng.integers(0, 2))
            wbs = 9 * wts + int(rng.integers(0, 3))
            span = (ops - 1) * wbs + 8 * wts + cin
            last = prog[-1] if prog[-1].op == "load" and prog[-1].buf == "wgt" else None
            w = last.sram if last is not None and rng.random() < 0.7 else int(rng.integers(0, 20))
            w = min(w, M.wgt_lines - span)
            prog.append(Instr.make("conv", i=int(rng.integers(0, 50)), ips=ips, irs=5 * ips, ih=5, iw=5,
                                   w=w, wbs=wbs, wts=wts, o=int(rng.integers(0, 100)),
                                   ops=ops, ors=ow * ops, oh=oh, ow=ow, cin=cin, cout=cout, stride=1,
                                   pt=int(rng.integers(0, 2)), pl=int(rng.integers(0, 2)),
                                   acc=int(rng.integers(0, 2))))
            if last is not None and 0 <= w - last.sram and w + span <= last.sram + last.run:
                products.append((last, prog[-1], w - last.sram))
        elif kind == "deq":
            prog.append(Instr.make("deq", s=int(rng.integers(0, 100)), srs=2, d=int(rng.integers(0, 100)), drs=2,
                                   rows=int(rng.integers(1, 8)), cols=int(rng.integers(1, 40)), sc=3))
    if error_at_end:          # a load, then an instruction out of bounds: the run raises
        prog.append(Instr.make("load", buf="wgt", dram=WLO, sram=0, run=50))
        prog.append(Instr.make("mm", wsrc="wgt", w=M.wgt_lines - 5, ws=10, k=10, n=5, m=1))
    return prog


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_same_as_plain_paths(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    prog = serialize(random_program(rng, 50, error_at_end=seed % 4 == 1))
    run_both(seed, prog, monkeypatch, host_change=seed % 3 == 0)


def test_random_programs_exercise_the_cache():
    # the programs above do hit the cache (and miss it), so their agreement means something
    hits = misses = 0
    for seed in range(12):
        g = machine(seed, plain=False)
        try:
            g.run(serialize(random_program(np.random.default_rng(seed), 50, error_at_end=seed % 4 == 1)))
        except DeviceError:
            pass
        hits, misses = hits + g._wl.hits, misses + g._wl.misses
    assert hits >= 20 and misses >= 10, (hits, misses)


@pytest.mark.parametrize("seed", range(3))
def test_random_programs_tiny_cache_budget(seed, monkeypatch):
    # entries evicted all the time (and some larger than the budget): still the same values
    rng = np.random.default_rng(100 + seed)
    run_both(100 + seed, serialize(random_program(rng, 60)), monkeypatch, budget=3000)


def _mm_prog(dram, n=30, k=25, a=0, c=0):
    return [Instr.make("load", buf="wgt", dram=dram, sram=10, run=-(-n // L) * k),
            Instr.make("mm", a=a, ars=2, wsrc="wgt", w=10, ws=k, c=c, crs=2, m=4, n=n, k=k)]


def _ref_mm(g, dram_bytes, n=30, k=25, a=0):
    """numpy: the int4 weights of dram_bytes (blocks of L columns, k lines each) times A."""
    nb = -(-n // L)
    nib = np.stack([dram_bytes & 15, dram_bytes >> 4], axis=-1).reshape(nb, k, L).astype(np.int64)
    W = np.where(nib > 7, nib - 16, nib).transpose(1, 0, 2).reshape(k, nb * L)[:, :n]
    A = np.stack([g.act[a + 2 * r:a + 2 * r + 2].reshape(-1)[:k] for r in range(4)]).astype(np.int64)
    return A @ W


def _c(g, c=0, n=30):
    return np.stack([g.acc[c + 2 * r:c + 2 * r + 2].reshape(-1)[:n] for r in range(4)]).astype(np.int64)


def test_pending_load_reads_dram_as_it_was_at_the_load(monkeypatch):
    # load (pending), then a store overwrites the weight bytes, then mm: the loaded (old) values count
    g = machine(1, plain=False)
    dram, n, k = 5000, 30, 25
    old = g.dram[dram:dram + 2 * k * B].copy()
    prog = _mm_prog(dram, n, k)
    prog.insert(1, Instr.make("store", buf="act", sram=100, dram=dram, run=10))
    g.run(serialize(prog))
    assert not np.array_equal(old, g.dram[dram:dram + 2 * k * B])
    assert np.array_equal(_c(g), _ref_mm(g, old, n, k))
    run_both(1, serialize(prog), monkeypatch)


def test_cache_not_used_after_the_weight_bytes_change(monkeypatch):
    # the same load + mm twice, a store rewriting the weights in between: the second mm sees new weights
    g = machine(2, plain=False)
    dram, n, k = 6000, 30, 25
    prog = _mm_prog(dram, n, k) + [Instr.make("store", buf="act", sram=120, dram=dram + 7, run=3)] \
        + _mm_prog(dram, n, k, c=100)
    g.run(serialize(prog))
    new = g.dram[dram:dram + 2 * k * B]
    assert np.array_equal(_c(g, 100), _ref_mm(g, new, n, k))
    # without the store the second product is a cache hit, with the same values
    g2 = machine(2, plain=False)
    g2.run(serialize(_mm_prog(dram, n, k) + _mm_prog(dram, n, k, c=100)))
    assert g2._wl.hits == 1 and np.array_equal(_c(g2, 100), _c(g2, 0))
    run_both(2, serialize(prog), monkeypatch)


def test_host_rewriting_dram_between_runs_is_seen():
    g = machine(3, plain=False)
    prog = serialize(_mm_prog(7000))
    g.run(prog)
    first = _c(g)
    g.dram[7000:7100] ^= 0x5A
    g.run(prog)
    assert np.array_equal(_c(g), _ref_mm(g, g.dram[7000:7000 + 50 * B]))
    assert not np.array_equal(_c(g), first)


def test_error_after_a_pending_load_leaves_the_weights_decoded(monkeypatch):
    g = machine(4, plain=False)
    prog = serialize([Instr.make("load", buf="wgt", dram=5000, sram=3, run=40),
                      Instr.make("mm", wsrc="wgt", w=250, ws=20, k=20, n=5, m=1)])      # OOB_BUF
    with pytest.raises(DeviceError) as e:
        g.run(prog)
    assert e.value.code == "OOB_BUF"
    monkeypatch.setattr(G, "_LAZY_WGT", False)
    h = machine(4, plain=True)
    with pytest.raises(DeviceError):
        h.run(prog)
    assert np.array_equal(g.wgt, h.wgt)


def test_partly_overwritten_load_keeps_the_rest():
    # lines 10..69 from one load, 30..39 from another: a product over 10..69 mixes them exactly
    g = machine(5, plain=False)
    h = machine(5, plain=True)
    prog = serialize([Instr.make("load", buf="wgt", dram=5000, sram=10, run=60),
                      Instr.make("load", buf="wgt", dram=9000, sram=30, run=10),
                      Instr.make("mm", wsrc="wgt", a=0, ars=2, w=10, ws=30, k=30, n=40, m=3, c=0, crs=2),
                      Instr.make("mm", wsrc="wgt", a=0, ars=2, w=40, ws=30, k=30, n=20, m=3, c=50, crs=2)])
    G_lazy = G._LAZY_WGT
    try:
        g.run(prog)
        G._LAZY_WGT = False
        h.run(prog)
    finally:
        G._LAZY_WGT = G_lazy
    assert np.array_equal(g.acc, h.acc) and np.array_equal(g.wgt, h.wgt)


def test_sfu_direct_writes_same_as_assembled(monkeypatch):
    # SFU instructions with sources and destinations that overlap or not, rows that overlap or not
    rng = np.random.default_rng(6)
    prog = []
    for _ in range(60):
        op = rng.choice(["deq", "add", "act", "geglu", "norm", "softmax"])
        rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 45))
        nl = -(-cols // L)
        f = dict(rows=rows, cols=cols, d=int(rng.integers(0, 60)), drs=int(rng.choice([0, 1, nl, nl + 1])), sc=3)
        src = dict(s=int(rng.integers(0, 60)), srs=int(rng.choice([0, nl, nl + 2])))
        if op == "deq":
            prog.append(Instr.make("deq", sbuf=str(rng.choice(["acc", "act"])), st=1, st_mode="row", **src, **f))
        elif op == "add":
            prog.append(Instr.make("add", a=src["s"], ars=src["srs"], bbuf=str(rng.choice(["acc", "act"])),
                                   b=int(rng.integers(0, 60)), brs=nl, **f))
        elif op == "act":
            prog.append(Instr.make("act", sbuf=str(rng.choice(["acc", "act"])), fn=str(rng.choice(["none", "silu"])),
                                   out=str(rng.choice(["acc", "act"])), frac=8, **src, **f))
        elif op == "geglu":
            prog.append(Instr.make("geglu", a=src["s"], ars=src["srs"], b=int(rng.integers(0, 60)), brs=nl,
                                   out=str(rng.choice(["acc", "act"])), frac=8, **f))
        elif op == "norm":
            prog.append(Instr.make("norm", st_mode="row", nd=4, gamma=5, beta=6, fn="none", out="acc", **src, **f))
        else:
            prog.append(Instr.make("softmax", **src, **f))
    prog = serialize([p for p in prog])
    run_both(6, prog, monkeypatch)


@pytest.mark.parametrize("edge", ["first", "last"])
def test_store_touching_one_byte_of_the_weights(edge, monkeypatch):
    # a store whose last byte is the weights' first byte (or whose first byte is their last one):
    # the reloaded weights have the new byte (no cache hit), a pending load keeps the old one
    dram, n, k = 5000, 40, 25           # n = 2 * L: every weight byte matters
    at = dram - L + 1 if edge == "first" else dram + 2 * k * B - 1
    st = Instr.make("store", buf="act", sram=100, dram=at, run=1)
    ld, mm = _mm_prog(dram, n, k)
    prog = [ld, mm, st, ld, mm.replace(c=100), ld, st.replace(sram=101), mm.replace(c=150)]
    g = run_both(7, serialize(prog), monkeypatch)
    assert g._wl.hits == 0
    monkeypatch.setattr(G, "_LAZY_WGT", True)
    h = machine(7, plain=False)
    assert h.act[100, L - 1 if edge == "first" else 0] != h.dram[at + L - 1 if edge == "first" else at]
    h.run(serialize([ld, mm, ld, mm.replace(c=100)]))
    assert h._wl.hits == 1
