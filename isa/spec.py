"""Load and check the declarative ISA spec (isa.toml).

The spec is data; this module turns it into typed, immutable objects and
assigns bit offsets (fields are packed LSB-first after the common header, in
the order listed). Every other ISA artifact is derived from ``SPEC``.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Mapping

KINDS = ("uint", "enum", "bool", "queues")
FMTS = ("dec", "hex", "enum")


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    bits: int
    kind: str = "uint"
    enum: str | None = None
    min: int = 0
    fmt: str = "dec"
    doc: str = ""

    @property
    def max(self) -> int:
        return (1 << self.bits) - 1

    @property
    def mask(self) -> int:
        return self.max << self.offset


@dataclass(frozen=True)
class InstrSpec:
    name: str
    opcode: int
    queue: str  # "ld" | "cmp" | "sfu" | "st" | "ctl" | "field:<name>"
    summary: str
    semantics: str
    fields: tuple[Field, ...]

    @property
    def field_map(self) -> Mapping[str, Field]:
        return {f.name: f for f in self.fields}

    @property
    def used_mask(self) -> int:
        m = 0
        for f in self.fields:
            m |= f.mask
        return m


@dataclass(frozen=True)
class IsaSpec:
    name: str
    version: int
    word_bits: int
    summary: str
    header: tuple[Field, ...]
    enums: Mapping[str, Mapping[str, int]]
    instrs: tuple[InstrSpec, ...]
    errors: Mapping[str, tuple[int, str]]

    @property
    def word_bytes(self) -> int:
        return self.word_bits // 8

    @property
    def header_bits(self) -> int:
        return sum(f.bits for f in self.header)

    def by_name(self, name: str) -> InstrSpec:
        return _BY_NAME[id(self)][name]

    def by_opcode(self, opcode: int) -> InstrSpec | None:
        return _BY_OPCODE[id(self)].get(opcode)

    def enum_name(self, enum: str, code: int) -> str:
        for k, v in self.enums[enum].items():
            if v == code:
                return k
        raise KeyError(code)

    def error_code(self, name: str) -> int:
        return self.errors[name][0]

    def error_name(self, code: int) -> str:
        for k, (c, _) in self.errors.items():
            if c == code:
                return k
        return f"UNKNOWN_{code}"


_BY_NAME: dict[int, dict[str, InstrSpec]] = {}
_BY_OPCODE: dict[int, dict[int, InstrSpec]] = {}


class SpecError(ValueError):
    """The ISA spec itself is inconsistent."""


def _field(d: dict, offset: int, enums: Mapping[str, Mapping[str, int]], where: str) -> Field:
    kind = d.get("kind", "uint")
    if kind not in KINDS:
        raise SpecError(f"{where}: field {d.get('name')}: unknown kind {kind!r}")
    bits = int(d["bits"])
    if kind == "bool" and bits != 1:
        raise SpecError(f"{where}: bool field {d['name']} must be 1 bit")
    if kind == "queues" and bits != 4:
        raise SpecError(f"{where}: queues field {d['name']} must be 4 bits")
    enum = d.get("enum")
    if kind == "enum":
        if enum not in enums:
            raise SpecError(f"{where}: field {d['name']}: unknown enum {enum!r}")
        if max(enums[enum].values()) >= (1 << bits):
            raise SpecError(f"{where}: field {d['name']}: enum {enum} does not fit {bits} bits")
    fmt = d.get("fmt", "enum" if kind == "enum" else "dec")
    if fmt not in FMTS:
        raise SpecError(f"{where}: field {d['name']}: unknown fmt {fmt!r}")
    return Field(name=d["name"], offset=offset, bits=bits, kind=kind, enum=enum,
                 min=int(d.get("min", 0)), fmt=fmt, doc=d.get("doc", ""))


def parse_spec(text: str) -> IsaSpec:
    raw = tomllib.loads(text)
    enums = {k: MappingProxyType(dict(v)) for k, v in raw.get("enums", {}).items()}
    for ename, members in enums.items():
        if len(set(members.values())) != len(members):
            raise SpecError(f"enum {ename}: duplicate codes")
    word_bits = int(raw["isa"]["word_bits"])
    if word_bits % 32:
        raise SpecError("word_bits must be a multiple of 32")

    header: list[Field] = []
    off = 0
    for d in raw["header"]:
        header.append(_field(d, off, enums, "header"))
        off += header[-1].bits
    body_start = (off + 7) // 8 * 8 if off % 8 else off
    body_start = max(body_start, 16)

    instrs: list[InstrSpec] = []
    names: set[str] = set()
    opcodes: set[int] = set()
    for d in raw["instr"]:
        name = d["name"]
        if name in names:
            raise SpecError(f"duplicate instruction {name}")
        op = int(d["opcode"])
        if op in opcodes or not 0 < op < (1 << header[0].bits):
            raise SpecError(f"{name}: bad or duplicate opcode {op}")
        names.add(name)
        opcodes.add(op)
        fields: list[Field] = []
        off = body_start
        seen = {f.name for f in header}
        for fd in d.get("fields", []):
            if fd["name"] in seen:
                raise SpecError(f"{name}: duplicate field {fd['name']}")
            seen.add(fd["name"])
            fields.append(_field(fd, off, enums, name))
            off += fields[-1].bits
        if off > word_bits:
            raise SpecError(f"{name}: fields need {off} bits, word has {word_bits}")
        queue = d["queue"]
        if queue.startswith("field:"):
            qf = queue.split(":", 1)[1]
            if not any(f.name == qf and f.enum == "queue" for f in fields):
                raise SpecError(f"{name}: queue field {qf} missing or not a queue enum")
        elif queue not in (*enums["queue"].keys(), "ctl"):
            raise SpecError(f"{name}: unknown queue {queue}")
        instrs.append(InstrSpec(name=name, opcode=op, queue=queue, summary=d["summary"].strip(),
                                semantics=d["semantics"].strip(), fields=tuple(fields)))

    errors = {k: (int(v["code"]), v["doc"]) for k, v in raw.get("errors", {}).items()}
    spec = IsaSpec(name=raw["isa"]["name"], version=int(raw["isa"]["version"]), word_bits=word_bits,
                   summary=raw["isa"]["summary"].strip(), header=tuple(header),
                   enums=MappingProxyType(enums), instrs=tuple(instrs), errors=MappingProxyType(errors))
    _BY_NAME[id(spec)] = {i.name: i for i in instrs}
    _BY_OPCODE[id(spec)] = {i.opcode: i for i in instrs}
    return spec


def load_spec() -> IsaSpec:
    return parse_spec(resources.files(__package__).joinpath("isa.toml").read_text(encoding="utf-8"))


SPEC: IsaSpec = load_spec()
QUEUES: tuple[str, ...] = tuple(sorted(SPEC.enums["queue"], key=SPEC.enums["queue"].__getitem__))
