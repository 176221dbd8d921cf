"""The numeric definition of every SFU operation, in exact integer arithmetic.

This module *is* the specification: docs/isa.md renders these definitions,
the golden model calls these functions, and the RTL is tested bit for bit
against them. No floating point is used on any value the hardware computes;
floats appear only in ``tables.py`` where the lookup tables are generated
(once, then frozen as integers).

Conventions
-----------
* All arithmetic is on two's-complement integers held in int64; every bound
  below is proven to fit.
* ``rshift_round(x, s)``: for s > 0, ``(x + 2**(s-1)) >> s`` with an
  arithmetic shift, i.e. round half up (towards +inf); for s <= 0, ``x << -s``.
* ``sat(x, b)`` clamps to [-2**(b-1), 2**(b-1) - 1]; sat16 / sat8 for b = 16 / 8.
* A *scale entry* is a uint32: ``mul = e & 0xFFFFFF`` (unsigned 24 bits) and
  ``sh = (e >> 24) & 63``; bits 30-31 are ignored. ``apply_scale(x, e) =
  rshift_round(x * mul, sh)``; |x| < 2**32 so the product is below 2**56.
* The SFU's fixed-point domain holds int16 values with a per-tensor number of
  fractional bits F chosen by the compiler; the hardware never needs F except
  where an instruction carries it (``frac``).
"""
from __future__ import annotations

import numpy as np

from . import tables

I64 = np.int64

# Constants of the hard activation functions (x * ReLU6(x + 3) / 6 and the
# GeLU form x * ReLU6(1.702 x + 3) / 6).
INV6_Q16 = 10923            # round(2**16 / 6)
GELU_ALPHA_Q10 = 1743       # round(1.702 * 2**10)
NORM_MEAN_FRAC = 8          # extra fractional bits of the mean in norm
EXP_FRAC = 8                # fractional bits of the SoftMax exponent (log2 units)
SOFTMAX_ONE = 127           # probability 1.0 in the int8 output


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=I64)


def rshift_round(x, s):
    """Round-half-up arithmetic right shift; a negative s shifts left."""
    x = _i64(x)
    s = _i64(s)
    if s.ndim == 0:
        s = int(s)
        if s <= 0:
            return x << -s
        s = min(s, 62)
        return (x + (I64(1) << (s - 1))) >> s
    if s.size and s.min() >= 0:
        # one branch: (1 << s) >> 1 is the half for s > 0 and 0 for s = 0 (same values as below)
        s = np.minimum(s, 62)
        return (x + ((I64(1) << s) >> 1)) >> s
    pos = np.clip(s, 1, 62)
    right = (x + (I64(1) << (pos - 1))) >> pos
    left = x << np.clip(-s, 0, 62)
    return np.where(s > 0, right, left)


def sat(x, bits: int):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(_i64(x), lo, hi)


def sat16(x):
    return sat(x, 16)


def sat8(x):
    return sat(x, 8)


def scale_fields(e):
    e = _i64(e) & 0xFFFFFFFF
    return e & 0xFFFFFF, (e >> 24) & 63


def make_scale(mul: int, sh: int) -> int:
    if not (0 <= mul < (1 << 24) and 0 <= sh < 64):
        raise ValueError(f"scale entry out of range: mul={mul} sh={sh}")
    return (sh << 24) | mul


def apply_scale(x, e):
    mul, sh = scale_fields(e)
    return rshift_round(_i64(x) * mul, sh)


# ------------------------------------------------------------- activations

def silu_q(x, frac: int):
    """Hard SiLU, x * clamp(x + 3, 0, 6) / 6, on int16 x with `frac` fractional bits."""
    x = _i64(x)
    t = np.clip(x + (I64(3) << frac), 0, I64(6) << frac)
    return rshift_round(x * t * INV6_Q16, frac + 16)


def gelu_q(x, frac: int):
    """Hard GeLU, x * clamp(1.702 x + 3, 0, 6) / 6, on int16 x with `frac` fractional bits."""
    x = _i64(x)
    t = np.clip(rshift_round(x * GELU_ALPHA_Q10, 10) + (I64(3) << frac), 0, I64(6) << frac)
    return rshift_round(x * t * INV6_Q16, frac + 16)


def fn_q(fn: str, x, frac: int):
    if fn == "none":
        return _i64(x)
    if fn == "silu":
        return silu_q(x, frac)
    if fn == "gelu":
        return gelu_q(x, frac)
    raise ValueError(f"unknown activation function {fn!r}")


def geglu_q(a, b, frac: int):
    """A * gelu(B), both int16 with `frac` fractional bits, result with `frac` bits."""
    return rshift_round(_i64(a) * gelu_q(b, frac), frac)


# --------------------------------------------------------- normalization

def group_index(rows: int, cols: int, mode: str, gsize: int, gbase: int) -> np.ndarray:
    """Statistics register of each element of a rows x cols region."""
    if mode == "row":
        g = np.arange(rows, dtype=I64)[:, None] + np.zeros((1, cols), dtype=I64)
    else:
        g = np.zeros((rows, 1), dtype=I64) + (np.arange(cols, dtype=I64) // gsize)[None, :]
    return g + gbase


def stats_accumulate(s1: np.ndarray, s2: np.ndarray, d, g) -> None:
    """Add sum(d) and sum(d*d) of each group into the registers (in place).

    The registers are 64-bit signed: d is int16, so S1 stays below 2**15 * n
    and S2 below 2**30 * n, exact for any group of fewer than 2**32 elements.
    """
    d = _i64(d).ravel()
    g = _i64(g).ravel()
    np.add.at(s1, g, d)
    np.add.at(s2, g, d * d)


def rsqrt_q(v):
    """1/sqrt(v) for integer v >= 1 as (rm, re): 1/sqrt(v) ~= rm * 2**-20 * 2**-re.

    k = floor(log2 v); e = (k - 8) rounded down to even; m = v / 2**e (truncated)
    lies in [256, 1024); rm = RSQRT[m - 256]; re = e / 2.
    """
    v = _i64(v)
    k = _bitlen(v) - 1
    e = (k - 8) & ~I64(1)
    m = np.where(e >= 0, v >> np.maximum(e, 0), v << np.maximum(-e, 0))
    rm = tables.RSQRT[(m - 256).astype(np.intp)]
    return rm.astype(I64), e // 2


def norm_params(s1, s2, inv_n, eps):
    """Mean (fractional bits F+8) and reciprocal std (rm, re) of a statistics group.

    mu   = rshift_round(S1 * inv_n, 24)               # inv_n = round(2**32 / n)
    ex2  = rshift_round(S2 * inv_n, 32)               # E[x^2], 2F fractional bits
    var  = ex2 - rshift_round(mu * mu, 16)            # 2F fractional bits
    v    = max(max(var, 0) + eps, 1)
    (rm, re) = rsqrt_q(v)
    """
    s1, s2 = _i64(s1), _i64(s2)
    inv_n = I64(int(inv_n) & 0xFFFFFFFF)
    eps = I64(int(eps) & 0xFFFFFFFF)
    mu = rshift_round(s1 * inv_n, 24)
    ex2 = rshift_round(s2 * inv_n, 32)
    var = ex2 - rshift_round(mu * mu, 16)
    v = np.maximum(np.maximum(var, 0) + eps, 1)
    rm, re = rsqrt_q(v)
    return mu, rm, re


def norm_q(x, mu, rm, re, gamma, beta, nsh: int):
    """Normalize, then the affine transform.

    d = x * 2**8 - mu                  (|d| < 2**24)
    t = rshift_round(d * rm, 16)       (|t| < 2**26)
    z = sat16(rshift_round(t * gamma, nsh + re) + beta)
    With F fractional bits in x, FG in gamma and FO in the result, the
    compiler sets nsh = 12 + FG - FO.
    """
    d = (_i64(x) << NORM_MEAN_FRAC) - _i64(mu)
    t = rshift_round(d * _i64(rm), 16)
    return sat16(rshift_round(t * _i64(gamma), _i64(nsh) + _i64(re)) + _i64(beta))


# --------------------------------------------------------------- softmax

def _bitlen(v):
    """Bit length of positive int64 values (exact, no floating point)."""
    v = _i64(v)
    n = np.zeros(v.shape, dtype=I64)
    for b in (32, 16, 8, 4, 2, 1):
        big = (v >> b) > 0
        n = n + np.where(big, b, 0)
        v = np.where(big, v >> b, v)
    return n + (v > 0)


def softmax_q(x, e):
    """Row-wise SoftMax along the last axis of int32 scores; result int8 in [0, 127].

    mx   = max_c x
    u    = -apply_scale(x - mx, e)          # >= 0, log2 units with 8 fractional bits
    ex   = rshift_round(EXP2[u & 255], min(u >> 8, 31))     # 2**(-u/256) in Q15
    sum  = sum_c ex                         # >= 2**15 (the maximum contributes 2**15)
    k    = floor(log2 sum); m = sum >> (k - 9) in [512, 1024); rl = RECIP[m - 512]
    p    = min(127, rshift_round(ex * rl * 127, 15 + k))
    """
    x = _i64(x)
    mx = x.max(axis=-1, keepdims=True)
    u = -apply_scale(x - mx, e)
    q = np.minimum(u >> EXP_FRAC, 31)
    ex = rshift_round(tables.EXP2[(u & 255).astype(np.intp)].astype(I64), q)
    total = ex.sum(axis=-1, keepdims=True)
    k = _bitlen(total) - 1
    m = total >> (k - 9)
    rl = tables.RECIP[(m - 512).astype(np.intp)].astype(I64)
    p = rshift_round(ex * rl * SOFTMAX_ONE, 15 + k)
    return np.minimum(p, SOFTMAX_ONE)
