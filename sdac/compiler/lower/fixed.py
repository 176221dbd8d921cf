"""Fixed-point choices of the lowering: scale entries and fractional bits.

The device never sees a float. Every real factor becomes a scale entry
{mul: u24, sh: u6} (see sdac.isa.numerics.apply_scale), and every value in
the SFU's int16 domain has a per-tensor number of fractional bits chosen from
its calibrated magnitude.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import CompileError
from ...isa.numerics import make_scale

MAX_FRAC = 24       # beyond this the int16 domain would hold values below 2^-9: no use
HEADROOM = 1.25     # calibrated |x| times this must fit in int16


def scale_entry(r: float, what: str = "scale") -> int:
    """The scale entry closest to the real factor r >= 0 (relative error < 2^-23)."""
    r = float(r)
    if not math.isfinite(r) or r < 0:
        raise CompileError(f"{what}: factor {r!r} is not a finite non-negative number")
    if r == 0:
        return make_scale(0, 0)
    e = math.floor(math.log2(r))
    sh = 23 - e
    if sh < 0:
        raise CompileError(f"{what}: factor {r:g} is too large for a scale entry (max 2^24)")
    if sh > 63:
        return make_scale(int(round(r * 2.0 ** 63)), 63)
    mul = int(round(r * 2.0 ** sh))
    if mul >= 1 << 24:
        mul, sh = (mul + 1) >> 1, sh - 1
    return make_scale(mul, sh)


def scale_entries(r: np.ndarray, what: str = "scale") -> np.ndarray:
    """scale_entry of every element (vectorized: a compile makes about 300 k of them)."""
    x = np.asarray(r, dtype=np.float64)
    flat = x.ravel()
    frac, ex = np.frexp(flat)                    # flat = frac * 2^ex, 0.5 <= frac < 1: floor(log2) = ex - 1
    sh = 24 - ex.astype(np.int64)
    bad = ~np.isfinite(flat) | (flat < 0) | ((flat > 0) & (sh < 0))
    if bad.any():
        scale_entry(float(flat[np.argmax(bad)]), what)      # raises its error for the first bad factor
    sh = np.minimum(sh, 63)                      # below 2^-40: the 63-bit shift, mul < 2^23
    mul = np.round(np.ldexp(flat, sh))           # exact scaling, round half to even as round()
    over = mul >= 1 << 24
    mul = np.where(over, np.floor((mul + 1) / 2), mul)
    sh = np.where(flat == 0, 0, sh - over)
    if (sh < 0).any():
        v = float(flat[np.argmax(sh < 0)])
        raise CompileError(f"{what}: factor {v:g} is too large for a scale entry (max 2^24)")
    return ((sh.astype(np.uint32) << 24) | mul.astype(np.uint32)).reshape(x.shape)


def frac_bits(absmax: float) -> int:
    """Fractional bits for an int16 value whose real magnitude stays below absmax."""
    if not absmax or not math.isfinite(absmax) or absmax <= 0:
        return 8
    f = math.floor(math.log2(32767.0 / (absmax * HEADROOM)))
    return int(min(MAX_FRAC, max(0, f)))


def to_int32(x: np.ndarray, frac: int, what: str) -> np.ndarray:
    """Round real values to fixed point with `frac` fractional bits (checked to fit int32)."""
    v = np.round(np.asarray(x, np.float64) * 2.0 ** frac)
    if np.abs(v).max(initial=0) >= 2 ** 31:
        raise CompileError(f"{what}: value does not fit int32 at {frac} fractional bits")
    return v.astype(np.int64)
