"""conv of the golden model against a loop reference of the spec formula."""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import Golden

M = dataclasses.replace(DEFAULT, act_lines=4096, wgt_lines=4096, acc_lines=4096, prm_lines=16, stat_groups=16)
L = M.lanes


def ref_conv(g, f):
    """O per the isa.toml formula: loops over pixels, channels and taps (numpy only for the ci sum)."""
    O = g.acc.copy()
    cin, cout = f["cin"], f["cout"]
    ci = np.arange(cin)
    for oy in range(f["oh"]):
        for ox in range(f["ow"]):
            for co in range(cout):
                s = 0
                for ky in range(3):
                    for kx in range(3):
                        y = oy * f["stride"] + ky - f["pt"]
                        x = ox * f["stride"] + kx - f["pl"]
                        if not (0 <= y < f["ih"] and 0 <= x < f["iw"]):
                            continue
                        iv = g.act[f["i"] + y * f["irs"] + x * f["ips"] + ci // L, ci % L].astype(np.int64)
                        wv = g.wgt[f["w"] + (co // L) * f["wbs"] + (3 * ky + kx) * f["wts"] + ci, co % L]
                        s += int(np.dot(iv, wv.astype(np.int64)))
                line, lane = f["o"] + oy * f["ors"] + ox * f["ops"] + co // L, co % L
                old = int(O[line, lane]) if f["acc"] else 0
                O[line, lane] = (old + s + 2**31) % 2**32 - 2**31
    return O


def conv_fields(cin, cout, ih, iw, stride, pt, pl, oh, ow, acc=0):
    cl, ol = -(-cin // L), -(-cout // L)
    return dict(df="ws", i=5, ips=cl, irs=cl * iw + 1, ih=ih, iw=iw, w=3, wts=cin + 1, wbs=9 * (cin + 1) + 2,
                o=7, ops=ol, ors=ol * ow + 2, oh=oh, ow=ow, cin=cin, cout=cout, stride=stride, pt=pt, pl=pl, acc=acc)


@pytest.mark.parametrize("cin,cout,ih,iw,stride,pt,pl,oh,ow,acc", [
    (3, 5, 6, 5, 1, 1, 1, 6, 5, 0),             # 'same' padding
    (L + 4, L + 1, 7, 6, 2, 1, 1, 4, 3, 1),    # stride 2, partial lines in cin and cout, accumulate
    (4, 3, 5, 5, 1, 0, 0, 3, 3, 0),             # 'valid'
    (2, 2, 4, 4, 3, 2, 0, 3, 2, 0),             # stride 3, more padding, output reaches past the input
    (5, 4, 3, 3, 1, 3, 3, 4, 4, 1),             # padding larger than the kernel reach: zeros only at the start
])
def test_conv_matches_loops(cin, cout, ih, iw, stride, pt, pl, oh, ow, acc):
    rng = np.random.default_rng(cin * 100 + cout)
    g = Golden(M, 64)
    g.act[:] = rng.choice(np.array([-128, 127, -7, 7, 0, 3, -1], dtype=np.int8), g.act.shape)
    g.wgt[:] = rng.choice(np.array([-8, 7, -7, 1, 0], dtype=np.int8), g.wgt.shape)
    g.acc[:] = rng.integers(-2**20, 2**20, g.acc.shape)
    f = conv_fields(cin, cout, ih, iw, stride, pt, pl, oh, ow, acc)
    ref = ref_conv(g, f)
    res = g.run([Instr.make("conv", **f), Instr.make("halt")])
    assert np.array_equal(g.acc, ref)
    assert res.macs == oh * ow * cout * 9 * cin


def test_conv_large_cin_float64_path():
    # The centre pixel of a 3x3 input with 'same' padding sums 9 * cin products of 128 * 8:
    # 9 * 1840 * 1024 >= 2**24, so the bound forces the float64 path; all extreme values.
    cin, cout = 1840, 2
    g = Golden(dataclasses.replace(M, wgt_lines=9 * cin + 64), 64)
    cl = -(-cin // L)
    g.act[:9 * cl] = -128
    g.wgt[:9 * cin] = -8
    g.wgt[:9 * cin, 1] = 7
    f = dict(i=0, ips=cl, irs=3 * cl, ih=3, iw=3, w=0, wts=cin, wbs=0, o=0, ops=1, ors=3, oh=3, ow=3,
             cin=cin, cout=cout, stride=1, pt=1, pl=1)
    g.run([Instr.make("conv", **f), Instr.make("halt")])
    taps = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]).ravel()     # input pixels each output sees
    assert np.array_equal(g.acc[:9, 0], taps * cin * 1024) and np.array_equal(g.acc[:9, 1], -taps * cin * 896)
    assert 9 * cin * 1024 >= 2**24


def test_conv_bounds():
    g = Golden(M, 64)
    base = conv_fields(3, 3, 4, 4, 1, 1, 1, 4, 4)
    for change, what in ((dict(i=4090), "input"), (dict(w=4090), "weights"), (dict(o=4090), "O")):
        f = dict(base, **change)
        with pytest.raises(DeviceError) as e:
            g.run([Instr.make("sync", q="ld"), Instr.make("conv", **f), Instr.make("halt")])
        assert (e.value.code, e.value.index) == ("OOB_BUF", 1) and what in str(e.value)
    # input rows beyond what the taps reach are never read, so they may lie outside the buffer
    f = dict(base, i=4096 - 5 * base["irs"], ih=4095)     # the taps reach input rows 0..4
    g.run([Instr.make("conv", **f), Instr.make("halt")])
