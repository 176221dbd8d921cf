"""`sdac deploy`: the folder, the printed commands, overwrite refusal; the copied runner runs as a plain
script module (board.py and its generated csr_map.py imported as siblings, no sdac) against the fake device injected as pynq."""
import importlib.util
import sys

import numpy as np
import pytest

from sdac.bundle import write_bundle
from sdac.cli import main
from sdac.perf.samples import compile_slice
from sdac.runtime.fake_device import FakeDevice, fake_pynq
from sdac.runtime.golden import run_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    b = compile_slice(hw=8, ch=40, calibrate=True)
    p = tmp_path_factory.mktemp("dep") / "slice.sdab"
    write_bundle(b, p)
    return b, p


def test_deploy_folder(bundle, tmp_path, capsys):
    b, p = bundle
    out = tmp_path / "d"
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"bits")
    (tmp_path / "top.hwh").write_text("<xml/>")
    assert main(["deploy", str(p), "--board", "zcu102.local", "--out", str(out), "--bitstream", str(bit)]) == 0
    said = capsys.readouterr().out
    names = sorted(f.name for f in out.iterdir())
    assert names == ["README.md", "board.py", "csr_map.py", "inputs.example.npz", "run_sdac.py", "sdac.bit",
                     "sdac.hwh", "slice.sdab"]
    assert (out / "slice.sdab").read_bytes() == p.read_bytes()
    assert f"scp -r {out} xilinx@zcu102.local:~/sdac-deploy" in said and "ssh xilinx@zcu102.local" in said
    readme = (out / "README.md").read_text()
    assert "run_sdac.py slice.sdab" in readme and "`x`: float32[1, 40, 8, 8]" in readme
    with np.load(out / "inputs.example.npz") as z:
        assert {k: z[k].shape for k in z.files} == {t.name: tuple(t.shape) for t in b.inputs}
    # refuses to overwrite without --force, replaces with it
    assert main(["deploy", str(p), "--board", "zcu102.local", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["deploy", str(p), "--board", "zcu102.local", "--out", str(out), "--force"]) == 0
    assert not (out / "sdac.bit").exists()
    assert main(["deploy", str(p), "--board", "two words", "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()


def _load_runner(folder):
    """Import run_sdac.py the way `python3 run_sdac.py` sees it: a top-level module, board.py beside it."""
    sys.path.insert(0, str(folder))
    saved = {name: sys.modules.pop(name, None) for name in ("board", "csr_map")}
    try:
        spec = importlib.util.spec_from_file_location("run_sdac", folder / "run_sdac.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(folder))
        for name, m in saved.items():
            sys.modules.pop(name, None)
            if m is not None:
                sys.modules[name] = m


def test_runner_against_fake_device(bundle, tmp_path, capsys, monkeypatch):
    b, p = bundle
    out = tmp_path / "d"
    assert main(["deploy", str(p), "--board", "pynq", "--out", str(out)]) == 0
    runner = _load_runner(out)
    assert runner.B.__file__ == str(out / "board.py")            # the copy, not sdac.runtime.board
    assert runner.B.CSR.__file__ == str(out / "csr_map.py")      # its register map, copied beside it
    assert not runner.B.DeviceError.__module__.startswith("sdac")
    rng = np.random.default_rng(5)
    x = {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in b.inputs}
    np.savez(tmp_path / "in.npz", **x)
    dev = FakeDevice(b.machine, b.dram_size + (4 << 20))
    monkeypatch.chdir(out)
    rc = runner.main([p.name, "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz"),
                      "--repeat", "2"], pynq_module=fake_pynq(dev))
    assert rc == 0
    said = capsys.readouterr().out
    assert said.count("cycles") == 2 and "iterations/s" in said
    want = run_bundle(b, x)
    with np.load(tmp_path / "o.npz") as z:
        assert all(np.array_equal(z[k], want[k]) for k in want)
    # a device error: exit status 1 with the code and index
    dev2 = FakeDevice(b.machine, b.dram_size + (4 << 20))
    pyn = fake_pynq(dev2)
    orig = dev2._start

    def broken():
        dev2.regs["INSTR_COUNT"] = 3                # cut the program: FETCH_OOB at word 3
        orig()
    dev2._start = broken
    rc = runner.main([p.name, "--outputs", str(tmp_path / "o2.npz")], pynq_module=pyn)
    assert rc == 1
    assert "FETCH_OOB: instruction 3" in capsys.readouterr().err
