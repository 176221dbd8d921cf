"""The compiler's fast paths against the plain definitions they replace (same results, same errors)."""
import time

import networkx as nx
import numpy as np
import pytest

from sdac.compiler import ir
from sdac.compiler import weights as W
from sdac.compiler.lower import cost
from sdac.compiler.lower.kernels_impl import _conv_blocks, _matmul_blocks, _packed_blocks
from sdac.isa import encoding as E
from sdac.isa.machine import DEFAULT

RNG = np.random.default_rng(11)


def _reference_blocks(qt: np.ndarray, L: int) -> bytes:
    """qt [rows, N] -> blocks of L columns (zero padded), [nblk, rows, L], two lanes per byte, low nibble first."""
    rows, n = qt.shape
    nblk = -(-n // L)
    pad = np.zeros((rows, nblk * L), np.int8)
    pad[:, :n] = qt
    blocks = pad.reshape(rows, nblk, L).transpose(1, 0, 2).reshape(-1, L)
    u = blocks.astype(np.uint8) & 0xF
    return (u[:, 0::2] | (u[:, 1::2] << 4)).tobytes()


@pytest.mark.parametrize("L", [16, 20, 8])
@pytest.mark.parametrize("cout,cin", [(40, 40), (4, 24), (33, 5), (320, 4)])
def test_packed_blocks_conv_and_matmul(L, cout, cin):
    q = RNG.integers(-8, 8, (cout, cin, 3, 3)).astype(np.int8)
    ref = _reference_blocks(np.transpose(q, (2, 3, 1, 0)).reshape(9 * cin, cout), L)
    assert _packed_blocks(q.transpose(0, 2, 3, 1), L).tobytes() == ref
    m = RNG.integers(-8, 8, (cin * 3, cout)).astype(np.int8)          # matmul [K, N]
    assert _packed_blocks(m.T, L).tobytes() == _reference_blocks(m, L)


def _stored(q: np.ndarray) -> W.LazyArray:
    from onnx import TensorProto, helper
    u = q.astype(np.uint8).reshape(-1) & 0xF
    if u.size % 2:
        u = np.append(u, np.uint8(0))
    t = helper.make_tensor("w", TensorProto.INT4, q.shape, (u[0::2] | (u[1::2] << 4)).tobytes(), raw=True)
    return W.LazyArray.of(W.ProtoData(t))


@pytest.mark.parametrize("L", [16, 20])
@pytest.mark.parametrize("cout,cin", [(40, 40), (4, 24), (33, 6), (20, 5), (21, 3), (40, 16), (32, 32)])
def test_blocks_from_stored_int4_bytes(L, cout, cin):
    q = RNG.integers(-8, 8, (cout, cin, 3, 3)).astype(np.int8)
    lz = _stored(q)
    assert W.stored_int4(lz) is not None and W.stored_int4(lz.T) is None
    ref = _reference_blocks(np.transpose(q, (2, 3, 1, 0)).reshape(9 * cin, cout), L)
    assert _conv_blocks(lz, L).tobytes() == ref and _conv_blocks(q, L).tobytes() == ref
    m = RNG.integers(-8, 8, (cin * 3, cout)).astype(np.int8)          # matmul [K, N]
    ref = _reference_blocks(m, L)
    assert _matmul_blocks(_stored(m), L).tobytes() == ref and _matmul_blocks(m, L).tobytes() == ref
    rows = 3 * cin + 7
    pad = np.concatenate([m, np.zeros((7, cout), np.int8)])
    assert _matmul_blocks(_stored(m), L, rows).tobytes() == _reference_blocks(pad, L)


@pytest.mark.parametrize("L", [16, 20])
def test_blocks_from_stored_int4_with_replaced_channels(L):
    """form_kernels requantizes the channels that use -8: a lazy put of their new codes, applied to the bytes."""
    q = RNG.integers(-8, 8, (40, 6, 3, 3)).astype(np.int8)
    chans = np.array([0, 7, 39])
    new = RNG.integers(-7, 8, (3, 6, 3, 3)).astype(np.int8)
    want = q.copy()
    want[chans] = new
    lz = _stored(q).put(0, chans, new)
    assert np.array_equal(np.asarray(lz), want)
    ref = _reference_blocks(np.transpose(want, (2, 3, 1, 0)).reshape(54, 40), L)
    assert W.stored_int4(lz) is not None and _conv_blocks(lz, L).tobytes() == ref
    m = RNG.integers(-8, 8, (24, 40)).astype(np.int8)                   # matmul [K, N], channels along N
    newm = RNG.integers(-7, 8, (3, 24)).astype(np.int8)
    wantm = m.copy()
    wantm[:, chans] = newm.T
    lzm = _stored(m).put(1, chans, newm)
    assert np.array_equal(np.asarray(lzm), wantm)
    assert W.stored_int4(lzm) is not None and _matmul_blocks(lzm, L).tobytes() == _reference_blocks(wantm, L)
    odd = _stored(m[:, :39]).put(1, chans[:2], newm[:2])                 # half bytes per row: values are read
    assert W.stored_int4(odd) is None
    assert _matmul_blocks(odd, L).tobytes() == _reference_blocks(wantm[:, :39], L)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 1001])
def test_has_int4_min_on_packed_bytes(n):
    for _ in range(20):
        b = RNG.integers(0, 256, n).astype(np.uint8)
        b[(b & 0xF) == 8] ^= 1
        b[(b >> 4) == 8] ^= 0x10
        if RNG.random() < 0.5:
            b[RNG.integers(n)] = RNG.choice([0x08, 0x80, 0x88, 0x18, 0x8F])
        nib = np.stack([b & 0xF, b >> 4], 1)
        assert W.has_int4_min(b) == bool((nib == 8).any())


def test_int4_may_hold_min_only_for_stored_int4_views():
    from onnx import TensorProto, helper
    codes = np.array([1, -7, 3, 0], np.int8)
    packed = (codes.astype(np.uint8) & 0xF)[0::2] | ((codes.astype(np.uint8) & 0xF)[1::2] << 4)
    t = helper.make_tensor("w", TensorProto.INT4, [2, 2], packed.tobytes(), raw=True)
    lz = W.LazyArray.of(W.ProtoData(t))
    assert W.int4_may_hold_min(lz.T) is False
    assert np.array_equal(np.asarray(lz), codes.reshape(2, 2))
    t8 = helper.make_tensor("w", TensorProto.INT4, [2, 2], bytes([0x81, 0x00]), raw=True)
    assert W.int4_may_hold_min(W.LazyArray.of(W.ProtoData(t8))[0:1]) is True
    assert W.int4_may_hold_min(lz.map(lambda a: a)) is None           # a function may change the values
    assert W.int4_may_hold_min(W.LazyArray.of(codes)) is None         # not stored int4: read the values


def _random_graph(n: int, cyclic: bool):
    g = nx.MultiDiGraph()
    orders = RNG.permutation(n)
    for i in range(n):
        g.add_node(f"n{i}", order=int(orders[i]), op="X")
    for _ in range(2 * n):
        a, b = sorted(RNG.integers(0, n, 2))
        if a != b:
            g.add_edge(f"n{a}", f"n{b}")
    if cyclic:
        g.add_edge(f"n{n - 1}", "n0")
        g.add_edge("n0", f"n{n - 1}")
    return g


def test_topological_order_is_networkx_lexicographical():
    for n in (1, 5, 40, 200):
        g = _random_graph(n, cyclic=False)
        want = list(nx.lexicographical_topological_sort(g, key=lambda v: g.nodes[v]["order"]))
        assert ir.topological_order(g) == want
        assert ir.topological_order(_random_graph(n + 1, cyclic=True)) is None


def _program():
    from sdac.compiler import kernels as K
    from sdac.compiler.calibrate import calibrate_absmax
    from sdac.compiler.lower import lower
    x = K.Act("x", (1, 6, 6, 24), np.full(1, 0.05, np.float32))
    y = K.Act("y", (1, 6, 6, 40), np.full(1, 0.05, np.float32))
    w = K.Weights(RNG.integers(-7, 8, (40, 24, 3, 3)).astype(np.int8), np.full(40, 0.01, np.float32))
    kg = K.KernelGraph([K.Kernel("c", "conv3x3", [x], [K.Norm("gn", 4, 1e-5, np.ones(40), np.zeros(40)),
                                                          K.Emit(y)], weights=w)], [x], [y])
    calibrate_absmax(kg, [{"x": RNG.normal(0, 1, x.shape)}])
    return lower(kg, DEFAULT).instrs


def test_fast_encoder_matches_checked_encoder():
    prog = _program()
    assert len({i.op for i in prog}) >= 5
    for ins in prog:
        assert E._encode_fast(ins) == E._encode_checked(ins)
        assert E.decode(E.encode(ins)) == ins


@pytest.mark.parametrize("change", [dict(rows=0), dict(rows=1 << 16), dict(rows=True), dict(rows=np.int64(3)),
                                    dict(rows="3"), dict(out="wgt"), dict(out=1), dict(out=True), dict(out=7)])
def test_fast_encoder_defers_to_the_checked_one(change):
    ins = next(i for i in _program() if i.op == "norm")
    bad = ins.replace(**change)
    try:
        want = E._encode_checked(bad)
    except E.EncodeError as e:
        with pytest.raises(E.EncodeError) as got:
            E.encode(bad)
        assert str(got.value) == str(e)
    else:
        assert E.encode_int(bad) == want


def test_encoder_rejects_a_token_for_its_own_queue():
    ins = next(i for i in _program() if i.op == "norm")
    with pytest.raises(E.EncodeError, match="own queue"):
        E.encode(ins.replace(pop={"sfu"}))
    with pytest.raises(E.EncodeError, match="own queue"):
        E.encode(ins.replace(pop=frozenset({"sfu"})))


def _best_rows_plain(m, limit, total_rows, work_of, granule):
    limit = max(1, min(limit, total_rows))
    costs = {}
    for r in sorted({limit, *range(granule, limit + 1, granule)}):
        tiles = [work_of(min(r, total_rows - r0)) for r0 in range(0, total_rows, r)]
        total = 0.0
        for w in tiles:
            total += max(cost.tile_cycles(m, w)) + w.instrs * m.instr_overhead
        first, last = cost.tile_cycles(m, tiles[0]), cost.tile_cycles(m, tiles[-1])
        lead = first[0] if tiles[0].lead_bytes is None else tiles[0].lead_bytes / m.dma_bytes_per_cycle + m.dma_latency
        costs[r] = total + lead + last[2]
    # the tallest tile whose estimate is within TIE of the lowest
    r = max(r for r, c in costs.items() if c <= min(costs.values()) * (1 + cost.TIE))
    return r, costs[r]


def test_best_rows_memo_is_the_plain_search():
    m = DEFAULT
    for _ in range(30):
        k, n, fixed = int(RNG.integers(8, 900)), int(RNG.integers(8, 900)), int(RNG.integers(0, 5000))

        def work(r):
            return cost.TileWork(r, n, r * k * n, r * k + fixed, r * n, 4, array=cost.mm_cycles(m, r, n, k),
                                 lead_bytes=r * k)
        total = int(RNG.integers(1, 3000))
        limit = int(RNG.integers(1, 600))
        assert cost.best_rows(m, limit, total, work, m.tile_m) == _best_rows_plain(m, limit, total, work, m.tile_m)


@pytest.mark.parametrize("spill,thread_from", [(500, 0), (500, 300), (1 << 20, 0), (500, 1 << 20)])
def test_data_image_writer_thread_keeps_order_and_reports_failures(spill, thread_from):
    import zlib

    from sdac.bundle import DataImage, SpilledData
    parts = [bytes([i]) * (100 + 37 * i) for i in range(30)]
    img = DataImage(spill=spill, thread_from=thread_from)
    for i, p in enumerate(parts):
        if i % 2:
            img += p
        else:
            img.append(len(p), lambda p=p: np.frombuffer(p, np.uint8))
    assert len(img) == sum(map(len, parts))
    assert (img._writer is not None) == (thread_from <= max(map(len, parts)))
    data = img.finish()
    assert isinstance(data, SpilledData) == (spill < len(img)) and bytes(data) == b"".join(parts)
    if isinstance(data, SpilledData):
        assert data.crc == zlib.crc32(b"".join(parts))
    assert img.cpu > 0
    # the CPU time counts the parts' own making (a part that burns CPU shows), on whichever thread made it
    busy = DataImage(spill=spill, thread_from=thread_from)

    def burn():
        t = time.thread_time()
        while time.thread_time() - t < 0.05:
            pass
        return bytes(400)
    busy.append(400, burn)
    busy.finish()
    assert busy.cpu >= 0.05
    bad = DataImage(spill=10, thread_from=thread_from)
    bad += bytes(20)

    def fail():
        raise OSError("weights file vanished")
    with pytest.raises(OSError, match="vanished"):     # at once (inline) or from finish() (writer thread)
        bad.append(5, fail)
        bad.finish()


@pytest.mark.parametrize("shape,axis", [((6, 4, 3, 3), 0), ((12, 10), 1), ((5, 3, 3, 3), 0), ((6, 8), 0),
                                        ((4, 7), 1), ((3, 3, 4, 2), 2)])
def test_int4_channels_from_bytes(shape, axis):
    q = RNG.integers(-7, 8, shape).astype(np.int8)
    np.moveaxis(q, axis, 0)[[1, 3]] = np.where(RNG.random(np.moveaxis(q, axis, 0)[[1, 3]].shape) < 0.2, -8, 3)
    lz = _stored(q)
    got = W.int4_min_channels(lz, axis)
    if axis not in (0, q.ndim - 1) or (q.size // shape[0]) % 2 or (axis and shape[-1] % 2):
        assert got is None
        return
    want = (np.moveaxis(q, axis, 0).reshape(shape[axis], -1) == -8).any(axis=1)
    assert np.array_equal(got, want) and want.any()
    chans = np.array([0, 1, 3])
    assert np.array_equal(W.int4_channel_codes(lz, axis, chans), np.take(q, chans, axis))


def test_scale_entries_equal_scale_entry_elementwise():
    """The vectorized scale entries (frexp) equal the scalar definition (log2), powers of two and their
    neighbours, the 2^-40 shift limit and rounding ties included; bad factors raise CompileError."""
    from sdac.compiler.lower.fixed import scale_entries, scale_entry
    from sdac.errors import CompileError
    rng = np.random.default_rng(3)
    p2 = 2.0 ** np.arange(-64, 24)
    v = np.concatenate([np.exp(rng.uniform(-60, 16, 20000)), [0.0, 2.0 ** 24 - 0.75], p2, np.nextafter(p2, 0),
                        np.nextafter(p2, np.inf), (rng.integers(0, 1 << 25, 2000) + 0.5) * 2.0 ** -24])
    want = np.array([scale_entry(x) for x in v], dtype=np.uint32)
    assert np.array_equal(scale_entries(v.reshape(2, -1)).ravel(), want)
    for bad in (-1.0, np.nan, np.inf, 2.0 ** 25):
        with pytest.raises(CompileError, match="factor"):
            scale_entries(np.array([1.0, bad]), "k")


def _tiny_kernel_graph():
    from sdac.compiler import kernels as K
    rng = np.random.default_rng(0)
    x = K.Act("x", (1, 8, 8, 40), np.full(1, 0.05, np.float32))
    y = K.Act("y", (1, 8, 8, 40), np.full(1, 0.05, np.float32))
    w = K.Weights(rng.integers(-7, 8, (40, 40, 3, 3)).astype(np.int8), np.full(40, 0.01, np.float32))
    return K.KernelGraph([K.Kernel("c1", "conv3x3", [x], [K.Emit(y)], weights=w, main_absmax=1.0)], [x], [y])


def test_verifier_runs_while_the_data_writer_finishes(monkeypatch):
    """compile_model verifies with the DATA image still being written (the verifier reads only its length),
    then gives the bundle its bytes; a VerifyError is raised as it was (not a writer error) and the writer
    is joined either way."""
    from sdac.bundle import DataImage
    from sdac.compiler import driver
    from sdac.compiler import verify as V
    seen = []
    real_verify = V.verify

    def spy(bundle):
        seen.append((type(bundle.data), len(bundle.data)))
        real_verify(bundle)
    monkeypatch.setattr(V, "verify", spy)
    kg = _tiny_kernel_graph()
    monkeypatch.setattr("sdac.compiler.passes.compile_graph", lambda *a, **k: (kg, None))
    monkeypatch.setattr("sdac.compiler.passes.explain.explain", lambda *a: "")
    r = driver.compile_model("tiny.onnx")
    assert seen == [(DataImage, len(r.bundle.data))] and isinstance(r.bundle.data, bytes) and r.bundle.data

    def broken(bundle):
        bundle.data.thread_from = 0         # this part goes to a writer thread, which fails later
        bundle.data.append(3, lambda: (_ for _ in ()).throw(OSError("writer failed too")))
        raise V.VerifyError(5, "race")
    monkeypatch.setattr(V, "verify", broken)
    with pytest.raises(V.VerifyError, match="instruction 5: race") as e:
        driver.compile_model("tiny.onnx")
    assert e.value.exit_code == 3
