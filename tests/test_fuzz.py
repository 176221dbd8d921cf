"""Fuzzing: random and mutated bytes into the bundle loader and the decoder, mutated text into the
assembler. Only clean errors (SdacError subclasses) may come out, never another exception.

The default suite runs a few hundred cases per target; `make test-slow` runs >= 10,000 per target.
Mutations of bundles are also replayed with every CRC recomputed, so they reach the checks behind
the checksums (section table, META, TEXT) instead of stopping at the first CRC mismatch.
"""
import json
import random
import struct
import zlib

import pytest

from sdac.bundle import Bundle, IOTensor
from sdac.errors import SdacError
from sdac.isa import Instr, decode_program, encode_program
from sdac.isa.asm import assemble, disassemble
from sdac.isa.machine import DEFAULT

PROGRAM = [
    Instr.make("setstep", src="csr", bank=80),
    Instr.make("load", buf="act", dram=0x1000, run=4, push={"cmp"}),
    Instr.make("mm", m=4, n=20, k=20, ars=1, crs=1, pop={"ld"}, push={"sfu"}),
    Instr.make("act", out="act", rows=4, cols=20, fn="silu", frac=8, pop={"cmp"}, push={"st"}),
    Instr.make("norm", st_mode="chan", gsize=4, rows=4, cols=20),
    Instr.make("sync", q="sfu", pop={"ld"}, push={"st"}),
    Instr.make("store", buf="act", dram=0x2000, run=4, pop={"sfu"}),
    Instr.make("halt"),
]


def seed_bundle() -> bytes:
    b = Bundle(machine=DEFAULT, instrs=PROGRAM, dram_size=0x3000, data=bytes(range(200)), data_base=0,
               n_steps=2, step_base=0x400, step_bank=80, step_table=bytes(range(160)),
               inputs=[IOTensor("x", (1, 20, 2, 2), "float32", "nchw", 0x1000, 4, 20, (0.1, 0.2))],
               outputs=[IOTensor("y", (4, 20), "float32", "rows", 0x2000, 4, 20, (0.05, 0.05))],
               host=b"onnx", debug=[{"kernel": "k", "first": 0, "last": 7, "sources": ["n"]}],
               meta={"timesteps": [999, 0]})
    return b.to_bytes()


SEED = seed_bundle()


def fix_crcs(blob: bytes) -> bytes:
    """Recompute the section, table and header CRCs of a (mutated) bundle, as far as it has them."""
    b = bytearray(blob)
    if len(b) < 64:
        return bytes(b)
    count = min(struct.unpack_from("<I", b, 12)[0], (len(b) - 64) // 32)
    for i in range(count):
        kind, fl, off, size, _, r = struct.unpack_from("<4sIQQII", b, 64 + 32 * i)
        if off + size <= len(b):
            struct.pack_into("<4sIQQII", b, 64 + 32 * i, kind, fl, off, size, zlib.crc32(b[off:off + size]), r)
    struct.pack_into("<I", b, 36, zlib.crc32(b[64:64 + 32 * count]))
    struct.pack_into("<I", b, 40, zlib.crc32(b[:40]))
    return bytes(b)


JUNK = [None, True, False, 0, -1, 1, 2 ** 31, 2 ** 64, 10 ** 30, 0.5, -0.0, 1e308, "", "x", "nchw", [], [1],
        [0, 0], ["a"], {}, {"a": 1}, [[[]]], {"kernel": "k", "first": 9, "last": 1}]


def mutate_meta(rng: random.Random, blob: bytes) -> bytes:
    """Replace one value anywhere in the META JSON with junk, rewrite META and the layout."""
    count = struct.unpack_from("<I", blob, 12)[0]
    entries = [list(struct.unpack_from("<4sIQQII", blob, 64 + 32 * i)) for i in range(count)]
    meta_e = next(e for e in entries if e[0] == b"META")
    meta = json.loads(blob[meta_e[2]:meta_e[2] + meta_e[3]])
    # walk to a random container and change or delete one of its entries
    node = meta
    for _ in range(rng.randrange(1, 5)):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        k = rng.choice(keys)
        if isinstance(node[k], (dict, list)) and node[k] and rng.random() < 0.6:
            node = node[k]
            continue
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[k]
        else:
            node[k] = rng.choice(JUNK)
        break
    new = json.dumps(meta, sort_keys=True).encode()
    # rebuild: META first, other sections after it, same order
    payloads = [(e[0], blob[e[2]:e[2] + e[3]] if e[0] != b"META" else new) for e in entries]
    off = 64 + 32 * count
    off += -off % 64
    table, body = b"", b""
    for kind, p in payloads:
        table += struct.pack("<4sIQQII", kind, 0, off, len(p), zlib.crc32(p), 0)
        body += p + bytes(-len(p) % 64)
        off += len(p) + (-len(p) % 64)
    head = bytearray(blob[:64])
    struct.pack_into("<Q", head, 24, off)
    out = bytes(head) + table + bytes(-(64 + len(table)) % 64) + body
    return fix_crcs(out)


def mutate(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(7)
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 64)))
        pos = rng.randrange(len(b))
        if kind == 0:                                   # flip a bit
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:                                 # set a byte to an interesting value
            b[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif kind == 2:                                 # truncate
            del b[pos:]
        elif kind == 3:                                 # insert random bytes
            b[pos:pos] = rng.randbytes(rng.randrange(1, 40))
        elif kind == 4:                                 # delete a range
            del b[pos:pos + rng.randrange(1, 64)]
        elif kind == 5:                                 # overwrite a 32/64-bit integer
            fmt = rng.choice(["<I", "<Q"])
            if pos + struct.calcsize(fmt) <= len(b):
                struct.pack_into(fmt, b, pos, rng.choice([0, 1, 2 ** 31, 2 ** 32 - 1, len(b), rng.getrandbits(32)]))
        else:                                           # duplicate a chunk
            n = rng.randrange(1, 64)
            b[pos:pos] = b[pos:pos + n]
    return bytes(b)


def only_clean_errors(fn, blob, *args):
    try:
        fn(blob, *args)
    except SdacError as e:
        assert str(e)
    except Exception as e:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{type(e).__name__}: {e} for input {blob[:200]!r}...") from e


def fuzz_bundle(n: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(n):
        r = rng.random()
        if r < 0.1:
            blob = rng.randbytes(rng.randrange(0, 300))
        elif r < 0.15:
            blob = SEED[:8] + rng.randbytes(rng.randrange(0, 600))
        elif r < 0.45:
            blob = mutate(rng, SEED)
        elif r < 0.8:
            blob = fix_crcs(mutate(rng, SEED))
        else:
            blob = mutate_meta(rng, SEED)
        only_clean_errors(Bundle.from_bytes, blob, f"case{i}")


def fuzz_decoder(n: int, seed: int) -> None:
    rng = random.Random(seed)
    text = encode_program(PROGRAM)
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            blob = rng.randbytes(32 * rng.randrange(0, 4) + rng.choice([0, 0, 0, 1, 31]))
        elif r < 0.6:
            # a valid opcode with random other bits: reaches the field checks
            op = rng.choice(PROGRAM).spec.opcode
            blob = ((rng.getrandbits(256) & ~0x3F) | op).to_bytes(32, "little")
            if rng.random() < 0.5:   # clear most bits so some words are valid
                blob = (int.from_bytes(blob, "little") & rng.getrandbits(256) & rng.getrandbits(256)
                        | op).to_bytes(32, "little")
        else:
            blob = mutate(rng, text)
        only_clean_errors(decode_program, blob)


def fuzz_assembler(n: int, seed: int) -> None:
    rng = random.Random(seed)
    text = disassemble(PROGRAM)
    alphabet = "abcdefghijklmnopqrstuvwxyz_0123456789=,|#;x \t\n\r@-+.\"'\x00é"
    for _ in range(n):
        chars = list(text)
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[pos] = rng.choice(alphabet)
            elif op == 1:
                chars.insert(pos, rng.choice(alphabet))
            elif chars:
                del chars[pos]
        src = "".join(chars)
        try:
            prog = assemble(src, "fuzz.s")
        except SdacError:
            continue
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{type(e).__name__}: {e} for {src!r}") from e
        assert assemble(disassemble(prog)) == prog


def test_fuzz_bundle_loader():
    fuzz_bundle(400, 1)


def test_fuzz_decoder():
    fuzz_decoder(400, 2)


def test_fuzz_assembler():
    fuzz_assembler(200, 3)


def test_mutations_reach_deep_checks():
    """The CRC-fixing mutators must get past the checksums, or the fuzzer tests little."""
    rng = random.Random(4)
    reasons = set()
    for _ in range(300):
        blob = mutate_meta(rng, SEED) if rng.random() < 0.5 else fix_crcs(mutate(rng, SEED))
        try:
            Bundle.from_bytes(blob, "f")
        except SdacError as e:
            reasons.add(str(e).split(":")[1].strip().split(" ")[0])
    assert {"inconsistent", "META", "TEXT"} <= reasons, reasons


@pytest.mark.slow
def test_fuzz_bundle_loader_10k():
    fuzz_bundle(12_000, 11)


@pytest.mark.slow
def test_fuzz_decoder_10k():
    fuzz_decoder(12_000, 12)


@pytest.mark.slow
def test_fuzz_assembler_10k():
    fuzz_assembler(10_000, 13)


def test_fuzz_cli_on_mutated_bundles(tmp_path, capsys):
    """`sdac info` and `sdac disasm` on damaged files: exit 0 or 2 with one line, never a traceback."""
    from sdac.cli import main

    rng = random.Random(5)
    path = tmp_path / "m.sdab"
    for i in range(60):
        path.write_bytes(mutate_meta(rng, SEED) if i % 2 else fix_crcs(mutate(rng, SEED)))
        for cmd in ("info", "disasm"):
            code = main([cmd, str(path)])
            err = capsys.readouterr().err
            assert code in (0, 2) and (code == 0 or err.count("\n") == 1), (cmd, code, err)
