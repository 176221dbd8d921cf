"""The assembly language: grammar derived from the spec, canonical round trips, located errors."""
from pathlib import Path

import lark
import pytest

from sdac.errors import SdacError
from sdac.isa import SPEC, Instr, decode_program, encode_program
from sdac.isa.asm import GRAMMAR, AsmError, assemble, disassemble

ROOT = Path(__file__).resolve().parents[2]

CANONICAL = """\
setstep src=csr, step=0, bank=0x00000040
load buf=act, zero=0, step=0, dram=0x00001000, sram=0x00000, run=4, ny=1, dy=0, sy=0, nz=1, dz=0, sz=0, push=cmp
mm a=0x00000, ars=1, wsrc=wgt, w=0x00000, ws=0, c=0x00000, crs=1, m=4, n=20, k=20, acc=0, pop=ld, push=sfu
sync q=sfu, pop=ld|cmp, push=st
halt
"""


def test_canonical_text_round_trips():
    prog = assemble(CANONICAL)
    assert disassemble(prog) == CANONICAL
    assert decode_program(encode_program(prog)) == prog
    assert prog[3] == Instr.make("sync", q="sfu", pop={"ld", "cmp"}, push={"st"})


def test_every_instruction_with_defaults_round_trips():
    prog = [Instr.make(i.name) for i in SPEC.instrs]
    text = disassemble(prog)
    assert assemble(text) == prog
    assert disassemble(assemble(text)) == text
    assert len(text.splitlines()) == len(SPEC.instrs)


def test_free_form_input():
    text = """
    ; a comment line
    load   buf=wgt dram=0x10_00, run=2   # blanks or commas separate fields
    mm k=0x14 m=1 n=1 pop=ld   push=sfu|st
    \thalt
    """
    prog = assemble(text)
    assert [i.op for i in prog] == ["load", "mm", "halt"]
    assert prog[0]["dram"] == 0x1000 and prog[0]["buf"] == "wgt" and prog[0]["ny"] == 1
    assert prog[1]["k"] == 20 and prog[1].push == {"sfu", "st"}
    assert assemble("halt") == [Instr.make("halt")]          # no trailing newline needed
    assert assemble("") == [] and disassemble([]) == ""


def test_numbered_listing_assembles_back():
    prog = assemble(CANONICAL)
    listing = disassemble(prog, numbered=True)
    assert listing.splitlines()[1].endswith("# 1")
    assert assemble(listing) == prog


def test_checked_in_grammar_is_current_and_loads():
    assert (ROOT / "isa" / "asm.lark").read_text() == GRAMMAR
    lark.Lark(GRAMMAR, parser="lalr")                          # LALR(1) without conflicts
    for i in SPEC.instrs:
        assert f'"{i.name}"' in GRAMMAR
        for f in i.fields:
            assert f'{i.name}__{f.name}: "{f.name}" "="' in GRAMMAR


@pytest.mark.parametrize("line,col,words", [
    ("halt\nload buf=foo", (2, 10), ["buf name"]),
    ("halt\nload bux=act", (2, 6), ["'bux'", "'buf'"]),
    ("halt\n\nfoo x=1", (3, 1), ["'foo'", "mnemonic"]),
    ("mm k=0", (1, 6), ["mm.k", "outside [1, 65535]"]),
    ("load dram=0x100000000", (1, 11), ["load.dram", "outside"]),
    ("load zero=2", (1, 11), ["load.zero"]),
    ("load buf=act, buf=wgt", (1, 15), ["buf given twice"]),
    ("load pop=ld", (1, 6), ["own queue"]),
    ("sync q=st, push=st", (1, 12), ["own queue"]),
    ("sync q=ld pop=cmp|cmp", (1, 11), ["queue twice"]),
    ("halt pop=ld", (1, 6), ["'pop'", "end of line"]),
    ("load run=", (1, 10), ["end of line", "a number"]),
    ("mm a=1 ,, k=2", (1, 9), ["','"]),
    ("load buf=act @", (1, 14), ["'@'"]),
])
def test_errors_name_line_and_column(line, col, words):
    with pytest.raises(AsmError) as e:
        assemble(line, "t.s")
    assert (e.value.line, e.value.column) == col
    msg = str(e.value)
    assert msg.startswith(f"t.s:{col[0]}:{col[1]}: ")
    for w in words:
        assert w in msg, msg
    assert isinstance(e.value, SdacError)


HELLO = ROOT / "examples" / "asm" / "hello.s"


def test_hello_example_assembles_and_round_trips():
    prog = assemble(HELLO.read_text(), str(HELLO))
    assert [i.op for i in prog].count("mm") == 2 and prog[-1].op == "halt"
    text = disassemble(prog)
    assert assemble(text) == prog and disassemble(assemble(text)) == text
    blob = encode_program(prog)
    assert encode_program(assemble(disassemble(decode_program(blob)))) == blob


def test_hello_example_computes_requantized_product_on_the_golden_model():
    """Cross-check against numpy: y = sat8(apply_scale(sat16(x @ W), entry of the step))."""
    import numpy as np

    golden = pytest.importorskip("sdac.runtime.golden")
    from sdac.isa import numerics
    from sdac.isa.machine import DEFAULT

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(80, 20), dtype=np.int64)
    w = rng.integers(-8, 8, size=(20, 20), dtype=np.int64)
    entries = [numerics.make_scale(mul, sh) for mul, sh in ((3 << 10, 20), (5 << 12, 21))]
    g = golden.Golden(DEFAULT, 0x3000)
    nib = (w & 0xF).astype(np.uint8)
    g.dram[0:200] = (nib[:, 0::2] | (nib[:, 1::2] << 4)).ravel()             # 20 wgt lines of 10 bytes
    for s, e in enumerate(entries):
        g.dram[0x400 + 80 * s:0x400 + 80 * s + 4] = np.frombuffer(np.uint32(e).tobytes(), np.uint8)
    g.dram[0x1000:0x1000 + 1600] = x.astype(np.int8).view(np.uint8).ravel()
    for step, e in enumerate(entries):
        g.run(assemble(HELLO.read_text()), step=step)
        y = g.dram[0x2000:0x2000 + 1600].view(np.int8).reshape(80, 20)
        want = numerics.sat8(numerics.apply_scale(numerics.sat16(x @ w), e))
        assert np.abs(want).max() > 10 and len(np.unique(want)) > 15    # not a trivial result
        np.testing.assert_array_equal(y, want)
