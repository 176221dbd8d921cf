"""Fast paths of the frontend and the graph passes against the plain definitions they replace (same results,
same errors)."""
import numpy as np
import pytest

from sdac.compiler import weights as W

RNG = np.random.default_rng(12)


def _external(tmp_path, q: np.ndarray, offset: int = 5, truncate: int = 0) -> W.LazyArray:
    """q stored as int4 in an external-data file (at ``offset``, the file cut ``truncate`` bytes short)."""
    u = q.astype(np.uint8).reshape(-1) & 0xF
    if u.size % 2:
        u = np.append(u, np.uint8(0))
    packed = (u[0::2] | (u[1::2] << 4)).tobytes()
    path = tmp_path / "w.data"
    path.write_bytes((bytes(range(offset)) + packed)[:offset + len(packed) - truncate])
    return W.LazyArray.of(W.ExternalData(str(path), offset, len(packed), W.INT4, q.shape))


@pytest.mark.parametrize("shape,axis", [((6, 4, 3, 3), 0), ((12, 10), 1), ((1, 2), 1), ((4, 6), 0),
                                        ((3, 700, 2), 0), ((1100, 700), 1), ((1100, 700), 0)])
def test_int4_min_checks_on_external_data_read_in_chunks(tmp_path, monkeypatch, shape, axis):
    """The chunked reads of external data give what the whole-tensor reads give (chunks smaller than a row,
    than the tensor, odd sizes), and a short file raises the whole-tensor read's error."""
    for chunk in (8, 24, 1 << 18):
        monkeypatch.setattr(W, "_CHUNK", chunk)
        for trial in range(4):
            q = RNG.integers(-7, 8, shape).astype(np.int8)
            if trial:
                q.reshape(-1)[RNG.integers(q.size, size=trial)] = -8
            lz = _external(tmp_path, q)
            want = (np.moveaxis(q, axis, 0).reshape(shape[axis], -1) == -8).any(axis=1)
            assert W.int4_may_hold_min(lz) == bool(want.any()) == W.int4_may_hold_min(lz.T)
            assert np.array_equal(W.int4_min_channels(lz, axis), want)
            clean: dict = {}       # the rows before the first -8 found are not read again: same channels
            assert W.int4_may_hold_min(lz.T, clean) == bool(want.any()) and (lz.source in clean) == want.any()
            assert np.array_equal(W.int4_min_channels(lz, axis, clean), want)
        short = _external(tmp_path, q, truncate=1)
        with pytest.raises(OSError, match="expected"):
            W.int4_may_hold_min(short.T)
        with pytest.raises(OSError, match="expected"):
            W.int4_min_channels(short, axis)


def _graph_by_networkx(graph):
    """The MultiDiGraph networkx's own methods build from the port lists (the reference for ir.Graph's
    direct edits of its dicts)."""
    import networkx as nx
    ref = nx.MultiDiGraph()
    for n, d in graph.g._node.items():
        ref.add_node(n, **d)
    for n, d in graph.g._node.items():
        for port, t in enumerate(d["inputs"]):
            if t:
                ref.add_edge(graph._producer[t], n, key=f"{t}@{port}", tensor=graph.tensors[t], port=port)
    return ref


def test_graph_edits_keep_networkx_structures_and_the_topological_order():
    """Random adds, rewires and removals: the graph equals the one networkx builds, verify_graph passes, and
    the topological order is networkx's lexicographical one (by creation order)."""
    import networkx as nx
    from sdac.compiler import ir
    rng = np.random.default_rng(5)
    graph = ir.Graph()
    tensors = []
    for i in range(300):
        r = rng.random()
        live = [t for t in tensors if t in graph._producer]
        if r < 0.5 or len(live) < 3:
            ins = [str(rng.choice(live)) for _ in range(rng.integers(0, 3))] if live else []
            t = f"t{i}"
            graph.add_tensor(t, (1,))
            graph.add_node("X", ins + ([""] if ins and rng.random() < 0.2 else []), [t], name=str(rng.choice(["a", "b", t])))
            tensors.append(t)
        elif r < 0.8:
            n = rng.choice(list(graph.g._node))
            ins = graph.inputs(n)
            if ins:
                order = graph.node(n)["order"]
                older = [t for t in live if graph.node(graph._producer[t])["order"] < order]
                if older:
                    graph.set_input(n, int(rng.integers(len(ins) + 1)), str(rng.choice(older)))
        else:
            t = str(rng.choice(live))
            if not graph.consumers(t):
                graph.remove_node(graph._producer[t])
        if i % 50 == 49:
            ir.verify_graph(graph)
            ref = _graph_by_networkx(graph)
            assert dict(graph.g._node) == dict(ref._node)
            assert {(u, v, k): d for u, v, k, d in graph.g.edges(keys=True, data=True)} == \
                {(u, v, k): d for u, v, k, d in ref.edges(keys=True, data=True)}
            assert {n: set(p) for n, p in graph.g._pred.items()} == {n: set(p) for n, p in ref._pred.items()}
            want = list(nx.lexicographical_topological_sort(ref, key=lambda v: ref.nodes[v]["order"]))
            assert graph.nodes() == want
            graph.remove_dead()
            assert all(graph.g._succ[n] for n in graph.g._node)


def test_topological_order_with_parallel_edges_and_repeated_orders():
    import networkx as nx
    from sdac.compiler import ir
    rng = np.random.default_rng(6)
    for n in (1, 10, 60):
        for repeat in (False, True):
            g = nx.MultiDiGraph()
            orders = rng.integers(0, n // 3 + 1, n) if repeat else rng.permutation(n)
            for i in range(n):
                g.add_node(f"n{i:03d}", order=int(orders[i]))
            for _ in range(3 * n):
                a, b = sorted(rng.integers(0, n, 2))
                if a != b:
                    g.add_edge(f"n{a:03d}", f"n{b:03d}")     # repeated pairs: parallel edges
            want = list(nx.lexicographical_topological_sort(g, key=lambda v: (g.nodes[v]["order"], v)))
            assert ir.topological_order(g) == want
            g.add_edge(f"n{n - 1:03d}", "n000")
            if n > 1:
                assert ir.topological_order(g) is None


def _fold_cases():
    """(op, input arrays, attrs) for fold_constants' numpy fast path, odd cases included."""
    rng = np.random.default_rng(7)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    cases = [("Identity", [f32], {}), ("Identity", [i64(5)], {}), ("Identity", [np.array(2.5)], {}),
             ("Sqrt", [np.abs(f32)], {}), ("Sqrt", [f32], {}), ("Sqrt", [np.array([4.0], np.float64)], {}),
             ("Cast", [i64(3, -2)], {"to": 1}), ("Cast", [f32 * 100], {"to": 7}), ("Cast", [f32], {"to": 9}),
             ("Cast", [np.array([True, False])], {"to": 6}), ("Cast", [f32], {"to": 10}),
             ("Equal", [i64(1, 2), i64(1, 3)], {}), ("Equal", [f32, f32[:1]], {}),
             ("Where", [np.array([True, False]), i64(1, 2), i64(3, 4)], {}),
             ("Where", [np.array([True, False]), f32[0, :2], f32[1, :2]], {}),
             ("Gather", [i64(4, 5, 6), i64(0)], {"axis": 0}), ("Gather", [i64(4, 5, 6), np.array(-1, np.int64)], {}),
             ("Gather", [f32, np.array([[1, 0], [2, 2]], np.int32)], {"axis": 0}),
             ("Gather", [f32, i64(3, -4)], {"axis": 1}), ("Gather", [f32, i64(2)], {"axis": -2}),
             ("ConstantOfShape", [i64(2, 3)], {"value": np.array([7], np.int64)}),
             ("ConstantOfShape", [i64(1)], {}), ("ConstantOfShape", [i64(0)], {"value": np.array([1.5], np.float32)}),
             ("Slice", [i64(1, 2, 3, 4), i64(0), i64(2)], {}), ("Slice", [i64(1, 2, 3, 4), i64(-2), i64(2 ** 62)], {}),
             ("Slice", [f32, i64(1), i64(-1), i64(1)], {}), ("Slice", [f32, i64(3, 0), i64(0, 4), i64(1, 0), i64(-1, 2)], {}),
             ("Slice", [f32, np.array([1], np.int32), np.array([3], np.int32), np.array([-1], np.int32)], {}),
             ("Slice", [i64(1, 2, 3, 4), i64(-9), i64(9), i64(0), i64(-3)], {})]
    for op in ("Add", "Sub", "Mul", "Div"):
        cases += [(op, [i64(7, -7, 6, -1), i64(2, 2, -4, 3)], {}), (op, [i64(9), np.array(4, np.int64)], {}),
                  (op, [f32, f32[0]], {}), (op, [np.array(3, np.int32), np.array(-2, np.int32)], {}),
                  (op, [np.array([2.0, 0.5]), np.array([4.0, 8.0])], {})]
    return cases


@pytest.mark.parametrize("case", range(len(_fold_cases())))
def test_fold_fast_path_equals_onnx_reference(case):
    """fold_constants' numpy fast path gives onnx.reference's values, dtypes and shapes (or declines)."""
    from sdac.compiler import ir
    from sdac.compiler.passes import fold_constants as FC
    op, arrays, attrs = _fold_cases()[case]
    graph = ir.Graph(opset=17)
    names = [graph.add_const(a, base=f"in{i}") for i, a in enumerate(arrays)]
    graph.add_tensor("y", ())
    n = graph.add_node(op, names, ["y"], attrs=attrs)
    got = FC._fast_eval(graph, graph.node(n))
    assert got is not None, "the fast path should take this case"
    want = FC.evaluate_node(graph, n)
    assert len(got) == len(want) == 1
    assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
    assert np.array_equal(got[0], want[0], equal_nan=True)


@pytest.mark.parametrize("op,arrays,attrs", [
    ("Div", [np.array([1, 2], np.int64), np.array([0, 1], np.int64)], {}),      # integer division by zero
    ("Add", [np.array([1], np.int64), np.array([1], np.int32)], {}),            # mixed types: onnx.reference fails
    ("Gather", [np.array([1, 2], np.int64), np.array([2], np.int64)], {}),      # index out of range
    ("Slice", [np.array([1, 2], np.int64), np.array([0], np.int64), np.array([1], np.int64),
               np.array([0], np.int64), np.array([0], np.int64)], {}),           # step 0
    ("Concat", [np.array([1], np.int64), np.array([2], np.int64)], {"axis": 0}),  # not a fast op
])
def test_fold_fast_path_declines_what_it_does_not_mirror(op, arrays, attrs):
    from sdac.compiler import ir
    from sdac.compiler.passes import fold_constants as FC
    graph = ir.Graph(opset=17)
    names = [graph.add_const(a, base=f"in{i}") for i, a in enumerate(arrays)]
    graph.add_tensor("y", ())
    n = graph.add_node(op, names, ["y"], attrs=attrs)
    assert FC._fast_eval(graph, graph.node(n)) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32,
                                   np.int64, np.bool_])
def test_frontend_small_tensor_reading_equals_numpy_helper(dtype):
    """frontend._to_array reads raw_data itself for plain types: numpy_helper.to_array's values, dtype, shape
    (and the typed-field encodings still go through numpy_helper)."""
    from onnx import helper, numpy_helper
    from sdac.compiler import frontend
    rng = np.random.default_rng(8)
    for shape in [(), (1,), (3, 2), (0,)]:
        a = (rng.standard_normal(shape) * 50).astype(dtype)
        for t in (numpy_helper.from_array(a, "t"),
                  helper.make_tensor("t", helper.np_dtype_to_tensor_dtype(a.dtype), shape, a.reshape(-1).tolist())):
            got, want = frontend._to_array(t), numpy_helper.to_array(t)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("name", ["unet_cond", "transformer", "conv_gn_silu"])
def test_loaded_graph_order_is_the_topological_order(name):
    """load_model hands over its creation order as the topological order (every node is created after the
    producers of its inputs): what topological_order computes."""
    from sdac.compiler import ir
    from sdac.compiler.frontend import load_model
    from sdac.models import build
    graph = load_model(build(name)[0])
    assert graph._topo is not None
    assert graph._topo == ir.topological_order(graph.g)


def _shapes_model_by_helpers(graph):
    """refresh_shapes' model as onnx.helper builds it (the reference for fold_constants.shapes_model)."""
    import onnx
    from onnx import helper, numpy_helper
    from sdac.compiler.ir import onnx_node
    nodes, inits, weights = [], [], []
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    for n in graph.nodes():
        d = graph.node(n)
        if d["op"] == "Constant":
            v = d["value"]
            if np.size(v) <= 64:
                inits.append(numpy_helper.from_array(np.asarray(v), d["outputs"][0]))
            else:
                weights.append(helper.make_tensor_value_info(d["outputs"][0], onnx.helper.np_dtype_to_tensor_dtype(
                    v.dtype), list(v.shape)))
        elif d["op"] not in ("Input", "Output"):
            nodes.append(onnx_node(d))
    ins = [helper.make_tensor_value_info(t, elem.get(graph.tensors[t].dtype, onnx.TensorProto.FLOAT),
                                         list(graph.shape(t))) for t in graph.graph_inputs()] + weights
    outs = [helper.make_empty_tensor_value_info(t) for t in graph.graph_outputs()]
    gi = set(graph.graph_inputs())
    known = [helper.make_tensor_value_info(t, elem.get(tt.dtype, onnx.TensorProto.FLOAT), list(tt.shape))
             for t, tt in graph.tensors.items() if t not in gi and graph.producer(t) is not None
             and graph.op(graph.producer(t)) != "Constant" and tt.shape and min(tt.shape) > 0]
    return helper.make_model(helper.make_graph(nodes, "shapes", ins, outs, inits, value_info=known),
                             opset_imports=[helper.make_opsetid("", graph.opset)])


@pytest.mark.parametrize("name", ["unet_cond", "transformer", "attention"])
def test_shapes_model_bytes_equal_onnx_helpers(name):
    """fold_constants.shapes_model builds the bytes onnx.helper builds (after fold_qdq, and with a scalar
    graph input and an unknown dimension)."""
    from sdac.compiler.frontend import load_model
    from sdac.compiler.passes import PassContext, fold_constants, fold_qdq
    from sdac.models import build
    graph = load_model(build(name)[0])
    fold_qdq.run(graph, PassContext())
    graph.add_tensor("scalar_in", ())
    graph.add_node("Input", [], ["scalar_in"], name="input:scalar_in")
    graph.add_tensor("open_in", (1, -1))
    graph.add_node("Input", [], ["open_in"], name="input:open_in")
    assert fold_constants.shapes_model(graph).SerializeToString() == \
        _shapes_model_by_helpers(graph).SerializeToString()


@pytest.mark.parametrize("shape,axis", [((6, 4, 3, 3), 0), ((12, 10), 1), ((4, 6), 0), ((1100, 700), 1),
                                        ((1100, 700), 0)])
def test_int4_channel_codes_from_external_data(tmp_path, monkeypatch, shape, axis):
    """Reading only the requantized channels' bytes of an external tensor gives np.take of its codes."""
    monkeypatch.setattr(W, "_CHUNK", 64)
    q = RNG.integers(-8, 8, shape).astype(np.int8)
    lz = _external(tmp_path, q)
    for chans in (np.array([0]), np.array([1, 3]), np.arange(shape[axis])[::-2].copy()):
        chans = np.sort(chans)
        assert np.array_equal(W.int4_channel_codes(lz, axis, chans), np.take(q, chans, axis))


@pytest.mark.parametrize("name", ["unet_cond", "transformer"])
def test_early_removal_of_unused_constants_changes_nothing(monkeypatch, name):
    """fold_qdq drops the constants nothing reads before fold_constants runs: the same graph, fates (in
    order), tensors and kernels as leaving them to fold_constants' remove_dead."""
    from sdac.compiler.passes import PassContext, compile_graph, fold_qdq
    from sdac.models import build
    model = build(name)[0]

    def run():
        kg, g = compile_graph(model, ctx=PassContext(), debug=True)
        return (list(g.fate.items()), list(g.g._node), [(k.name, k.kind, k.sources) for k in kg.kernels],
                [(t, tt.shape, tt.dtype, tt.layout) for t, tt in g.tensors.items()])
    early = run()
    monkeypatch.setattr(fold_qdq, "_remove_unused_constants", lambda graph: None)
    assert run() == early


def test_has_path_equals_networkx():
    import networkx as nx
    from sdac.compiler.passes.form_kernels import _has_path
    rng = np.random.default_rng(9)
    for n in (2, 10, 40):
        g = nx.MultiDiGraph()
        g.add_nodes_from(range(n))
        for _ in range(int(1.5 * n)):
            a, b = sorted(rng.integers(0, n, 2))
            if a != b:
                g.add_edge(int(a), int(b))
        for a in range(n):
            for b in range(n):
                assert _has_path(g, a, b) == nx.has_path(g, a, b)


def test_verify_graph_reads_the_edges_it_checks():
    """verify_graph walks networkx's dicts itself: each broken edge is still named."""
    from sdac.compiler import ir
    from sdac.errors import CompileError

    def fresh():
        g = ir.Graph()
        for t in ("a", "b", "c"):
            g.add_tensor(t, (1, 4))
        g.add_node("Input", [], ["a"], name="in")
        g.add_node("Silu", ["a"], ["b"], name="s")
        g.add_node("Silu", ["b"], ["c"], name="t")
        g.add_node("Output", ["c"], [], name="out")
        ir.verify_graph(g)
        return g
    g = fresh()
    g.g._succ["in"]["s"]["a@0"]["tensor"] = None
    with pytest.raises(CompileError, match="in->s carries no tensor type"):
        ir.verify_graph(g)
    g = fresh()
    g.g._succ["in"]["s"]["a@0"]["tensor"] = ir.TensorType("a", (1, 4))
    with pytest.raises(CompileError, match="stale type for a"):
        ir.verify_graph(g)
    g = fresh()
    del g.g._succ["s"]["t"]["b@0"]
    with pytest.raises(CompileError, match="input 0 'b' has no edge from its producer"):
        ir.verify_graph(g)
    g = fresh()
    g.g._succ["in"]["s"]["a@0"]["port"] = 1
    g.node("s")["inputs"].append("x")
    g.add_tensor("x", (1, 4))
    with pytest.raises(CompileError):
        ir.verify_graph(g)
    g = fresh()
    g.tensors["c"].shape = (1, 5)
    with pytest.raises(CompileError, match="output shape"):
        ir.verify_graph(g)


def test_attention_chain_keys_tell_layouts_apart():
    """fuse_attention reuses answers for chains with equal keys: equal layouts give equal keys, and any
    difference apply_layout sees (op, perm, reshape target, axes) gives a different key."""
    from sdac.compiler import ir
    from sdac.compiler.passes.fuse_attention import _chain_key

    def chain(shape_to, perm, tag):
        g = ir.Graph()
        g.add_tensor("x", (1, 8, 6))
        g.add_node("Input", [], ["x"], name="in")
        s = g.add_const(np.array(shape_to, np.int64), base="shape")
        g.add_tensor("r" + tag, shape_to)
        a = g.add_node("Reshape", ["x", s], ["r" + tag], name="reshape" + tag)
        g.add_tensor("t" + tag, ())
        b = g.add_node("Transpose", ["r" + tag], ["t" + tag], name="transpose" + tag, attrs={"perm": perm})
        return _chain_key(g, [a, b])
    base = chain([1, 8, 2, 3], [0, 2, 1, 3], "a")
    assert base is not None and base == chain([1, 8, 2, 3], [0, 2, 1, 3], "b")
    assert base != chain([1, 8, 3, 2], [0, 2, 1, 3], "a")
    assert base != chain([1, 8, 2, 3], [0, 2, 3, 1], "a")
    assert chain([1, 8, 2, 3], (0, 2, 1, 3), "a") is not None
