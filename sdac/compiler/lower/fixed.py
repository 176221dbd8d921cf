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
    return np.array([scale_entry(x, what) for x in np.ravel(r)], dtype=np.uint32).reshape(np.shape(r))


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
