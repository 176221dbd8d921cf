"""Lowering against the float reference: hand-built KernelGraphs, compiled and run on the golden model.

The golden model is bit-exact to the ISA; the reference is the float meaning
of the kernels with fake quantization at every kernel boundary. They differ
only by the fixed-point rounding inside kernels, so outputs agree within a
few int8 steps and at high SQNR.
"""
import numpy as np
import pytest

from sdac.compiler import kernels as K
from sdac.compiler.calibrate import calibrate_absmax
from sdac.compiler.lower import lower
from sdac.compiler.reference import run_reference, sqnr_db
from sdac.compiler.verify import verify
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import run_bundle

RNG = np.random.default_rng


def act(name, shape, scale, n_steps=1):
    return K.Act(name, tuple(shape), np.full(n_steps, scale, np.float32))


def weights(rng, shape, out_axis):
    q = rng.integers(-7, 8, size=shape).astype(np.int8)
    n = shape[out_axis]
    return K.Weights(q, (rng.uniform(0.5, 1.5, n) / (7 * np.sqrt(np.prod(shape) / n))).astype(np.float32))


def run_both(kg, inputs, step=0, machine=DEFAULT, calib=None):
    calibrate_absmax(kg, calib or [inputs])
    b = lower(kg, machine)
    verify(b)
    host = {}
    for a in kg.inputs:
        x = inputs[a.name]
        host[kg.io_names.get(a.name, a.name)] = np.moveaxis(x, -1, 1) if x.ndim == 4 else x
    got = run_bundle(b, host, step=step)
    ref = run_reference(kg, inputs, step)
    out = {}
    for a in kg.outputs:
        g = got[kg.io_names.get(a.name, a.name)]
        g = np.moveaxis(g, 1, -1) if g.ndim == 4 else g
        out[a.name] = (g, ref[a.name], float(a.scales[step]))
    return b, out


def check(out, min_db=30.0, max_lsb=3):
    for name, (g, r, s) in out.items():
        assert g.shape == r.shape, name
        db = sqnr_db(r, g)
        lsb = np.abs(g - r).max() / s
        assert db >= min_db, f"{name}: SQNR {db:.1f} dB"
        assert lsb <= max_lsb, f"{name}: max error {lsb:.1f} LSB"


def test_conv_gn_silu():
    rng = RNG(0)
    x = act("x", (1, 8, 8, 40), 0.05)
    y = act("y", (1, 8, 8, 40), 0.03)
    k = K.Kernel("conv", "conv3x3", [x], [K.Bias(rng.normal(0, 0.1, 40).astype(np.float32)),
                                           K.Norm("gn", 4, 1e-5, rng.uniform(0.5, 1.5, 40), rng.normal(0, .2, 40)),
                                           K.Activation("silu"), K.Emit(y)],
                 weights=weights(rng, (40, 40, 3, 3), 0), dataflow="ws")
    kg = K.KernelGraph([k], [x], [y])
    _, out = run_both(kg, {"x": rng.normal(0, 1.5, (1, 8, 8, 40))})
    check(out)


def test_matmul_residual_layernorm_two_emits():
    rng = RNG(1)
    x = act("x", (2, 30, 60), 0.05)
    r = act("r", (2, 30, 40), 0.05)
    s = act("s", (2, 30, 40), 0.06)
    y = act("y", (2, 30, 40), 0.03)
    k = K.Kernel("mm", "matmul", [x], [K.Bias(rng.normal(0, .1, 40).astype(np.float32)), K.AddTensor(r), K.Emit(s),
                                       K.Norm("ln", 1, 1e-5, rng.uniform(.5, 1.5, 40), rng.normal(0, .2, 40)),
                                       K.Emit(y)], weights=weights(rng, (60, 40), 1))
    kg = K.KernelGraph([k], [x, r], [s, y])
    _, out = run_both(kg, {"x": rng.normal(0, 2, (2, 30, 60)), "r": rng.normal(0, 2, (2, 30, 40))})
    check(out)


def test_attention_and_geglu():
    rng = RNG(2)
    q = act("q", (1, 50, 40), 0.04)
    kk = act("k", (1, 30, 40), 0.04)
    v = act("v", (1, 30, 40), 0.04)
    o = act("o", (1, 50, 40), 0.02)
    g = act("g", (1, 50, 20), 0.02)
    att = K.Kernel("att", "attention", [q, kk, v], [K.Emit(o)], heads=2, sm_scale=1 / np.sqrt(20))
    ff = K.Kernel("ff", "matmul", [o], [K.Bias(np.zeros(40, np.float32)), K.GeGLU(), K.Emit(g)],
                  weights=weights(rng, (40, 40), 1))
    kg = K.KernelGraph([att, ff], [q, kk, v], [o, g])
    _, out = run_both(kg, {n: rng.normal(0, 2, a.shape) for n, a in (("q", q), ("k", kk), ("v", v))})
    check(out, min_db=25)


def test_unet_pieces_time_embedding_concat_upsample_stride2():
    rng = RNG(3)
    x = act("x", (1, 8, 8, 20), 0.05)
    t = act("t", (1, 40), 0.05)
    h = act("h", (1, 4, 4, 40), 0.04)
    u = act("u", (1, 8, 8, 40), 0.04)
    c = act("c", (1, 8, 8, 60), 0.05)
    n = act("n", (1, 8, 8, 60), 0.03)
    a = act("a", (1, 8, 8, 60), 0.05)
    ks = [K.Kernel("down", "conv3x3", [x], [K.Bias(np.zeros(40, np.float32)), K.AddVec(t), K.Emit(h)],
                   weights=weights(rng, (40, 20, 3, 3), 0), stride=2),
          K.Kernel("up", "upsample", [h], [K.Emit(u)]),
          K.Kernel("cat", "concat", [x, u], [K.Emit(c)]),
          K.Kernel("gn", "norm", [c], [K.Norm("gn", 3, 1e-5, np.ones(60), np.zeros(60)), K.Activation("silu"),
                                       K.Emit(n)]),
          K.Kernel("add", "add", [n, c], [K.Scale(0.5), K.Emit(a)])]
    kg = K.KernelGraph(ks, [x, t], [a])
    _, out = run_both(kg, {"x": rng.normal(0, 2, x.shape), "t": rng.normal(0, 2, t.shape)})
    check(out)


def test_per_step_scales_one_program():
    rng = RNG(4)
    x = K.Act("x", (1, 40, 40), np.array([0.05, 0.2], np.float32))
    y = K.Act("y", (1, 40, 20), np.array([0.04, 0.15], np.float32))
    k = K.Kernel("mm", "matmul", [x], [K.Emit(y)], weights=weights(rng, (40, 20), 1))
    kg = K.KernelGraph([k], [x], [y], n_steps=2)
    samples = [{"x": rng.normal(0, sd, x.shape)} for sd in (1.0, 4.0)]
    bundles = []
    for step in (0, 1):
        b, out = run_both(kg, samples[step], step=step, calib=samples)
        check(out)
        bundles.append(b.to_bytes())
    assert bundles[0] == bundles[1]      # one program serves both steps
    assert b.n_steps == 2 and len(b.step_table) == 2 * b.step_bank


def test_big_gn_spills_and_tiles():
    """A feature map larger than the acc buffer: GroupNorm statistics over tiles, a second pass from DRAM."""
    rng = RNG(5)
    m = DEFAULT.with_array("4x2").__class__(**{**DEFAULT.__dict__, "acc_lines": 512, "act_lines": 2048})
    x = act("x", (1, 16, 16, 40), 0.05)
    y = act("y", (1, 16, 16, 40), 0.03)
    k = K.Kernel("conv", "conv3x3", [x], [K.Norm("gn", 2, 1e-5, np.ones(40), np.zeros(40)), K.Emit(y)],
                 weights=weights(rng, (40, 40, 3, 3), 0))
    kg = K.KernelGraph([k], [x], [y])
    b, out = run_both(kg, {"x": rng.normal(0, 1.5, x.shape)}, machine=m)
    check(out)
    assert sum(1 for i in b.instrs if i.op == "conv") > 1


def test_requant_inside_a_fusion_group():
    """The model quantizes the conv output before the GroupNorm: the kernel rounds to that grid on chip."""
    rng = RNG(6)
    x = act("x", (1, 8, 8, 40), 0.05)
    y = act("y", (1, 8, 8, 40), 0.03)
    k = K.Kernel("conv", "conv3x3", [x], [K.Requant(np.full(1, 0.04, np.float32)),
                                           K.Norm("gn", 4, 1e-5, np.ones(40), np.zeros(40)), K.Emit(y)],
                 weights=weights(rng, (40, 40, 3, 3), 0))
    kg = K.KernelGraph([k], [x], [y])
    b, out = run_both(kg, {"x": rng.normal(0, 1.5, x.shape)})
    check(out)
    # rounded into an int8 tile on chip (the conv's dequantize fused with it), and back from it
    assert any(i.op == "deqact" and i.args["out"] == "act" and i.args["sbuf"] == "acc" for i in b.instrs)
    assert any(i.op == "deq" and i.args["sbuf"] == "act" for i in b.instrs)


def test_requant_inside_keeps_the_tiling():
    """Rounding inside a fusion group costs SFU passes, not weight traffic: a GeGLU projection still runs in
    column chunks (the same matmul instructions) and conv + GN + SiLU loads no more; each kernel stays
    within 2 int8 steps of its float meaning."""
    from sdac import models
    from sdac.compiler.divergence import compare_kernels, reference_inputs
    from sdac.compiler.driver import compile_model
    from sdac.perf.model import estimate
    for name, kernel in (("conv_gn_silu", "/conv/Conv"), ("transformer", "/block/ff/net.0/proj/MatMul")):
        qdq, _ = models.build(name)
        plain, faithful = compile_model(qdq, requant_inside=False), compile_model(qdq, requant_inside=True)

        def ops(r, which):
            d = next(d for d in r.bundle.debug if d["kernel"] == kernel)
            return [i for i in r.bundle.instrs[d["first"]:d["last"] + 1] if i.op == which]
        if name == "transformer":
            assert [i.args for i in ops(faithful, "mm")] == [i.args for i in ops(plain, "mm")]
        sfu_passes = [sum(len(ops(r, op)) for op in ("deq", "deqact", "act")) for r in (plain, faithful)]
        assert sfu_passes[1] > sfu_passes[0], name          # it does round inside
        dram = [next(k.dram_bytes for k in estimate(r.bundle).kernels if k.name == kernel) for r in (plain, faithful)]
        assert dram[1] <= 1.1 * dram[0], (name, dram)
        x = models.sample_inputs(name, seed=4)
        diffs = compare_kernels(faithful.kernel_graph, reference_inputs(faithful.kernel_graph, faithful.bundle, x))
        assert all(d.max_lsb <= 2.0 for d in diffs if d.kind != "attention"), [(d.kernel, d.max_lsb) for d in diffs]


def test_on_chip_temporaries_take_no_tile_rows():
    """An int8 temporary that fits the last output's slot lives there (no act lines of its own); a wider one
    gets one shared, single-buffered region."""
    from types import SimpleNamespace

    from sdac.compiler.lower.epilogue import EpiloguePlan, SfuOp
    from sdac.compiler.lower.kernels_impl import _act_rows, _tile_act_lines, _tmp_lines
    low = SimpleNamespace(cl=lambda c: -(-c // 20), m=DEFAULT)

    def plan(out_ch, tmp_ch=None):
        out = act("y", (1, out_ch), 0.1)
        ops = [SfuOp("deq")]
        if tmp_ch:
            t = act("t", (1, tmp_ch), 0.1)
            ops += [SfuOp("act", out_act=t, on_chip=True), SfuOp("deq", src_act=True, src_tmp=t)]
        return EpiloguePlan(ops + [SfuOp("act", out_act=out)], len(ops) + 1, False, 0, out_ch)
    assert (_tile_act_lines(low, plan(80, 80)), _tmp_lines(low, plan(80, 80))) == (4, 0)
    assert _act_rows(low, plan(80, 80)) == _act_rows(low, plan(80)) == (DEFAULT.act_lines // 2) // 8
    assert (_tile_act_lines(low, plan(40, 160)), _tmp_lines(low, plan(40, 160))) == (2, 8)
    assert _act_rows(low, plan(40, 160)) == (DEFAULT.act_lines // 2) // (2 * 2 + 8)


def test_deq_and_act_fuse_only_where_the_deq_value_is_dead():
    """fuse_deq_act: a deq and the act after it become one deqact when the int16 value the deq leaves in acc
    is not read afterwards (the act writes back in place, or the next op touching the tile's acc lines
    rewrites them), neither accumulates statistics, and the pair does not span the GroupNorm split."""
    from sdac.compiler.lower.epilogue import SfuOp, StatSpec, fuse_deq_act
    y, t = act("y", (1, 40), 0.1), act("t", (1, 40), 0.1)
    deq, emit = (lambda **k: SfuOp("deq", **k)), (lambda **k: SfuOp("act", out_act=y, **k))

    def kinds(ops, split=None):
        out, sp = fuse_deq_act(ops, len(ops) if split is None else split)
        return [o.kind for o in out], sp
    assert kinds([deq(), emit()]) == (["deqact"], 1)
    assert kinds([deq(), SfuOp("act", fn="silu")]) == (["deqact"], 1)                 # in place: writes it back
    rounding = [deq(), SfuOp("act", out_act=t, on_chip=True), deq(src_act=True, src_tmp=t), emit()]
    assert kinds(rounding) == (["deqact", "deqact"], 2)            # the read-back rewrites the tile's acc
    assert kinds([deq(), emit(), SfuOp("add")]) == (["deq", "act", "add"], 3)   # the add reads the deq's value
    norm = SfuOp("norm", group=StatSpec("chan", 4, False))
    assert kinds([deq(), emit(), norm], split=2) == (["deq", "act", "norm"], 2)
    assert kinds([deq(st=StatSpec("row", 1, True)), SfuOp("act", fn="silu")]) == (["deq", "act"], 2)
    assert kinds([deq(), SfuOp("act", fn="silu"), norm], split=1) == (["deq", "act", "norm"], 1)   # spans split
    fused, _ = fuse_deq_act(rounding, 4)
    assert fused[0].parts == (rounding[0], rounding[1]) and fused[0].out_act is t and fused[1].src_tmp is t


def test_deqact_with_overlapping_int8_tiles_is_emitted_as_the_pair():
    """A deqact whose int8 source and int8 result overlap at different strides would break the ISA's
    in-place-or-disjoint rule: the lowering emits the deq and the act instead (through the tile's acc)."""
    from sdac.compiler.lower.epilogue import SfuOp
    from sdac.compiler.lower.lowering import Lowerer
    from sdac.compiler.lower.params import PrmImage
    prm = PrmImage(DEFAULT.lanes, 1)
    prm.base = 0
    t, y = act("t", (1, 40), 0.1), act("y", (1, 60), 0.1)
    d = SfuOp("deq", src_act=True, src_tmp=t, sc=prm.word(1 << 24))
    a = SfuOp("act", out_act=y, sc=prm.word(1 << 24))
    op = SfuOp("deqact", src_act=True, src_tmp=t, out_act=y, sc=a.sc, parts=(d, a))
    for out, outrs, want in ((100, 2, ["deqact"]),        # in place: same address and stride
                             (300, 3, ["deqact"]),        # disjoint
                             (100, 3, ["deq", "act"])):   # overlapping at another stride
        low = Lowerer(None, DEFAULT)
        low.sfu(op, prm, v=0, vrs=2, rows=4, cols=40, st_first=False, src=100, srs=2, out=out, outrs=outrs)
        assert [i.op for i in low.pb.finish()] == want, (out, outrs)


def test_tile_height_ties_go_to_the_taller_tile():
    """best_rows: among tilings estimated within TIE of the cheapest, the tallest (fewest tiles) wins."""
    from sdac.compiler.lower.cost import TIE, TileWork, best_rows, tiling_cycles
    m = DEFAULT

    def work(r):       # array-bound tiles whose instruction overhead makes short tiles a little dearer
        return TileWork(r, 64, r * 64 * 640, 0, 0, 3, array=r * 64 * 640 / 800)
    r, c = best_rows(m, 64, 64, work, 1)
    costs = {h: tiling_cycles(m, [work(min(h, 64 - r0)) for r0 in range(0, 64, h)]) for h in range(1, 65)}
    best = min(costs.values())
    assert c == costs[r] <= best * (1 + TIE)
    assert all(costs[h] > best * (1 + TIE) for h in costs if h > r)


def test_a_rounded_value_that_is_also_stored_comes_back_from_the_stored_tile():
    """Requant(y) then Emit(y) (the model rounds a value the kernel also stores): the stored int8 tile is the
    rounding and the flow reads it back; no temporary of its own, and both outputs match the float meaning."""
    rng = RNG(13)
    x = act("x", (1, 8, 8, 40), 0.05)
    y = act("y", (1, 8, 8, 40), 0.04)
    z = act("z", (1, 8, 8, 40), 0.03)
    k = K.Kernel("conv", "conv3x3", [x], [K.Requant(np.full(1, 0.04, np.float32), "y"), K.Emit(y),
                                           K.Norm("gn", 4, 1e-5, np.ones(40), np.zeros(40)), K.Emit(z)],
                 weights=weights(rng, (40, 40, 3, 3), 0))
    kg = K.KernelGraph([k], [x], [y, z])
    b, out = run_both(kg, {"x": rng.normal(0, 1.5, x.shape)})
    check(out)
    to_act = [i for i in b.instrs if i.op in ("act", "deqact", "norm") and i.args.get("out") == "act"]
    back = [i for i in b.instrs if i.op == "deq" and i.args["sbuf"] == "act"]
    stores = [i for i in b.instrs if i.op == "store" and i.args["buf"] == "act"]
    assert back and len(to_act) == 2 * len(back)        # per tile: y (stored, read back) and z; no temporary
    assert {i.args["s"] for i in back} <= {i.args["sram"] for i in stores}     # read back from y's stored tile


def test_compare_kernels_locates_a_wrong_kernel():
    from sdac.compiler.divergence import compare_kernels
    rng = RNG(7)
    x = act("x", (1, 40, 40), 0.05)
    y = act("y", (1, 40, 40), 0.05)
    z = act("z", (1, 40, 20), 0.05)
    k1 = K.Kernel("a", "matmul", [x], [K.Emit(y)], weights=weights(rng, (40, 40), 1))
    k2 = K.Kernel("b", "matmul", [y], [K.Emit(z)], weights=weights(rng, (40, 20), 1))
    kg = K.KernelGraph([k1, k2], [x], [z])
    inputs = {"x": rng.normal(0, 2, x.shape)}
    calibrate_absmax(kg, [inputs])
    good = compare_kernels(kg, inputs)
    assert [d.kernel for d in good] == ["a", "b"] and all(d.max_lsb <= 2 for d in good)
    # a format that saturates: kernel b must stand out (a Scale keeps the calibrated format: a value
    # going straight to its Emit is held in units of the output's step, whatever the calibration)
    k2.epilogue = [K.Scale(1.0, absmax=1e-3), K.Emit(z)]
    k2.main_absmax = 1e-3
    bad = compare_kernels(kg, inputs)
    assert bad[0].max_lsb <= 2 and bad[1].max_lsb > 5


def test_conv_input_channels_in_chunks():
    """Input rows wider than the input slot: channels in chunks that accumulate into the same outputs."""
    import dataclasses
    rng = RNG(8)
    m = dataclasses.replace(DEFAULT, act_lines=960)       # a quarter holds 240 lines < 3 rows x 8 px x 12 lines
    x = act("x", (1, 8, 8, 240), 0.05)
    y = act("y", (1, 8, 8, 40), 0.03)
    k = K.Kernel("conv", "conv3x3", [x], [K.Emit(y)], weights=weights(rng, (40, 240, 3, 3), 0))
    kg = K.KernelGraph([k], [x], [y])
    b, out = run_both(kg, {"x": rng.normal(0, 1.5, x.shape)}, machine=m)
    check(out)
    assert any(i.op == "conv" and i.acc for i in b.instrs)


@pytest.mark.parametrize("rounds", [False, True])
def test_geglu_projection_in_column_chunks(rounds):
    """Weights that do not fit a wgt slot: value and gate columns in matching chunks (a partial last one),
    each chunk dequantized, gated and emitted on its own. With the model's roundings inside (requant_inside:
    before and after the bias) each chunk half is rounded on chip and the chunks stay the same."""
    import dataclasses
    rng = RNG(9)
    m = dataclasses.replace(DEFAULT, wgt_lines=320)       # a slot holds 4 blocks of 40 lines: 2 + 2 per chunk
    x = act("x", (1, 90, 40), 0.05)
    g = act("g", (1, 90, 100), 0.02)
    bias = [K.Bias(rng.normal(0, .1, 200).astype(np.float32))]
    if rounds:
        bias = [K.Requant(np.full(1, 0.03, np.float32)), *bias, K.Requant(np.full(1, 0.035, np.float32))]
    k = K.Kernel("ff", "matmul", [x], [*bias, K.GeGLU(), K.Emit(g)], weights=weights(rng, (40, 200), 1))
    kg = K.KernelGraph([k], [x], [g])
    b, out = run_both(kg, {"x": rng.normal(0, 2, x.shape)}, machine=m)
    # (an inner rounding that falls the other way moves value or gate by a whole step: a few LSB after the
    # product; 46 dB overall)
    check(out, min_db=25, max_lsb=5 if rounds else 3)
    per_tile = [i.args["cols"] for i in b.instrs if i.op == "geglu"]
    assert per_tile[:3] == [40, 40, 20]                   # 5 output lines in chunks of 2, 2, 1
    # two roundings of each half: each one pass into an on-chip int8 tile (the first fused with the
    # dequantize), each read back from it (the first read fused with the second rounding, in place)
    back = [i for i in b.instrs if i.op in ("deq", "deqact") and i.args["sbuf"] == "act"]
    to_tile = [i for i in b.instrs if i.op == "deqact" and i.args["out"] == "act"]
    assert len(back) == len(to_tile) == (4 * len(per_tile) if rounds else 0)


def test_groupnorm_of_an_int8_tensor_larger_than_acc_recomputes():
    """A GroupNorm kernel on an int8 input whose image exceeds acc: the second pass reloads the input
    and dequantizes it again rather than spilling int32 values to DRAM, except for the last tiles, which
    stay in the acc beyond the two tile slots."""
    import dataclasses
    rng = RNG(10)
    m = dataclasses.replace(DEFAULT, acc_lines=256)
    x = act("x", (1, 16, 16, 40), 0.05)
    y = act("y", (1, 16, 16, 40), 0.03)
    k = K.Kernel("gn", "norm", [x], [K.Norm("gn", 4, 1e-5, rng.uniform(.5, 1.5, 40), rng.normal(0, .2, 40)),
                                     K.Activation("silu"), K.Emit(y)])
    kg = K.KernelGraph([k], [x], [y])
    b, out = run_both(kg, {"x": rng.normal(0, 1.5, x.shape)}, machine=m)
    check(out)
    assert not any(i.op == "store" and i.args["buf"] == "acc" for i in b.instrs)
    deqs = [i for i in b.instrs if i.op == "deq"]
    first = sum(i.args["st"] for i in deqs)                       # statistics in the first pass only
    assert first == 7 and len(deqs) - first == 6                  # 7 tiles of 40 rows; the last one kept


@pytest.mark.parametrize("K_, N_, geglu", [(320, 60, False), (100, 40, False), (320, 80, True)])
def test_matmul_as_weight_stationary_conv(K_, N_, geglu):
    """A matmul forced to CONV-WS runs as a 3x3 conv of stride 3 over a one-column image (nine taps of
    ceil(K/9L) lines, zero-padded weights); the results match the float reference like MM-OS's do."""
    rng = RNG(11)
    x = act("x", (1, 50, K_), 0.05)
    if geglu:
        y = act("y", (1, 50, N_ // 2), 0.02)
        ep = [K.Bias(rng.normal(0, .1, N_).astype(np.float32)), K.GeGLU(), K.Emit(y)]
    else:
        y = act("y", (1, 50, N_), 0.03)
        ep = [K.Bias(rng.normal(0, .1, N_).astype(np.float32)), K.Emit(y)]
    k = K.Kernel("mm", "matmul", [x], ep, weights=weights(rng, (K_, N_), 1))
    k.dataflow, k.dataflow_reason = "ws", "overridden by option (mm)"
    kg = K.KernelGraph([k], [x], [y])
    b, out = run_both(kg, {"x": rng.normal(0, 2, x.shape)})
    check(out, min_db=25)
    convs = [i for i in b.instrs if i.op == "conv"]
    assert convs and not any(i.op == "mm" for i in b.instrs)
    cinl = -(-(-(-K_ // DEFAULT.lanes)) // 9)          # lines per tap: ceil(lines of K / 9)
    assert all(i.args["stride"] == 3 and i.args["ow"] == 1 and i.args["ips"] == cinl for i in convs)
    assert b.debug[0]["dataflow"] == "ws" and b.debug[0]["linear_k"] == K_
    from sdac.perf.model import estimate
    assert estimate(b).macs == 50 * K_ * N_                # the padded taps' zero weights are not work


def test_cost_model_picks_the_faster_matmul_dataflow():
    """Unforced, the lowering times MM-OS and CONV-WS and keeps the faster: never slower than either."""
    from sdac.perf.model import estimate
    rng = RNG(12)
    cycles = {}
    picked = {}
    for K_, T_ in ((320, 400), (1280, 120), (1280, 50)):
        for df in ("auto", "os", "ws"):
            x = act("x", (1, T_, K_), 0.05)
            y = act("y", (1, T_, 320), 0.03)
            k = K.Kernel("mm", "matmul", [x], [K.Emit(y)], weights=weights(rng, (K_, 320), 1))
            if df != "auto":
                k.dataflow, k.dataflow_reason = df, "overridden by option (mm)"
            kg = K.KernelGraph([k], [x], [y])
            calibrate_absmax(kg, [{"x": rng.normal(0, 2, x.shape)}])
            b = lower(kg, DEFAULT)
            cycles[df] = estimate(b).total_cycles
            if df == "auto":
                chosen = b.debug[0]["dataflow"]
        assert cycles["auto"] <= min(cycles["os"], cycles["ws"]) * 1.01, (K_, cycles)
        assert cycles["auto"] == cycles[chosen]
        picked[K_, T_] = chosen
    # Two accumulator sets hide MM-OS's readout, so whole 40-row tiles stream at peak (400 = 10 x 40 tokens);
    # 50 tokens pad to two row tiles (50 / 80), where CONV-WS's 72 of 64 lines per token win
    assert picked == {(320, 400): "os", (1280, 120): "os", (1280, 50): "ws"}


@pytest.mark.parametrize("cin, expect", [(4, "os"), (40, "ws")])
def test_conv_dataflow_by_cost_unless_forced(cin, expect):
    """A 3x3 conv with few input channels fills few PE rows in CONV-WS: the lowering picks MM-OS there by its
    cost model (never slower than either), keeps CONV-WS otherwise, and obeys an override."""
    from sdac.perf.model import estimate
    rng = RNG(21)
    cycles, chosen = {}, None
    for df in ("auto", "os", "ws"):
        x = act("x", (1, 16, 16, cin), 0.05)
        y = act("y", (1, 16, 16, 40), 0.03)
        k = K.Kernel("c", "conv3x3", [x], [K.Emit(y)], weights=weights(rng, (40, cin, 3, 3), 0))
        if df != "auto":
            k.dataflow, k.dataflow_reason = df, "overridden by option (c)"
        kg = K.KernelGraph([k], [x], [y])
        b, out = run_both(kg, {"x": rng.normal(0, 1.5, (1, 16, 16, cin))})
        check(out)
        cycles[df] = estimate(b).total_cycles
        assert {i.args["df"] for i in b.instrs if i.op == "conv"} == {b.debug[0]["dataflow"]}
        if df == "auto":
            chosen = b.debug[0]["dataflow"]
        else:
            assert b.debug[0]["dataflow"] == df
    assert chosen == expect and cycles["auto"] <= min(cycles["os"], cycles["ws"]), cycles
