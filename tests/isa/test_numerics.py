"""The fixed-point definitions against float references and their integer bounds."""
import numpy as np
import pytest

from sdac.isa import numerics as N, tables


def test_rshift_round_matches_floor_half_up():
    x = np.arange(-1000, 1000)
    for s in range(0, 6):
        assert np.array_equal(N.rshift_round(x, s), np.floor(x / 2**s + 0.5).astype(np.int64))
    assert np.array_equal(N.rshift_round(x, -3), x * 8)
    s = np.array([-2, 0, 1, 3] * 500)
    assert np.array_equal(N.rshift_round(x, s), np.where(s > 0, np.floor(x / 2.0**s + 0.5), x * 2.0**-s).astype(np.int64))


@pytest.mark.parametrize("frac", [4, 8, 12])
def test_hard_activations_within_one_lsb(frac):
    x = np.arange(-2**15, 2**15)
    xr = x / 2**frac
    silu = xr * np.clip(xr + 3, 0, 6) / 6
    alpha = N.GELU_ALPHA_Q10 / 2**10  # the spec's 1.702, in Q10
    assert abs(alpha - 1.702) < 2e-4
    gelu = xr * np.clip(alpha * xr + 3, 0, 6) / 6
    assert np.abs(N.silu_q(x, frac) - silu * 2**frac).max() <= 1.0
    assert np.abs(N.gelu_q(x, frac) - gelu * 2**frac).max() <= 1.0


def test_tables_are_monotone_and_exact_at_ends():
    assert tables.EXP2[0] == 2**15 and np.all(np.diff(tables.EXP2) <= 0)
    assert tables.RSQRT[0] == 2**16 and np.all(np.diff(tables.RSQRT) <= 0)
    assert tables.RECIP[0] == 2**15 and np.all(np.diff(tables.RECIP) <= 0)


def test_rsqrt_relative_error():
    v = np.unique(np.concatenate([np.arange(1, 5000), np.geomspace(1, 2**40, 4000).astype(np.int64)]))
    rm, re = N.rsqrt_q(v)
    approx = rm * 2.0**-20 * 2.0**(-re.astype(float))
    assert np.abs(approx * np.sqrt(v) - 1).max() < 2.5e-3


def test_softmax_close_to_float():
    rng = np.random.default_rng(1)
    s = rng.integers(-30000, 30000, size=(16, 200))
    scale = 4e-4
    e = N.make_scale(int(round(scale * np.log2(np.e) * 256 * 2**22)), 22)
    p = N.softmax_q(s, e)
    z = s * scale
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert p.min() >= 0 and p.max() <= 127
    assert np.abs(p - ref * 127).max() <= 1.0


def test_groupnorm_close_to_float():
    rng = np.random.default_rng(2)
    F, FG, FO = 8, 12, 10
    xq = np.round(rng.normal(3, 5, size=(64, 40)) * 2**F).astype(np.int64)
    s1 = np.zeros(8, np.int64)
    s2 = np.zeros(8, np.int64)
    g = N.group_index(64, 40, "chan", 5, 0)
    N.stats_accumulate(s1, s2, xq, g)
    n = 64 * 5
    mu, rm, re = N.norm_params(s1, s2, round(2**32 / n), round(1e-5 * 2**(2 * F)))
    gamma = np.round(rng.normal(1, 0.3, 40) * 2**FG).astype(np.int64)
    beta = np.round(rng.normal(0, 0.3, 40) * 2**FO).astype(np.int64)
    z = N.norm_q(xq, mu[g], rm[g], re[g], gamma, beta, 12 + FG - FO)
    xr = (xq / 2**F).reshape(64, 8, 5)
    m = xr.mean((0, 2), keepdims=True)
    sd = np.sqrt(xr.var((0, 2), keepdims=True) + 1e-5)
    ref = ((xr - m) / sd).reshape(64, 40) * gamma / 2**FG + beta / 2**FO
    err = np.abs(z - ref * 2**FO)
    assert err.max() <= 1 + 2.5e-3 * np.abs(ref * 2**FO).max()
