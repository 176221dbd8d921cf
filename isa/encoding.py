"""Binary encoding of instructions, derived from the spec.

An ``Instr`` holds the mnemonic, its field values (enum fields by member
name, everything else as int) and the token masks as sets of queue names.
``encode`` checks every value against the spec; ``decode`` rejects every
invalid word with a ``DecodeError`` naming the instruction index.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import SdacError
from .spec import QUEUES, SPEC, Field, InstrSpec, layout_fingerprint

WORD_BYTES = SPEC.word_bytes
_QCODE = dict(SPEC.enums["queue"])


class DecodeError(SdacError):
    """An instruction word (or field value) is not valid. ``index`` is the instruction index."""

    def __init__(self, message: str, index: int | None = None):
        self.index = index
        self.reason = message
        super().__init__(f"instruction {index}: {message}" if index is not None else message)


class EncodeError(SdacError):
    """A field value does not fit the instruction's spec."""


@functools.lru_cache(maxsize=None)
def _defaults(op: str) -> dict[str, int | str]:
    """Every field of ``op`` with its default (0, or the first enum member), in spec order."""
    out: dict[str, int | str] = {}
    for f in SPEC.by_name(op).fields:
        if f.kind == "enum":
            out[f.name] = SPEC.enum_name(f.enum, 0)
        elif f.kind == "bool":
            out[f.name] = 0
        else:
            out[f.name] = f.min
    return out


def complete_args(op: str, args: Mapping[str, int | str]) -> dict[str, int | str]:
    """``args`` with every omitted field at its default, in spec order; an unknown field is an EncodeError."""
    defaults = _defaults(op)
    full = dict(defaults)
    full.update(args)
    if len(full) != len(defaults):
        raise EncodeError(f"{op}: unknown field(s) {', '.join(sorted(set(args) - set(defaults)))}")
    return full


# per mnemonic: the fixed queue, or None when a field names it (sync's q); the field that names it
_QUEUE = {i.name: (None if i.queue.startswith("field:") else i.queue) for i in SPEC.instrs}
_QUEUE_FIELD = {i.name: i.queue.split(":", 1)[1] for i in SPEC.instrs if i.queue.startswith("field:")}
FIXED_QUEUE = _QUEUE        # for hot loops (the program builder): queue_of without the call when it is fixed
field_defaults = _defaults  # every field of a mnemonic with its default, in spec order (do not mutate)


def queue_of(op: str, args: Mapping[str, int | str]) -> str:
    """The queue an instruction with these (complete) fields goes to."""
    q = _QUEUE[op]
    return q if q is not None else str(args[_QUEUE_FIELD[op]])


@dataclass(frozen=True)
class Instr:
    op: str
    args: Mapping[str, int | str] = field(default_factory=dict)
    pop: frozenset[str] = frozenset()
    push: frozenset[str] = frozenset()

    @staticmethod
    def make(op: str, pop: Iterable[str] = (), push: Iterable[str] = (), **args: int | str) -> "Instr":
        """Build an instruction; omitted fields take their default (0, or the first enum member)."""
        return Instr(op, complete_args(op, args), frozenset(pop), frozenset(push))

    @property
    def spec(self) -> InstrSpec:
        return SPEC.by_name(self.op)

    @property
    def queue(self) -> str:
        return queue_of(self.op, self.args)

    def __getitem__(self, name: str) -> int | str:
        return self.args[name]

    def __getattr__(self, name: str):
        # Field access by attribute (ins.rows); dataclass attributes win.
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes) -> "Instr":
        pop = changes.pop("pop", self.pop)
        push = changes.pop("push", self.push)
        args = dict(self.args)
        for k, v in changes.items():
            if k not in args:
                raise EncodeError(f"{self.op}: unknown field {k}")
            args[k] = v
        return Instr(self.op, args, frozenset(pop), frozenset(push))


def instrs_of(ops, pops, pushes, sets) -> list[Instr]:
    """Instructions from parallel lists: (op, args) pairs and token masks, ``sets[mask]`` the frozenset of a
    mask. For the program builder's 90 k instructions: the frozen dataclass's __init__ (a checked
    object.__setattr__ per field) would cost twice the build; the result is equal to Instr(op, args, ...)."""
    new = object.__new__
    out = []
    for (op, args), pop, push in zip(ops, pops, pushes):
        ins = new(Instr)
        ins.__dict__.update(op=op, args=args, pop=sets[pop], push=sets[push])
        out.append(ins)
    return out


def _field_code(ispec: InstrSpec, f: Field, value: int | str) -> int:
    if f.kind == "enum":
        members = SPEC.enums[f.enum]
        if isinstance(value, str):
            if value not in members:
                raise EncodeError(f"{ispec.name}.{f.name}: {value!r} is not one of {', '.join(members)}")
            return members[value]
        if value not in members.values():
            raise EncodeError(f"{ispec.name}.{f.name}: code {value} is not one of {dict(members)}")
        return int(value)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise EncodeError(f"{ispec.name}.{f.name}: expected an integer, got {value!r}")
    if not f.min <= value <= f.max:
        raise EncodeError(f"{ispec.name}.{f.name}: {value} is outside [{f.min}, {f.max}]")
    return value


def _mask(ispec: InstrSpec, queues: Iterable[str], what: str, own: str) -> int:
    m = 0
    for q in queues:
        if q not in _QCODE:
            raise EncodeError(f"{ispec.name}: {what} names unknown queue {q!r}")
        if q == own:
            raise EncodeError(f"{ispec.name}: {what} names its own queue {q!r}")
        m |= 1 << _QCODE[q]
    if own == "ctl" and m:
        raise EncodeError(f"{ispec.name}: takes no tokens")
    return m


def encode_int(ins: Instr) -> int:
    word = _encode_fast(ins)
    return word if word is not None else _encode_checked(ins)


@functools.lru_cache(maxsize=None)
def _plan(op: str) -> tuple:
    """opcode and per field (name, offset, min, max, enum codes by name and by code, or None)."""
    ispec = SPEC.by_name(op)
    fields = []
    for f in ispec.fields:
        codes = None
        if f.kind == "enum":
            members = SPEC.enums[f.enum]
            codes = {**members, **{c: c for c in members.values()}}
        fields.append((f.name, f.offset, f.min, f.max, codes))
    return ispec.opcode, tuple(fields)


_TOKEN_BITS: dict = {}      # (pop, push, own queue) -> header bits of the two masks


def _encode_fast(ins: Instr) -> int | None:
    """The word of a valid instruction (the common case, no messages to build); None sends anything unusual
    to the checked encoder, which raises the precise error."""
    if ins.op not in _QUEUE or type(ins.pop) is not frozenset or type(ins.push) is not frozenset:
        return None
    opcode, fields = _plan(ins.op)
    args = ins.args
    if len(args) != len(fields):
        return None
    word = opcode
    for name, off, lo, hi, codes in fields:
        v = args.get(name)
        if codes is not None:
            v = codes.get(v) if isinstance(v, (str, int)) else None
            if v is None:
                return None
        elif type(v) is not int or not lo <= v <= hi:
            return None
        word |= v << off
    key = (ins.pop, ins.push, queue_of(ins.op, args))
    bits = _TOKEN_BITS.get(key)
    if bits is None:
        ispec = SPEC.by_name(ins.op)
        bits = _TOKEN_BITS[key] = (_mask(ispec, ins.pop, "pop", key[2]) << _HDR["pop"].offset
                                   | _mask(ispec, ins.push, "push", key[2]) << _HDR["push"].offset)
    return word | bits


def _encode_checked(ins: Instr) -> int:
    ispec = SPEC.by_name(ins.op)
    own = ins.queue
    word = ispec.opcode
    hdr = {f.name: f for f in SPEC.header}
    word |= _mask(ispec, ins.pop, "pop", own) << hdr["pop"].offset
    word |= _mask(ispec, ins.push, "push", own) << hdr["push"].offset
    missing = [f.name for f in ispec.fields if f.name not in ins.args]
    if missing:
        raise EncodeError(f"{ins.op}: missing field(s) {', '.join(missing)}")
    extra = set(ins.args) - {f.name for f in ispec.fields}
    if extra:
        raise EncodeError(f"{ins.op}: unknown field(s) {', '.join(sorted(extra))}")
    for f in ispec.fields:
        word |= _field_code(ispec, f, ins.args[f.name]) << f.offset
    return word


def encode(ins: Instr) -> bytes:
    return encode_int(ins).to_bytes(WORD_BYTES, "little")


def encode_program(instrs: Iterable[Instr]) -> bytes:
    return b"".join(encode_int(i).to_bytes(WORD_BYTES, "little") for i in instrs)


_HDR = {f.name: f for f in SPEC.header}
_HDR_MASK = 0
for _f in SPEC.header:
    _HDR_MASK |= _f.mask


def decode_int(word: int, index: int | None = None) -> Instr:
    op_f, pop_f, push_f = _HDR["opcode"], _HDR["pop"], _HDR["push"]
    opcode = (word >> op_f.offset) & op_f.max
    ispec = SPEC.by_opcode(opcode)
    if ispec is None:
        raise DecodeError(f"BAD_OPCODE: opcode {opcode} names no instruction", index)
    reserved = word & ~(_HDR_MASK | ispec.used_mask) & ((1 << SPEC.word_bits) - 1)
    if reserved:
        raise DecodeError(f"BAD_FIELD: {ispec.name}: reserved bit {reserved.bit_length() - 1} is set", index)
    args: dict[str, int | str] = {}
    for f in ispec.fields:
        v = (word >> f.offset) & f.max
        if f.kind == "enum":
            try:
                args[f.name] = SPEC.enum_name(f.enum, v)
            except KeyError:
                raise DecodeError(f"BAD_FIELD: {ispec.name}.{f.name}: code {v} is not a member of {f.enum}", index) from None
        else:
            if v < f.min:
                raise DecodeError(f"BAD_FIELD: {ispec.name}.{f.name}: {v} is below its minimum {f.min}", index)
            args[f.name] = v
    ins = Instr(ispec.name, args)
    own = ins.queue
    pop_m = (word >> pop_f.offset) & pop_f.max
    push_m = (word >> push_f.offset) & push_f.max
    if own == "ctl" and (pop_m or push_m):
        raise DecodeError(f"BAD_FIELD: {ispec.name} takes no tokens", index)
    if own != "ctl" and ((pop_m | push_m) >> _QCODE[own]) & 1:
        raise DecodeError(f"BAD_FIELD: {ispec.name} in queue {own} names its own queue in a token mask", index)
    pops = frozenset(q for q in QUEUES if (pop_m >> _QCODE[q]) & 1)
    pushes = frozenset(q for q in QUEUES if (push_m >> _QCODE[q]) & 1)
    return Instr(ispec.name, args, pops, pushes)


def decode(word: bytes, index: int | None = None) -> Instr:
    if len(word) != WORD_BYTES:
        raise DecodeError(f"an instruction word is {WORD_BYTES} bytes, got {len(word)}", index)
    return decode_int(int.from_bytes(word, "little"), index)


def decode_program(blob: bytes, base_index: int = 0) -> list[Instr]:
    if len(blob) % WORD_BYTES:
        raise DecodeError(f"program length {len(blob)} is not a multiple of the {WORD_BYTES}-byte word")
    return [decode(blob[i:i + WORD_BYTES], base_index + i // WORD_BYTES)
            for i in range(0, len(blob), WORD_BYTES)]


# per instruction: the version that added it, and (field, version, enum) of its fields added after it
_SINCE = {i.name: (i.since, tuple((f.name, f.since, f.enum) for f in i.fields if f.since > i.since))
          for i in SPEC.instrs}


def needed_version(ins: Instr) -> int:
    """The oldest ISA version with this instruction as it is: its opcode and every field it sets (not 0)."""
    since, later = _SINCE[ins.op]
    for name, v, enum in later:
        x = ins.args.get(name, 0)
        if isinstance(x, str):
            x = SPEC.enums[enum][x]
        if x and v > since:
            since = v
    return since


def program_version(instrs: Iterable[Instr]) -> int:
    """The oldest ISA version that runs the program (what its bundle's header says: an older device still
    runs a program that uses nothing newer)."""
    need = 1
    for i in instrs:
        since, later = _SINCE[i.op]
        if later:
            since = needed_version(i)
        if since > need:
            need = since
    return need


_OPCODE = _HDR["opcode"]
assert _OPCODE.offset == 0 and _OPCODE.bits <= 8    # (text_opcodes reads the first byte of each word)


def text_opcodes(text: bytes) -> set[int]:
    """The opcodes in an encoded program (whole words), without decoding it."""
    return {b & _OPCODE.max for b in set(memoryview(text)[::WORD_BYTES])}


def program_layout(instrs, version: int) -> str:
    """The encoding fingerprint (spec.layout_fingerprint) of a program of ``version``."""
    return layout_fingerprint(SPEC, {SPEC.by_name(op).opcode for op in {i.op for i in instrs}}, version)
