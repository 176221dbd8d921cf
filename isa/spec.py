"""Load and check the declarative ISA spec (isa.toml).

The spec is data; this module turns it into typed, immutable objects and
assigns bit offsets (fields are packed LSB-first after the common header, in
the order listed). Every other ISA artifact is derived from ``SPEC``.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Mapping

KINDS = ("uint", "enum", "bool", "queues")
FMTS = ("dec", "hex", "enum")
CSR_ACCESS = ("R", "W", "RW")
CSR_BITS = 32


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
    since: int = 1      # the ISA version that added the field (a program that sets it needs that version);
                        # isa.toml's default: its instruction's

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
    since: int = 1      # the ISA version that added the instruction

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
class CsrField:
    """Bits [lsb, lsb + bits) of a control/status register."""
    name: str
    lsb: int
    bits: int = 1
    doc: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.bits) - 1) << self.lsb

    def get(self, value: int) -> int:
        return (value & self.mask) >> self.lsb


@dataclass(frozen=True)
class CsrReg:
    """One 32-bit AXI-Lite register of the accelerator ([csr] in isa.toml)."""
    name: str
    offset: int
    access: str         # "R" | "W" | "RW"
    doc: str
    fields: tuple[CsrField, ...] = ()

    @property
    def readable(self) -> bool:
        return "R" in self.access

    @property
    def writable(self) -> bool:
        return "W" in self.access

    def field(self, name: str) -> CsrField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"CSR {self.name} has no field {name}")

    def pack(self, **values: int) -> int:
        """Register value from field values (by field name; missing fields are 0)."""
        v = 0
        for name, x in values.items():
            f = self.field(name)
            if not 0 <= x < (1 << f.bits):
                raise ValueError(f"CSR {self.name}.{name} = {x} does not fit {f.bits} bits")
            v |= x << f.lsb
        return v

    def unpack(self, value: int) -> dict[str, int]:
        return {f.name: f.get(value) for f in self.fields}


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
    csr: Mapping[str, CsrReg] = field(default_factory=lambda: MappingProxyType({}))  # in offset order
    csr_addr_bits: int = 8
    csr_summary: str = ""
    runs: tuple[int, ...] = ()      # versions whose programs run unchanged: this one and [isa].runs

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


# ------------------------------------------------------------------ encoding fingerprints
# What decoding a program depends on, hashed: bundles carry the fingerprint of their instructions' layouts, so
# a bundle and an sdac (or a board driver) built from different isa.toml files of the same version disagree
# loudly instead of decoding each other's words. Docs, semantics text and CSRs are not part of it.

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()[:16]


def base_layout(spec: IsaSpec) -> str:
    """The word size, the header (opcode, token masks) and the queue codes."""
    return _digest([spec.word_bits, [[f.name, f.offset, f.bits] for f in spec.header], dict(spec.enums["queue"])])


def op_layout(spec: IsaSpec, ispec: InstrSpec, version: int) -> str:
    """One instruction's encoding as a program of ``version`` uses it: opcode, queue and the fields that
    version has (a field added later is 0 in such a program)."""
    return _digest([ispec.name, ispec.opcode, ispec.queue,
                    [[f.name, f.offset, f.bits, f.kind, f.min, dict(spec.enums[f.enum]) if f.enum else None]
                     for f in ispec.fields if f.since <= version]])


def combine_layouts(base: str, ops: Mapping[int, str]) -> str:
    """The fingerprint of a program from the base layout and its opcodes' layouts (runtime/board.py repeats
    this, from the generated tables in runtime/csr_map.py)."""
    text = "\n".join([base] + [f"{code}:{ops[code]}" for code in sorted(ops)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layout_fingerprint(spec: IsaSpec, opcodes, version: int) -> str:
    """The fingerprint of a program of ``version`` with these opcodes (an opcode this spec lacks counts as
    'unknown': no writer that knew it agrees)."""
    ops = {}
    for code in set(opcodes):
        i = spec.by_opcode(code)
        ops[code] = "unknown" if i is None or i.since > version else op_layout(spec, i, version)
    return combine_layouts(base_layout(spec), ops)


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
                 min=int(d.get("min", 0)), fmt=fmt, doc=d.get("doc", ""), since=int(d.get("since", 1)))


def _csr(raw: dict) -> tuple[Mapping[str, CsrReg], int, str]:
    addr_bits = int(raw.get("addr_bits", 8))
    regs: dict[str, CsrReg] = {}
    offsets: set[int] = set()
    for d in raw.get("reg", []):
        name, off, access = d["name"], int(d["offset"]), d["access"]
        where = f"csr {name}"
        if name in regs:
            raise SpecError(f"{where}: duplicate register")
        if off % 4 or not 0 <= off < (1 << addr_bits) or off in offsets:
            raise SpecError(f"{where}: offset {off:#x} unaligned, outside {addr_bits} address bits or taken")
        if access not in CSR_ACCESS:
            raise SpecError(f"{where}: access {access!r} is not one of {CSR_ACCESS}")
        fields: list[CsrField] = []
        used = 0
        for fd in d.get("fields", []):
            f = CsrField(name=fd["name"], lsb=int(fd["lsb"]), bits=int(fd.get("bits", 1)), doc=fd.get("doc", ""))
            if f.bits < 1 or f.lsb < 0 or f.lsb + f.bits > CSR_BITS or used & f.mask or \
                    any(g.name == f.name for g in fields):
                raise SpecError(f"{where}: field {f.name} outside {CSR_BITS} bits, overlapping or duplicate")
            used |= f.mask
            fields.append(f)
        offsets.add(off)
        regs[name] = CsrReg(name=name, offset=off, access=access, doc=d.get("doc", "").strip(),
                            fields=tuple(fields))
    ordered = dict(sorted(regs.items(), key=lambda kv: kv[1].offset))
    return MappingProxyType(ordered), addr_bits, raw.get("summary", "").strip()


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
        since = int(d.get("since", 1))
        for fd in d.get("fields", []):
            if fd["name"] in seen:
                raise SpecError(f"{name}: duplicate field {fd['name']}")
            seen.add(fd["name"])
            fields.append(_field({"since": since, **fd}, off, enums, name))
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
                                semantics=d["semantics"].strip(), fields=tuple(fields), since=since))

    errors = {k: (int(v["code"]), v["doc"]) for k, v in raw.get("errors", {}).items()}
    csr, csr_addr_bits, csr_summary = _csr(raw.get("csr", {}))
    version = int(raw["isa"]["version"])
    runs = tuple(sorted({version, *(int(v) for v in raw["isa"].get("runs", []))}))
    if runs[-1] != version:
        raise SpecError(f"[isa] runs {list(runs)}: only older versions than {version} can be listed")
    for i in instrs:
        for what, since in ((i.name, i.since), *((f"{i.name}.{f.name}", f.since) for f in i.fields)):
            if not 1 <= since <= version:
                raise SpecError(f"{what}: since = {since} is not a version up to this one ({version})")
        for f in i.fields:
            if f.since > i.since and f.min > 0:
                raise SpecError(f"{i.name}.{f.name}: a field added later (since = {f.since}) must mean 'off' at 0, "
                                f"where older programs have it (min = {f.min})")
    spec = IsaSpec(name=raw["isa"]["name"], version=version, runs=runs, word_bits=word_bits,
                   summary=raw["isa"]["summary"].strip(), header=tuple(header),
                   enums=MappingProxyType(enums), instrs=tuple(instrs), errors=MappingProxyType(errors),
                   csr=csr, csr_addr_bits=csr_addr_bits, csr_summary=csr_summary)
    _BY_NAME[id(spec)] = {i.name: i for i in instrs}
    _BY_OPCODE[id(spec)] = {i.opcode: i for i in instrs}
    return spec


def load_spec() -> IsaSpec:
    return parse_spec(resources.files(__package__).joinpath("isa.toml").read_text(encoding="utf-8"))


SPEC: IsaSpec = load_spec()
QUEUES: tuple[str, ...] = tuple(sorted(SPEC.enums["queue"], key=SPEC.enums["queue"].__getitem__))
