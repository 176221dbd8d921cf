"""The float reference of kernels against direct loop implementations."""
import numpy as np

from sdac.compiler import reference as R


def test_conv3x3_matches_loops():
    rng = np.random.default_rng(0)
    for stride, pad in ((1, 1), (2, 1), (1, 0)):
        x = rng.normal(size=(2, 7, 6, 3))
        w = rng.normal(size=(4, 3, 3, 3))
        got = R.conv3x3(x, w, stride, pad)
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        ho, wo = got.shape[1:3]
        ref = np.zeros_like(got)
        for b in range(2):
            for oy in range(ho):
                for ox in range(wo):
                    for co in range(4):
                        ref[b, oy, ox, co] = np.sum(xp[b, oy * stride:oy * stride + 3, ox * stride:ox * stride + 3, :]
                                                    * w[co].transpose(1, 2, 0))
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_group_norm_matches_definition():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 4, 5, 8))
    gamma, beta = rng.normal(size=8), rng.normal(size=8)
    got = R.group_norm(y, 2, 1e-5, gamma, beta)
    for b in range(2):
        for g in range(2):
            blk = y[b, :, :, g * 4:(g + 1) * 4]
            ref = (blk - blk.mean()) / np.sqrt(blk.var() + 1e-5) * gamma[g * 4:(g + 1) * 4] + beta[g * 4:(g + 1) * 4]
            np.testing.assert_allclose(got[b, :, :, g * 4:(g + 1) * 4], ref, atol=1e-12)


def test_fake_quant_saturates_and_rounds():
    x = np.array([-1000.0, -1.26, 0.24, 0.26, 1000.0])
    np.testing.assert_allclose(R.fake_quant(x, 0.5), [-64.0, -1.5, 0.0, 0.5, 63.5])
    assert R.sqnr_db(np.ones(4), np.ones(4)) == float("inf")
