"""`sdac asm`, `sdac disasm`, `sdac info`: exit codes, one-line errors, round trips through files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdac.bundle import Bundle, IOTensor, write_bundle
from sdac.cli import main
from sdac.isa import decode_program, encode_program
from sdac.isa.asm import assemble, disassemble
from sdac.isa.machine import DEFAULT

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "asm" / "hello.s"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words):
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def make_bundle(path: Path, debug=()) -> Path:
    instrs = assemble(HELLO.read_text())
    b = Bundle(machine=DEFAULT, instrs=instrs, dram_size=0x3000, data=bytes(200), data_base=0,
               n_steps=2, step_base=0x400, step_bank=80, step_table=bytes(160),
               inputs=[IOTensor("x", (1, 20, 8, 10), "float32", "nchw", 0x1000, 80, 20, (0.1, 0.2))],
               outputs=[IOTensor("y", (80, 20), "float32", "rows", 0x2000, 80, 20, (0.05, 0.05))],
               debug=list(debug), meta={"source": "hello.s"})
    write_bundle(b, path)
    return path


def test_asm_disasm_round_trip(tmp_path, capsys):
    out = tmp_path / "hello.bin"
    code, stdout, _ = run(capsys, "asm", HELLO, "-o", out)
    assert code == 0 and "12 instructions" in stdout
    assert decode_program(out.read_bytes()) == assemble(HELLO.read_text())
    code, text, _ = run(capsys, "disasm", out)
    assert code == 0 and text == disassemble(decode_program(out.read_bytes()))
    (tmp_path / "again.s").write_text(text)
    assert run(capsys, "asm", tmp_path / "again.s", "-o", tmp_path / "again.bin")[0] == 0
    assert (tmp_path / "again.bin").read_bytes() == out.read_bytes()
    code, listing, _ = run(capsys, "disasm", "-n", out)
    assert listing.splitlines()[-1].endswith("# 11")


def test_asm_default_output_and_overwrite(tmp_path, capsys):
    src = tmp_path / "p.s"
    src.write_text("halt\n")
    assert run(capsys, "asm", src)[0] == 0
    assert (tmp_path / "p.bin").read_bytes() == encode_program(assemble("halt"))
    code, _, err = run(capsys, "asm", src)
    assert code == 2
    one_line_error(err, "already exists", "--force")
    src.write_text("sync q=ld\nhalt\n")
    assert run(capsys, "asm", src, "--force")[0] == 0
    assert len((tmp_path / "p.bin").read_bytes()) == 64


@pytest.mark.parametrize("text,words", [
    ("halt\nload buf=nope\n", ["p.s:2:10", "buf name"]),
    ("mm k=0\n", ["p.s:1:6", "mm.k"]),
    ("load pop=ld\n", ["own queue"]),
])
def test_asm_bad_source(tmp_path, capsys, text, words):
    src = tmp_path / "p.s"
    src.write_text(text)
    code, _, err = run(capsys, "asm", src, "-o", tmp_path / "p.bin")
    assert code == 2
    one_line_error(err, *words)
    assert not (tmp_path / "p.bin").exists()


def test_missing_and_binary_inputs(tmp_path, capsys):
    for cmd in ("asm", "disasm", "info"):
        code, _, err = run(capsys, cmd, tmp_path / "nope", *(["-o", tmp_path / "x"] if cmd == "asm" else []))
        assert code == 2
        one_line_error(err, "no such file")
    (tmp_path / "b.s").write_bytes(b"\xff\xfe\x00")
    code, _, err = run(capsys, "asm", tmp_path / "b.s")
    assert code == 2
    one_line_error(err, "UTF-8")


def test_disasm_detects_bundles(tmp_path, capsys):
    b = make_bundle(tmp_path / "m.sdab")
    code, text, _ = run(capsys, "disasm", b)
    assert code == 0 and text == disassemble(assemble(HELLO.read_text()))


def test_disasm_marks_kernels_of_a_bundle(tmp_path, capsys):
    debug = [{"kernel": "load_w", "first": 0, "last": 2, "sources": []},
             {"kernel": "matmul", "first": 3, "last": 11, "sources": ["/mm/MatMul", "/q/QuantizeLinear"]}]
    b = make_bundle(tmp_path / "m.sdab", debug=debug)
    code, text, _ = run(capsys, "disasm", b)
    lines = text.splitlines()
    assert code == 0 and lines[0] == "# kernel load_w"
    assert lines[4] == "# kernel matmul (/mm/MatMul, /q/QuantizeLinear)"
    assert assemble(text) == assemble(HELLO.read_text())


def test_disasm_bad_words(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(31))
    code, _, err = run(capsys, "disasm", bad)
    assert code == 2
    one_line_error(err, "bad.bin", "multiple of the 32-byte word")
    bad.write_bytes(encode_program(assemble("halt")) + bytes([63]) + bytes(31))
    code, _, err = run(capsys, "disasm", bad)
    assert code == 2
    one_line_error(err, "instruction 1", "BAD_OPCODE")


def test_info(tmp_path, capsys):
    b = make_bundle(tmp_path / "m.sdab")
    code, out, _ = run(capsys, "info", b)
    assert code == 0
    for w in ("sda-zcu102", "array 20x10", "2 banks of 80 bytes", "input x", "output y",
              "load 4", "mm 2", "act 2", "store 2", "halt 1", "ld 5", "cmp 2", "sfu 2", "st 2", "ctl 1",
              "x: float32[1, 20, 8, 10] nchw -> rows=80 cols=20"):
        assert w in out, (w, out)
    code, out, _ = run(capsys, "info", "--json", b)
    s = json.loads(out)
    assert s["per_opcode"] == {"setstep": 1, "load": 4, "mm": 2, "act": 2, "store": 2, "halt": 1}
    assert s["per_queue"] == {"ld": 5, "cmp": 2, "sfu": 2, "st": 2, "ctl": 1}
    assert s["sections"]["TEXT"] == 12 * 32


def test_info_on_bad_bundles(tmp_path, capsys):
    good = make_bundle(tmp_path / "m.sdab").read_bytes()
    cases = {"trunc.sdab": (good[:100], "truncated"), "magic.sdab": (b"X" + good[1:], "bad magic"),
             "crc.sdab": (good[:-40] + b"\x01" + good[-39:], "CRC")}
    for name, (blob, word) in cases.items():
        (tmp_path / name).write_bytes(blob)
        for cmd in ("info", "disasm"):
            code, _, err = run(capsys, cmd, tmp_path / name)
            assert code == 2
            one_line_error(err, name, word)


@pytest.mark.parametrize("cmd", ["asm", "disasm", "info"])
def test_help(capsys, cmd):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert f"usage: sdac {cmd}" in capsys.readouterr().out


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["asm"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "FILE.s")


def test_as_a_subprocess(tmp_path):
    out = tmp_path / "h.bin"
    r = subprocess.run([sys.executable, "-m", "sdac.cli", "asm", str(HELLO), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "sdac.cli", "disasm", str(tmp_path / "missing.bin")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_reader_that_goes_away_is_no_error(tmp_path, capsys, monkeypatch):
    """`sdac info m.sdab | head -1`: the closed pipe ends the command quietly (status 141, as a shell reports
    SIGPIPE), without a traceback."""
    b = make_bundle(tmp_path / "m.sdab")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    for argv in (["info", b], ["disasm", b]):
        assert main([str(a) for a in argv]) == 141
        assert capsys.readouterr().err == ""


def test_onnxruntime_refusing_a_model_is_one_line(tmp_path, capsys):
    """`sdac sample` on a file onnxruntime cannot load: its error in one line, status 2, no traceback."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = run(capsys, "sample", bad, "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "sdac sample: error: onnxruntime:", "bad.onnx")
