"""Bit-exact model of the PE's DSP48E2 packing (hw/rtl/sdac_pe.sv), and its exhaustive check.

One PE computes the 2x2 outer product ``a[i] * w[j]`` (i, j in {0, 1}) of two int8
activations and two weights per cycle with two DSP48E2 slices. Weights are int4 (-8..7);
the PE port is 5-bit signed (-16..15) so that the unsigned low nibble (0..15) of an int8
W (mm with wsrc = act / act_t, two nibble passes) goes through the same path:

* each activation is split into nibbles ``a = 16*h + l``: ``l = a & 15`` unsigned (0..15),
  ``h = a >> 4`` signed (-8..7);
* DSP ``L`` multiplies the two low nibbles by the two weights, DSP ``H`` the two high nibbles;
* in each DSP the pre-adder packs the two nibbles, ``AD = n0 + n1 * 2**(2G)`` (A port carries
  ``n1 << 2G``, D port ``n0``; the pre-adder does the signed addition for free), and the B port
  carries the two weights ``B = w0 + w1 * 2**G`` (an 18-bit signed sum formed in fabric);
* the 27x18 product is then ``sum_{i,j} n_i * w_j * 2**(G*(2i + j))``: four products in four
  G-bit fields at bits 0, G, 2G, 3G (G = ``FIELD`` = 11);
* the sign-correcting unpack reads field f as the G-bit two's complement value of
  ``P[G*f +: G] + P[G*f - 1]``: the bit below a field is the sign of everything beneath it,
  i.e. the borrow that the lower (negative) fields took from this one;
* the product is ``a_i * w_j = L_ij + 16 * H_ij``, added into a 32-bit accumulator.

Why it is exact: with int4 weights every nibble product lies in [-120, 105] (low:
15 * -8 = -120, 15 * 7 = 105; high: -8 * -8 = 64, -8 * 7 = -56), with 5-bit weights in
[-240, 225], so each field holds it as long as G >= 8 (int4) or G >= 9 (5-bit); the G-bit
range is [-2**(G-1), 2**(G-1)). If every field value v_f is in range, the
lower part ``R_f = sum_{e<f} v_e 2**(Ge)`` lies in [-2**(Gf-1), 2**(Gf-1)), so its sign is bit
Gf-1 of P and ``floor(P / 2**(Gf)) + P[Gf-1] = sum_{e>=f} v_e 2**(G(e-f))``, whose low G bits
are v_f. Port widths bound G from above: B needs 5 + G <= 18 bits, AD needs 5 + 2G <= 27 and
the product 9 + 3G <= 45, so 9 <= G <= 11. sdac uses G = 11: the fields then also hold sums
of up to 8 products, which leaves the option of accumulating in the DSP's P register.

The weight -8 is the case that breaks careless packings: it is the only int4 value whose
negation does not fit in 4 bits, and ``15 * -8 = -120`` is the most negative product, so a
packing with too few guard bits or an unpack that forgets the borrow fails exactly there.
``check_exhaustive`` compares every one of the 2**24 (a0, a1, w0, w1) combinations with plain
multiplication; ``check_dsp_exhaustive`` every input (n0, n1, w0, w1) of one slice (both
nibble kinds, any weight range): the four fields of one slice are the only values that
share a multiplication, so this proves the PE for 5-bit weights too. tests/hw/test_packing.py
runs both and shows that G = 7, G = 8 with 5-bit weights and the uncorrected unpack fail.
"""
from __future__ import annotations

import numpy as np

FIELD = 11          # G: bits per product field
A_BITS = 27         # pre-adder / multiplier A input
B_BITS = 18         # multiplier B input
M_BITS = 45         # 27 x 18 product
P_BITS = 48         # accumulator


def _wrap(x, bits: int):
    """Two's-complement wrap of int64 values to `bits` bits."""
    x = np.asarray(x, dtype=np.int64)
    m = np.int64(1) << bits
    x = x & (m - 1)
    return np.where(x >= (m >> 1), x - m, x)


def split_act(a):
    """int8 -> (low nibble 0..15, high nibble -8..7) with a = 16*high + low."""
    a = np.asarray(a, dtype=np.int64)
    return a & 15, a >> 4


def pack_ad(n0, n1, field: int = FIELD):
    """Pre-adder output: D = n0, A = n1 << 2G, AD = A + D wrapped to 27 bits."""
    return _wrap(np.asarray(n0, np.int64) + (np.asarray(n1, np.int64) << (2 * field)), A_BITS)


def pack_b(w0, w1, field: int = FIELD):
    """B port: w0 + w1 << G as an 18-bit signed value."""
    return _wrap(np.asarray(w0, np.int64) + (np.asarray(w1, np.int64) << field), B_BITS)


def dsp_multiply(ad, b):
    """The DSP48E2 multiplier: 27 x 18 signed, 45-bit product sign-extended into P (48 bits)."""
    return _wrap(_wrap(np.asarray(ad, np.int64) * np.asarray(b, np.int64), M_BITS), P_BITS)


def unpack(p, field: int = FIELD, correct: bool = True):
    """Four signed G-bit fields of P (f = 2i + j); `correct=False` omits the borrow correction."""
    p = np.asarray(p, dtype=np.int64) & ((np.int64(1) << P_BITS) - 1)
    mask = (np.int64(1) << field) - 1
    out = []
    for f in range(4):
        raw = (p >> (field * f)) & mask
        if correct and f:
            raw = raw + ((p >> (field * f - 1)) & 1)
        out.append(_wrap(raw, field))
    return out


def pe_products(a0, a1, w0, w1, field: int = FIELD, correct: bool = True):
    """The PE's 2x2 products [[a0*w0, a0*w1], [a1*w0, a1*w1]] computed through the packing."""
    l0, h0 = split_act(a0)
    l1, h1 = split_act(a1)
    b = pack_b(w0, w1, field)
    lo = unpack(dsp_multiply(pack_ad(l0, l1, field), b), field, correct)
    hi = unpack(dsp_multiply(pack_ad(h0, h1, field), b), field, correct)
    return [[lo[2 * i + j] + (hi[2 * i + j] << 4) for j in range(2)] for i in range(2)]


def check_dsp_exhaustive(field: int = FIELD, wmin: int = -16, wmax: int = 15, correct: bool = True) -> int:
    """Every (n0, n1, w0, w1) of one slice, for unsigned (0..15) and signed (-8..7) nibbles and
    weights in [wmin, wmax]; returns the number of wrong fields."""
    w = np.arange(wmin, wmax + 1, dtype=np.int64)
    bad = 0
    for nib in (np.arange(0, 16, dtype=np.int64), np.arange(-8, 8, dtype=np.int64)):
        n0, n1, w0, w1 = (g.ravel() for g in np.meshgrid(nib, nib, w, w, indexing="ij"))
        fields = unpack(dsp_multiply(pack_ad(n0, n1, field), pack_b(w0, w1, field)), field, correct)
        want = [n0 * w0, n0 * w1, n1 * w0, n1 * w1]
        bad += sum(int((f != v).sum()) for f, v in zip(fields, want))
    return bad


def all_combinations(chunk: int = 1 << 20):
    """Yield (a0, a1, w0, w1) int64 arrays covering all 2**24 combinations, `chunk` at a time."""
    total = 1 << 24
    for start in range(0, total, chunk):
        idx = np.arange(start, min(start + chunk, total), dtype=np.int64)
        a0 = (idx & 255) - 128
        a1 = ((idx >> 8) & 255) - 128
        w0 = ((idx >> 16) & 15) - 8
        w1 = ((idx >> 20) & 15) - 8
        yield a0, a1, w0, w1


def check_exhaustive(field: int = FIELD, correct: bool = True, stop_at: int = 10) -> list[tuple]:
    """Compare every (a0, a1, w0, w1) with plain multiplication; return up to `stop_at`
    mismatches as (a0, a1, w0, w1, slot, got, want)."""
    bad: list[tuple] = []
    for a0, a1, w0, w1 in all_combinations():
        prods = pe_products(a0, a1, w0, w1, field, correct)
        acts, wgts = (a0, a1), (w0, w1)
        for i in range(2):
            for j in range(2):
                want = acts[i] * wgts[j]
                wrong = np.nonzero(prods[i][j] != want)[0]
                for k in wrong[: stop_at - len(bad)]:
                    bad.append((int(a0[k]), int(a1[k]), int(w0[k]), int(w1[k]), (i, j),
                                int(prods[i][j][k]), int(want[k])))
                if len(bad) >= stop_at:
                    return bad
    return bad
