"""Queues, dependency tokens, fetch and the control errors of the golden model."""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError
from sdac.isa import Instr, encode_program
from sdac.isa.machine import DEFAULT
from sdac.runtime.golden import Golden

M = dataclasses.replace(DEFAULT, act_lines=256, wgt_lines=256, acc_lines=256, prm_lines=16, stat_groups=16,
                        queue_depth=4, token_max=8)
L = M.lanes
H = Instr.make("halt")


def expect(code, index, prog, machine=M, **kw):
    with pytest.raises(DeviceError) as e:
        Golden(machine, 4096).run(prog, **kw)
    assert e.value.code == code, str(e.value)
    assert e.value.index == index, str(e.value)
    return str(e.value)


def producer_consumer(n=6, tokens=True):
    """ld loads tile t into act line 0 (one buffer), cmp multiplies it into acc line t, st stores it.

    RAW: load -> mm (ld->cmp), mm -> store (cmp->st); WAR: the next load waits until mm has read
    the buffer (cmp->ld). Without the WAR token the loader runs ahead and overwrites the tile.
    """
    prog = []
    for t in range(n):
        prog.append(Instr.make("load", pop=["cmp"] if t else [], push=["cmp"], buf="act", dram=t * L, sram=0))
        prog.append(Instr.make("mm", pop=["ld"], push=["st", "ld"] if t < n - 1 else ["st"],
                               a=0, w=0, ws=1, c=t, m=1, n=1, k=1))
        prog.append(Instr.make("store", pop=["cmp"], buf="acc", dram=1024 + t * 4 * L, sram=t))
    if not tokens:
        prog = [Instr(i.op, i.args) for i in prog]
    return prog + [H]


def test_producer_consumer_program_runs_in_token_order():
    g = Golden(M, 4096)
    g.dram[:6 * L] = np.repeat(np.arange(1, 7), L)
    g.wgt[0, 0] = 3
    res = g.run(producer_consumer())
    out = g.dram[1024:1024 + 6 * 4 * L].view("<i4").reshape(6, L)[:, 0]
    assert out.tolist() == [3, 6, 9, 12, 15, 18]
    assert res.by_queue == {"cmp": 6, "ld": 6, "st": 6} and res.instructions == 19
    assert g.tokens == [[0] * 4 for _ in range(4)]


def test_without_tokens_the_loader_runs_ahead():
    # The documented interleaving runs ld first: the loader runs ahead until fetch stalls on the
    # full cmp FIFO (depth 4), so mm 0..4 all read tile 5 (the fifth load), mm 5 reads tile 6.
    g = Golden(M, 4096)
    g.dram[:6 * L] = np.repeat(np.arange(1, 7), L)
    g.wgt[0, 0] = 3
    g.run(producer_consumer(tokens=False))
    assert g.dram[1024:1024 + 6 * 4 * L].view("<i4").reshape(6, L)[:, 0].tolist() == [15] * 5 + [18]


def test_sync_relays_and_deep_programs_refill_the_fifos():
    prog = []
    for _ in range(20):                         # more than queue_depth instructions per queue
        prog += [Instr.make("sync", q="ld", push=["sfu"]), Instr.make("sync", q="sfu", pop=["ld"], push=["st"]),
                 Instr.make("sync", q="st", pop=["sfu"])]
    res = Golden(M, 64).run(prog + [H])
    assert res.by_op == {"sync": 60, "halt": 1}


def test_token_underflow_is_a_deadlock_naming_the_waiting_instruction():
    msg = expect("DEADLOCK", 1, [Instr.make("sync", q="ld"), Instr.make("sync", q="cmp", pop=["sfu"]), H])
    assert "instruction 1 (sync in cmp) waits for a token from sfu" in msg


def test_circular_wait_is_a_deadlock():
    prog = [Instr.make("sync", q="ld", pop=["st"], push=["st"]), Instr.make("sync", q="st", pop=["ld"], push=["ld"]), H]
    msg = expect("DEADLOCK", 0, prog)
    assert "instruction 0" in msg and "instruction 1" in msg


def test_token_leak_at_halt():
    msg = expect("TOKEN_LEAK", 2, [Instr.make("sync", q="ld", push=["cmp", "st"]),
                                   Instr.make("sync", q="cmp", pop=["ld"]), H])
    assert "ld->st=1" in msg


def test_token_overflow_names_the_pushing_instruction():
    prog = [Instr.make("sync", q="ld", push=["cmp"]) for _ in range(4)] + \
           [Instr.make("sync", q="cmp", pop=["ld"]) for _ in range(4)] + [H]
    small = dataclasses.replace(M, token_max=3)
    with pytest.raises(DeviceError) as e:             # token_max = 3: the fourth push overflows
        Golden(small, 64).run(prog)
    assert (e.value.code, e.value.index) == ("TOKEN_OVERFLOW", 3) and "ld->cmp" in str(e.value)
    Golden(dataclasses.replace(M, token_max=4), 64).run(prog)     # one more fits


def test_fifo_full_stalls_fetch_and_leads_to_deadlock():
    # Five cmp instructions wait for tokens from loads that come after them in program order;
    # the cmp FIFO holds 4, so fetch stalls on the fifth and never reaches the loads.
    prog = [Instr.make("sync", q="cmp", pop=["ld"]) for _ in range(5)] + \
           [Instr.make("sync", q="ld", push=["cmp"]) for _ in range(5)] + [H]
    msg = expect("DEADLOCK", 0, prog)
    assert "fetch stalled at instruction 4" in msg and "FIFO is full" in msg
    # A deeper FIFO makes the same program legal.
    Golden(dataclasses.replace(M, queue_depth=5), 64).run(prog)


def test_fetch_past_the_end_without_halt():
    expect("FETCH_OOB", 2, [Instr.make("sync", q="ld"), Instr.make("sync", q="st")])
    expect("FETCH_OOB", 0, [])


def test_bad_fields_and_opcodes():
    expect("BAD_FIELD", 1, [H, Instr.make("mm", m=0), H])               # count below its minimum
    expect("BAD_FIELD", 0, [Instr.make("load", run=1 << 16), H])        # does not fit its field
    expect("BAD_FIELD", 0, [Instr.make("sync", q="ld", pop=["ld"]), H])  # own queue in a token mask
    blob = bytearray(encode_program([Instr.make("sync", q="ld"), H, H]))
    blob[32] = 63                                                        # opcode 63 names nothing
    expect("BAD_OPCODE", 1, bytes(blob))
    blob = bytearray(encode_program([H, H]))
    blob[31] = 0x80                                                      # a reserved bit
    expect("BAD_FIELD", 0, bytes(blob))


def test_encoded_program_runs_like_the_instr_list():
    prog = producer_consumer(3)
    outs = []
    for p in (prog, encode_program(prog)):
        g = Golden(M, 4096)
        g.dram[:3 * L] = 2
        g.wgt[0, 0] = -5
        g.run(p)
        outs.append(g.dram.copy())
    assert np.array_equal(*outs)


def test_trace_records_every_instruction():
    g = Golden(M, 4096, trace=True)
    res = g.run(producer_consumer(2))
    assert [(r.op, r.index) for r in res.trace] == [("load", 0), ("mm", 1), ("load", 3), ("mm", 4),
                                                      ("store", 2), ("store", 5)]
    ld, mm, st = res.trace[0], res.trace[1], res.trace[4]
    assert (ld.queue, ld.dram_bytes, ld.lines) == ("ld", L, {"act": 1})
    assert (mm.queue, mm.macs, mm.lines) == ("cmp", 1, {"act": 1, "wgt": 1, "acc": 1})
    assert (st.dram_bytes, st.lines) == (4 * L, {"acc": 1})
    j = res.to_json()
    assert j["trace"][1] == {"index": 1, "op": "mm", "queue": "cmp", "macs": 1, "dram_bytes": 0,
                             "sfu_elems": 0, "lines": {"act": 1, "wgt": 1, "acc": 1}}
    assert j["dram_read"] == 2 * L and j["dram_written"] == 8 * L
