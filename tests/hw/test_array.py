"""The MM-OS systolic array (sdac_array.sv) against numpy on random int8 x int4 tiles."""
from pathlib import Path

import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_array")]
HERE = Path(__file__).resolve().parent
SOURCES = ["sdac_dsp48e2", "sdac_pe", "sdac_array"]


# The 20x10 build takes over a minute: it runs under -m slow (the default machine's co-simulation
# exercises it too); the default run checks a small odd-sized array of the same RTL.
@pytest.mark.parametrize("shape", [pytest.param((20, 10), marks=pytest.mark.slow), (3, 2)], ids=["20x10", "3x2"])
def test_array_tiles_match_numpy(shape):
    x, y = shape
    build = sim.build_cocotb("sdac_array", sim.rtl_sources(*SOURCES), {"X": x, "Y": y})
    sim.run_cocotb(build, "cocotb_array", HERE,
                   extra_env={"SDAC_ARRAY_X": str(x), "SDAC_ARRAY_Y": str(y), "SDAC_ARRAY_SEED": "5"})
