"""The exact int8 GEMM path of the golden model (torch._int_mm on VNNI CPUs, runtime/golden.py
_int_backend) gives the plain-loop references of the mm / conv tests, and its guards work: the
self-test rejects a saturating or wrapping GEMM, SDAC_GOLDEN_INT=0 and long reductions fall back.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sdac.runtime import golden as G

HERE = Path(__file__).resolve().parent


def _module(name):
    spec = importlib.util.spec_from_file_location(f"_intgemm_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MM = _module("test_golden_dma_mm")
CONV = _module("test_golden_conv")
needs_int = pytest.mark.skipif(G._int_backend() is None, reason="no exact int8 GEMM here (no VNNI or no torch)")


@pytest.fixture
def every_product_on_int(monkeypatch):
    monkeypatch.setattr(G, "_INT_MIN_MACS", 0)
    calls = []
    fn = G._int_backend()

    def counting(x, w):
        calls.append(x.shape)
        return fn(x, w)
    monkeypatch.setattr(G, "_int_backend_fn", [counting])
    return calls


@needs_int
@pytest.mark.parametrize("wsrc", ["wgt", "act", "act_t"])
@pytest.mark.parametrize("acc", [0, 1])
def test_mm_on_int_path_matches_loops(wsrc, acc, every_product_on_int):
    MM.test_mm_matches_loops(wsrc, acc)
    assert every_product_on_int


@needs_int
def test_int8_extremes_and_wrap_on_int_path(every_product_on_int):
    MM.test_mm_int32_wraps()
    MM.test_mm_large_k_uses_float64_path_exactly()      # k = 1100, all +-128 / 127: exact on int too
    MM.test_mm_overlapping_output_rows_later_row_wins()
    assert len(every_product_on_int) == 3


@needs_int
@pytest.mark.parametrize("case", range(5))
def test_conv_on_int_path_matches_loops(case, every_product_on_int):
    params = [p.values for p in CONV.test_conv_matches_loops.pytestmark[0].args[1]] \
        if hasattr(CONV.test_conv_matches_loops.pytestmark[0].args[1][0], "values") \
        else CONV.test_conv_matches_loops.pytestmark[0].args[1]
    CONV.test_conv_matches_loops(*params[case])
    assert every_product_on_int


@needs_int
def test_conv_large_cin_on_int_path(every_product_on_int):
    CONV.test_conv_large_cin_float64_path()
    assert every_product_on_int


@needs_int
def test_backend_exact_on_random_and_extreme_operands():
    fn = G._int_backend()
    rng = np.random.default_rng(1)
    for m, k, n in ((1, 1, 1), (3, 7, 5), (65, 129, 33), (300, 2880, 40), (8, G._INT_MAX_K, 3)):
        for x, w in ((rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))),
                     (np.full((m, k), -128), np.full((k, n), -128)),
                     (rng.choice([-128, 127], (m, k)), rng.choice([-128, 127], (k, n))),
                     (rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (k, n)))):
            x, w = x.astype(np.int8), w.astype(np.int8)
            got = fn(x[:, ::1], w)
            assert got.dtype == np.int32
            assert np.array_equal(got, x.astype(np.float64) @ w.astype(np.float64)), (m, k, n)
    # strided / read-only operands (buffer views) are accepted
    x = rng.integers(-128, 128, (10, 64)).astype(np.int8)
    x.flags.writeable = False
    w = rng.integers(-128, 128, (40, 64)).astype(np.int8).T
    assert np.array_equal(fn(x[::2], w), x[::2].astype(np.int64) @ w.astype(np.int64))


def test_selftest_rejects_saturating_or_wrapping_gemms():
    def exact(x, w):
        return (x.astype(np.int64) @ w.astype(np.int64)).astype(np.int32)

    def saturating(x, w):       # vpmaddubsw-like: pairs of (x + 128) * w saturate to int16
        u, w = x.astype(np.int64) + 128, w.astype(np.int64)
        k = u.shape[1] // 2 * 2
        pairs = np.clip(u[:, 0:k:2, None] * w[None, 0:k:2] + u[:, 1:k:2, None] * w[None, 1:k:2], -32768, 32767)
        s = pairs.sum(axis=1) + (u[:, k:] @ w[k:]) - 128 * w.sum(axis=0)
        return s.astype(np.int32)

    def float32_gemm(x, w):     # rounds once sums pass 2**24
        return (x.astype(np.float32) @ w.astype(np.float32)).astype(np.int32)

    assert G._int_selftest(exact)
    assert not G._int_selftest(saturating)
    assert not G._int_selftest(float32_gemm)


def test_int_path_guards(monkeypatch):
    # long reductions and small products take the float path; SDAC_GOLDEN_INT=0 turns the backend off
    monkeypatch.setattr(G, "_int_backend_fn", [lambda x, w: None])
    assert not G._int_path(1 << 30, G._INT_MAX_K + 1)
    assert not G._int_path(G._INT_MIN_MACS - 1, 10)
    assert G._int_path(G._INT_MIN_MACS, G._INT_MAX_K)
    assert G._INT_MAX_K * 255 * 255 < 2**31 <= (G._INT_MAX_K + 1) * 255 * 255
    monkeypatch.setattr(G, "_int_backend_fn", [])
    monkeypatch.setenv("SDAC_GOLDEN_INT", "0")
    assert G._int_backend() is None and not G._int_path(1 << 30, 100)
    monkeypatch.setattr(G, "_int_backend_fn", [])
    monkeypatch.delenv("SDAC_GOLDEN_INT")
    monkeypatch.setattr(G, "_cpu_has_vnni", lambda: False)
    assert G._int_backend() is None
    # prepare_backends decides once, up front, what the first large product would have decided
    monkeypatch.setattr(G, "_int_backend_fn", [])
    assert G.prepare_backends() is False and G._int_backend_fn == [None]
    monkeypatch.setattr(G, "_int_backend_fn", [lambda x, w: None])
    assert G.prepare_backends() is True


def test_float_path_when_the_backend_is_off(monkeypatch):
    # the same mm / conv references with the integer backend unavailable
    monkeypatch.setattr(G, "_INT_MIN_MACS", 0)
    monkeypatch.setattr(G, "_int_backend_fn", [None])
    MM.test_mm_matches_loops("wgt", 1)
    CONV.test_conv_large_cin_float64_path()


@needs_int
def test_backend_reads_degenerate_strides():
    # one-row views with row stride 0 (mm with ars = 0, m = 1), one-column slices of wider blocks
    fn = G._int_backend()
    act = np.zeros(200, dtype=np.int8)
    act[:3] = [127, -128, 5]
    for shape, strides in (((1, 1), (0, 1)), ((1, 3), (0, 1)), ((1, 3), (40, 1)), ((3, 1), (20, 1))):
        x = np.ndarray(shape, np.int8, buffer=act, strides=strides)
        w = np.full((20, 4), 7, dtype=np.int8)[:shape[1], :1]
        assert np.array_equal(fn(x, w), x.astype(np.int64) @ w.astype(np.int64)), (shape, strides)


@needs_int
@pytest.mark.parametrize("n", [1, 20, 32, 33, 40, 47, 48, 63, 64, 65])
def test_backend_widths_padded_or_not(n):
    # widths the backend pads with zero columns (33..63) and the others give the same exact products
    fn = G._int_backend()
    rng = np.random.default_rng(n)
    x = rng.integers(-128, 128, (9, 300)).astype(np.int8)
    w = rng.integers(-128, 128, (300, n)).astype(np.int8)
    got = fn(x, w)
    assert got.shape == (9, n) and np.array_equal(got, x.astype(np.int64) @ w.astype(np.int64))
    assert G._int_width(n) % 16 == 0 or not 32 < n < 64
