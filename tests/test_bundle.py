"""The bundle file: byte-exact round trips and a clean BundleError for every kind of bad file."""
import json
import struct
import zlib
from dataclasses import replace

import pytest

from sdac import bundle as bmod
from sdac.bundle import Bundle, IOTensor, read_bundle, write_bundle
from sdac.errors import BundleError, SdacError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT


def sample_bundle(**changes) -> Bundle:
    L = DEFAULT.lanes
    instrs = [
        Instr.make("setstep", src="csr", bank=64),
        Instr.make("load", buf="act", dram=0x1000, run=4, push={"cmp"}),
        Instr.make("mm", a=0, ars=1, m=4, n=20, k=20, pop={"ld"}, push={"sfu"}),
        Instr.make("act", sbuf="acc", out="act", rows=4, cols=20, pop={"cmp"}, push={"st"}),
        Instr.make("store", buf="act", dram=0x2000, run=4, pop={"sfu"}),
        Instr.make("halt"),
    ]
    b = Bundle(
        machine=DEFAULT, instrs=instrs, dram_size=0x4000,
        data=bytes(range(256)) * 4, data_base=0x0,
        n_steps=2, step_base=0x3000, step_bank=64, step_table=bytes(range(128)),
        inputs=[IOTensor("x", (1, 4, 2, 2), "float32", "nchw", 0x1000, 4, 4, (0.5, 0.25))],
        outputs=[IOTensor("y", (4, 20), "float32", "rows", 0x2000, 4, 20, (0.125, 1.0))],
        host=b"\x08\x07onnx",
        debug=[{"kernel": "k0", "first": 0, "last": 5, "sources": ["conv_1"]}],
        meta={"compiler": "test", "timesteps": [999, 499]},
    )
    assert 4 * L <= 0x1000
    return replace(b, **changes)


def test_round_trip_is_exact_and_deterministic(tmp_path):
    b = sample_bundle()
    blob = b.to_bytes()
    assert blob == sample_bundle().to_bytes()          # same Bundle -> same bytes
    assert Bundle.from_bytes(blob) == b
    write_bundle(b, tmp_path / "m.sdab")
    assert (tmp_path / "m.sdab").read_bytes() == blob
    assert read_bundle(tmp_path / "m.sdab") == b
    assert blob[:8] == b"SDAB\x00\r\n\x1a" and len(blob) % 64 == 0


def test_round_trip_without_host_and_empty_sections():
    b = sample_bundle(host=None, data=b"", debug=[], meta={}, inputs=[], outputs=[])
    assert Bundle.from_bytes(b.to_bytes()) == b


def test_meta_is_canonical_json():
    blob = sample_bundle().to_bytes()
    off, size = _section(blob, b"META")
    text = blob[off:off + size].decode()
    d = json.loads(text)
    assert text == json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert d["inputs"][0]["scales"] == [0.5, 0.25]


def _section(blob: bytes, kind: bytes) -> tuple[int, int]:
    count = struct.unpack_from("<I", blob, 12)[0]
    for i in range(count):
        k, _, off, size, _, _ = struct.unpack_from("<4sIQQII", blob, 64 + 32 * i)
        if k == kind:
            return off, size
    raise KeyError(kind)


def _section_bytes(blob: bytes, kind: bytes) -> bytes:
    off, size = _section(blob, kind)
    return blob[off:off + size]


def _refix(blob: bytearray, kind: bytes | None = None) -> bytes:
    """Recompute the CRCs after a deliberate edit, so the check behind them is reached."""
    count = struct.unpack_from("<I", blob, 12)[0]
    if kind is not None:
        for i in range(count):
            k, fl, off, size, _, r = struct.unpack_from("<4sIQQII", blob, 64 + 32 * i)
            if k == kind:
                struct.pack_into("<4sIQQII", blob, 64 + 32 * i, k, fl, off, size,
                                 zlib.crc32(blob[off:off + size]), r)
    struct.pack_into("<I", blob, 36, zlib.crc32(blob[64:64 + 32 * count]))
    struct.pack_into("<I", blob, 40, zlib.crc32(blob[:40]))
    return bytes(blob)


def _expect(blob: bytes, *words: str):
    with pytest.raises(BundleError) as e:
        Bundle.from_bytes(blob, "m.sdab")
    msg = str(e.value)
    assert msg.startswith("m.sdab: ")
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("cut", [0, 5, 8, 40, 63, 64, 100, -1, -64])
def test_truncated(cut):
    blob = sample_bundle().to_bytes()
    _expect(blob[:cut], "truncated")


def test_bad_magic():
    blob = sample_bundle().to_bytes()
    _expect(b"PK\x03\x04" + blob[4:], "bad magic")
    _expect(blob.replace(b"\r\n", b"\n", 1), "bad magic")   # a text-mode transfer


def test_wrong_format_and_isa_version():
    blob = bytearray(sample_bundle().to_bytes())
    struct.pack_into("<H", blob, 8, 2)
    _expect(_refix(blob), "format version 2")
    blob = bytearray(sample_bundle().to_bytes())
    struct.pack_into("<I", blob, 32, 99)
    _expect(_refix(blob), "ISA version 99")
    # a bundle of an older version this one runs unchanged ([isa] runs) reads as it was written
    from sdac.isa.spec import SPEC
    assert min(SPEC.runs) < SPEC.version
    blob = bytearray(sample_bundle().to_bytes())
    struct.pack_into("<I", blob, 32, min(SPEC.runs))
    assert Bundle.from_bytes(_refix(blob), "m.sdab").instrs == sample_bundle().instrs


def test_header_names_the_oldest_isa_version_that_runs_the_program():
    """Version 2 added deqact and softmax's pre/psc: a program without them is a version-1 program (an older
    device runs it); a header that claims an older version than the program needs is refused, naming the
    instruction."""
    from sdac.isa.encoding import program_version
    from sdac.isa.spec import SPEC
    v1 = sample_bundle()
    assert program_version(v1.instrs) == 1 and struct.unpack_from("<I", v1.to_bytes(), 32)[0] == 1
    sm = Instr.make("softmax", rows=1, cols=20, pop={"cmp"}, push={"st"})
    for ins, need in ((sm, 1), (sm.replace(pre=True), 2), (sm.replace(psc=8), 2),
                      (Instr.make("deqact", rows=4, cols=20, pop={"cmp"}, push={"st"}), 2)):
        instrs = list(v1.instrs)
        instrs[3] = ins
        b = sample_bundle(instrs=instrs)
        blob = bytearray(b.to_bytes())
        assert struct.unpack_from("<I", blob, 32)[0] == need <= SPEC.version, ins
        assert Bundle.from_bytes(bytes(blob)) == b
        if need > 1:
            struct.pack_into("<I", blob, 32, 1)
            _expect(_refix(blob), f"instruction 3 ({ins.op}) needs ISA version {need}", "header says 1")


def test_meta_names_the_encoding_layout_and_the_reader_checks_it(monkeypatch):
    """META.isa_layout fingerprints the layouts of the program's instructions; a bundle from an sdac built from
    another isa.toml of the same version is refused before its words are read as this sdac's, and says so;
    bundles written before the key existed still read."""
    import sdac.bundle as B
    from sdac.isa.encoding import program_layout
    b = sample_bundle()
    meta = json.loads(_section_bytes(b.to_bytes(), b"META"))
    assert meta["isa_layout"] == program_layout(b.instrs, 1)
    with monkeypatch.context() as m:      # a writer whose isa.toml placed some field elsewhere
        m.setattr(B, "program_layout", lambda instrs, v: "0123456789abcdef")
        other = b.to_bytes()
    msg = _expect(other, "another layout of ISA version 1", "'0123456789abcdef'", "recompile")
    assert meta["isa_layout"] in msg
    bad = bytearray(other)                  # ... and its words do not decode here: the error says that too
    off, _ = _section(other, b"TEXT")
    bad[off + 3 * 32] = 63
    _expect(_refix(bad, b"TEXT"), "another layout", "instruction 3", "BAD_OPCODE")
    with monkeypatch.context() as m:      # a writer from before META.isa_layout
        m.setattr(B, "_meta_json", lambda bb, v, f=B._meta_json: {k: x for k, x in f(bb, v).items()
                                                                   if k != "isa_layout"})
        old = b.to_bytes()
    assert "isa_layout" not in json.loads(_section_bytes(old, b"META")) and Bundle.from_bytes(old) == b


def test_crc_mismatches():
    blob = sample_bundle().to_bytes()
    for kind in (b"TEXT", b"DATA", b"STEP", b"META", b"HOST"):
        off, size = _section(blob, kind)
        bad = bytearray(blob)
        bad[off + size // 2] ^= 0x10
        _expect(bytes(bad), "corrupted", kind.decode(), "CRC")
    bad = bytearray(blob)
    bad[64 + 20] ^= 1                                        # section table entry's size
    _expect(bytes(bad), "section table CRC")
    bad = bytearray(blob)
    bad[12] ^= 1                                             # section count in the header
    _expect(bytes(bad), "header CRC")


def test_trailing_bytes():
    _expect(sample_bundle().to_bytes() + b"\0", "trailing")


def _set_entry(blob: bytes, which: bytes, **kw) -> bytes:
    b = bytearray(blob)
    count = struct.unpack_from("<I", b, 12)[0]
    for i in range(count):
        k, fl, off, size, crc, r = struct.unpack_from("<4sIQQII", b, 64 + 32 * i)
        if k == which:
            v = dict(kind=k, flags=fl, off=off, size=size, crc=crc, r=r)
            v.update(kw)
            struct.pack_into("<4sIQQII", b, 64 + 32 * i, v["kind"], v["flags"], v["off"], v["size"],
                             v["crc"], v["r"])
    return _refix(b)


def test_overlapping_and_out_of_file_sections():
    blob = sample_bundle().to_bytes()
    toff, tsize = _section(blob, b"TEXT")
    doff, _ = _section(blob, b"DATA")
    _expect(_set_entry(blob, b"DATA", off=toff, crc=zlib.crc32(blob[toff:toff + 16]), size=16), "overlaps")
    _expect(_set_entry(blob, b"DATA", off=len(blob) - 8, size=64), "outside")
    _expect(_set_entry(blob, b"DATA", off=8, size=16), "outside")   # inside the header
    _expect(_set_entry(blob, b"HOST", kind=b"XXXX"), "unknown kind")
    _expect(_set_entry(blob, b"HOST", kind=b"DATA"), "duplicate DATA")
    _expect(_set_entry(blob, b"HOST", flags=1), "flags")


def _with_meta(edit) -> bytes:
    blob = sample_bundle().to_bytes()
    off, size = _section(blob, b"META")
    d = json.loads(blob[off:off + size])
    edit(d)
    new = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    # rebuild with the edited META through the writer's own layout code
    b = sample_bundle()
    orig = bmod._canonical_json
    bmod._canonical_json = lambda obj: new
    try:
        return b.to_bytes()
    finally:
        bmod._canonical_json = orig


@pytest.mark.parametrize("edit,words", [
    (lambda d: d.update(dram_size=0x800), ["not inside dram_size"]),
    (lambda d: d.update(data_base=0x3f00), ["data", "not inside dram_size"]),
    (lambda d: d.update(step_bank=32), ["step_table has 128 bytes"]),
    (lambda d: d.update(n_steps=3), ["step_table"]),
    (lambda d: d.update(step_base=0x200), ["overlaps the data"]),
    (lambda d: d["inputs"][0].update(dram=0x3ff0), ["input 'x'", "not inside dram_size"]),
    (lambda d: d["outputs"][0].update(rows=5), ["output 'y'", "elements"]),
    (lambda d: d["inputs"][0].update(cols=16, rows=1), ["channel dimension"]),
    (lambda d: d["inputs"][0].update(scales=[1.0]), ["1 scales for 2 steps"]),
    (lambda d: d["inputs"][0].update(scales=[1.0, -1.0]), ["scale"]),
    (lambda d: d["inputs"][0].update(layout="nhwc"), ["layout"]),
    (lambda d: d["inputs"][0].pop("dtype"), ["inputs[0]"]),
    (lambda d: d["outputs"].append(dict(d["inputs"][0])), ["duplicate name"]),
    (lambda d: d["machine"].update(lanes=0), ["machine"]),
    (lambda d: d["machine"].update(bogus=1), ["machine", "bogus"]),
    (lambda d: d.update(n_steps=True), ["n_steps"]),
    (lambda d: d.pop("step_base"), ["missing key"]),
    (lambda d: d.update(extra=1), ["unknown key"]),
    (lambda d: d.update(format="other"), ["META"]),
    (lambda d: d["debug"][0].update(last=99), ["debug[0]"]),
])
def test_inconsistent_meta(edit, words):
    _expect(_with_meta(edit), *words)


def test_meta_not_json():
    b = sample_bundle()
    orig = bmod._canonical_json
    bmod._canonical_json = lambda obj: b"{not json"
    try:
        blob = b.to_bytes()
    finally:
        bmod._canonical_json = orig
    _expect(blob, "META", "JSON")


def test_undecodable_text_names_the_instruction():
    blob = sample_bundle().to_bytes()
    off, _ = _section(blob, b"TEXT")
    bad = bytearray(blob)
    bad[off + 3 * 32] = 63                          # opcode 63 in instruction 3
    msg = _expect(_refix(bad, b"TEXT"), "TEXT", "instruction 3", "BAD_OPCODE")
    bad = bytearray(blob)
    bad[off + 2 * 32 + 31] = 0x80                   # reserved top bit of instruction 2
    _expect(_refix(bad, b"TEXT"), "instruction 2", "reserved")
    assert "Traceback" not in msg


def test_writer_refuses_inconsistent_bundles(tmp_path):
    with pytest.raises(BundleError, match="step_table"):
        sample_bundle(step_table=b"x").to_bytes()
    with pytest.raises(BundleError, match="JSON"):
        sample_bundle(meta={"x": object()}).to_bytes()
    with pytest.raises(SdacError, match="TEXT"):
        sample_bundle(instrs=[Instr("load", {"buf": "act"})], debug=[]).to_bytes()
    with pytest.raises(BundleError):
        write_bundle(sample_bundle(dram_size=0), tmp_path / "x.sdab")
    assert not list(tmp_path.iterdir())         # nothing half-written left behind
    assert not (tmp_path / "x.sdab").exists()


def test_read_bundle_missing_file_and_directory(tmp_path):
    with pytest.raises(BundleError, match="no such file"):
        read_bundle(tmp_path / "nope.sdab")
    with pytest.raises(BundleError, match="directory"):
        read_bundle(tmp_path)
    (tmp_path / "t.sdab").write_bytes(b"hello world, not a bundle at all" * 3)
    with pytest.raises(BundleError, match=r"t\.sdab: not an sdac bundle"):
        read_bundle(tmp_path / "t.sdab")


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    b = sample_bundle(dram_size=np.int64(0x4000), data_base=np.int32(0))
    assert Bundle.from_bytes(b.to_bytes()) == sample_bundle()


@pytest.mark.parametrize("spill", [1 << 20, 100])
def test_data_image_spills_to_a_file_and_writes_the_same_bundle(tmp_path, spill):
    blobs = [bytes([i % 251]) * (37 * i + 1) for i in range(40)]
    img = bmod.DataImage(spill=spill)
    for blob in blobs:
        img += blob
    data = img.finish()
    assert len(data) == len(img) == sum(map(len, blobs))
    assert isinstance(data, bmod.SpilledData) == (spill == 100)
    ref = sample_bundle(data=b"".join(blobs), dram_size=0x10000, data_base=0x4000)
    b = replace(ref, data=data)
    assert bytes(data) == ref.data and data[5:9] == ref.data[5:9]
    write_bundle(b, tmp_path / "s.sdab")
    assert (tmp_path / "s.sdab").read_bytes() == ref.to_bytes() == b.to_bytes()
    assert read_bundle(tmp_path / "s.sdab") == ref
