"""The bundle file (.sdab): everything a device needs to run one compiled model.

Layout (all integers little-endian; docs/bundle.md has the full table):

    0   header, 64 bytes: magic, format version, header size, section count,
        flags, section table offset, file size, ISA version, CRC32 of the
        section table, CRC32 of the header's first 40 bytes, zero padding
    64  section table: one 32-byte entry per section (fourcc kind, flags,
        offset, size, CRC32, reserved)
    ..  sections, each starting on a 64-byte boundary, zero padded:
        META  canonical JSON (sort_keys, compact): machine, memory map, IO tensors, debug, meta
        TEXT  instruction words (encode_program)
        DATA  static DRAM image placed at data_base
        STEP  per-step table: n_steps banks of step_bank bytes, placed at step_base
        HOST  optional serialized ONNX model the host runs before each step

The bytes depend only on the Bundle (no timestamps, canonical JSON), so the
same Bundle always gives the same file. ``read_bundle`` checks everything it
can and raises ``BundleError`` naming the file and the problem.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import mmap
import numbers
import os
import struct
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import BundleError, SdacError
from .isa.encoding import (DecodeError, Instr, decode_program, encode_program, needed_version, program_layout,
                           program_version, text_opcodes)
from .isa.machine import Machine
from .isa.spec import SPEC, layout_fingerprint

MAGIC = b"SDAB\x00\r\n\x1a"      # NUL, CRLF and ^Z catch text-mode and truncating transfers
FORMAT_VERSION = 1
HEADER_SIZE = 64
ENTRY_SIZE = 32
ALIGN = 64
# magic, version, header size, section count, flags, table offset, file size, ISA version, table CRC
_HEADER = struct.Struct("<8sHHIIIQII")
_HEADER_CRC = struct.Struct("<I")      # at offset _HEADER.size: CRC32 of bytes [0, _HEADER.size)
_ENTRY = struct.Struct("<4sIQQII")    # kind, flags, offset, size, CRC32, reserved

REQUIRED = (b"META", b"TEXT", b"DATA", b"STEP")
OPTIONAL = (b"HOST",)
KINDS = REQUIRED + OPTIONAL
LAYOUTS = ("nchw", "rows")
META_FORMAT = "sdac-bundle"


@dataclass
class IOTensor:
    """A model input or output: host view (name, shape, dtype, layout) and device view (dram, rows, cols)."""

    name: str                   # ONNX graph input/output name
    shape: tuple[int, ...]      # host shape as in the ONNX graph, e.g. (1, 4, 8, 8)
    dtype: str                  # host dtype, "float32"
    layout: str                 # "nchw" (host NCHW <-> device NHWC rows) or "rows" (host reshape(-1, C))
    dram: int                   # device byte address of the int8 tensor
    rows: int
    cols: int
    scales: tuple[float, ...]   # quantization scale per denoising step (len n_steps)

    def dram_bytes(self, lanes: int) -> int:
        """Bytes the int8 tensor occupies in DRAM: rows * ceil(cols / L) lines of L bytes."""
        return self.rows * (-(-self.cols // lanes)) * lanes

    def to_json(self) -> dict:
        return {"name": self.name, "shape": [int(v) for v in self.shape], "dtype": self.dtype,
                "layout": self.layout, "dram": int(self.dram), "rows": int(self.rows), "cols": int(self.cols),
                "scales": [float(s) for s in self.scales]}


class SpilledData(mmap.mmap):
    """A DATA image that lives in an (unlinked) temporary file: bytes-like for readers (a read-only mapping,
    pages read on access), copied to a bundle file by the kernel (``copy_to``) with its CRC computed as it was
    written, so writing a 0.4 GB SD-v1.5 image costs no memory."""

    def __new__(cls, file, size: int, crc: int):
        self = super().__new__(cls, file.fileno(), size, access=mmap.ACCESS_READ)
        self.file, self.crc = file, crc
        return self

    def copy_to(self, out) -> None:
        out.flush()
        done = 0
        while done < len(self):
            done += os.sendfile(out.fileno(), self.file.fileno(), done, len(self) - done)
        out.seek(0, os.SEEK_END)

    def __eq__(self, other) -> bool:
        return bytes(self) == bytes(other) if isinstance(other, (bytes, bytearray, memoryview, mmap.mmap)) \
            else NotImplemented

    __hash__ = None


class DataImage:
    """The DATA image as the lowering appends to it (``+=`` or ``append``): in memory up to ``spill`` bytes,
    then in a temporary file. ``finish()`` gives ``bytes`` or a ``SpilledData``.

    From the first part of ``thread_from`` bytes or more on (the weights of a large model), the parts are made
    (``append``'s function), checksummed and written by one writer thread, in order: numpy, zlib and file writes
    release the GIL, so the weights of one kernel are packed and written while the lowering emits the next
    kernel's instructions (and, see driver.py, while the verifier runs). Smaller images are made inline."""

    IN_FLIGHT = 4096        # parts queued for the writer at most: a queued part holds its (small) bytes or the
                            # function that makes it, the large arrays exist only while the writer makes one

    def __init__(self, spill: int = 64 << 20, thread_from: int = 1 << 20):
        self.spill, self.thread_from, self.size, self.crc = spill, thread_from, 0, 0
        self.cpu = 0.0          # CPU seconds of the threads that made, checksummed and stored the parts
        self.buf: bytearray | None = bytearray()
        self.file = None
        self._writer = None
        self._jobs: collections.deque = collections.deque()

    def __len__(self) -> int:
        return self.size

    def __iadd__(self, blob) -> "DataImage":
        blob = bytes(blob)
        self.append(len(blob), lambda: blob)
        return self

    def append(self, nbytes: int, make) -> None:
        """Append the ``nbytes`` bytes that ``make()`` returns (possibly later, on the writer thread)."""
        self.size += nbytes
        if self._writer is None:
            if nbytes < self.thread_from:
                self._write(nbytes, make)
                return
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sdac-data")
        self._jobs.append(self._writer.submit(self._write, nbytes, make))
        while len(self._jobs) > self.IN_FLIGHT:
            self._jobs.popleft().result()

    def _write(self, nbytes: int, make) -> None:
        """Make, check, checksum and store one part (on the writer thread once there is one: then only that
        thread touches buf and file until finish() has joined it)."""
        t = time.thread_time()
        blob = make()
        if len(blob) != nbytes:
            raise SdacError(f"DATA image: a part of {len(blob)} bytes was announced as {nbytes} (compiler bug)")
        self.crc = zlib.crc32(blob, self.crc)
        if self.file is None:
            self.buf += memoryview(blob)       # (an ndarray would take += as its own addition)
            if len(self.buf) > self.spill:
                self.file = tempfile.TemporaryFile(prefix="sdac-data-")
                self.file.write(self.buf)
                self.buf = None
        else:
            self.file.write(blob)
        self.cpu += time.thread_time() - t

    def finish(self):
        while self._jobs:
            self._jobs.popleft().result()         # raises what a part's make() raised
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if self.file is None:
            return bytes(self.buf)
        self.file.flush()
        return SpilledData(self.file, self.size, self.crc)


@dataclass
class Bundle:
    machine: Machine            # sdac.isa.machine.Machine
    instrs: list[Instr]         # the program (TEXT section = encode_program(instrs))
    dram_size: int              # bytes of device DRAM the program needs (everything below is inside)
    data: bytes                 # static DRAM image (weights, parameters) placed at data_base
    data_base: int
    n_steps: int
    step_base: int              # DRAM address of the per-step table
    step_bank: int              # bytes per step bank (setstep's `bank`)
    step_table: bytes           # n_steps * step_bank bytes
    inputs: list[IOTensor]
    outputs: list[IOTensor]
    host: bytes | None = None   # serialized ONNX model the host runs before each step
    debug: list[dict] = field(default_factory=list)  # {"kernel": str, "first": int, "last": int, "sources": [str]}
    meta: dict = field(default_factory=dict)         # free-form JSON-able (tuples come back as lists)

    def to_bytes(self) -> bytes:
        return bundle_bytes(self)

    @staticmethod
    def from_bytes(blob: bytes, name: str = "<bytes>") -> "Bundle":
        return parse_bundle(blob, name)

    def io(self, name: str) -> IOTensor:
        for t in (*self.inputs, *self.outputs):
            if t.name == name:
                return t
        raise BundleError(f"bundle has no input or output named {name!r}")


# ------------------------------------------------------------------ writing

def _canonical_json(obj) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise BundleError(f"bundle META is not JSON-serializable: {e}") from None


def _meta_json(b: Bundle, isa_version: int) -> dict:
    return {
        "format": META_FORMAT,
        "isa_layout": program_layout(b.instrs, isa_version),
        "machine": asdict(b.machine),
        "dram_size": int(b.dram_size),
        "data_base": int(b.data_base),
        "n_steps": int(b.n_steps),
        "step_base": int(b.step_base),
        "step_bank": int(b.step_bank),
        "inputs": [t.to_json() for t in b.inputs],
        "outputs": [t.to_json() for t in b.outputs],
        "debug": b.debug,
        "meta": b.meta,
    }


def _pad(n: int) -> int:
    return -n % ALIGN


def _layout(b: Bundle) -> tuple[bytes, list]:
    """The header + section table + padding, and the section payloads (not copied: the DATA image of a large
    model is hundreds of MB)."""
    _check(b, "bundle")
    try:
        text = encode_program(b.instrs)
    except SdacError as e:
        raise BundleError(f"bundle: TEXT: {e}") from None
    # the oldest ISA version that runs the program: a device of that version (or a later one that runs its
    # programs, [isa] runs) accepts the bundle
    isa_version = program_version(b.instrs)
    sections = [(b"META", _canonical_json(_meta_json(b, isa_version))), (b"TEXT", text), (b"DATA", b.data),
                (b"STEP", b.step_table)]
    if b.host is not None:
        sections.append((b"HOST", b.host))
    table_size = ENTRY_SIZE * len(sections)
    offset = HEADER_SIZE + table_size + _pad(HEADER_SIZE + table_size)
    entries = []
    for kind, payload in sections:
        crc = payload.crc if isinstance(payload, SpilledData) else zlib.crc32(payload)
        entries.append(_ENTRY.pack(kind, 0, offset, len(payload), crc, 0))
        offset += len(payload) + _pad(len(payload))
    table = b"".join(entries)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, len(sections), 0, HEADER_SIZE, offset,
                        isa_version, zlib.crc32(table))
    head += _HEADER_CRC.pack(zlib.crc32(head))
    head += bytes(HEADER_SIZE - len(head))
    return head + table + bytes(_pad(HEADER_SIZE + table_size)), [p for _, p in sections]


def bundle_bytes(b: Bundle) -> bytes:
    """Serialize a bundle (checks it for consistency first; raises BundleError)."""
    head, payloads = _layout(b)
    return head + b"".join(bytes(p) + bytes(_pad(len(p))) for p in payloads)


def write_bundle(bundle: Bundle, path: str | os.PathLike) -> None:
    """Write atomically (temporary file + rename) so a crash never leaves a half-written bundle; the sections
    are written one by one (the same bytes as ``bundle_bytes``, without a second copy of the DATA image)."""
    path = Path(path)
    head, payloads = _layout(bundle)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for p in payloads:
                if isinstance(p, SpilledData):
                    p.copy_to(f)        # file to file: the image is never mapped into this process
                else:
                    f.write(p)
                f.write(bytes(_pad(len(p))))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ reading

def read_bundle(path: str | os.PathLike) -> Bundle:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror}") from None
    return parse_bundle(blob, str(path))


def section_table(blob: bytes) -> list[tuple[str, int, int]]:
    """(kind, offset, size) of each section of a bundle that parse_bundle accepted."""
    count = struct.unpack_from("<I", blob, 12)[0]
    return [(k.decode("ascii"), off, size) for k, _, off, size, _, _ in
            (_ENTRY.unpack_from(blob, HEADER_SIZE + i * ENTRY_SIZE) for i in range(count))]


def header_isa_version(blob: bytes) -> int:
    """The ISA version in the header of a bundle that parse_bundle accepted (the oldest that runs it)."""
    return _HEADER.unpack_from(blob, 0)[7]


def is_bundle(blob: bytes) -> bool:
    return blob[:len(MAGIC)] == MAGIC


def parse_bundle(blob: bytes, name: str = "<bytes>") -> Bundle:
    def fail(msg: str):
        raise BundleError(f"{name}: {msg}")

    blob = bytes(blob)
    if blob[:len(MAGIC)] != MAGIC[:min(len(blob), len(MAGIC))]:
        fail("not an sdac bundle (bad magic number)")
    if len(blob) < HEADER_SIZE:
        fail(f"truncated: {len(blob)} bytes, the header alone is {HEADER_SIZE}")
    (_, version, hsize, count, flags, toff, fsize, isa_version, table_crc) = _HEADER.unpack_from(blob, 0)
    (head_crc,) = _HEADER_CRC.unpack_from(blob, _HEADER.size)
    if head_crc != zlib.crc32(blob[:_HEADER.size]):
        fail("corrupted: header CRC mismatch")
    if version != FORMAT_VERSION:
        fail(f"bundle format version {version}, this sdac reads version {FORMAT_VERSION}")
    if isa_version not in SPEC.runs:
        fail(f"compiled for ISA version {isa_version}, this sdac implements version {SPEC.version} (and runs "
             f"bundles of versions {', '.join(map(str, SPEC.runs))})")
    if hsize != HEADER_SIZE or toff != HEADER_SIZE or flags != 0 or any(blob[_HEADER.size + 4:HEADER_SIZE]):
        fail("corrupted: unexpected header fields")
    if fsize != len(blob):
        what = "truncated" if len(blob) < fsize else "trailing bytes"
        fail(f"{what}: header says {fsize} bytes, file has {len(blob)}")
    if not 1 <= count <= len(KINDS):
        fail(f"corrupted: section count {count}")
    table_end = toff + count * ENTRY_SIZE
    if table_end > len(blob):
        fail("truncated: section table runs past the end of the file")
    table = blob[toff:table_end]
    if zlib.crc32(table) != table_crc:
        fail("corrupted: section table CRC mismatch")

    payloads: dict[bytes, bytes] = {}
    spans: list[tuple[int, int, str]] = []
    for i in range(count):
        kind, sflags, off, size, crc, reserved = _ENTRY.unpack_from(table, i * ENTRY_SIZE)
        kname = kind.decode("latin-1")
        if kind not in KINDS:
            fail(f"section {i}: unknown kind {kname!r}")
        if kind in payloads:
            fail(f"section {i}: duplicate {kname} section")
        if sflags or reserved:
            fail(f"section {kname}: unexpected flags")
        if off < table_end or off + size > len(blob):
            fail(f"section {kname}: [{off}, {off + size}) lies outside the file's data area")
        for lo, hi, other in spans:
            if off < hi and lo < off + size:
                fail(f"section {kname} overlaps section {other}")
        spans.append((off, off + size, kname))
        payload = blob[off:off + size]
        if zlib.crc32(payload) != crc:
            fail(f"corrupted: section {kname} CRC mismatch")
        payloads[kind] = payload
    for kind in REQUIRED:
        if kind not in payloads:
            fail(f"missing section {kind.decode()}")

    try:
        meta = json.loads(payloads[b"META"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"META is not valid JSON: {e}")
    except RecursionError:
        fail("META is not valid JSON: nested too deeply")
    try:
        instrs, undecodable = decode_program(payloads[b"TEXT"]), None
    except DecodeError as e:
        instrs, undecodable = None, e
    layout = meta.get("isa_layout") if isinstance(meta, dict) else None
    if layout is not None and len(payloads[b"TEXT"]) % SPEC.word_bytes == 0:
        # words of another layout decode into other instructions, or not at all: say why first. (A layout of
        # another version this sdac runs is a header naming the wrong version: the check below names the
        # instruction.)
        opcodes = text_opcodes(payloads[b"TEXT"])
        mine = {v: layout_fingerprint(SPEC, opcodes, v) for v in SPEC.runs}
        if layout not in mine.values():
            fail(f"TEXT was encoded with another layout of ISA version {isa_version} than this sdac's (META "
                 f"isa_layout {layout!r}, this sdac {mine[isa_version]!r}): the two were built from different "
                 f"isa/isa.toml files; recompile the model with this sdac"
                 + (f" (decoding it here: {undecodable})" if undecodable else ""))
    if undecodable:
        fail(f"TEXT: {undecodable}")
    if program_version(instrs) > isa_version:
        i, ins = next((i, ins) for i, ins in enumerate(instrs) if needed_version(ins) > isa_version)
        fail(f"TEXT: instruction {i} ({ins.op}) needs ISA version {needed_version(ins)}, the header says "
             f"{isa_version}")
    bundle = _from_meta(meta, instrs, payloads, fail)
    _check(bundle, name)
    return bundle


def _from_meta(meta, instrs, payloads, fail) -> Bundle:
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        fail(f"META: not an {META_FORMAT} description")
    keys = {"format", "machine", "dram_size", "data_base", "n_steps", "step_base", "step_bank",
            "inputs", "outputs", "debug", "meta"}
    optional = {"isa_layout"}      # (checked against TEXT in parse_bundle; bundles written before it lack it)
    missing, extra = keys - set(meta), set(meta) - keys - optional
    if missing:
        fail(f"META: missing key(s) {', '.join(sorted(missing))}")
    if extra:
        fail(f"META: unknown key(s) {', '.join(sorted(extra))}")
    try:
        machine = Machine.from_dict(meta["machine"])
    except (TypeError, ValueError) as e:
        fail(f"META: machine: {e}")

    def io(d, where: str) -> IOTensor:
        want = {"name", "shape", "dtype", "layout", "dram", "rows", "cols", "scales"}
        if not isinstance(d, dict) or set(d) != want:
            fail(f"META: {where}: expected keys {sorted(want)}")
        if not isinstance(d["shape"], list) or not isinstance(d["scales"], list):
            fail(f"META: {where}: shape and scales must be lists")
        return IOTensor(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"], layout=d["layout"],
                        dram=d["dram"], rows=d["rows"], cols=d["cols"], scales=tuple(d["scales"]))

    for k in ("inputs", "outputs", "debug"):
        if not isinstance(meta[k], list):
            fail(f"META: {k} must be a list")
    if not isinstance(meta["meta"], dict):
        fail("META: meta must be an object")
    return Bundle(machine=machine, instrs=instrs, dram_size=meta["dram_size"], data=payloads[b"DATA"],
                  data_base=meta["data_base"], n_steps=meta["n_steps"], step_base=meta["step_base"],
                  step_bank=meta["step_bank"], step_table=payloads[b"STEP"],
                  inputs=[io(d, f"inputs[{i}]") for i, d in enumerate(meta["inputs"])],
                  outputs=[io(d, f"outputs[{i}]") for i, d in enumerate(meta["outputs"])],
                  host=payloads.get(b"HOST"), debug=meta["debug"], meta=meta["meta"])


# ------------------------------------------------------------- consistency

def _is_int(v) -> bool:
    # numpy integers are fine (the compiler computes addresses with them); bools are not
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def check_bundle(b: Bundle, name: str = "bundle") -> None:
    """Raise BundleError if the bundle's memory map or IO descriptions are inconsistent."""
    _check(b, name)


def _check(b: Bundle, name: str) -> None:
    def fail(msg: str):
        raise BundleError(f"{name}: inconsistent: {msg}")

    if not isinstance(b.machine, Machine):
        fail("machine is not a Machine")
    for k in ("dram_size", "data_base", "n_steps", "step_base", "step_bank"):
        v = getattr(b, k)
        if not _is_int(v) or v < 0:
            fail(f"{k} must be a non-negative integer, got {v!r}")
    if b.dram_size <= 0 or b.dram_size > 1 << 32:
        fail(f"dram_size {b.dram_size} is outside (0, 2^32] (DMA addresses are 32 bits)")
    if b.n_steps < 1:
        fail(f"n_steps must be >= 1, got {b.n_steps}")
    data_end = b.data_base + len(b.data)
    if data_end > b.dram_size:
        fail(f"data [{b.data_base:#x}, {data_end:#x}) is not inside dram_size {b.dram_size:#x}")
    if len(b.step_table) != b.n_steps * b.step_bank:
        fail(f"step_table has {len(b.step_table)} bytes, n_steps*step_bank = {b.n_steps}*{b.step_bank} "
             f"= {b.n_steps * b.step_bank}")
    step_end = b.step_base + len(b.step_table)
    if step_end > b.dram_size:
        fail(f"step table [{b.step_base:#x}, {step_end:#x}) is not inside dram_size {b.dram_size:#x}")
    if b.data and b.step_table and b.data_base < step_end and b.step_base < data_end:
        fail("the step table overlaps the data image")
    if b.host is not None and not isinstance(b.host, (bytes, bytearray)):
        fail("host must be bytes or None")
    names: set[str] = set()
    for kind, tensors in (("input", b.inputs), ("output", b.outputs)):
        for t in tensors:
            _check_io(t, kind, b, fail)
            if t.name in names:
                fail(f"{kind} {t.name!r}: duplicate name")
            names.add(t.name)
    if not isinstance(b.debug, list):
        fail("debug must be a list")
    for i, d in enumerate(b.debug):
        if not (isinstance(d, dict) and isinstance(d.get("kernel"), str)
                and _is_int(d.get("first")) and _is_int(d.get("last"))):
            fail(f"debug[{i}] must be a dict with kernel (str), first and last (int)")
        if not 0 <= d["first"] <= d["last"] + 1 <= len(b.instrs):
            fail(f"debug[{i}] ({d['kernel']}): instructions [{d['first']}, {d['last']}] are not in the program "
                 f"of {len(b.instrs)}")
    if not isinstance(b.meta, dict):
        fail("meta must be a dict")


def _check_io(t: IOTensor, kind: str, b: Bundle, fail) -> None:
    where = f"{kind} {t.name!r}"
    if not isinstance(t.name, str) or not t.name:
        fail(f"{kind} with an empty or non-string name")
    if not isinstance(t.dtype, str):
        fail(f"{where}: dtype must be a string")
    if t.layout not in LAYOUTS:
        fail(f"{where}: layout {t.layout!r} is not one of {', '.join(LAYOUTS)}")
    if not all(_is_int(v) and v > 0 for v in t.shape) or not t.shape:
        fail(f"{where}: shape {t.shape} must be positive integers")
    for k in ("dram", "rows", "cols"):
        v = getattr(t, k)
        if not _is_int(v) or v < 0 or (k != "dram" and v == 0):
            fail(f"{where}: {k} = {v!r} is not a valid value")
    if math.prod(t.shape) != t.rows * t.cols:
        fail(f"{where}: shape {t.shape} has {math.prod(t.shape)} elements, rows*cols = {t.rows * t.cols}")
    chan = t.shape[1] if t.layout == "nchw" and len(t.shape) >= 2 else t.shape[-1]
    if t.cols != chan:
        fail(f"{where}: cols {t.cols} is not the channel dimension {chan} of shape {t.shape} ({t.layout})")
    end = t.dram + t.dram_bytes(b.machine.lanes)
    if end > b.dram_size:
        fail(f"{where}: [{t.dram:#x}, {end:#x}) is not inside dram_size {b.dram_size:#x}")
    if len(t.scales) != b.n_steps:
        fail(f"{where}: {len(t.scales)} scales for {b.n_steps} steps")
    for s in t.scales:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and s > 0):
            fail(f"{where}: scale {s!r} is not a positive finite number")
