"""load / store / setstep / mm of the golden model against plain-loop references."""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.runtime import golden as G

M = dataclasses.replace(DEFAULT, act_lines=4096, wgt_lines=4096, acc_lines=2048, prm_lines=64, stat_groups=64)
L = M.lanes
LB = {"act": L, "wgt": L // 2, "acc": 4 * L, "prm": 4 * L}


def run(g, *instrs, step=0):
    return g.run([*instrs, Instr.make("halt")], step=step)


def ref_decode_line(buf, b):
    """One DRAM line (bytes) -> list of L ints, written out element by element."""
    if buf == "act":
        return [v - 256 if v > 127 else v for v in b]
    if buf == "wgt":
        out = []
        for byte in b:
            for nib in (byte & 15, byte >> 4):
                out.append(nib - 16 if nib > 7 else nib)
        return out
    words = [int.from_bytes(bytes(b[4 * i:4 * i + 4]), "little") for i in range(L)]
    if buf == "acc":
        return [w - 2**32 if w >= 2**31 else w for w in words]
    return words


def ref_encode_line(buf, vals):
    vals = [int(v) for v in vals]
    if buf == "act":
        return [v & 255 for v in vals]
    if buf == "wgt":
        return [(vals[2 * j] & 15) | ((vals[2 * j + 1] & 15) << 4) for j in range(L // 2)]
    out = []
    for v in vals:
        out += list((int(v) & 0xFFFFFFFF).to_bytes(4, "little"))
    return out


@pytest.mark.parametrize("buf", ["act", "wgt", "acc", "prm"])
def test_load_3d_strided_matches_loops(buf):
    rng = np.random.default_rng(1)
    g = G.Golden(M, 1 << 16)
    g.dram[:] = rng.integers(0, 256, g.dram.size)
    f = dict(buf=buf, dram=100, sram=7, run=3, ny=2, dy=5 * LB[buf], sy=4, nz=3, dz=13 * LB[buf] + 1, sz=9)
    before = g._bufs[buf].copy()
    res = run(g, Instr.make("load", **f))
    ref = before.copy()
    for z in range(3):
        for y in range(2):
            for i in range(3):
                a = 100 + z * f["dz"] + y * f["dy"] + i * LB[buf]
                ref[7 + z * 9 + y * 4 + i] = ref_decode_line(buf, [int(v) for v in g.dram[a:a + LB[buf]]])
    assert np.array_equal(g._bufs[buf], ref)
    assert res.dram_read == 18 * LB[buf] and res.by_op["load"] == 1 and res.by_queue["ld"] == 1


def test_load_stride_zero_replicates_and_later_lines_win():
    g = G.Golden(M, 4096)
    g.dram[:] = np.arange(4096) % 251
    # sy = 0: three runs land on the same lines; the last (y = 2) wins.
    run(g, Instr.make("load", buf="act", dram=0, sram=10, run=2, ny=3, dy=2 * L, sy=0, nz=1))
    exp = (np.arange(4 * L, 6 * L) % 251).astype(np.uint8).view(np.int8).reshape(2, L)
    assert np.array_equal(g.act[10:12], exp)
    # dy = 0: one DRAM row broadcast to several buffer lines (nearest upsampling).
    run(g, Instr.make("load", buf="act", dram=L, sram=20, run=1, ny=4, dy=0, sy=1, nz=1))
    row = (np.arange(L, 2 * L) % 251).astype(np.uint8).view(np.int8)
    assert all(np.array_equal(g.act[20 + i], row) for i in range(4))


def test_load_zero_does_not_read_dram_and_ignores_its_bounds():
    g = G.Golden(M, 64)
    g.acc[:] = 5
    run(g, Instr.make("load", buf="acc", zero=1, dram=1 << 30, sram=3, run=2, ny=1, nz=2, sz=10))
    assert (g.acc[[3, 4, 13, 14]] == 0).all() and (g.acc[[2, 5, 12, 15]] == 5).all()


def test_step_relative_load_imm_and_csr():
    g = G.Golden(M, 8192)
    bank = 3 * L
    for s in range(4):
        g.dram[1000 + s * bank:1000 + (s + 1) * bank] = s + 1
    prog = [Instr.make("setstep", src="csr", bank=bank),
            Instr.make("load", buf="act", step=1, dram=1000, sram=0, run=3),
            Instr.make("setstep", src="imm", step=1, bank=bank),
            Instr.make("load", buf="act", step=1, dram=1000, sram=3, run=1)]
    run(g, *prog, step=2)
    assert (g.act[0:3] == 3).all() and (g.act[3] == 2).all()
    run(g, *prog, step=3)
    assert (g.act[0:3] == 4).all()
    with pytest.raises(DeviceError) as e:          # step 200 is outside DRAM
        run(g, *prog, step=200)
    assert e.value.code == "OOB_DRAM" and e.value.index == 1


@pytest.mark.parametrize("buf", ["act", "wgt", "acc", "prm"])
def test_store_matches_loops_and_overlapping_dram_later_wins(buf):
    rng = np.random.default_rng(2)
    g = G.Golden(M, 1 << 14)
    lo, hi = {"act": (-128, 128), "wgt": (-8, 8), "acc": (-2**31, 2**31), "prm": (0, 2**32)}[buf]
    g._bufs[buf][:] = rng.integers(lo, hi, g._bufs[buf].shape)
    g.dram[:] = 0xAA
    # dy smaller than a run: runs overlap in DRAM, the later one wins byte by byte.
    f = dict(buf=buf, dram=5, sram=2, run=3, ny=3, dy=2 * LB[buf] + 1, sy=7, nz=2, dz=11 * LB[buf], sz=30)
    ref = g.dram.copy()
    run(g, Instr.make("store", **f))
    for z in range(2):
        for y in range(3):
            for i in range(3):
                a = 5 + z * f["dz"] + y * f["dy"] + i * LB[buf]
                ref[a:a + LB[buf]] = ref_encode_line(buf, g._bufs[buf][2 + z * 30 + y * 7 + i])
    assert np.array_equal(g.dram, ref)


def test_wgt_roundtrip_edge_values():
    g = G.Golden(M, 4096)
    vals = np.array([-8, 7, -7, 0, -1, 1, 3, -4] * (L // 4))[:L * 2].reshape(2, L)
    g.wgt[0:2] = vals
    run(g, Instr.make("store", buf="wgt", dram=0, sram=0, run=2))
    run(g, Instr.make("load", buf="wgt", dram=0, sram=10, run=2))
    assert np.array_equal(g.wgt[10:12], vals)
    assert g.dram[0] == ((-8) & 15) | (7 << 4)


# ---------------------------------------------------------------- mm

def ref_mm(g, a, ars, wsrc, w, ws, c, crs, m, n, k, acc):
    """The spec's formula, element by element (small sizes only)."""
    C = g.acc.copy()
    for i in range(m):
        for nn in range(n):
            s = 0
            for j in range(k):
                av = int(g.act[a + i * ars + j // L][j % L])
                if wsrc == "wgt":
                    wv = int(g.wgt[w + (nn // L) * ws + j][nn % L])
                elif wsrc == "act":
                    wv = int(g.act[w + j * ws + nn // L][nn % L])
                else:
                    wv = int(g.act[w + nn * ws + j // L][j % L])
                s += av * wv
            line, lane = c + i * crs + nn // L, nn % L
            old = int(C[line][lane]) if acc else 0
            C[line][lane] = ((old + s + 2**31) % 2**32) - 2**31
    return C


@pytest.mark.parametrize("wsrc", ["wgt", "act", "act_t"])
@pytest.mark.parametrize("acc", [0, 1])
def test_mm_matches_loops(wsrc, acc):
    rng = np.random.default_rng(3)
    g = G.Golden(M, 64)
    g.act[:] = rng.choice(np.array([-128, 127, -7, 7, 0, 1, -1, 55], dtype=np.int8), g.act.shape)
    g.wgt[:] = rng.choice(np.array([-8, 7, -7, 0, 1, -1], dtype=np.int8), g.wgt.shape)
    g.acc[:] = rng.integers(-2**31, 2**31, g.acc.shape)
    m, n, k = 5, L + 3, L + 7            # partial lines in n and k
    f = dict(a=3, ars=2, wsrc=wsrc, w=100, ws={"wgt": k + 2, "act": 2, "act_t": 3}[wsrc], c=40, crs=3,
             m=m, n=n, k=k, acc=acc)
    ref = ref_mm(g, **f)
    res = run(g, Instr.make("mm", **f))
    assert np.array_equal(g.acc, ref)          # padding lanes and other lines untouched
    assert res.macs == m * n * k


def test_mm_int32_wraps():
    g = G.Golden(M, 64)
    g.act[0, 0] = 127
    g.wgt[0, 0] = 7
    g.acc[0, 0] = 2**31 - 100
    run(g, Instr.make("mm", a=0, w=0, ws=1, c=0, m=1, n=1, k=1, acc=1))
    assert g.acc[0, 0] == 2**31 - 100 + 889 - 2**32


def test_mm_large_k_uses_float64_path_exactly():
    # int8 x int8 with k = 1100: |sum| up to 128*128*1100 > 2**24, so the float64 BLAS path runs.
    rng = np.random.default_rng(4)
    g = G.Golden(M, 64)
    k, m, n = 1100, 3, 4
    kl = -(-k // L)
    A = rng.choice(np.array([-128, 127], dtype=np.int8), (m, kl * L))
    Bt = rng.choice(np.array([-128, 127], dtype=np.int8), (n, kl * L))
    A[0] = -128
    Bt[0] = -128        # C[0, 0] = 128 * 128 * k > 2**24
    g.act[0:m * kl] = A.reshape(-1, L)
    g.act[1000:1000 + n * kl] = Bt.reshape(-1, L)
    run(g, Instr.make("mm", a=0, ars=kl, wsrc="act_t", w=1000, ws=kl, c=0, crs=1, m=m, n=n, k=k))
    exact = A[:, :k].astype(np.int64) @ Bt[:, :k].astype(np.int64).T
    assert np.array_equal(g.acc[0:m, :n], exact)
    assert np.abs(exact).max() >= 2**24  # the case really needs more than float32


def test_imatmul_paths_are_exact():
    rng = np.random.default_rng(5)
    for lo, k in ((8, 100), (2**13, 200), (2**30, 50)):       # float32, float64, int64 paths
        x = rng.integers(-lo, lo, (7, k))
        w = rng.integers(-lo, lo, (k, 5))
        got = G._imatmul(x, w, lo, lo, k)
        ref = np.array([[sum(int(x[i, j]) * int(w[j, c]) for j in range(k)) for c in range(5)] for i in range(7)],
                       dtype=object)
        assert all(int(got[i, c]) % 2**32 == ref[i, c] % 2**32 for i in range(7) for c in range(5))
        if lo < 2**30:
            assert np.array_equal(got, ref.astype(np.int64))


@pytest.mark.parametrize("what,field,code", [
    ("A", dict(a=4090, ars=1, m=10), "OOB_BUF"),
    ("W", dict(w=4095, ws=1, k=2), "OOB_BUF"),
    ("C", dict(c=2047, crs=1, m=2), "OOB_BUF"),
])
def test_mm_bounds(what, field, code):
    g = G.Golden(M, 64)
    args = dict(a=0, w=0, ws=1, c=0, m=1, n=1, k=1)
    args.update(field)
    with pytest.raises(DeviceError) as e:
        run(g, Instr.make("sync", q="ld"), Instr.make("mm", **args))
    assert e.value.code == code and e.value.index == 1 and what in str(e.value)


def test_dma_bounds_errors_name_the_instruction():
    g = G.Golden(M, 1000)
    cases = [
        (Instr.make("load", buf="act", dram=1000 - L + 1, sram=0), "OOB_DRAM"),
        (Instr.make("load", buf="act", dram=0, sram=0, run=2, ny=2, dy=L, nz=2, dz=1000 - 3 * L + 1), "OOB_DRAM"),
        (Instr.make("load", buf="prm", dram=0, sram=63, run=2), "OOB_BUF"),
        (Instr.make("load", buf="act", dram=0, sram=0, nz=3, sz=2048, dz=0), "OOB_BUF"),
        (Instr.make("store", buf="act", dram=1000 - L, sram=4095, run=2, dy=0), "OOB_BUF"),
        (Instr.make("store", buf="acc", dram=1000 - 4 * L + 1, sram=0), "OOB_DRAM"),
    ]
    for ins, code in cases:
        with pytest.raises(DeviceError) as e:
            run(g, Instr.make("sync", q="cmp"), Instr.make("sync", q="sfu"), ins)
        assert (e.value.code, e.value.index) == (code, 2), ins


def test_mm_speed_256x1280x1280_int4():
    """The figure quoted in docs/golden.md; generous bound so a loaded CI machine passes."""
    import time
    big = dataclasses.replace(DEFAULT, wgt_lines=131072)
    g = G.Golden(big, 64)
    rng = np.random.default_rng(6)
    m, k, n = 256, 1280, 1280
    g.act[:m * k // L] = rng.integers(-128, 128, (m * k // L, L))
    g.wgt[:k * n // L] = rng.integers(-8, 8, (k * n // L, L))
    prog = [Instr.make("mm", a=0, ars=k // L, w=0, ws=k, c=0, crs=n // L, m=m, n=n, k=k), Instr.make("halt")]
    G._int_backend()        # (the one-time import and self-test of the integer GEMM are not the figure)
    t = time.perf_counter()
    g.run(prog)
    assert time.perf_counter() - t < 2.0
    A = g.act[:m * k // L].reshape(m, k).astype(np.float64)
    W = np.moveaxis(g.wgt[:k * n // L].reshape(n // L, k, L), 0, 1).reshape(k, n).astype(np.float64)
    assert np.array_equal(g.acc[:m * n // L].reshape(m, n), A @ W)


@pytest.mark.parametrize("seed", range(4))
def test_dma_random_strides_including_overlap(seed):
    """Random 3-D loads and stores, strides from 0 (replication, overlap) up, against the loops."""
    rng = np.random.default_rng(50 + seed)
    g = G.Golden(M, 1 << 13)
    for it in range(40):
        buf = str(rng.choice(["act", "wgt", "acc", "prm"]))
        B = LB[buf]
        f = dict(buf=buf, run=int(rng.integers(1, 4)), ny=int(rng.integers(1, 4)), nz=int(rng.integers(1, 4)),
                 sy=int(rng.integers(0, 5)), sz=int(rng.integers(0, 9)), dy=int(rng.integers(0, 3 * B)),
                 dz=int(rng.integers(0, 7 * B)), sram=int(rng.integers(0, 40)), dram=int(rng.integers(0, 2000)))
        g.dram[:] = rng.integers(0, 256, g.dram.size)
        lo, hi = {"act": (-128, 128), "wgt": (-8, 8), "acc": (-2**31, 2**31), "prm": (0, 2**32)}[buf]
        g._bufs[buf][:64] = rng.integers(lo, hi, (64, L))
        if it % 2:
            ref = g._bufs[buf].copy()
            for z in range(f["nz"]):
                for y in range(f["ny"]):
                    for i in range(f["run"]):
                        a = f["dram"] + z * f["dz"] + y * f["dy"] + i * B
                        ref[f["sram"] + z * f["sz"] + y * f["sy"] + i] = ref_decode_line(
                            buf, [int(v) for v in g.dram[a:a + B]])
            run(g, Instr.make("load", **f))
            assert np.array_equal(g._bufs[buf], ref), f
        else:
            ref = g.dram.copy()
            for z in range(f["nz"]):
                for y in range(f["ny"]):
                    for i in range(f["run"]):
                        a = f["dram"] + z * f["dz"] + y * f["dy"] + i * B
                        ref[a:a + B] = ref_encode_line(buf, g._bufs[buf][f["sram"] + z * f["sz"] + y * f["sy"] + i])
            run(g, Instr.make("store", **{k: v for k, v in f.items()}))
            assert np.array_equal(g.dram, ref), f


def test_mm_overlapping_output_rows_later_row_wins():
    g = G.Golden(M, 64)
    g.act[0:3, 0] = [1, 2, 3]
    g.wgt[0, 0] = 5
    run(g, Instr.make("mm", a=0, ars=1, w=0, ws=1, c=9, crs=0, m=3, n=1, k=1))
    assert g.acc[9, 0] == 15


def test_sum_bound_keeps_probability_products_on_float32():
    # softmax rows sum to about 127: P @ V over k = 4096 is far below 2**24 although k*127*128 is not.
    P = np.zeros((3, 4096), dtype=np.int8)
    P[:, :200] = 1
    P[:, 5] = 100
    V = np.full((4096, 5), -128, dtype=np.int8)
    assert G._sum_bound(P, V, 127, 128, 4096) == (199 + 100) * 128
    assert G._sum_bound(np.full((2, 2000), -128, np.int8), np.full((2000, 2), -128, np.int8), 128, 128, 2000) \
        == 2000 * 128 * 128


@pytest.mark.parametrize("backend", ["ort", "numpy"])
def test_float_matmul_backends_exact_at_the_bound(backend, monkeypatch):
    # products of +-128 and +-127 sums just below 2**24 (float32) and far above (float64): exact either way.
    monkeypatch.setattr(G, "_ORT_MIN_MACS", 0 if backend == "ort" else 1 << 62)
    rng = np.random.default_rng(9)
    for k, dtype in ((1023, np.float32), (70000, np.float64)):
        x = rng.choice(np.array([-128, 127]), (5, k))
        x[0] = -128
        w = rng.choice(np.array([-128, 127]), (k, 3))
        w[:, 0] = -128
        got = G._fmatmul(x.astype(dtype), w.astype(dtype)).astype(np.int64)
        assert np.array_equal(got, x @ w)
        assert got[0, 0] == 128 * 128 * k


def test_mm_through_onnxruntime_matches_loops(monkeypatch):
    monkeypatch.setattr(G, "_ORT_MIN_MACS", 0)
    test_mm_matches_loops("wgt", 1)
    test_mm_matches_loops("act_t", 0)
