"""The golden model's fast equivalents of isa/numerics.py functions give the spec's values exactly.

Each fast path in runtime/golden.py is compared with the numerics.py function it replaces on random
inputs and on edge inputs (extreme scores, all-equal rows, every scale shift, int32 limits).
"""
import numpy as np
import pytest

from sdac.isa import numerics as N
from sdac.runtime import golden as G

I32 = np.iinfo(np.int32)


def _scales(rng, n):
    """Scale entries: every shift 0..63, multipliers 0, 1, 2**24-1 and random, junk in bits 30-31."""
    sh = np.concatenate([np.arange(64), rng.integers(0, 64, n)])
    mul = np.concatenate([[0, 1, (1 << 24) - 1], rng.integers(0, 1 << 24, sh.size - 3)])
    junk = rng.integers(0, 4, sh.size) << 30
    return [int(j | (s << 24) | m) for s, m, j in zip(sh, mul, junk)]


def _scores(rng, rows, cols):
    kinds = [rng.integers(I32.min, I32.max, (rows, cols), dtype=np.int64, endpoint=True),
             rng.integers(-1000, 1000, (rows, cols)),
             np.full((rows, cols), I32.min), np.full((rows, cols), I32.max),
             rng.choice([I32.min, I32.max, 0, -1, 1], (rows, cols))]
    return [k.astype(np.int32) for k in kinds]


def test_exp_table_matches_numerics():
    u = np.arange(40 << N.EXP_FRAC, dtype=np.int64)
    want = N.rshift_round(N.tables.EXP2[(u & 255)].astype(np.int64), np.minimum(u >> N.EXP_FRAC, 31))
    assert np.array_equal(G._EXP[np.minimum(u, G._EXP.size - 1)], want)


@pytest.mark.parametrize("cols", [1, 3, 64, 77, 320])
def test_softmax_fast_equals_numerics(cols):
    rng = np.random.default_rng(cols)
    for e in _scales(rng, 40):
        for x in _scores(rng, 5, cols):
            want = N.softmax_q(x.astype(np.int64), e)
            got = G.softmax_fast(x, e)
            assert got.dtype == np.int64
            assert np.array_equal(got, want), (cols, hex(e))


def test_softmax_fast_realistic_scales():
    # scores of a QK^T product and the compiler's typical scale range: probabilities spread over the row
    rng = np.random.default_rng(7)
    for sh in range(8, 40):
        for mul in (1, 255, 4095, 1 << 20, (1 << 24) - 1):
            x = rng.integers(-(1 << 20), 1 << 20, (16, 257)).astype(np.int32)
            e = (sh << 24) | mul
            assert np.array_equal(G.softmax_fast(x, e), N.softmax_q(x.astype(np.int64), e)), (sh, mul)


@pytest.mark.parametrize("B", [10, 9, 16])
def test_wgt_decode_equals_nibble_unpacking(B):
    # every byte value, contiguous and strided (DRAM views), even and odd line widths
    rng = np.random.default_rng(B)
    raw = rng.integers(0, 256, (3, 4, 7, B), dtype=np.uint8)
    raw[0, 0, :, :] = np.arange(7 * B).reshape(7, B) % 256
    raw[0, 1].flat[:] = (np.arange(raw[0, 1].size) * 37) % 256
    wide = rng.integers(0, 256, (3, 4, 7, B + 3), dtype=np.uint8)
    for r in (raw, raw[:, ::2], wide[..., 1:B + 1], np.arange(256, dtype=np.uint8).reshape(1, 1, -1, 2)[..., :1]):
        got = G._decode_lines("wgt", r, 2 * r.shape[-1])
        lo = (r & 0xF).astype(np.int64)
        hi = (r >> 4).astype(np.int64)
        want = np.empty((*r.shape[:-1], 2 * r.shape[-1]), dtype=np.int64)
        want[..., 0::2] = np.where(lo >= 8, lo - 16, lo)     # lane 2j: low nibble, two's complement
        want[..., 1::2] = np.where(hi >= 8, hi - 16, hi)
        assert got.dtype == np.int8 and np.array_equal(got, want)


def test_act_and_acc_decode_are_views_of_the_bytes():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (2, 3, 5, 40), dtype=np.uint8)
    assert np.array_equal(G._decode_lines("act", raw[:, ::2], 40), raw[:, ::2].astype(np.int8))
    acc = G._decode_lines("acc", raw[:, ::2], 10)
    assert acc.dtype == np.int32
    assert np.array_equal(acc, np.ascontiguousarray(raw[:, ::2]).view("<i4").astype(np.int64))


def _ints(rng, shape, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi, shape, endpoint=True)
    v.flat[:4] = [lo, hi, 0, -1]
    return v.astype(np.int64)


def test_scale_inplace_equals_apply_scale():
    rng = np.random.default_rng(11)
    x = _ints(rng, (6, 70), 33)               # |x| < 2**32 (the bound numerics.py states)
    for e in _scales(rng, 30):
        assert np.array_equal(G.scale_inplace(x.copy(), e), N.apply_scale(x, e)), hex(e)
        assert np.array_equal(G.scale_inplace(x.copy(), np.uint32(e)), N.apply_scale(x, e)), hex(e)
    vec = np.array(_scales(rng, 6)[:70], dtype=np.int64)
    assert np.array_equal(G.scale_inplace(x.copy(), vec), N.apply_scale(x, vec))
    assert np.array_equal(G._clip(x.copy(), 16), N.sat16(x)) and np.array_equal(G._clip(x.copy(), 8), N.sat8(x))


def _mutations(rng, ins):
    from sdac.isa.encoding import Instr
    args = dict(ins.args)
    yield ins
    for name, v in args.items():
        for bad in (-1, 1 << 40, True, 1.0, "x", None, str(v)):
            yield Instr(ins.op, {**args, name: bad}, ins.pop, ins.push)
    if args:
        name = next(iter(args))
        yield Instr(ins.op, {k: v for k, v in args.items() if k != name}, ins.pop, ins.push)
    yield Instr(ins.op, {**args, "bogus": 0}, ins.pop, ins.push)
    for toks in (frozenset({"ld"}), frozenset({"sfu"}), frozenset({"st", "cmp"}), frozenset({"nope"}), frozenset({1})):
        yield Instr(ins.op, args, toks, ins.push)
        yield Instr(ins.op, args, ins.pop, toks)
    yield Instr("nope", args, ins.pop, ins.push)


def test_surely_valid_implies_encode_int_accepts():
    from sdac.isa.encoding import EncodeError, Instr, encode_int
    from sdac.isa.spec import SPEC
    rng = np.random.default_rng(2)
    accepted = 0
    for ispec in SPEC.instrs:
        for _ in range(5):
            vals = {}
            for f in ispec.fields:
                if f.kind == "enum":
                    members = list(SPEC.enums[f.enum].items())
                    n, c = members[rng.integers(len(members))]
                    vals[f.name] = n if rng.random() < 0.7 else c
                else:
                    vals[f.name] = int(rng.integers(f.min, f.max, endpoint=True))
            ins = Instr(ispec.name, vals)
            for m in _mutations(rng, ins):
                try:
                    encode_int(m)
                    ok = True
                except (EncodeError, KeyError, TypeError, AttributeError):
                    ok = False
                if G._surely_valid(m):
                    assert ok, m
                    accepted += 1
            assert G._surely_valid(ins), ins          # valid instructions take the fast path
    assert accepted > len(SPEC.instrs) * 5


@pytest.mark.parametrize("f", [dict(run=37, ny=1, nz=1), dict(run=5, ny=3, dy=77, sy=5, nz=2, dz=1001, sz=15),
                               dict(run=4, ny=3, dy=50, sy=7, nz=1)])
def test_wgt_load_decoded_in_place_matches_loops(f):
    # contiguous destinations take the in-place decode, the last one falls back; same lines, same trace
    import dataclasses
    from sdac.isa import Instr
    from sdac.isa.machine import DEFAULT
    M = dataclasses.replace(DEFAULT, act_lines=64, wgt_lines=512, acc_lines=64, prm_lines=16, stat_groups=8)
    L, B = M.lanes, M.lanes // 2
    rng = np.random.default_rng(4)
    g = G.Golden(M, 1 << 15, trace=True)
    g.dram[:] = rng.integers(0, 256, g.dram.size)
    g.wgt[:] = rng.integers(-8, 8, g.wgt.shape)
    before = g.wgt.copy()
    args = dict(buf="wgt", dram=301, sram=11, **f)
    res = g.run([Instr.make("load", **args), Instr.make("halt")])
    nz, ny, run = f.get("nz", 1), f.get("ny", 1), f["run"]
    for z in range(nz):
        for y in range(ny):
            for i in range(run):
                a = 301 + z * f.get("dz", 0) + y * f.get("dy", 0) + i * B
                line = [v for byte in g.dram[a:a + B] for v in (int(byte) & 15, int(byte) >> 4)]
                before[11 + z * f.get("sz", 0) + y * f.get("sy", 0) + i] = [v - 16 if v >= 8 else v for v in line]
    assert np.array_equal(g.wgt, before)
    assert res.trace[0].lines == {"wgt": nz * ny * run} and res.dram_read == nz * ny * run * B


def _exp_term(z, e):
    """The SoftMax exponent term of scores z below the row maximum, by numerics.py's own steps."""
    u = -N.apply_scale(-np.asarray(z, dtype=np.int64), e)
    return N.rshift_round(N.tables.EXP2[(u & 255).astype(np.intp)].astype(np.int64), np.minimum(u >> N.EXP_FRAC, 31))


def test_softmax_exp_table_matches_numerics():
    rng = np.random.default_rng(12)
    built = 0
    for e in _scales(rng, 60) + [(28 << 24) | 8799346, (29 << 24) | 15375158, (1 << 24) | 1, 5]:
        t = G.softmax_exp_table(e)
        if t is None:        # multiplier 0, or so small that the table would exceed its size limit
            mul, sh = e & 0xFFFFFF, min((e >> 24) & 63, 62)
            assert mul == 0 or ((G._EXP_ZERO_FROM << sh) // mul) > G._SOFTMAX_TABLE_MAX - 2
            continue
        built += 1
        n = t.size
        z = np.concatenate([np.arange(min(n, 5000)), np.arange(max(0, n - 5000), n + 50),
                            rng.integers(0, n + 1000, 2000), [2**31 - 1, 2**32 - 1]])
        assert t[-1] == 0 and np.array_equal(t[np.minimum(z, n - 1)], _exp_term(z, e)), hex(e)
        if n > 1:
            assert t[-2] != 0 or _exp_term(n - 2, e) == 0     # (the table ends where the terms reach 0)
    assert built > 20


@pytest.mark.parametrize("e", [(28 << 24) | 8799346, (40 << 24) | 3, 0, (20 << 24) | 1])
def test_softmax_fast_into_int8_out(e):
    # the table path (first), the shift path (tiny multipliers: no table) and multiplier 0
    rng = np.random.default_rng(13)
    for x in _scores(rng, 7, 300) + [rng.integers(-40000, 40000, (7, 300)).astype(np.int32)]:
        want = N.softmax_q(x.astype(np.int64), e)
        out = np.full(x.shape, -5, dtype=np.int8)
        assert G.softmax_fast(x, e, out) is out and np.array_equal(out, want)
        assert np.array_equal(G.softmax_fast(x, e), want)
    assert (G.softmax_exp_table(e) is None) == (e != (28 << 24) | 8799346)


@pytest.mark.parametrize("mode,gsize", [("row", 1), ("chan", 1), ("chan", 7), ("chan", 40), ("chan", 64)])
def test_stats_add_equals_stats_accumulate(mode, gsize):
    rng = np.random.default_rng(15)
    for rows, cols in ((1, 1), (3, 40), (5, 77), (2, 64)):
        d = _ints(rng, (rows, cols), 16)
        s1, s2 = rng.integers(-1000, 1000, 128), rng.integers(0, 10**6, 128)
        w1, w2 = s1.copy(), s2.copy()
        N.stats_accumulate(w1, w2, d, N.group_index(rows, cols, mode, gsize, 5))
        G.stats_add(s1, s2, d, mode, gsize, 5)
        assert np.array_equal(s1, w1) and np.array_equal(s2, w2)


def test_float_scale_equals_apply_scale_or_declines():
    rng = np.random.default_rng(16)
    used = declined = 0
    for bits in (8, 16, 24, 30, 32):
        x = _ints(rng, (5, 64), bits)
        xmax = int(np.abs(x).max())
        for e in _scales(rng, 40):
            fs = G.FloatScale.of(e, xmax)
            mul, sh = e & 0xFFFFFF, min((e >> 24) & 63, 62)
            assert (fs is None) == (xmax * mul + ((1 << sh) >> 1) >= 2**53)
            if fs is None:
                declined += 1
                continue
            used += 1
            assert np.array_equal(fs.apply(x).astype(np.int64), N.apply_scale(x, e)), hex(e)
            assert np.array_equal(fs.apply(x.astype(np.int32 if bits <= 32 else np.int64)), N.apply_scale(x, e))
        vec = np.array(_scales(rng, 64)[:64], dtype=np.int64)      # per-channel entries
        fs = G.FloatScale.of(vec, xmax)
        if fs is not None:
            assert np.array_equal(fs.apply(x).astype(np.int64), N.apply_scale(x, vec))
    assert used > 100 and declined > 20


def test_int32_deq_of_int8_equals_numerics():
    # every int8 value, every shift, multipliers up to the int32 bound, biases up to int32's edge
    q = np.arange(-128, 128, dtype=np.int8)[None, :]
    rng = np.random.default_rng(5)
    used = 0
    for e in _scales(rng, 300):
        for bias in (0, rng.integers(-1000, 1000, 256), np.full(256, I32.max), np.full(256, I32.min + 1)):
            got = G._int32_scale(e, np.int8, bias)
            if got is None:
                continue
            used += 1
            mul, half, sh = got
            v = np.multiply(q, mul, dtype=np.int32)
            v += half
            v >>= sh
            v += np.asarray(bias, np.int32)
            want = N.sat16(N.apply_scale(q.astype(np.int64), e) + np.asarray(bias, np.int64))
            assert np.array_equal(np.clip(v, -32768, 32767), want), (hex(e), bias)
    assert used > 100
    assert G._int32_scale((31 << 24) | 1, np.int8, 0) is None         # a shift past 30
    assert G._int32_scale(5, np.int16, 0) is None                     # int8 sources only
