"""Compiled ONNX graphs on the RTL: `compile_model` -> bundle -> sdac_top co-simulation vs golden.

Each graph of sdac.models is compiled for a machine, its DRAM image (static data, step table,
inputs) is run on the RTL (hw/tb/sdac_tb_top.sv) and on the golden model, and the whole DRAM
after the run must be byte-identical. A mismatch names the first store instruction that wrote
a differing byte. The default run uses a 4x2 array (L = 4, default buffers) to keep the build
and the simulation short; the 20x10 machine and the UNets run under `make test-slow`.
Cycle counts are printed (pytest -s) for the performance model.

The compiler emits 3x3 convs weight-stationary (df=ws, the RTL's CONV-WS datapath); the conv graphs
also run with every conv overridden to output-stationary (`compile_model(dataflow=...)`), and
hand-written df=ws convs with edge-value data cover shapes the compiled graphs do not (several pixel
chunks per channel block, odd chunks, strides, padding, cin / cout not multiples of the array).
"""
import numpy as np
import pytest

from sdac import models
from sdac.compiler.driver import compile_model
from sdac.hw import sim
from sdac.isa.encoding import Instr, encode_program
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import SPEC
from sdac.runtime.golden import Golden, device_inputs, load_bundle_image
from sdac.runtime.host import to_device

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_cosim_bundles")]

SMALL = DEFAULT.with_array("4x2")
GRAPHS = ["conv3x3", "conv_gn_silu", "resnet", "attention", "transformer"]
UNETS = ["unet_noattn", "unet", "unet_cond", "unet_xl"]


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


def run_both(exe, bundle, name, step=0, seed=1, label=None, **axi):
    """`axi`: the DRAM slave's latency / random backpressure (sim.run_cosim's axi_* options)."""
    g = dram_image(bundle, models.sample_inputs(name, seed=seed), step)
    name = label or name
    rtl = sim.run_cosim(exe, bytes(g.dram), encode_program(bundle.instrs), step=step, max_cycles=50_000_000, **axi)
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


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_compiled_graph_under_backpressure(small_exe, name):
    """The AXI4 DRAM slave stalls every channel in 25 % of the cycles, 12 cycles of latency."""
    _needs_sfu()
    qdq, _ = models.build(name)
    bundle = compile_model(qdq, machine=SMALL).bundle
    rtl = run_both(small_exe, bundle, name, step=0, axi_stall=25, axi_latency=12, axi_seed=3)
    assert all(rtl.axi[f"{c}_wait"] > 0 for c in ("ar", "r", "aw", "w", "b")), rtl.axi


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


def _with_conv_dataflow(qdq, machine, df):
    """Compile with every 3x3 conv kernel forced to dataflow df; check the emitted conv instructions."""
    res = compile_model(qdq, machine=machine)
    names = [k.name for k in res.kernel_graph.kernels if k.kind == "conv3x3"]
    assert names, "the graph has no 3x3 conv"
    if df != "ws":                       # ws is the compiler's default for 3x3 convs
        res = compile_model(qdq, machine=machine, dataflow={n: df for n in names})
    dfs = {ins.df for ins in res.bundle.instrs if ins.op == "conv"}
    assert dfs == {df}, f"conv dataflows {dfs}, wanted {df}"
    return res.bundle


@pytest.mark.parametrize("name", ["conv3x3", "conv_gn_silu"])
def test_compiled_convs_bit_exact_in_both_dataflows(small_exe, name):
    qdq, _ = models.build(name)
    cycles = {}
    for df in ("ws", "os"):
        cycles[df] = run_both(small_exe, _with_conv_dataflow(qdq, SMALL, df), name, label=f"{name} df={df}").cycles
    print(f"{name}: ws {cycles['ws']} cycles, os {cycles['os']} cycles")


def ws_conv_program(m, seed):
    """A random df=ws conv (with its loads and store) larger than one pixel chunk of the RTL (8X pixels)."""
    rng = np.random.default_rng(seed)
    L, X = m.lanes, m.array_rows
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))   # noqa: E731
    cin, cout, st, pt, pl = r(1, 3 * X + 1), r(1, 3 * L + 1), r(1, 3), r(0, 2), r(0, 2)
    oh, ow = r(1, 13), r(1, 13)
    if seed % 3 == 0:                     # several chunks of the partial-sum memory, odd pixel counts
        oh, ow = r(7, 13) | 1, r(9, 13) | 1
    ih, iw = r(max(1, (oh - 1) * st + 1 - pt), (oh - 1) * st + 3), r(max(1, (ow - 1) * st + 1 - pl), (ow - 1) * st + 3)
    cl, ol = -(-cin // L), -(-cout // L)
    ips, wts = cl + r(0, 1), cin + r(0, 2)
    irs, wbs, ops = iw * ips + r(0, 2), 9 * wts + r(0, 3), ol + r(0, 1)
    ors = ow * ops + r(0, 1)
    i_lines = (ih - 1) * irs + (iw - 1) * ips + cl
    w_lines = (ol - 1) * wbs + 9 * wts
    o_lines = (oh - 1) * ors + (ow - 1) * ops + ol
    wbase = 1024
    abase = -(-(wbase + w_lines * L // 2) // 1024) * 1024
    obase = -(-(abase + i_lines * L) // 1024) * 1024
    dram = bytearray(np.random.default_rng(seed).integers(0, 256, obase + o_lines * 4 * L + 1024, dtype=np.uint8))
    acts = rng.integers(-128, 128, (i_lines, L))
    edge = rng.random(acts.shape) < 0.3
    acts[edge] = rng.choice([-128, 127], int(edge.sum()))
    dram[abase:abase + i_lines * L] = acts.astype(np.int8).tobytes()
    W = rng.choice([-8, -7, 7, 0, 1, -1, 3, -5], (w_lines, L))
    dram[wbase:wbase + w_lines * L // 2] = ((W[:, 0::2] & 0xF) | ((W[:, 1::2] & 0xF) << 4)).astype(np.uint8).tobytes()
    conv = Instr.make("conv", df="ws", i=7, ips=ips, irs=irs, ih=ih, iw=iw, w=3, wbs=wbs, wts=wts, o=5, ops=ops,
                      ors=ors, oh=oh, ow=ow, cin=cin, cout=cout, stride=st, pt=pt, pl=pl, acc=r(0, 1),
                      pop=["ld"], push=["st"])
    prog = [Instr.make("load", buf="act", dram=abase, sram=7, run=i_lines),
            Instr.make("load", buf="wgt", dram=wbase, sram=3, run=w_lines),
            Instr.make("load", buf="acc", dram=obase, sram=5, run=o_lines, push=["cmp"]),
            conv,
            Instr.make("store", buf="acc", dram=obase, sram=5, run=o_lines, pop=["cmp"]),
            Instr.make("halt")]
    return bytes(dram), prog


@pytest.mark.parametrize("seed", range(1, 10))
def test_ws_conv_shapes_bit_exact(small_exe, seed):
    dram, prog = ws_conv_program(SMALL, seed)
    rtl = sim.run_cosim(small_exe, dram, encode_program(prog))
    g = Golden(SMALL, len(dram))
    g.dram[:] = np.frombuffer(dram, np.uint8)
    g.run(prog)
    assert not rtl.unsupported and rtl.error == 0, f"RTL error {SPEC.error_name(rtl.error)} at {rtl.index}"
    c = prog[3]
    if rtl.dram != bytes(g.dram):
        diff = np.nonzero(np.frombuffer(rtl.dram, np.uint8) != g.dram)[0]
        pytest.fail(f"{c.oh}x{c.ow} {c.cin}->{c.cout}/{c.stride}: {diff.size} DRAM bytes differ, first at {diff[0]:#x}")
    print(f"ws conv {c.oh}x{c.ow} {c.cin}->{c.cout}/{c.stride} acc={c.acc}: {rtl.cycles} cycles")
