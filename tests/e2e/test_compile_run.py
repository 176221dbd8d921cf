"""ONNX -> sdac compile -> golden model, against onnxruntime (issue #3 and #4 bounds).

Two honest references: onnxruntime on the same QDQ model with SiLU/GeLU
written as their hard forms (the hardware's functions), and onnxruntime on
the original model (the cost of the approximations, reported, not bounded).

Small graphs must reach 30 dB against the first. The small UNets here have
random weights: one int8 rounding that falls the other way early in the net
grows through the layers, so even the exact float meaning of the kernels
(reference.py) is only ~26 dB from onnxruntime on them. For those the bound
is per kernel (every kernel within 3 int8 steps of the reference, 6 for attention, fed the
reference's own inputs) plus a loose end-to-end bound; the 30 dB end-to-end
bound is held on the trained digits UNet (tests/e2e/test_digits.py).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sdac import models
from sdac.bundle import Bundle, read_bundle
from sdac.cli import main as sdac
from sdac.compiler.divergence import compare_kernels, reference_inputs
from sdac.compiler.driver import compile_model
from sdac.compiler.hardref import hard_reference
from sdac.compiler.reference import sqnr_db
from sdac.runtime.golden import run_bundle

GRAPHS = ["conv3x3", "conv_gn_silu", "resnet", "attention", "transformer"]
UNETS = ["unet_noattn", "unet", "unet_cond", "unet_xl"]


def _ort(model, feeds):
    sess = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString())
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def _compiled(name):
    qdq, flt = models.build(name)
    return qdq, flt, compile_model(qdq)


@pytest.fixture(scope="module", params=GRAPHS)
def graph(request):
    return (request.param, *_compiled(request.param))


@pytest.fixture(scope="module", params=UNETS)
def unet(request):
    return (request.param, *_compiled(request.param))


def _golden_vs_hard(name, qdq, result, seed):
    x = models.sample_inputs(name, seed=seed)
    out = next(iter(run_bundle(result.bundle, x, step=0).values()))
    return sqnr_db(_ort(hard_reference(onnx.load(qdq)), x), out)


def test_graphs_match_hard_reference(graph):
    name, qdq, _, result = graph
    for seed in (1, 2):
        db = _golden_vs_hard(name, qdq, result, seed)
        assert db >= 30.0, f"{name}: golden vs hard-activation onnxruntime SQNR {db:.1f} dB"


def test_unets_every_kernel_within_3_lsb(unet):
    name, qdq, _, result = unet
    x = models.sample_inputs(name, seed=1)
    ins = reference_inputs(result.kernel_graph, result.bundle, x)
    diffs = compare_kernels(result.kernel_graph, ins)
    for d in diffs:
        # attention keeps its scores at full precision where the model rounds them to int8 (kernels.py
        # score_scales): a few more steps of difference there, by design
        bound = 6.0 if d.kind == "attention" else 3.0
        assert d.max_lsb <= bound + 1e-3, f"{name}: kernel {d.kernel} ({d.kind}) is {d.max_lsb:.1f} LSB off"
    db = _golden_vs_hard(name, qdq, result, 1)
    assert db >= 20.0, f"{name}: golden vs hard-activation onnxruntime SQNR {db:.1f} dB"


def test_compile_is_deterministic(graph):
    name, qdq, _, result = graph
    again = compile_model(qdq)
    assert again.bundle.to_bytes() == result.bundle.to_bytes()


def test_cli_compile_and_run(tmp_path):
    qdq, _ = models.build("conv_gn_silu")
    out = tmp_path / "m.sdab"
    assert sdac(["compile", qdq, "-o", str(out), "-q"]) == 0
    b = read_bundle(out)
    assert isinstance(b, Bundle) and b.instrs[-1].op == "halt"
    assert sdac(["compile", qdq, "-o", str(out), "-q"]) == 2          # refuses to overwrite
    x = models.sample_inputs("conv_gn_silu", seed=3)
    np.savez(tmp_path / "in.npz", **x)
    assert sdac(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 0
    got = np.load(tmp_path / "o.npz")
    assert sqnr_db(_ort(hard_reference(onnx.load(qdq)), x), got[b.outputs[0].name]) >= 30.0
    # the default rounds where the QDQ model rounds inside the group; --no-requant-inside does not
    plain = tmp_path / "plain.sdab"
    assert sdac(["compile", qdq, "-o", str(plain), "-q", "--no-requant-inside"]) == 0
    ops = [[i.op for i in read_bundle(p).instrs] for p in (out, plain)]
    assert read_bundle(out).meta["requant_inside"] is True and read_bundle(plain).meta["requant_inside"] is False
    assert ops[0] == [i.op for i in compile_model(qdq).bundle.instrs]
    assert ops[1] == [i.op for i in compile_model(qdq, requant_inside=False).bundle.instrs] != ops[0]
    # --debug checks the graph after every pass; the bundle is the same
    checked = tmp_path / "debug.sdab"
    assert sdac(["compile", qdq, "-o", str(checked), "-q", "--debug"]) == 0
    assert checked.read_bytes() == out.read_bytes()


def test_cli_explain_lists_every_onnx_node(tmp_path, capsys):
    """--explain: the kernels, then every ONNX node of the model with where it went."""
    qdq, _ = models.build("resnet")
    assert sdac(["compile", qdq, "-o", str(tmp_path / "r.sdab"), "-q", "--explain"]) == 0
    text = capsys.readouterr().out
    head, sep, nodes = text.partition("every ONNX node and where it went:\n")
    assert sep and "KernelGraph:" in head
    fates = [line for line in nodes.splitlines() if line.strip() and not line.startswith("wrote ")]
    listed = {line.split()[0] for line in fates}
    assert listed == {n.name for n in onnx.load(qdq).graph.node}
    assert any("/Conv " in f and "kernel" in f for f in fates) and any("folded" in f for f in fates)


def test_cli_compile_bad_model(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert sdac(["compile", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["conv_gn_silu", "resnet", "attention"])
def test_requant_inside_follows_the_qdq_graph_closer(name):
    """With --requant-inside the device rounds where the QDQ model rounds: closer to onnxruntime's QDQ run."""
    qdq, _ = models.build(name)
    plain, faithful = compile_model(qdq, requant_inside=False), compile_model(qdq)
    x = models.sample_inputs(name, seed=4)
    hard = _ort(hard_reference(onnx.load(qdq)), x)
    db = [sqnr_db(hard, next(iter(run_bundle(r.bundle, x).values()))) for r in (plain, faithful)]
    assert db[1] >= 40.0 and db[1] > db[0], db


def test_requant_inside_rounds_inside_group_norm_and_the_scores():
    """The QDQ model rounds the normalized value, its product with gamma and the attention scores; with
    requant_inside the kernels carry those scales, the device rounds there too (each kernel within 2 int8
    steps of its float meaning, 6 for attention's fixed-point SoftMax), and conv+GN+SiLU lands 10 dB
    closer to onnxruntime than without."""
    from sdac.compiler.kernels import Norm
    qdq, _ = models.build("attention")
    r = compile_model(qdq, requant_inside=True)
    kg = r.kernel_graph
    norms = [e for k in kg.kernels for e in k.epilogue if isinstance(e, Norm)]
    assert norms and all(e.norm_scales is not None and e.gamma_scales is not None for e in norms)
    assert all(k.score_scales is not None for k in kg.kernels if k.kind == "attention")
    x = models.sample_inputs("attention", seed=4)
    diffs = compare_kernels(kg, reference_inputs(kg, r.bundle, x))
    worst = [(d.kernel, d.max_lsb) for d in diffs]
    assert all(d.max_lsb <= (6.0 if d.kind == "attention" else 2.0) for d in diffs), worst
    qdq, _ = models.build("conv_gn_silu")
    x = models.sample_inputs("conv_gn_silu", seed=4)
    hard = _ort(hard_reference(onnx.load(qdq)), x)
    db = [sqnr_db(hard, next(iter(run_bundle(compile_model(qdq, requant_inside=ri).bundle, x).values())))
          for ri in (False, True)]
    assert db[1] >= 42.0 and db[1] >= db[0] + 8.0, db
