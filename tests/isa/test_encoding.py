"""Encoder/decoder: hypothesis round trips of every instruction, and every class of invalid word rejected."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdac.isa import QUEUES, SPEC, DecodeError, Instr, decode, decode_program, encode, encode_program
from sdac.isa.asm import assemble, disassemble
from sdac.isa.encoding import EncodeError, decode_int, encode_int

HDR = {f.name: f for f in SPEC.header}
WORD_MASK = (1 << SPEC.word_bits) - 1


def field_values(f):
    if f.kind == "enum":
        return st.sampled_from(sorted(SPEC.enums[f.enum]))
    return st.integers(f.min, f.max)


@st.composite
def instrs(draw, spec=None):
    spec = spec or draw(st.sampled_from(SPEC.instrs))
    args = {f.name: draw(field_values(f)) for f in spec.fields}
    ins = Instr(spec.name, args)
    own = ins.queue
    if own == "ctl":
        return ins
    others = [q for q in QUEUES if q != own]
    pop = draw(st.sets(st.sampled_from(others)))
    push = draw(st.sets(st.sampled_from(others)))
    return Instr(spec.name, args, frozenset(pop), frozenset(push))


@pytest.mark.parametrize("spec", SPEC.instrs, ids=lambda s: s.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_instruction(spec, data):
    ins = data.draw(instrs(spec))
    word = encode_int(ins)
    assert 0 <= word <= WORD_MASK
    assert decode_int(word) == ins
    assert decode(encode(ins)) == ins
    # the fields sit where the spec says (an independent reading of the bit layout)
    assert word & 0x3F == spec.opcode
    for f in spec.fields:
        v = ins.args[f.name]
        code = SPEC.enums[f.enum][v] if f.kind == "enum" else v
        assert (word >> f.offset) & ((1 << f.bits) - 1) == code
    text = disassemble([ins])
    assert assemble(text) == [ins]
    assert disassemble(assemble(text)) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(instrs(), max_size=20))
def test_round_trip_programs(prog):
    blob = encode_program(prog)
    assert len(blob) == 32 * len(prog)
    assert decode_program(blob) == prog
    assert encode_program(assemble(disassemble(decode_program(blob)))) == blob


def test_field_layout_is_sound():
    for spec in SPEC.instrs:
        used = 0
        for f in (*SPEC.header, *spec.fields):
            assert f.mask & used == 0, f"{spec.name}.{f.name} overlaps another field"
            assert f.offset + f.bits <= SPEC.word_bits
            used |= f.mask


def _reject(word: int, *words: str, index: int = 7):
    with pytest.raises(DecodeError) as e:
        decode_int(word, index)
    assert e.value.index == index and f"instruction {index}" in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_rejects_bad_opcodes():
    used = {i.opcode for i in SPEC.instrs}
    for op in range(1 << HDR["opcode"].bits):
        if op not in used:
            _reject(op, "BAD_OPCODE", f"opcode {op}")


@pytest.mark.parametrize("spec", SPEC.instrs, ids=lambda s: s.name)
def test_rejects_every_reserved_bit(spec):
    base = encode_int(Instr.make(spec.name))
    used = spec.used_mask
    for f in SPEC.header:
        used |= f.mask
    reserved = [b for b in range(SPEC.word_bits) if not (used >> b) & 1]
    assert reserved, spec.name
    for b in reserved:
        _reject(base | (1 << b), "BAD_FIELD", "reserved bit", str(b))


def test_rejects_enum_codes_out_of_range():
    n = 0
    for spec in SPEC.instrs:
        base = encode_int(Instr.make(spec.name))
        for f in spec.fields:
            if f.kind != "enum":
                continue
            for code in range(1 << f.bits):
                if code not in SPEC.enums[f.enum].values():
                    _reject(base | (code << f.offset), "BAD_FIELD", f"{spec.name}.{f.name}", f"code {code}")
                    n += 1
    assert n > 0


def test_rejects_counts_below_minimum():
    n = 0
    for spec in SPEC.instrs:
        for f in spec.fields:
            if f.min > 0:
                word = encode_int(Instr.make(spec.name)) & ~f.mask     # field = 0 < min
                _reject(word, "BAD_FIELD", f"{spec.name}.{f.name}", "minimum")
                n += 1
    assert n > 20


def test_rejects_token_masks_naming_own_queue():
    for spec in SPEC.instrs:
        ins = Instr.make(spec.name)
        if ins.queue == "ctl":
            continue
        qbit = 1 << SPEC.enums["queue"][ins.queue]
        for hf in ("pop", "push"):
            _reject(encode_int(ins) | (qbit << HDR[hf].offset), "BAD_FIELD", "own queue")
    # sync: the own queue is the one named by field q
    for q in QUEUES:
        ins = Instr.make("sync", q=q)
        _reject(encode_int(ins) | (1 << (HDR["pop"].offset + SPEC.enums["queue"][q])), "own queue")


def test_rejects_tokens_on_control_instructions():
    for spec in SPEC.instrs:
        if spec.queue != "ctl":
            continue
        for hf in ("pop", "push"):
            for m in range(1, 16):
                _reject(spec.opcode | (m << HDR[hf].offset), "BAD_FIELD", "takes no tokens")


def test_rejects_wrong_lengths():
    halt = encode(Instr.make("halt"))
    for blob in (b"", halt[:-1], halt + b"\0"):
        with pytest.raises(DecodeError, match="32 bytes"):
            decode(blob, 3)
    with pytest.raises(DecodeError, match="multiple of the 32-byte word"):
        decode_program(halt + b"\0")
    with pytest.raises(DecodeError, match="instruction 2"):
        decode_program(halt * 2 + bytes(32))                       # opcode 0 in the third word


def test_encoder_rejects_bad_values():
    cases = [
        (Instr.make("load").replace(run=0), "outside"),
        (Instr.make("load").replace(dram=1 << 32), "outside"),
        (Instr.make("load").replace(dram=-1), "outside"),
        (Instr.make("load").replace(buf="nope"), "not one of"),
        (Instr.make("load").replace(buf=7), "not one of"),
        (Instr.make("load").replace(run="4"), "expected an integer"),
        (Instr.make("load", push={"ld"}), "own queue"),
        (Instr.make("load", pop={"xx"}), "unknown queue"),
        (Instr.make("halt", push={"ld"}), "takes no tokens"),
        (Instr("load", {"buf": "act"}), "missing field"),
        (Instr("halt", {"x": 1}), "unknown field"),
    ]
    for ins, word in cases:
        with pytest.raises(EncodeError, match=word):
            encode(ins)
    with pytest.raises(EncodeError, match="unknown field"):
        Instr.make("load", bogus=1)


def test_instrs_of_builds_what_the_constructor_builds():
    from dataclasses import FrozenInstanceError

    from sdac.isa.encoding import instrs_of
    sets = [frozenset(q for i, q in enumerate(QUEUES) if m >> i & 1) for m in range(1 << len(QUEUES))]
    ops = [("mm", {"rows": 3}), ("halt", {})]
    got = instrs_of(ops, [1, 0], [6, 0], sets)
    want = [Instr("mm", {"rows": 3}, frozenset({QUEUES[0]}), frozenset({QUEUES[1], QUEUES[2]})), Instr("halt", {})]
    assert got == want and repr(got) == repr(want)
    with pytest.raises(FrozenInstanceError):
        got[0].op = "load"


def test_since_versions_of_instructions_and_fields():
    """isa.toml's `since`: an instruction's fields default to its version; a field added later must mean
    'off' at 0 (older programs have 0 there); a version after this one is refused."""
    from importlib import resources

    from sdac.isa.encoding import needed_version, program_version
    from sdac.isa.spec import SPEC, SpecError, parse_spec
    sm, da = SPEC.by_name("softmax"), SPEC.by_name("deqact")
    assert (sm.since, sm.field_map["pre"].since, sm.field_map["rows"].since) == (1, 2, 1)
    assert da.since == 2 and {f.since for f in da.fields} == {2}
    assert needed_version(Instr.make("softmax", rows=2, cols=3)) == 1
    assert needed_version(Instr.make("softmax", rows=2, cols=3, pre=1)) == 2
    assert program_version([Instr.make("halt")]) == 1
    assert program_version([Instr.make("deqact", rows=1, cols=1), Instr.make("halt")]) == 2
    text = resources.files("sdac.isa").joinpath("isa.toml").read_text(encoding="utf-8")
    pre = '{ name = "pre", bits = 1, kind = "bool", since = 2,'
    assert pre in text
    with pytest.raises(SpecError, match=f"softmax.pre: since = {SPEC.version + 1} is not a version"):
        parse_spec(text.replace(pre, pre.replace("since = 2", f"since = {SPEC.version + 1}")))
    rows = '{ name = "rows", bits = 16, min = 1, doc = "Rows." },\n  { name = "cols", bits = 16, min = 1, doc = "Columns (the SoftMax axis)." },'
    assert rows in text
    with pytest.raises(SpecError, match="softmax.rows: a field added later"):
        parse_spec(text.replace(rows, rows.replace('min = 1, doc = "Rows."', 'min = 1, since = 2, doc = "Rows."')))


def test_layout_fingerprints_follow_the_encoding_not_the_prose():
    """A program's fingerprint changes with what decoding it depends on (a field's width or place, an enum
    code, an opcode), per instruction it uses, and not with documentation; a version's view leaves out the
    fields added after it."""
    from importlib import resources

    from sdac.isa.spec import SPEC, layout_fingerprint, parse_spec
    text = resources.files("sdac.isa").joinpath("isa.toml").read_text(encoding="utf-8")
    load, mm, sm = (SPEC.by_name(n).opcode for n in ("load", "mm", "softmax"))
    fp = lambda spec, ops, v=SPEC.version: layout_fingerprint(spec, ops, v)  # noqa: E731
    same_docs = parse_spec(text.replace('doc = "Lines per contiguous run."', 'doc = "Lines per run."'))
    assert fp(same_docs, {load, mm}) == fp(SPEC, {load, mm})
    wider = parse_spec(text.replace('{ name = "run", bits = 16, min = 1, doc = "Lines per contiguous run." }',
                                    '{ name = "run", bits = 17, min = 1, doc = "Lines per contiguous run." }'))
    assert fp(wider, {load, mm}) != fp(SPEC, {load, mm}) and fp(wider, {mm}) == fp(SPEC, {mm})
    codes = parse_spec(text.replace("[enums.buf]\nact = 0\nwgt = 1", "[enums.buf]\nact = 1\nwgt = 0"))
    assert fp(codes, {load}) != fp(SPEC, {load})
    # softmax as version 1 had it (no pre/psc) differs from version 2's; an opcode this spec lacks matches nothing
    assert fp(SPEC, {sm}, 1) != fp(SPEC, {sm}, 2) and fp(SPEC, {load}, 1) == fp(SPEC, {load}, 2)
    assert fp(SPEC, {load, 63}) != fp(SPEC, {load})
