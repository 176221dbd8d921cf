"""The cycle model against the RTL on the paper's 20x10 machine: compiled graphs and small UNets within 10%.

tests/perf/test_model_vs_rtl.py holds the model to the RTL on the 4x2 test machine (fast, in `make test`);
this runs the graphs of sdac.models compiled for the default 20x10 machine on the co-simulated RTL
(hw/tb/sdac_tb_top.sv, the build tests/hw/test_cosim_bundles.py shares) and compares CSR CYCLES with the
model's total under the "rtl-cosim" timing profile. Slow: one 20x10 build (5-10 min cold) and about
1 M simulated cycles.
"""
import numpy as np
import pytest

from sdac import models
from sdac.compiler.driver import compile_model
from sdac.isa.encoding import encode_program
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.perf.timing import Timing
from sdac.runtime.golden import device_inputs, load_bundle_image
from sdac.runtime.host import to_device

pytestmark = [pytest.mark.slow, pytest.mark.rtl, pytest.mark.xdist_group("rtl_cosim_bundles")]

MEM = 1 << 22               # as test_cosim_bundles.default_exe, so the two share one build
TOL = 0.10
NAMES = ["conv3x3", "conv_gn_silu", "resnet", "attention", "transformer", "unet_noattn", "unet", "unet_cond"]


@pytest.fixture(scope="module")
def exe():
    from sdac.hw import sim
    ok, why = sim.verilator_status()
    if not ok:
        pytest.skip(why)
    return sim.build_cosim(DEFAULT, MEM)


def dram_image(bundle, name):
    g = load_bundle_image(bundle)
    dev = device_inputs(bundle, models.sample_inputs(name, seed=1))
    for t in bundle.inputs:
        raw = to_device(t, np.asarray(dev[t.name]), 0, bundle.machine.lanes)
        g.dram[t.dram:t.dram + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return bytes(g.dram)


def test_compiled_graphs_on_default_machine_within_10_percent(exe):
    from sdac.hw import sim
    timing = Timing.resolve(DEFAULT, "rtl-cosim")
    rows, bad = [], []
    for name in NAMES:
        bundle = compile_model(models.build(name)[0]).bundle
        image = dram_image(bundle, name)
        if len(image) + 32 * len(bundle.instrs) > MEM:
            rows.append(f"{name:14s} skipped: DRAM image larger than the co-simulation memory")
            continue
        r = sim.run_cosim(exe, image, encode_program(bundle.instrs), max_cycles=50_000_000)
        assert r.error == 0 and not r.unsupported and r.executed == len(bundle.instrs), name
        model = estimate(bundle, timing=timing).total_cycles
        err = (model - r.cycles) / r.cycles
        rows.append(f"{name:14s} {len(bundle.instrs):5d} instructions  rtl {r.cycles:8d}  model {model:8d}  "
                    f"{100 * err:+6.1f}%")
        if abs(err) > TOL:
            bad.append(rows[-1])
    print("\n" + "\n".join(rows))
    assert sum("skipped" not in r for r in rows) >= 6
    assert not bad, "model off by more than 10% on the 20x10 machine:\n" + "\n".join(rows)
