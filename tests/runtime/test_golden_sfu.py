"""SFU instructions of the golden model against element-by-element references.

Rounding, scaling, saturation and the hard activations are re-coded here with
Python integers from the formulas in isa/numerics.py's docstrings; norm and
softmax call the numerics functions (the spec) one group / one row at a time.
"""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.isa import Instr, numerics as N
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import Golden

M = dataclasses.replace(DEFAULT, act_lines=512, wgt_lines=16, acc_lines=512, prm_lines=64, stat_groups=32)
L = M.lanes


def rsr(x, s):
    return x << -s if s <= 0 else (x + (1 << (s - 1))) >> s


def scale(x, e):
    return rsr(x * (e & 0xFFFFFF), (e >> 24) & 63)


def sat(x, b):
    return max(-(1 << (b - 1)), min((1 << (b - 1)) - 1, x))


def silu(x, f):
    return rsr(x * max(0, min(x + (3 << f), 6 << f)) * 10923, f + 16)


def gelu(x, f):
    return rsr(x * max(0, min(rsr(x * 1743, 10) + (3 << f), 6 << f)) * 10923, f + 16)


FN = {"none": lambda x, f: x, "silu": silu, "gelu": gelu}


def el(buf, base, rs, r, c):
    return int(buf[base + r * rs + c // L][c % L])


def put(buf, base, rs, r, c, v):
    buf[base + r * rs + c // L][c % L] = v


def prmw(g, x):
    return int(g.prm[x // L][x % L])


def s32(v):
    return (v ^ 0x80000000) - 0x80000000


def random_machine_state(seed):
    rng = np.random.default_rng(seed)
    g = Golden(M, 64)
    g.act[:] = rng.integers(-128, 128, g.act.shape)
    g.act[0, :4] = [-128, 127, -7, 7]
    g.acc[:] = rng.integers(-40000, 40000, g.acc.shape)        # beyond int16: saturation on input
    g.acc[1, :2] = [2**31 - 1, -2**31]
    g.stat_sum[:] = rng.integers(-1000, 1000, g.stat_sum.shape)
    g.stat_sq[:] = rng.integers(0, 10**6, g.stat_sq.shape)
    return g, rng


def entries(rng, n, mul_hi=1 << 24, sh=(0, 30)):
    return [N.make_scale(int(rng.integers(0, mul_hi)), int(rng.integers(*sh))) for _ in range(n)]


def run1(g, ins):
    return g.run([Instr.make("sync", q="ld"), ins, Instr.make("halt")])


def ref_stats(g, a, D, rows, cols):
    s1, s2 = g.stat_sum.copy(), g.stat_sq.copy()
    if a["st_clr"]:
        s1[:] = 0
        s2[:] = 0
    if a["st"]:
        for r in range(rows):
            for c in range(cols):
                grp = a["gbase"] + (r if a["st_mode"] == "row" else c // a["gsize"])
                s1[grp] += D[r][c]
                s2[grp] += D[r][c] ** 2
    return s1, s2


@pytest.mark.parametrize("sbuf,per_ch,bias,st_mode", [
    ("acc", 1, 1, "chan"), ("act", 0, 0, "row"), ("acc", 0, 1, "row"), ("act", 1, 0, "chan")])
def test_deq(sbuf, per_ch, bias, st_mode):
    g, rng = random_machine_state(1)
    rows, cols = 4, L + 5
    g.prm[3, :] = entries(rng, L)
    g.prm[4, :5] = entries(rng, 5)
    g.prm[10, :] = rng.integers(0, 2**32, L, dtype=np.uint64)   # biases incl. huge ones: saturation
    g.prm[11, :] = rng.integers(0, 2**32, L, dtype=np.uint64)
    g.prm[12, :] = N.make_scale(3, 1)
    a = dict(sbuf=sbuf, s=2, srs=3, d=100, drs=2, rows=rows, cols=cols, sc=3 if per_ch else 12 * L + 7,
             per_ch=per_ch, bias=bias, bb=10, st=1, st_clr=1 if sbuf == "acc" else 0, st_mode=st_mode, gsize=3,
             gbase=5)
    src = g.acc if sbuf == "acc" else g.act
    acc = g.acc.copy()
    D = [[0] * cols for _ in range(rows)]
    for r in range(rows):
        for c in range(cols):
            e = int(g.prm[3 + c // L][c % L]) if per_ch else prmw(g, a["sc"])
            b = s32(int(g.prm[10 + c // L][c % L])) if bias else 0
            D[r][c] = sat(scale(el(src, 2, 3, r, c), e) + b, 16)
            put(acc, 100, 2, r, c, D[r][c])
    s1, s2 = ref_stats(g, a, D, rows, cols)
    res = run1(g, Instr.make("deq", **a))
    assert np.array_equal(g.acc, acc)
    assert np.array_equal(g.stat_sum, s1) and np.array_equal(g.stat_sq, s2)
    assert res.sfu_elems == rows * cols


@pytest.mark.parametrize("bbuf,brs", [("acc", 2), ("act", 0), ("acc", 0)])
def test_add_with_broadcast(bbuf, brs):
    g, rng = random_machine_state(2)
    rows, cols = 3, 2 * L + 1
    g.prm[0, 9] = N.make_scale(int(rng.integers(1, 1 << 20)), 12)
    a = dict(a=20, ars=3, bbuf=bbuf, b=40, brs=brs, d=20, drs=3, rows=rows, cols=cols, sc=9,   # in place
             st=1, st_clr=0, st_mode="row", gsize=1, gbase=29)
    B = g.acc if bbuf == "acc" else g.act
    acc = g.acc.copy()
    D = [[sat(el(g.acc, 20, 3, r, c) + scale(el(B, 40, brs, r, c), prmw(g, 9)), 16) for c in range(cols)]
         for r in range(rows)]
    for r in range(rows):
        for c in range(cols):
            put(acc, 20, 3, r, c, D[r][c])
    s1, s2 = ref_stats(g, a, D, rows, cols)
    run1(g, Instr.make("add", **a))
    assert np.array_equal(g.acc, acc)
    assert np.array_equal(g.stat_sum, s1) and np.array_equal(g.stat_sq, s2)


@pytest.mark.parametrize("fn", ["none", "silu", "gelu"])
@pytest.mark.parametrize("sbuf,out", [("acc", "act"), ("acc", "acc"), ("act", "act")])
def test_act(fn, sbuf, out):
    g, rng = random_machine_state(3)
    rows, cols, frac = 5, L - 3, 8
    g.prm[1, 2] = N.make_scale(int(rng.integers(1 << 10, 1 << 16)), 14)
    st = 1 if out == "acc" else 0
    a = dict(sbuf=sbuf, s=30, srs=1, out=out, d=200, drs=1, rows=rows, cols=cols, fn=fn, frac=frac,
             sc=L + 2, st=st, st_clr=st, st_mode="chan", gsize=4, gbase=0)
    src = g.acc if sbuf == "acc" else g.act
    dst = (g.acc if out == "acc" else g.act).copy()
    bits = 16 if out == "acc" else 8
    D = [[sat(scale(FN[fn](sat(el(src, 30, 1, r, c), 16), frac), prmw(g, L + 2)), bits) for c in range(cols)]
         for r in range(rows)]
    for r in range(rows):
        for c in range(cols):
            put(dst, 200, 1, r, c, D[r][c])
    s1, s2 = ref_stats(g, a, D, rows, cols)
    run1(g, Instr.make("act", **a))
    assert np.array_equal(g.acc if out == "acc" else g.act, dst)
    assert np.array_equal(g.stat_sum, s1) and np.array_equal(g.stat_sq, s2)
    if out == "act":
        assert (np.abs(dst[200:205].astype(int)) == 128).any() or fn != "none"


def test_act_statistics_need_acc_output():
    g, _ = random_machine_state(3)
    with pytest.raises(DeviceError) as e:
        run1(g, Instr.make("act", out="act", st=1))
    assert (e.value.code, e.value.index) == ("BAD_FIELD", 1)


@pytest.mark.parametrize("fn", ["none", "silu", "gelu"])
@pytest.mark.parametrize("sbuf,out,per_ch,bias", [("acc", "act", 1, 1), ("acc", "acc", 0, 0), ("act", "act", 0, 1),
                                                  ("act", "acc", 1, 0)])
def test_deqact(fn, sbuf, out, per_ch, bias):
    g, rng = random_machine_state(10)
    rows, cols, frac = 4, L + 5, 8
    g.prm[3, :] = entries(rng, L, sh=(8, 24))
    g.prm[4, :5] = entries(rng, 5, sh=(8, 24))
    g.prm[10, :] = rng.integers(0, 2**32, L, dtype=np.uint64)
    g.prm[11, :] = rng.integers(-3000, 3000, L).astype(np.int32).view(np.uint32)
    g.prm[12, 7] = N.make_scale(int(rng.integers(1 << 10, 1 << 20)), 12)
    g.prm[13, 2] = N.make_scale(int(rng.integers(1 << 10, 1 << 16)), 14)
    a = dict(sbuf=sbuf, s=2, srs=3, out=out, d=100, drs=2, rows=rows, cols=cols,
             sc=3 if per_ch else 12 * L + 7, per_ch=per_ch, bias=bias, bb=10, fn=fn, frac=frac, osc=13 * L + 2)
    src = g.acc if sbuf == "acc" else g.act
    dst = (g.acc if out == "acc" else g.act).copy()
    acc = g.acc.copy()
    for r in range(rows):
        for c in range(cols):
            e = int(g.prm[3 + c // L][c % L]) if per_ch else prmw(g, a["sc"])
            b = s32(int(g.prm[10 + c // L][c % L])) if bias else 0
            x = sat(scale(el(src, 2, 3, r, c), e) + b, 16)
            put(dst, 100, 2, r, c, sat(scale(FN[fn](x, frac), prmw(g, a["osc"])), 16 if out == "acc" else 8))
    stats = g.stat_sum.copy(), g.stat_sq.copy()
    res = run1(g, Instr.make("deqact", **a))
    assert np.array_equal(g.acc if out == "acc" else g.act, dst)
    if out == "act":
        assert np.array_equal(g.acc, acc)                       # deq's int16 value is not written
    assert np.array_equal(g.stat_sum, stats[0]) and np.array_equal(g.stat_sq, stats[1])
    assert res.sfu_elems == rows * cols


@pytest.mark.parametrize("seed", range(4))
def test_deqact_equals_deq_then_act(seed):
    """The fused instruction's result is the pair's (deq into a temporary, act reading it) on random state."""
    rng = np.random.default_rng(seed)
    g1, _ = random_machine_state(20 + seed)
    g1.prm[:] = rng.integers(0, 2**32, g1.prm.shape, dtype=np.uint64)
    g1.prm[:8] = np.array(entries(rng, 8 * L, sh=(0, 30)), np.uint64).reshape(8, L)
    rows, cols = int(rng.integers(1, 9)), int(rng.integers(1, 3 * L))
    common = dict(sbuf=str(rng.choice(["acc", "act"])), s=0, srs=3, rows=rows, cols=cols)
    deq = dict(common, sc=int(rng.integers(0, 8 * L)), per_ch=int(rng.integers(2)), bias=int(rng.integers(2)),
               bb=int(rng.integers(8, 60)))
    if deq["per_ch"]:
        deq["sc"] = int(rng.integers(0, 5))
    act = dict(out=str(rng.choice(["acc", "act"])), d=300, drs=3, fn=str(rng.choice(["none", "silu", "gelu"])),
               frac=int(rng.integers(0, 14)))
    osc = int(rng.integers(0, 8 * L))
    g2 = Golden(M, 64)
    for name in ("act", "acc", "prm"):
        getattr(g2, name)[:] = getattr(g1, name)
    run1(g1, Instr.make("deqact", **deq, **act, osc=osc))
    pair = [Instr.make("sync", q="ld"), Instr.make("deq", **deq, d=200, drs=3),
            Instr.make("act", sbuf="acc", s=200, srs=3, rows=rows, cols=cols, **act, sc=osc), Instr.make("halt")]
    g2.run(pair)
    out = act["out"]
    lines = slice(300, 300 + 3 * rows)
    assert np.array_equal(getattr(g1, out)[lines], getattr(g2, out)[lines])


@pytest.mark.parametrize("out", ["act", "acc"])
def test_geglu(out):
    g, rng = random_machine_state(4)
    rows, cols, frac = 3, L + 2, 10
    g.prm[2, 0] = N.make_scale(int(rng.integers(1 << 8, 1 << 14)), 12)
    a = dict(a=50, ars=2, b=51, brs=2, out=out, d=300, drs=2, rows=rows, cols=cols, frac=frac, sc=2 * L)
    dst = (g.acc if out == "acc" else g.act).copy()
    for r in range(rows):
        for c in range(cols):
            xa, xb = sat(el(g.acc, 50, 2, r, c), 16), sat(el(g.acc, 51, 2, r, c), 16)
            y = rsr(xa * gelu(xb, frac), frac)
            put(dst, 300, 2, r, c, sat(scale(y, prmw(g, 2 * L)), 16 if out == "acc" else 8))
    run1(g, Instr.make("geglu", **a))
    assert np.array_equal(g.acc if out == "acc" else g.act, dst)


@pytest.mark.parametrize("st_mode,fn,out", [("row", "none", "acc"), ("chan", "silu", "act"), ("chan", "gelu", "acc")])
def test_norm_after_statistics(st_mode, fn, out):
    g, rng = random_machine_state(5)
    rows, cols, gsize, gbase = 6, 2 * L, 8, 3
    F = 8
    g.acc[:] = rng.integers(-3 << F, 3 << F, g.acc.shape)
    n = cols if st_mode == "row" else rows * gsize
    # statistics of the input, accumulated by a deq that copies it (scale 1)
    g.prm[0, 0] = N.make_scale(1, 0)
    deq = Instr.make("deq", sbuf="acc", s=0, srs=2, d=0, drs=2, rows=rows, cols=cols, sc=0, st=1, st_clr=1,
                     st_mode=st_mode, gsize=gsize, gbase=gbase)
    nd = 5 * L + 4
    g.prm[5, 4:7] = [round(2**32 / n), 1 << 4, 12 + 12 - F]       # inv_n, eps, nsh (FG = 12, FO = F)
    g.prm[6, :] = rng.integers(-(1 << 13), 1 << 13, L).astype(np.int64) & 0xFFFFFFFF    # gamma
    g.prm[7, :] = rng.integers(-(1 << 13), 1 << 13, L).astype(np.int64) & 0xFFFFFFFF
    g.prm[8, :] = rng.integers(-(1 << 8), 1 << 8, L).astype(np.int64) & 0xFFFFFFFF      # beta
    g.prm[9, :] = rng.integers(-(1 << 8), 1 << 8, L).astype(np.int64) & 0xFFFFFFFF
    g.prm[1, 1] = N.make_scale(1 << 12, 16 if out == "act" else 12)
    norm = Instr.make("norm", s=0, srs=2, out=out, d=400, drs=2, rows=rows, cols=cols, st_mode=st_mode, gsize=gsize,
                      gbase=gbase, nd=nd, gamma=6, beta=8, fn=fn, frac=F, sc=L + 1)
    X = [[sat(el(g.acc, 0, 2, r, c), 16) for c in range(cols)] for r in range(rows)]
    s1, s2 = {}, {}
    for r in range(rows):
        for c in range(cols):
            grp = gbase + (r if st_mode == "row" else c // gsize)
            s1[grp] = s1.get(grp, 0) + X[r][c]
            s2[grp] = s2.get(grp, 0) + X[r][c] ** 2
    dst = (g.acc if out == "acc" else g.act).copy()
    for r in range(rows):
        for c in range(cols):
            grp = gbase + (r if st_mode == "row" else c // gsize)
            mu, rm, re = (int(v) for v in N.norm_params(s1[grp], s2[grp], prmw(g, nd), prmw(g, nd + 1)))
            gam, bet = s32(int(g.prm[6 + c // L][c % L])), s32(int(g.prm[8 + c // L][c % L]))
            z = int(N.norm_q(X[r][c], mu, rm, re, gam, bet, prmw(g, nd + 2)))
            put(dst, 400, 2, r, c, sat(scale(FN[fn](z, F), prmw(g, L + 1)), 16 if out == "acc" else 8))
    g.run([deq, Instr.make("sync", q="ld"), norm, Instr.make("halt")])
    for grp in s1:
        assert g.stat_sum[grp] == s1[grp] and g.stat_sq[grp] == s2[grp]
    got = g.acc if out == "acc" else g.act
    assert np.array_equal(got[400:400 + 2 * rows], dst[400:400 + 2 * rows])
    assert np.array_equal(got, dst)
    assert len(np.unique(got[400:400 + 2 * rows])) > 10       # a real spread of values


def test_softmax():
    g, rng = random_machine_state(6)
    rows, cols = 4, 2 * L + 3
    g.acc[:] = rng.integers(-5000, 5000, g.acc.shape)
    g.acc[60, :] = 2**31 - 1                    # a row with a saturated maximum
    e = N.make_scale(369, 8)
    g.prm[0, 3] = e
    act = g.act.copy()
    for r in range(rows):
        scores = np.array([el(g.acc, 57, 3, r, c) for c in range(cols)])
        p = N.softmax_q(scores, e)
        for c in range(cols):
            put(act, 10, 3, r, c, int(p[c]))
    run1(g, Instr.make("softmax", s=57, srs=3, d=10, drs=3, rows=rows, cols=cols, sc=3))
    assert np.array_equal(g.act, act)


@pytest.mark.parametrize("seed", range(3))
def test_softmax_pre_equals_deq_then_softmax(seed):
    """pre=1 rescales the scores as a deq in place would (saturating at int16), then the SoftMax: the same
    probabilities as the pair, and the scores in acc stay as they were."""
    g, rng = random_machine_state(30 + seed)
    rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 4 * L))
    g.acc[:] = rng.integers(-2**31, 2**31, g.acc.shape) if seed == 2 else rng.integers(-60000, 60000, g.acc.shape)
    g.prm[0, 3] = N.make_scale(369, 8)
    g.prm[0, 5] = N.make_scale(int(rng.integers(1 << 10, 1 << 22)), int(rng.integers(10, 26)))
    g2 = Golden(M, 64)
    for name in ("act", "acc", "prm"):
        getattr(g2, name)[:] = getattr(g, name)
    acc = g.acc.copy()
    a = dict(s=57, srs=4, d=10, drs=4, rows=rows, cols=cols, sc=3)
    run1(g, Instr.make("softmax", **a, pre=1, psc=5))
    g2.run([Instr.make("sync", q="ld"), Instr.make("deq", sbuf="acc", s=57, srs=4, d=57, drs=4, rows=rows, cols=cols,
                                                   sc=5),
            Instr.make("softmax", **a), Instr.make("halt")])
    assert np.array_equal(g.act, g2.act)
    assert np.array_equal(g.acc, acc)
    # and against the element-wise definition
    e1 = prmw(g, 5)
    for r in range(rows):
        x = np.array([sat(scale(el(acc, 57, 4, r, c), e1), 16) for c in range(cols)])
        p = N.softmax_q(x, prmw(g, 3))
        assert [el(g.act, 10, 4, r, c) for c in range(cols)] == [int(v) for v in p]


def test_transpose_and_overlap():
    g, _ = random_machine_state(7)
    rows, cols = L + 3, 7
    act = g.act.copy()
    for r in range(rows):
        for c in range(cols):
            put(act, 300, 2, c, r, el(g.act, 10, 1, r, c))
    run1(g, Instr.make("transpose", s=10, srs=1, d=300, drs=2, rows=rows, cols=cols))
    assert np.array_equal(g.act, act)
    # interleaved but disjoint lines are fine; a shared line is OVERLAP
    run1(g, Instr.make("transpose", s=0, srs=2, d=1, drs=2, rows=4, cols=3))
    with pytest.raises(DeviceError) as e:
        run1(g, Instr.make("transpose", s=0, srs=2, d=6, drs=2, rows=4, cols=3))
    assert (e.value.code, e.value.index) == ("OVERLAP", 1) and "line 6" in str(e.value)


@pytest.mark.parametrize("ins,code", [
    (Instr.make("deq", rows=2, st=1, st_mode="row", gbase=31), "OOB_STAT"),
    (Instr.make("deq", cols=40, st=1, st_mode="chan", gsize=2, gbase=13), "OOB_STAT"),
    (Instr.make("add", rows=1, st=1, gbase=32), "OOB_STAT"),
    (Instr.make("act", out="acc", st=1, st_mode="chan", cols=2 * L, gsize=1, gbase=0), "OOB_STAT"),
    (Instr.make("norm", rows=3, st_mode="row", gbase=30), "OOB_STAT"),
    (Instr.make("deq", sc=64 * L), "OOB_BUF"),                   # scale word past prm
    (Instr.make("deq", per_ch=1, sc=63, cols=L + 1), "OOB_BUF"),  # scale vector's second line
    (Instr.make("deqact", osc=64 * L), "OOB_BUF"),               # output scale word past prm
    (Instr.make("deqact", bias=1, bb=63, cols=L + 1), "OOB_BUF"),  # bias vector's second line
    (Instr.make("norm", nd=64 * L - 2), "OOB_BUF"),              # the descriptor's third word
    (Instr.make("softmax", s=511, srs=1, rows=2), "OOB_BUF"),
    (Instr.make("softmax", pre=1, psc=64 * L), "OOB_BUF"),       # the first scale word past prm
    (Instr.make("transpose", d=511, drs=1, cols=2), "OOB_BUF"),
    (Instr.make("geglu", d=511, drs=1, rows=2, out="act"), "OOB_BUF"),
])
def test_sfu_bounds(ins, code):
    g, _ = random_machine_state(8)
    with pytest.raises(DeviceError) as e:
        run1(g, ins)
    assert (e.value.code, e.value.index) == (code, 1), str(e.value)


def test_failing_instruction_changes_no_statistics():
    g, _ = random_machine_state(9)
    before = g.stat_sum.copy()
    with pytest.raises(DeviceError) as e:
        run1(g, Instr.make("deq", d=511, drs=1, rows=2, st=1, st_clr=1))
    assert e.value.code == "OOB_BUF" and np.array_equal(g.stat_sum, before)


def test_sfu_row_blocks_change_nothing(monkeypatch):
    # one row per block: statistics groups, per-row norm parameters and softmax rows split across blocks
    from sdac.runtime import golden
    monkeypatch.setattr(golden, "_SFU_BLOCK", 1)
    test_deq("acc", 1, 1, "chan")
    test_deq("act", 0, 0, "row")
    test_add_with_broadcast("act", 0)
    test_act("silu", "acc", "acc")
    test_deqact("gelu", "acc", "act", 1, 1)
    test_geglu("act")
    test_norm_after_statistics("row", "none", "acc")
    test_norm_after_statistics("chan", "silu", "act")
    test_softmax()
