"""Whole-program co-simulation: sdac_top (hw/tb/sdac_tb_top.sv) against the golden model.

Each program runs on the RTL (DRAM image in, DRAM image out, CSRs read over AXI-Lite)
and on sdac.runtime.golden.Golden with the same machine description; the DRAM after
the run must be byte-identical, or both must stop with the same error code and
instruction index. A small machine (4x2 array, L = 4, small buffers) keeps the build
short; the 20x10 default machine runs under `make test-slow`.
"""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.hw import sim
from sdac.isa.encoding import Instr, encode_int, encode_program
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import Golden

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_cosim")]

SMALL = dataclasses.replace(DEFAULT.with_array("4x2"), act_lines=512, wgt_lines=256, acc_lines=128,
                            prm_lines=16, queue_depth=8, token_max=7)
I = Instr.make


@pytest.fixture(scope="module")
def small_exe():
    return sim.build_cosim(SMALL, 1 << 16)


def golden(machine, dram: bytes, prog, step=0):
    g = Golden(machine, len(dram))
    g.dram[:] = np.frombuffer(dram, np.uint8)
    try:
        g.run(prog, step=step)
        return bytes(g.dram), 0, None
    except DeviceError as e:
        return bytes(g.dram), SPEC_ERR[e.code], e.index


from sdac.isa.spec import SPEC  # noqa: E402
SPEC_ERR = {name: code for name, (code, _) in SPEC.errors.items()}


def check(exe, machine, dram, prog, step=0, words=None, **axi):
    """Run on both; compare. `words` overrides the encoded program (for invalid words); `axi`: the
    DRAM slave's latency / random backpressure (sim.run_cosim's axi_latency, axi_stall, axi_seed)."""
    text = words if words is not None else encode_program(prog)
    rtl = sim.run_cosim(exe, dram, text, step=step, **axi)
    assert not rtl.unsupported
    if words is not None:
        from sdac.isa.encoding import DecodeError, decode_program
        try:
            decode_program(words)
        except DecodeError as e:
            assert rtl.error == SPEC_ERR[e.reason.split(":")[0]], rtl.log
            assert rtl.index == e.index
            return rtl
    gd, gerr, gidx = golden(machine, dram, prog, step)
    assert rtl.error == gerr, f"RTL error {SPEC.error_name(rtl.error)} at {rtl.index}, golden " \
                              f"{SPEC.error_name(gerr)} at {gidx}"
    if gerr:
        assert rtl.index == gidx
    else:
        if rtl.dram != gd:
            diff = np.nonzero(np.frombuffer(rtl.dram, np.uint8) != np.frombuffer(gd, np.uint8))[0]
            pytest.fail(f"{diff.size} DRAM bytes differ, first at {diff[0]:#x}")
        assert rtl.executed == len(prog)
    return rtl


def rand_dram(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_dma_roundtrip_every_buffer(small_exe):
    m = SMALL
    prog = []
    src, dst = 0, 8192
    for buf in ("act", "wgt", "acc", "prm"):
        B = m.line_bytes(buf)
        # 3-D strided load (gaps in DRAM and in the buffer), then a store with other strides.
        prog.append(I("load", buf=buf, dram=src, sram=3, run=2, ny=3, dy=5 * B, sy=4, nz=2, dz=17 * B, sz=13,
                      push=["st"]))
        prog.append(I("store", buf=buf, dram=dst, sram=3, run=2, ny=3, dy=2 * B, sy=4, nz=2, dz=7 * B, sz=13,
                      pop=["ld"]))
        src += 40 * B
        dst += 16 * B
    prog.append(I("halt"))
    check(small_exe, m, rand_dram(12288, 1), prog)


def test_dma_zero_step_and_replication(small_exe):
    m = SMALL
    prog = [
        I("setstep", src="csr", bank=64),
        I("load", buf="act", dram=0, sram=0, run=4, step=1),                       # step-relative
        I("load", buf="act", dram=0, sram=8, run=2, zero=1),                       # zero lines
        I("setstep", src="imm", step=3, bank=16),
        # broadcast; the loads run in order, so the last one's token covers all of them
        I("load", buf="act", dram=100, sram=10, run=1, ny=4, sy=1, dy=0, step=1, push=["st"]),
        I("store", buf="act", dram=4096, sram=0, run=14, pop=["ld"]),
        I("store", buf="act", dram=5000, sram=0, run=2, ny=3, dy=4, sy=1),   # overlapping DRAM rows
        I("store", buf="act", dram=6000, sram=0, run=1, ny=5, dy=0, sy=2),   # later row wins
        I("halt"),
    ]
    check(small_exe, m, rand_dram(8192, 2), prog, step=5)


def test_tokens_and_sync_relay(small_exe):
    m = SMALL
    B = m.line_bytes("act")
    prog = []
    # Ping-pong through two act slots: ld -> cmp (sync relay) -> sfu (sync) -> st, and st -> ld (WAR).
    for i in range(6):
        slot = (i % 2) * 8
        pops = ["st"] if i >= 2 else []
        prog.append(I("load", buf="act", dram=i * 8 * B, sram=slot, run=8, pop=pops, push=["cmp"]))
        prog.append(I("sync", q="cmp", pop=["ld"], push=["sfu"]))
        prog.append(I("sync", q="sfu", pop=["cmp"], push=["st"]))
        prog.append(I("store", buf="act", dram=2048 + i * 8 * B, sram=slot, run=8, pop=["sfu"],
                      push=["ld"] if i < 4 else []))
    prog.append(I("halt"))
    r = check(small_exe, m, rand_dram(4096, 3), prog)
    assert r.cycles > 0


def mm_program(m, M, N, K, acc, seed, scale=1):
    """Load A (M x K int8), W (K x N int4) and C, run mm, store C: returns (dram, prog)."""
    L = m.lanes
    rng = np.random.default_rng(seed)
    kl, nb, nl = -(-K // L), -(-N // L), -(-N // L)
    a_lines, w_lines, c_lines = M * kl, nb * K, M * nl
    a_off, w_off, c_off, out_off = 0, 4096 * scale, 6144 * scale, 12288 * scale
    dram = bytearray(rand_dram(16384 * scale, seed))
    # Extreme values are included on purpose: -128 activations, -8 weights.
    A = rng.integers(-128, 128, (a_lines, L), dtype=np.int64)
    A[0, :] = -128
    W = rng.integers(-8, 8, (w_lines, L), dtype=np.int64)
    W[0, :] = -8
    dram[a_off:a_off + a_lines * L] = (A & 0xFF).astype(np.uint8).tobytes()
    wb = ((W[:, 0::2] & 0xF) | ((W[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    dram[w_off:w_off + w_lines * L // 2] = wb.tobytes()
    prog = [
        I("load", buf="act", dram=a_off, sram=0, run=a_lines),
        I("load", buf="wgt", dram=w_off, sram=0, run=w_lines),
        I("load", buf="acc", dram=c_off, sram=0, run=c_lines, push=["cmp"]),
        I("mm", a=0, ars=kl, wsrc="wgt", w=0, ws=K, c=0, crs=nl, m=M, n=N, k=K, acc=acc, pop=["ld"], push=["st"]),
        I("store", buf="acc", dram=out_off, sram=0, run=c_lines, pop=["cmp"]),
        I("halt"),
    ]
    return bytes(dram), prog


@pytest.mark.parametrize("M,N,K,acc", [(8, 4, 1, 0), (11, 6, 9, 0), (19, 9, 13, 1), (3, 3, 40, 1)])
def test_mm_matches_golden(small_exe, M, N, K, acc):
    dram, prog = mm_program(SMALL, M, N, K, acc, seed=M * 100 + K)
    check(small_exe, SMALL, dram, prog)


def mm8_program(m, M, N, K, acc, wsrc, seed, extra=0):
    """mm with int8 W from act: wsrc=act (W row-major, K rows of N) or act_t (W^T, N rows of K)."""
    L = m.lanes
    rng = np.random.default_rng(seed)
    kl, nl = -(-K // L), -(-N // L)
    rows, per_row = (K, nl) if wsrc == "act" else (N, kl)
    ws = per_row + extra
    a_lines, w_lines, c_lines = M * kl, (rows - 1) * ws + per_row, M * nl
    w_line0 = 128
    dram = bytearray(rand_dram(16384, seed))
    A = rng.integers(-128, 128, (a_lines, L), dtype=np.int64)
    W = rng.integers(-128, 128, (w_lines, L), dtype=np.int64)
    A[0, :] = -128
    W[0, :] = -128
    W[-1, :] = 127
    dram[0:a_lines * L] = (A & 0xFF).astype(np.uint8).tobytes()
    dram[4096:4096 + w_lines * L] = (W & 0xFF).astype(np.uint8).tobytes()
    prog = [
        I("load", buf="act", dram=0, sram=0, run=a_lines),
        I("load", buf="act", dram=4096, sram=w_line0, run=w_lines),
        I("load", buf="acc", dram=6144, sram=0, run=c_lines, push=["cmp"]),
        I("mm", a=0, ars=kl, wsrc=wsrc, w=w_line0, ws=ws, c=0, crs=nl, m=M, n=N, k=K, acc=acc,
          pop=["ld"], push=["st"]),
        I("store", buf="acc", dram=12288, sram=0, run=c_lines, pop=["cmp"]),
        I("halt"),
    ]
    return bytes(dram), prog


@pytest.mark.parametrize("wsrc", ["act", "act_t"])
@pytest.mark.parametrize("M,N,K,acc,extra", [(8, 4, 4, 0, 0), (11, 6, 9, 1, 1), (5, 9, 13, 0, 2)])
def test_mm_int8_weights_match_golden(small_exe, M, N, K, acc, extra, wsrc):
    dram, prog = mm8_program(SMALL, M, N, K, acc, wsrc, seed=M + 7 * K, extra=extra)
    check(small_exe, SMALL, dram, prog)


def test_errors_match_golden(small_exe, **axi):
    m = SMALL
    dram = rand_dram(4096, 4)
    cases = {
        "OOB_DRAM": [I("load", buf="act", dram=4090, sram=0, run=2), I("halt")],
        "OOB_BUF": [I("store", buf="acc", dram=0, sram=m.acc_lines - 1, run=2), I("halt")],
        "OOB_BUF mm": [I("mm", a=m.act_lines - 1, ars=1, m=2, n=1, k=1), I("halt")],
            "OOB_BUF mm C": [I("mm", c=m.acc_lines - 2, crs=1, m=3, n=1, k=1), I("halt")],
        "OOB_BUF mm act_t": [I("mm", wsrc="act_t", w=m.act_lines - 2, ws=1, m=1, n=3, k=1), I("halt")],
        "TOKEN_LEAK": [I("load", buf="act", dram=0, sram=0, push=["st"]), I("halt")],
        "DEADLOCK": [I("store", buf="act", dram=0, sram=0, pop=["ld"]), I("halt")],
        "TOKEN_OVERFLOW": [I("sync", q="ld", push=["st"])] * (m.token_max + 1) + [I("halt")],
        "FETCH_OOB": [I("load", buf="act", dram=0, sram=0)],
        "DEADLOCK full fifo": [I("store", buf="act", dram=0, sram=0, pop=["ld"])] * (m.queue_depth + 1)
                              + [I("load", buf="act", dram=0, sram=0, push=["st"]), I("halt")],
    }
    for name, prog in cases.items():
        r = check(small_exe, m, dram, prog, **axi)
        assert SPEC.error_name(r.error) == name.split()[0], name


def test_invalid_words_stop_fetch(small_exe):
    m = SMALL
    dram = rand_dram(1024, 5)
    good = [I("load", buf="act", dram=0, sram=0), I("halt")]
    w = [encode_int(x) for x in good]
    bad_opcode = (w[0] & ~0x3F) | 63
    reserved = w[0] | (1 << 250)
    own_token = w[0] | (1 << 6)          # load pops its own queue (ld)
    for word in (bad_opcode, reserved, own_token):
        text = encode_program(good[:1]) + word.to_bytes(32, "little") + encode_program(good[1:])
        check(small_exe, m, dram, good, words=text)


def random_pipeline(m, seed, iters=6):
    """A double-buffered load -> mm -> store pipeline with random shapes, strides and flags.

    Slot s = i % 2 holds A, W and C of iteration i; tokens: ld -> cmp (data loaded),
    cmp -> st (C ready), st -> ld (slot free again, two iterations later)."""
    rng = np.random.default_rng(seed)
    L = m.lanes
    prog = []
    dram = rand_dram(16384, seed)
    for i in range(iters):
        s = i % 2
        M, N, K = int(rng.integers(1, 21)), int(rng.integers(1, 11)), int(rng.integers(1, 25))
        kl, nl = -(-K // L), -(-N // L)
        a0, w0, c0 = s * 120, s * 100, s * 64
        pops = ["st"] if i >= 2 else []
        ars = kl + int(rng.integers(0, 2))
        crs = nl + int(rng.integers(0, 2))
        if M * ars > 120 or M * crs > 64:
            ars, crs = kl, nl
        a_lines, c_lines = (M - 1) * ars + kl, (M - 1) * crs + nl
        prog.append(I("load", buf="act", dram=int(rng.integers(0, 8192 - a_lines * L)), sram=a0, run=a_lines,
                      pop=pops))
        wsrc = str(rng.choice(["wgt", "wgt", "act", "act_t"]))
        if wsrc == "wgt":
            w_at, ws = w0, K
            prog.append(I("load", buf="wgt", dram=int(rng.integers(0, 8192 - nl * K * L // 2)), sram=w0,
                          run=K, ny=nl, dy=K * L // 2, sy=K))
        else:   # int8 W in act: K rows of nl lines (act) or N rows of kl lines (act_t)
            rows, per_row = (K, nl) if wsrc == "act" else (N, kl)
            w_at, ws = 256 + s * 120, per_row
            prog.append(I("load", buf="act", dram=int(rng.integers(0, 8192 - rows * per_row * L)), sram=w_at,
                          run=rows * per_row))
        acc = int(rng.integers(0, 2))
        if acc:
            prog.append(I("load", buf="acc", dram=int(rng.integers(0, 8192 - c_lines * 4 * L)), sram=c0,
                          run=c_lines, push=["cmp"]))
        else:
            prog.append(I("load", buf="acc", dram=0, sram=c0, run=c_lines, zero=int(rng.integers(0, 2)),
                          push=["cmp"]))
        prog.append(I("mm", a=a0, ars=ars, wsrc=wsrc, w=w_at, ws=ws, c=c0, crs=crs, m=M, n=N, k=K, acc=acc,
                      pop=["ld"], push=["st"]))
        push = ["ld"] if i < iters - 2 else []
        prog.append(I("store", buf="acc", dram=8192 + int(rng.integers(0, 8192 - c_lines * 4 * L)), sram=c0,
                      run=c_lines, pop=["cmp"], push=push))
    prog.append(I("halt"))
    return dram, prog


@pytest.mark.parametrize("seed", range(1, 31))
def test_random_pipelines_match_golden(small_exe, seed):
    dram, prog = random_pipeline(SMALL, seed, iters=8)
    check(small_exe, SMALL, dram, prog)


# Random backpressure on every AXI channel (the slave withholds each handshake in 30 % of the cycles,
# 5 cycles of latency): same DRAM as the golden model, and every channel really stalled.
STALL = dict(axi_stall=30, axi_latency=5)


def assert_stalled(rtl, *channels):
    assert all(rtl.axi[f"{c}_wait"] > 0 for c in channels), rtl.axi


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_pipelines_under_backpressure(small_exe, seed):
    dram, prog = random_pipeline(SMALL, seed, iters=8)
    rtl = check(small_exe, SMALL, dram, prog, axi_seed=seed, **STALL)
    assert_stalled(rtl, "ar", "r", "aw", "w", "b")
    fast = sim.run_cosim(small_exe, dram, encode_program(prog))
    assert fast.dram == rtl.dram and fast.cycles < rtl.cycles


def test_fetch_under_backpressure(small_exe):
    """A long instruction stream (syncs and tokens only): fetch bursts stall on AR and R."""
    prog = []
    for i in range(40):                   # a token ring ld -> cmp -> st -> ld
        prog += [I("sync", q="ld", pop=["st"] if i else [], push=["cmp"]),
                 I("sync", q="cmp", pop=["ld"], push=["st"]),
                 I("sync", q="st", pop=["cmp"], push=["ld"] if i < 39 else [])]
    prog.append(I("halt"))
    rtl = check(small_exe, SMALL, rand_dram(256, 9), prog, axi_seed=3, **STALL)
    assert_stalled(rtl, "ar", "r")
    assert rtl.axi["write_bursts"] == 0 and rtl.axi["read_bursts"] == -(-len(prog) // 4)


@pytest.mark.parametrize("seed", [1, 2])
def test_sfu_and_conv_under_backpressure(small_exe, seed):
    dram, prog = conv_program(SMALL, seed)
    rtl = check(small_exe, SMALL, dram, prog, axi_seed=seed, **STALL)
    assert_stalled(rtl, "ar", "r")
    assert rtl.axi["aw_wait"] + rtl.axi["w_wait"] + rtl.axi["b_wait"] > 0, rtl.axi
    dram, prog = sfu_program(SMALL, seed)
    check(small_exe, SMALL, dram, prog, axi_seed=seed, **STALL)


def test_errors_match_golden_under_backpressure(small_exe):
    test_errors_match_golden(small_exe, axi_stall=50, axi_latency=3, axi_seed=11)


@pytest.fixture(scope="module")
def default_exe():
    return sim.build_cosim(DEFAULT, 1 << 20)


@pytest.mark.slow
@pytest.mark.parametrize("M,N,K,acc", [(40, 20, 20, 0), (41, 21, 45, 1), (97, 7, 3, 0)])
def test_mm_default_machine(default_exe, M, N, K, acc):
    dram, prog = mm_program(DEFAULT, M, N, K, acc, seed=M + N + K, scale=4)
    check(default_exe, DEFAULT, dram, prog)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11))
def test_random_pipelines_default_machine(default_exe, seed):
    dram, prog = random_pipeline(DEFAULT, seed, iters=6)
    check(default_exe, DEFAULT, dram, prog)


def conv_program(m, seed):
    """Random conv (shape, stride, padding, strides between pixels / rows, acc, dataflow)."""
    rng = np.random.default_rng(seed)
    L = m.lanes
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))   # noqa: E731
    cin, cout, st, pt, pl = r(1, 9), r(1, 9), r(1, 3), r(0, 2), r(0, 2)
    ih, iw, oh, ow = r(1, 6), r(1, 6), r(1, 5), r(1, 5)
    cl, ol = -(-cin // L), -(-cout // L)
    ips = cl + r(0, 1)
    irs = iw * ips + r(0, 2)
    wts, ops = cin, ol + r(0, 1)
    wbs = 9 * wts
    ors = ow * ops + r(0, 1)
    i_lines = (ih - 1) * irs + (iw - 1) * ips + cl
    w_lines = (ol - 1) * wbs + 9 * wts
    o_lines = (oh - 1) * ors + (ow - 1) * ops + ol
    acc = r(0, 1)
    dram = bytearray(rand_dram(16384, seed))
    W = rng.integers(-8, 8, (w_lines, L), dtype=np.int64)
    W[0, :] = -8
    dram[4096:4096 + w_lines * L // 2] = ((W[:, 0::2] & 0xF) | ((W[:, 1::2] & 0xF) << 4)).astype(np.uint8).tobytes()
    prog = [
        I("load", buf="act", dram=0, sram=10, run=i_lines),
        I("load", buf="wgt", dram=4096, sram=5, run=w_lines),
        I("load", buf="acc", dram=6144, sram=3, run=o_lines, push=["cmp"]),
        I("conv", df=str(rng.choice(["ws", "os"])), i=10, ips=ips, irs=irs, ih=ih, iw=iw, w=5, wbs=wbs, wts=wts,
          o=3, ops=ops, ors=ors, oh=oh, ow=ow, cin=cin, cout=cout, stride=st, pt=pt, pl=pl, acc=acc,
          pop=["ld"], push=["st"]),
        I("store", buf="acc", dram=10240, sram=0, run=o_lines + 3, pop=["cmp"]),
        I("halt"),
    ]
    return bytes(dram), prog


@pytest.mark.parametrize("seed", range(1, 26))
def test_conv_matches_golden(small_exe, seed):
    dram, prog = conv_program(SMALL, seed)
    check(small_exe, SMALL, dram, prog)


def test_conv_same_padding_3x3(small_exe):
    # The common UNet case: 3x3, stride 1, padding 1, output = input size.
    m = SMALL
    dram, prog = conv_program(m, 1)
    conv = prog[3].replace(ih=5, iw=5, oh=5, ow=5, stride=1, pt=1, pl=1, cin=6, cout=7, ips=2, irs=10,
                           wts=6, wbs=54, ops=2, ors=10, acc=0)
    prog = [prog[0].replace(run=50), prog[1].replace(run=108), prog[2].replace(run=50), conv,
            prog[4].replace(run=53), prog[5]]
    check(small_exe, m, dram, prog)


def sfu_program(m, seed):
    """Every SFU instruction kind on random buffers (the SFU itself: tests/hw/test_sfu.py)."""
    rng = np.random.default_rng(seed)
    L = m.lanes
    dram = bytearray(rand_dram(16384, seed))
    # prm: scale entries with modest shifts so results stay in range; line 8: norm descriptor
    prm = rng.integers(1 << 10, 1 << 16, (16, L)).astype(np.uint32) | (np.uint32(12) << np.uint32(24))
    prm[8, 0], prm[8, 1], prm[8, 2] = 1 << 12, 1 << 4, 16
    dram[8192:8192 + prm.size * 4] = prm.astype("<u4").tobytes()
    acc = rng.integers(-3000, 3000, (64, L)).astype("<i4")
    dram[0:acc.size * 4] = acc.tobytes()
    prog = [
        I("load", buf="acc", dram=0, sram=0, run=64),
        I("load", buf="act", dram=4096, sram=0, run=64),
        I("load", buf="prm", dram=8192, sram=0, run=16, push=["sfu"]),
        I("deq", sbuf="acc", s=0, srs=2, d=20, drs=2, rows=6, cols=7, sc=0, per_ch=1, bias=1, bb=1, st=1,
          st_clr=1, st_mode="row", gsize=1, gbase=0, pop=["ld"]),
        I("act", sbuf="acc", s=20, srs=2, out="act", d=80, drs=2, rows=6, cols=7, fn="silu", frac=6, sc=9),
        I("act", sbuf="act", s=0, srs=2, out="acc", d=40, drs=2, rows=5, cols=8, fn="gelu", frac=4, sc=10),
        I("add", a=20, ars=2, bbuf="act", b=0, brs=0, d=50, drs=2, rows=6, cols=7, sc=11),
        I("geglu", a=0, ars=2, b=20, brs=2, out="acc", d=60, drs=2, rows=4, cols=7, frac=5, sc=12),
        I("norm", s=20, srs=2, out="act", d=100, drs=2, rows=6, cols=7, st_mode="row", gsize=1, gbase=0,
          nd=32, gamma=2, beta=3, fn="none", frac=8, sc=13),
        I("softmax", s=0, srs=2, d=120, drs=2, rows=3, cols=6, sc=14),
        I("transpose", s=0, srs=2, d=140, drs=2, rows=6, cols=7, push=["st"]),
        I("store", buf="acc", dram=10240, sram=0, run=72, pop=["sfu"]),
        I("store", buf="act", dram=14336, sram=64, run=96),
        I("halt"),
    ]
    return bytes(dram), prog


@pytest.mark.skipif(not (sim.RTL_DIR / "sdac_sfu.sv").exists(), reason="hw/rtl/sdac_sfu.sv not present")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sfu_instructions_match_golden(small_exe, seed):
    dram, prog = sfu_program(SMALL, seed)
    check(small_exe, SMALL, dram, prog)
