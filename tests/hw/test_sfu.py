"""The SFU (sdac_sfu.sv) against the golden model: random deq / add / act / geglu / norm /
softmax / transpose instructions with Python-modelled buffers (tests/hw/cocotb_sfu.py), every
written lane, the statistics registers and the error code compared; plus cycles per line."""
from pathlib import Path

import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_sfu")]
HERE = Path(__file__).resolve().parent

# Small buffers keep the Python model and the out-of-bounds cases cheap; the RTL takes the
# sizes as parameters (defaults: the package's machine).
# PCACHE_LINES: prm vectors of rows up to that many lines are read once per instruction; 3 (random
# rows have 1..4 lines) tests both the cached and the re-read path.
SMALL = {"LANES": 20, "ACC_DEPTH": 1024, "ACT_DEPTH": 1024, "PRM_DEPTH": 256, "NSTAT": 64, "PCACHE_LINES": 3}
LANES8 = {"LANES": 8, "ACC_DEPTH": 512, "ACT_DEPTH": 512, "PRM_DEPTH": 128, "NSTAT": 32, "PCACHE_LINES": 2}
PACKAGE = {"LANES": 20, "ACC_DEPTH": 20480, "ACT_DEPTH": 49152, "PRM_DEPTH": 4096, "NSTAT": 1024}


def _env(params, n, seed, stall="0.25", ops=None):
    env = {"SDAC_SFU_L": str(params["LANES"]), "SDAC_SFU_ACC": str(params["ACC_DEPTH"]),
           "SDAC_SFU_ACT": str(params["ACT_DEPTH"]), "SDAC_SFU_PRM": str(params["PRM_DEPTH"]),
           "SDAC_SFU_NSTAT": str(params["NSTAT"]), "SDAC_SFU_N": str(n), "SDAC_SFU_SEED": str(seed),
           "SDAC_SFU_STALL": stall}
    if ops:
        env["SDAC_SFU_OPS"] = ops
    return env


@pytest.fixture(scope="module")
def sfu_build():
    return sim.build_cocotb("sdac_sfu", sim.rtl_sources("sdac_sfu"), SMALL)


def test_sfu_matches_golden(sfu_build):
    # 200 random instructions per op (1400 in all), half of them with random grant stalls
    sim.run_cocotb(sfu_build, "cocotb_sfu", HERE, extra_env=_env(SMALL, 200, 1))


@pytest.mark.slow
def test_sfu_matches_golden_long(sfu_build):
    sim.run_cocotb(sfu_build, "cocotb_sfu", HERE, extra_env=_env(SMALL, 1500, 2))


@pytest.mark.slow
@pytest.mark.parametrize("params", [LANES8, PACKAGE], ids=["L8", "package-sizes"])
def test_sfu_other_parameters(params):
    build = sim.build_cocotb("sdac_sfu", sim.rtl_sources("sdac_sfu"), params)
    sim.run_cocotb(build, "cocotb_sfu", HERE, extra_env=_env(params, 150, 3))
