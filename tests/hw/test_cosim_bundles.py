"""Compiled ONNX graphs on the RTL: `compile_model` -> bundle -> sdac_top co-simulation vs golden.

Each graph of sdac.models is compiled for a machine, its DRAM image (static data, step table,
inputs) is run on the RTL (hw/tb/sdac_tb_top.sv) and on the golden model, and the whole DRAM
after the run must be byte-identical. A mismatch names the first store instruction that wrote
a differing byte. The default run uses a 4x2 array (L = 4, default buffers) to keep the build
and the simulation short; the 20x10 machine and the UNets run under `make test-slow`.
Cycle counts are printed (pytest -s) for the performance model.
"""
import numpy as np
import pytest

from sdac import models
from sdac.compiler.driver import compile_model
from sdac.hw import sim
from sdac.isa.encoding import encode_program
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import SPEC
from sdac.runtime.golden import device_inputs, load_bundle_image
from sdac.runtime.host import to_device

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_cosim_bundles")]

SMALL = DEFAULT.with_array("4x2")
GRAPHS = ["conv3x3", "conv_gn_silu", "resnet", "attention", "transformer"]
UNETS = ["unet_noattn", "unet", "unet_cond"]


def _needs_sfu():
    if not (sim.RTL_DIR / "sdac_sfu.sv").exists():
        pytest.skip("compiled programs need the SFU (hw/rtl/sdac_sfu.sv)")


def dram_image(bundle, inputs, step):
    """The golden model holding the bundle's DRAM image with the inputs written (as execute_bundle)."""
    g = load_bundle_image(bundle)
    dev = device_inputs(bundle, inputs)
    for t in bundle.inputs:
        raw = to_device(t, np.asarray(dev[t.name]), step, bundle.machine.lanes)
        g.dram[t.dram:t.dram + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return g


def first_store_writing(instrs, machine, addr):
    """Index of the first store instruction whose DRAM bytes include addr (None if none)."""
    for ins in instrs:
        if ins.op != "store":
            continue
        B = machine.line_bytes(ins.buf)
        for z in range(ins.nz):
            for y in range(ins.ny):
                start = ins.dram + z * ins.dz + y * ins.dy
                if start <= addr < start + ins.run * B:
                    return ins
    return None


def run_both(exe, bundle, name, step=0, seed=1):
    g = dram_image(bundle, models.sample_inputs(name, seed=seed), step)
    rtl = sim.run_cosim(exe, bytes(g.dram), encode_program(bundle.instrs), step=step, max_cycles=50_000_000)
    g.run(bundle.instrs, step=step)
    assert not rtl.unsupported, f"{name}: the RTL skipped instructions it does not implement"
    assert rtl.error == 0, f"{name}: RTL error {SPEC.error_name(rtl.error)} at instruction {rtl.index}"
    if rtl.dram != bytes(g.dram):
        diff = np.nonzero(np.frombuffer(rtl.dram, np.uint8) != g.dram)[0]
        ins = first_store_writing(bundle.instrs, bundle.machine, int(diff[0]))
        where = f"instruction {bundle.instrs.index(ins)} ({ins.op})" if ins is not None else "no store"
        pytest.fail(f"{name}: {diff.size} DRAM bytes differ; first at {diff[0]:#x}, written by {where}")
    assert rtl.executed == len(bundle.instrs)
    print(f"\n{name} on {bundle.machine.array_rows}x{bundle.machine.array_cols}: {len(bundle.instrs)} instructions, "
          f"{rtl.cycles} cycles, {rtl.cycles / rtl.seconds:.0f} cycles/s simulated")
    return rtl


@pytest.fixture(scope="module")
def small_exe():
    _needs_sfu()
    return sim.build_cosim(SMALL, 1 << 18)


@pytest.mark.parametrize("name", GRAPHS)
def test_compiled_graph_bit_exact_on_rtl(small_exe, name):
    qdq, _ = models.build(name)
    bundle = compile_model(qdq, machine=SMALL).bundle
    run_both(small_exe, bundle, name, step=0)


def test_compiled_graph_every_step(small_exe):
    # One program serves every denoising step (setstep src=csr, step-relative loads).
    qdq, _ = models.build("resnet")
    bundle = compile_model(qdq, machine=SMALL).bundle
    for step in range(max(1, bundle.n_steps)):
        run_both(small_exe, bundle, "resnet", step=step, seed=step + 2)


@pytest.fixture(scope="module")
def default_exe():
    _needs_sfu()
    return sim.build_cosim(DEFAULT, 1 << 22)


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS + UNETS)
def test_compiled_graph_bit_exact_on_rtl_default_machine(default_exe, name):
    qdq, _ = models.build(name)
    bundle = compile_model(qdq).bundle
    if -(-bundle.dram_size // 32) * 32 + 32 * len(bundle.instrs) > 1 << 22:
        pytest.skip(f"{name}: DRAM image larger than the 4 MiB co-simulation memory")
    run_both(default_exe, bundle, name, step=0)
