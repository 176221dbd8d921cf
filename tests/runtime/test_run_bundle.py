"""Host conversion, run_bundle and `sdac run` on a hand-built bundle (1x1 conv + bias + SiLU, per-step scales)."""
import numpy as np
import pytest

from sdac.bundle import Bundle, IOTensor, write_bundle
from sdac.cli import main
from sdac.errors import SdacError
from sdac.isa import Instr, numerics as N
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import execute_bundle, run_bundle
from sdac.runtime.host import from_device, to_device

L = DEFAULT.lanes
C, H, W, CO = 6, 4, 3, 5
ROWS = H * W
IN_SCALES = (0.05, 0.11)
OUT_SCALES = (0.02, 0.03)


def io(name, shape, layout, dram, rows, cols, scales):
    return IOTensor(name=name, shape=shape, dtype="float32", layout=layout, dram=dram, rows=rows, cols=cols,
                    scales=scales)


def test_host_roundtrip_layouts_and_quantization():
    t = io("x", (2, 3, 2, 5), "nchw", 0, 20, 3, (0.5, 0.25))
    x = np.arange(60, dtype=np.float32).reshape(2, 3, 2, 5) - 30
    raw = np.frombuffer(to_device(t, x, 1, L), dtype=np.int8).reshape(20, L)
    assert (raw[:, 3:] == 0).all()                          # padding lanes are zero
    nhwc = x.transpose(0, 2, 3, 1).reshape(20, 3)
    assert np.array_equal(raw[:, :3], np.clip(np.round(nhwc / 0.25), -128, 127))   # saturates at +-32 * 4
    assert raw.min() == -120 and raw.max() == 116
    back = from_device(t, raw.tobytes(), 1, L)
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.array_equal(back, np.clip(np.round(x / 0.25), -128, 127).astype(np.float32) * np.float32(0.25))
    r = io("y", (2, 7, 3), "rows", 0, 14, 3, (1.0,))
    y = np.linspace(-200, 200, 42).reshape(2, 7, 3)
    assert np.array_equal(from_device(r, to_device(r, y, 0, L), 0, L), np.clip(np.round(y), -128, 127))
    with pytest.raises(SdacError, match="expected shape"):
        to_device(r, y[:1], 0, L)


def make_bundle(rng):
    Wq = rng.integers(-8, 8, (C, CO))
    Wq[0, 0], Wq[1, 0] = -8, 7
    bias = rng.integers(-300, 300, CO)
    wgt = np.zeros((C, L), dtype=np.int64)
    wgt[:, :CO] = Wq
    v = wgt & 15
    wbytes = (v[:, 0::2] | (v[:, 1::2] << 4)).astype(np.uint8).tobytes()    # C lines of L/2 bytes
    data = bytearray(256)
    data[0:len(wbytes)] = wbytes
    bline = np.zeros(L, dtype=np.int64)
    bline[:CO] = bias
    data[64:64 + 4 * L] = (bline & 0xFFFFFFFF).astype("<u4").tobytes()
    bank = 4 * L
    steps = []
    for s in range(2):
        line = np.zeros(L, dtype=np.uint32)
        line[:CO] = [N.make_scale(int(rng.integers(1 << 9, 1 << 11)), 10 + s) for _ in range(CO)]
        line[10] = N.make_scale(1 << 12, 16 + s)          # output requantization
        steps.append(line.astype("<u4").tobytes())
    prog = [
        Instr.make("setstep", src="csr", bank=bank),
        Instr.make("load", buf="wgt", dram=0, sram=0, run=C),
        Instr.make("load", buf="prm", dram=64, sram=1),
        Instr.make("load", buf="prm", step=1, dram=1024, sram=0),
        Instr.make("load", buf="act", dram=2048, sram=0, run=ROWS, push=["cmp"]),
        Instr.make("mm", pop=["ld"], push=["sfu"], a=0, ars=1, w=0, ws=C, c=0, crs=1, m=ROWS, n=CO, k=C),
        Instr.make("deq", pop=["cmp"], sbuf="acc", s=0, srs=1, d=100, drs=1, rows=ROWS, cols=CO, sc=0, per_ch=1,
                   bias=1, bb=1),
        Instr.make("act", push=["st"], sbuf="acc", s=100, srs=1, out="act", d=200, drs=1, rows=ROWS, cols=CO,
                   fn="silu", frac=8, sc=10),
        Instr.make("store", pop=["sfu"], buf="act", dram=4096, sram=200, run=ROWS),
        Instr.make("halt"),
    ]
    b = Bundle(machine=DEFAULT, instrs=prog, dram_size=8192, data=bytes(data), data_base=0, n_steps=2,
               step_base=1024, step_bank=bank, step_table=b"".join(steps),
               inputs=[io("x", (1, C, H, W), "nchw", 2048, ROWS, C, IN_SCALES)],
               outputs=[io("y", (1, CO, H, W), "nchw", 4096, ROWS, CO, OUT_SCALES)])
    return b, Wq, bias, steps


def reference(x, step, Wq, bias, steps):
    """The program's meaning in plain numpy integers."""
    xq = np.clip(np.round(x / IN_SCALES[step]), -128, 127).astype(np.int64)[0].transpose(1, 2, 0).reshape(ROWS, C)
    acc = xq @ Wq
    e = np.frombuffer(steps[step], dtype="<u4").astype(np.int64)
    mul, sh = e[:CO] & 0xFFFFFF, e[:CO] >> 24
    d = np.clip(((acc * mul + (1 << (sh - 1))) >> sh) + bias, -2**15, 2**15 - 1)
    t = np.clip(d + (3 << 8), 0, 6 << 8)
    y = (d * t * 10923 + (1 << 23)) >> 24
    omul, osh = int(e[10]) & 0xFFFFFF, int(e[10]) >> 24
    q = np.clip((y * omul + (1 << (osh - 1))) >> osh, -128, 127)
    return (q.astype(np.float32) * np.float32(OUT_SCALES[step])).reshape(1, H, W, CO).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("step", [0, 1])
def test_run_bundle_matches_numpy(step):
    rng = np.random.default_rng(11)
    b, Wq, bias, steps = make_bundle(rng)
    x = rng.normal(0, 3, (1, C, H, W)).astype(np.float32)
    out = run_bundle(b, {"x": x}, step)
    ref = reference(x, step, Wq, bias, steps)
    assert out["y"].shape == (1, CO, H, W)
    assert np.array_equal(out["y"], ref)
    assert len(np.unique(out["y"])) > 10
    _, res = execute_bundle(b, {"x": x}, step, trace=True)
    assert res.macs == ROWS * CO * C and len(res.trace) == 9


def test_run_bundle_input_errors():
    b, *_ = make_bundle(np.random.default_rng(1))
    x = np.zeros((1, C, H, W), np.float32)
    for inputs, msg in (({}, "missing input"), ({"x": x, "z": x}, "unexpected input"),
                        ({"x": x[:, :2]}, "expected shape")):
        with pytest.raises(SdacError, match=msg):
            run_bundle(b, inputs)
    with pytest.raises(SdacError, match="step 2"):
        run_bundle(b, {"x": x}, step=2)


def test_sdac_run_cli(tmp_path, capsys):
    rng = np.random.default_rng(12)
    b, Wq, bias, steps = make_bundle(rng)
    path = tmp_path / "m.sdab"
    write_bundle(b, path)
    x = rng.normal(0, 3, (1, C, H, W)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    args = ["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz"),
            "--step", "1", "--trace", str(tmp_path / "t.json")]
    assert main(args) == 0
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["y"], reference(x, 1, Wq, bias, steps))
    import json
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["format"] == "sdac-trace" and [r["op"] for r in t["trace"]][-1] == "store"
    # refuses to overwrite without --force
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    # bad inputs: exit 2 with a one-line message
    np.savez(tmp_path / "bad.npz", x=x, extra=x)
    bad = ["run", str(path), "--inputs", str(tmp_path / "bad.npz"), "--outputs", str(tmp_path / "o2.npz")]
    assert main(bad) == 2
    assert "unexpected input(s): extra" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", x=x[0])
    assert main(bad) == 2
    assert "expected shape" in capsys.readouterr().err
    # a device error: exit 1 naming the instruction
    b.instrs[8] = b.instrs[8].replace(dram=8192 - 10)
    write_bundle(b, tmp_path / "broken.sdab")
    assert main(["run", str(tmp_path / "broken.sdab"), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "o3.npz")]) == 1
    err = capsys.readouterr().err
    assert "OOB_DRAM" in err and "instruction 8" in err and len(err.strip().splitlines()) == 1


def host_bundle():
    """Device copies a (1, 7) vector h to the output; h = 2 * t + 1 comes from the host prologue (ONNX)."""
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        [helper.make_node("Cast", ["timestep"], ["tf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["tf", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["h"])],
        "host", [helper.make_tensor_value_info("timestep", TensorProto.INT64, [1, 7])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 7])],
        [numpy_helper.from_array(np.float32(2.0).reshape(()), "two"),
         numpy_helper.from_array(np.float32(1.0).reshape(()), "one")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    prog = [Instr.make("load", buf="act", dram=0, sram=0, push=["st"]),
            Instr.make("store", pop=["ld"], buf="act", dram=64, sram=0), Instr.make("halt")]
    return Bundle(machine=DEFAULT, instrs=prog, dram_size=256, data=b"", data_base=0, n_steps=1, step_base=0,
                  step_bank=0, step_table=b"", inputs=[io("h", (1, 7), "rows", 0, 1, 7, (0.5,))],
                  outputs=[io("y", (1, 7), "rows", 64, 1, 7, (0.5,))], host=model.SerializeToString())


def test_host_prologue_runs_before_the_device(tmp_path):
    b = host_bundle()
    t = np.arange(7).reshape(1, 7)
    out = run_bundle(b, {"timestep": t.astype(np.float32)})          # cast to the prologue's int64
    assert np.array_equal(out["y"], np.clip(2 * t + 1, -64, 63.5).astype(np.float32))
    with pytest.raises(SdacError, match="missing input.*timestep"):
        run_bundle(b, {})
    with pytest.raises(SdacError, match="unexpected input.*h"):
        run_bundle(b, {"timestep": t, "h": t})
    path = tmp_path / "h.sdab"
    write_bundle(b, path)
    np.savez(tmp_path / "in.npz", timestep=t)
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 0


def test_cli_priority_and_nan_inputs(tmp_path, capsys):
    rng = np.random.default_rng(13)
    b, Wq, bias, steps = make_bundle(rng)
    write_bundle(b, tmp_path / "m.sdab")
    x = rng.normal(0, 3, (1, C, H, W)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    base = ["run", str(tmp_path / "m.sdab"), "--inputs", str(tmp_path / "in.npz")]
    assert main(base + ["--outputs", str(tmp_path / "a.npz"), "--priority", "st,sfu,cmp,ld"]) == 0
    with np.load(tmp_path / "a.npz") as z:
        assert np.array_equal(z["y"], reference(x, 0, Wq, bias, steps))
    assert main(base + ["--outputs", str(tmp_path / "b.npz"), "--priority", "st,sfu,cmp"]) == 2
    assert "--priority" in capsys.readouterr().err
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(SdacError, match="NaN"):
        run_bundle(b, {"x": x})


def test_sdac_run_backends_agree(tmp_path):
    """`sdac run --backend fake` (the register-level driver) writes the golden model's outputs."""
    import numpy as np

    from sdac.bundle import write_bundle
    from sdac.cli import main
    from sdac.compiler import kernels as K
    from sdac.compiler.calibrate import calibrate_absmax
    from sdac.compiler.lower import lower
    from sdac.isa.machine import DEFAULT
    rng = np.random.default_rng(0)
    x = K.Act("x", (1, 40, 40), np.full(1, 0.05, np.float32))
    y = K.Act("y", (1, 40, 20), np.full(1, 0.05, np.float32))
    w = K.Weights(rng.integers(-7, 8, (40, 20)).astype(np.int8), np.full(20, 0.01, np.float32))
    kg = K.KernelGraph([K.Kernel("m", "matmul", [x], [K.Emit(y)], weights=w)], [x], [y])
    feeds = {"x": rng.normal(0, 1, x.shape).astype(np.float32)}
    calibrate_absmax(kg, [feeds])
    write_bundle(lower(kg, DEFAULT), tmp_path / "m.sdab")
    np.savez(tmp_path / "in.npz", **feeds)
    outs = {}
    for backend in ("golden", "fake"):
        o = tmp_path / f"{backend}.npz"
        assert main(["run", str(tmp_path / "m.sdab"), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(o),
                     "--backend", backend]) == 0
        outs[backend] = np.load(o)["y"]
    assert np.array_equal(outs["golden"], outs["fake"])
    assert main(["run", str(tmp_path / "m.sdab"), "--inputs", str(tmp_path / "in.npz"), "--outputs",
                 str(tmp_path / "t.npz"), "--backend", "fake", "--trace", str(tmp_path / "t.json")]) == 2
