"""Random valid instruction words and targeted mutations, for the decoder benches.

Every mutation class of the ISA's validity rules is produced: unknown opcodes,
reserved bits, enum codes that name no member, counts below their minimum, token
masks naming the own queue (and tokens on halt), plus random bit flips and random words.
"""
from __future__ import annotations

import random

from sdac.isa.encoding import Instr, encode_int
from sdac.isa.spec import SPEC, QUEUES

WORD_MASK = (1 << SPEC.word_bits) - 1
HDR = {f.name: f for f in SPEC.header}
HDR_MASK = sum(f.mask for f in SPEC.header)


def random_value(rng: random.Random, f) -> int | str:
    if f.kind == "enum":
        return rng.choice(list(SPEC.enums[f.enum]))
    if f.kind == "bool":
        return rng.randrange(2)
    edge = [f.min, f.min + 1, f.max, f.max - 1]
    v = rng.choice(edge) if rng.random() < 0.2 else rng.randint(f.min, f.max)
    return min(max(v, f.min), f.max)


def random_instr(rng: random.Random, ispec=None) -> Instr:
    ispec = ispec or rng.choice(SPEC.instrs)
    args = {f.name: random_value(rng, f) for f in ispec.fields}
    ins = Instr(ispec.name, args)
    own = ins.queue
    if own == "ctl":
        return ins
    others = [q for q in QUEUES if q != own]
    pop = [q for q in others if rng.random() < 0.3]
    push = [q for q in others if rng.random() < 0.3]
    return ins.replace(pop=pop, push=push)


def mutate(rng: random.Random, word: int, kind: str) -> int:
    """Apply one mutation of class `kind` to a valid word (may leave it valid, e.g. a flip)."""
    ispec = SPEC.by_opcode(word & HDR["opcode"].max)
    if kind == "opcode":
        bad = [o for o in range(1 << HDR["opcode"].bits) if SPEC.by_opcode(o) is None]
        return (word & ~HDR["opcode"].mask) | rng.choice(bad)
    if kind == "reserved":
        free = [b for b in range(SPEC.word_bits) if not ((HDR_MASK | ispec.used_mask) >> b) & 1]
        return word | (1 << rng.choice(free))
    if kind == "enum":
        cands = [f for f in ispec.fields if f.kind == "enum"
                 and len(SPEC.enums[f.enum]) < (1 << f.bits)]
        if not cands:
            return word
        f = rng.choice(cands)
        bad = [c for c in range(1 << f.bits) if c not in SPEC.enums[f.enum].values()]
        return (word & ~f.mask) | (rng.choice(bad) << f.offset)
    if kind == "min":
        cands = [f for f in ispec.fields if f.min > 0]
        if not cands:
            return word
        f = rng.choice(cands)
        return (word & ~f.mask) | (rng.randrange(f.min) << f.offset)
    if kind == "token":
        q = ispec.queue
        if q == "ctl":
            bit = rng.randrange(8)
        else:
            if q.startswith("field:"):
                fq = ispec.field_map[q.split(":", 1)[1]]
                code = (word >> fq.offset) & fq.max
            else:
                code = SPEC.enums["queue"][q]
            bit = code + rng.choice([0, 4])   # pop or push bit of the own queue
        return word | (1 << (HDR["pop"].offset + bit))
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            word ^= 1 << rng.randrange(SPEC.word_bits)
        return word
    if kind == "random":
        return rng.getrandbits(SPEC.word_bits)
    raise ValueError(kind)


KINDS = ("valid", "opcode", "reserved", "enum", "min", "token", "flip", "random")


def word_stream(seed: int, n: int):
    """n (kind, word) pairs cycling through every instruction and every mutation class."""
    rng = random.Random(seed)
    for i in range(n):
        ispec = SPEC.instrs[i % len(SPEC.instrs)]
        word = encode_int(random_instr(rng, ispec))
        kind = KINDS[(i // len(SPEC.instrs)) % len(KINDS)]
        if kind != "valid":
            word = mutate(rng, word, kind) & WORD_MASK
        yield kind, word
