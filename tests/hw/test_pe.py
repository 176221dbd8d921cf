"""One PE (sdac_pe.sv on two sdac_dsp48e2.sv) against plain multiplication, exhaustively.

The C++ testbench hw/tb/pe_exhaustive.cpp drives all 2^24 (a0, a1, w0, w1) combinations
with int4 weights, one per cycle, every input combination of both DSPs with 5-bit weights
(all 2^26 PE inputs under -m slow), then random accumulated sums with bubbles, and counts
mismatches.
"""
import re

import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_pe")]


def _pe_exe(field: int | None = None):
    params = {} if field is None else {"FIELD": field}
    return sim.build_executable("sdac_pe", [sim.RTL_DIR / "sdac_dsp48e2.sv", sim.RTL_DIR / "sdac_pe.sv"],
                                [sim.TB_DIR / "pe_exhaustive.cpp"], parameters=params)


def _stats(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+) (\d+)$", text, re.M)}


def test_pe_exact_for_every_input():
    exe = _pe_exe()
    out = sim.run_executable(exe, ["20000", "7"])
    stats = _stats(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert stats["mismatches"] == 0
    assert stats["exhaustive_combinations"] == 1 << 24
    assert stats["five_bit_combinations"] == 256 * 1024
    assert stats["checked_outputs"] > (1 << 24) + 256 * 1024 + 20000


@pytest.mark.slow
def test_pe_exact_for_every_five_bit_input():
    out = sim.run_executable(_pe_exe(), ["1000", "3", "full5"])
    stats = _stats(out.stdout)
    assert out.returncode == 0 and stats["mismatches"] == 0, out.stdout[-3000:]
    assert stats["five_bit_combinations"] == 1 << 26


def test_pe_with_too_narrow_fields_is_caught():
    # The same bench must fail when the packing has too few guard bits.
    exe = _pe_exe(field=7)
    out = sim.run_executable(exe, ["100", "1"])
    assert out.returncode == 1
    assert _stats(out.stdout)["mismatches"] > 0
    assert "w0=-8" in out.stdout or "w1=-8" in out.stdout
