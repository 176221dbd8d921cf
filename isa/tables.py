"""The one generator of the SFU lookup tables.

The golden model imports the arrays below; the SystemVerilog package in
hw/rtl/sdac_isa_pkg.sv embeds the same values (generated from here, checked
by a test). Values are computed with 40-digit decimals so the rounding of
every entry is exact and platform independent.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, getcontext

import numpy as np

getcontext().prec = 40


def _round(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_HALF_UP))


def exp2_table() -> np.ndarray:
    """EXP2[f] = round(2**15 * 2**(-f/256)), f in [0, 256): Q15 values of 2**(-f/256)."""
    two = Decimal(2)
    return np.array([_round(Decimal(2 ** 15) * (two ** (Decimal(-f) / 256))) for f in range(256)], dtype=np.int64)


def rsqrt_table() -> np.ndarray:
    """RSQRT[i] = round(2**20 / sqrt(256 + i)), i in [0, 768)."""
    return np.array([_round(Decimal(2 ** 20) / Decimal(256 + i).sqrt()) for i in range(768)], dtype=np.int64)


def recip_table() -> np.ndarray:
    """RECIP[i] = round(2**24 / (512 + i)), i in [0, 512)."""
    return np.array([(2 ** 25 + (512 + i)) // (2 * (512 + i)) for i in range(512)], dtype=np.int64)


EXP2 = exp2_table()
RSQRT = rsqrt_table()
RECIP = recip_table()
for _t in (EXP2, RSQRT, RECIP):
    _t.setflags(write=False)

TABLES = {"EXP2": EXP2, "RSQRT": RSQRT, "RECIP": RECIP}
