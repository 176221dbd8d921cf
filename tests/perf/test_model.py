"""Cycle model: hand-written programs with timing worked out by hand, overlap, monotonicity,
determinism, and the per-instruction work checked against the golden model's trace."""
import dataclasses

import numpy as np
import pytest

from sdac.errors import DeviceError, SdacError
from sdac.isa import Instr
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.perf.samples import compile_slice
from sdac.perf.timing import Timing, latencies
from sdac.runtime.golden import execute_bundle

T = Timing.from_machine(DEFAULT)
ONE_ACC = Timing.from_machine(DEFAULT, mm_drain_overlap=False)     # one accumulator set: readout blocks the array
HALT = Instr.make("halt")


def load(run=100, **kw):
    return Instr.make("load", buf="act", dram=0, sram=0, run=run, **kw)


def mm(m=40, n=20, k=20, **kw):
    return Instr.make("mm", a=0, ars=1, w=0, ws=max(k, 1), c=0, crs=1, m=m, n=n, k=k, **kw)


def test_single_dma_by_hand():
    # 100 act lines = 2000 contiguous bytes: 125 beats of 16 B, 8 bursts of 256 B with 2 idle cycles each
    r = estimate([load(), HALT], DEFAULT)
    lat = 4 + 64 + 125 + 8 * 2
    assert r.work.latency[0] == lat
    assert r.schedule.start[0] == 64                      # first word arrives after the fetch latency
    assert r.total_cycles == 64 + lat + T.halt_cycles
    assert r.busy["ld"] == lat and r.dram_read == 2000


def test_strided_dma_pays_per_segment():
    contiguous = estimate([load(run=4, ny=50, dy=80), HALT], DEFAULT).work.latency[0]
    strided = estimate([load(run=4, ny=50, dy=160), HALT], DEFAULT).work.latency[0]
    # same 4000 bytes; strided: 50 segments of 80 B = 5 beats + 1 burst each
    assert contiguous == 4 + 64 + 250 + 16 * 2
    assert strided == 4 + 64 + 50 * 5 + 50 * 2


def test_single_mm_by_hand():
    r = estimate([mm(), HALT], DEFAULT)
    # one 40x20 tile, k=20: fill (X + Y + PE latency = 36), the stream, the readout of its 40 rows, overhead
    assert r.work.latency[0] == 4 + 36 + 20 + 40
    # two tiles: the second streams while the first is read out, and cannot finish before that readout
    assert estimate([mm(m=80), HALT], DEFAULT).work.latency[0] == 4 + 36 + 20 + 40 + 40
    assert r.macs == 40 * 20 * 20 and r.compute_bound == 20
    # int8 x int8 takes two passes over k
    a8 = dict(a=0, ars=1, wsrc="act_t", w=100, ws=1, c=0, crs=1, m=40, n=20)
    r8 = estimate([Instr.make("mm", k=30, **a8), HALT], DEFAULT)
    assert r8.work.latency[0] == 4 + 36 + 60 + 40 and r8.pass_macs == 2 * 40 * 20 * 30
    # 80 x 40 = four tiles, the last row tile partial (m = 70): each streams 100 while the previous drains
    r4 = estimate([mm(m=70, n=40, k=100), HALT], DEFAULT)
    assert r4.work.latency[0] == 4 + 36 + 4 * 100 + 30
    # one accumulator set: every tile pays fill, stream and readout in turn
    one = latencies([mm(), Instr.make("mm", k=20, **a8), mm(m=70, n=40, k=100)], ONE_ACC).latency
    assert list(one) == [4 + 20 + 36 + 40, 4 + 40 + 36 + 40, 4 + 4 * (100 + 36) + 2 * (40 + 30)]


def test_conv_ws_by_hand():
    c = Instr.make("conv", df="ws", i=0, ips=2, irs=32, ih=16, iw=16, w=0, wbs=360, wts=40, o=0, ops=2, ors=32,
                   oh=16, ow=16, cin=40, cout=40, stride=1, pt=1, pl=1)
    lat = latencies([c], T).latency[0]
    # 9 taps x 2 cin blocks x 2 cout blocks, 256 pixels two per cycle, weights behind the stream
    assert lat == 4 + 20 + 36 * 128 + 36
    cos = latencies([c.replace(df="os")], ONE_ACC).latency[0]
    assert cos == 4 + 7 * 2 * (360 + 36) + 2 * (6 * 40 + 16)
    # two accumulator sets: 14 tiles stream k = 9 x 40 back to back, the last (16 pixels) read out at the end
    assert latencies([c.replace(df="os")], T).latency[0] == 4 + 36 + 14 * 360 + 16


def test_token_wait_serializes_and_independent_overlaps():
    dep = estimate([load(push=["cmp"]), mm(pop=["ld"]), HALT], DEFAULT)
    ind = estimate([load(), mm(), HALT], DEFAULT)
    ld_end = dep.schedule.end[0]
    assert dep.schedule.start[1] == ld_end                # waits for the token
    assert dep.total_cycles == ld_end + 100 + T.halt_cycles
    assert ind.schedule.start[1] == ind.schedule.fetch[1] == 66     # runs as soon as it is fetched
    assert ind.total_cycles == max(ind.schedule.end[:2]) + T.halt_cycles
    assert ind.total_cycles < dep.total_cycles


def test_token_pairs_kth_pop_with_kth_push():
    # two loads push, two mms pop: the second mm waits for the second load
    prog = [load(run=1000, push=["cmp"]), load(run=10, push=["cmp"]), mm(pop=["ld"]), mm(pop=["ld"]), HALT]
    r = estimate(prog, DEFAULT)
    s, e = r.schedule.start, r.schedule.end
    assert s[2] == e[0] and s[3] == max(e[1], e[2])


def test_fifo_depth_stalls_fetch():
    prog = [load(run=2000), load(run=2000), load(run=2000), mm(), HALT]
    deep = estimate(prog, DEFAULT)
    shallow = estimate(prog, dataclasses.replace(DEFAULT, queue_depth=1))
    assert deep.schedule.start[3] == deep.schedule.fetch[3] == 70
    # one FIFO entry: load 3 enters when load 2 leaves the FIFO (starts, when load 1 ends); the mm behind it
    # in program order is fetched two cycles later instead of at 70
    s = shallow.schedule
    assert s.fetch[2] == s.start[1] == s.end[0]
    assert s.start[3] == s.fetch[3] == s.fetch[2] + 2


def test_monotone_in_work():
    ks = [estimate([mm(k=k), HALT], DEFAULT).total_cycles for k in (20, 40, 400, 4000)]
    assert ks == sorted(ks) and len(set(ks)) == 4
    runs = [estimate([load(run=r), HALT], DEFAULT).total_cycles for r in (1, 10, 100, 1000)]
    assert runs == sorted(runs) and len(set(runs)) == 4
    small = estimate(compile_slice(hw=8, ch=40))
    big = estimate(compile_slice(hw=16, ch=40))
    assert big.total_cycles > small.total_cycles and big.macs > small.macs
    faster = estimate(compile_slice(hw=8, ch=40), timing=Timing.from_machine(DEFAULT, dma_bytes_per_cycle=32))
    assert faster.total_cycles < small.total_cycles


def test_deterministic_and_kernels_add_up():
    b = compile_slice(hw=8, ch=40)
    r1, r2 = estimate(b), estimate(b)
    assert r1.to_json() == r2.to_json()
    assert [k.name for k in r1.kernels] == [d["kernel"] for d in b.debug]
    assert sum(k.attributed for k in r1.kernels) <= r1.total_cycles
    assert r1.total_cycles - sum(k.attributed for k in r1.kernels) < 200      # setstep, fetch latency, halt
    assert sum(r1.time_split.values()) == r1.total_cycles
    assert r1.roofline_cycles <= r1.total_cycles
    assert sum(k.macs for k in r1.kernels) == r1.macs


def test_work_matches_golden_trace():
    """MACs, DRAM bytes and SFU elements from the fields alone equal what the golden model counts."""
    b = compile_slice(hw=8, ch=40, calibrate=True)
    rng = np.random.default_rng(0)
    inputs = {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in b.inputs}
    _, res = execute_bundle(b, inputs, 0, trace=True)
    w = latencies(b.instrs, Timing.from_machine(b.machine))
    n = len(b.instrs)
    g_macs, g_dram, g_sfu = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for rec in res.trace:
        g_macs[rec.index], g_dram[rec.index], g_sfu[rec.index] = rec.macs, rec.dram_bytes, rec.sfu_elems
    assert np.array_equal(w.macs, g_macs)
    assert np.array_equal(w.dram_read + w.dram_written, g_dram)
    assert np.array_equal(w.sfu_elems, g_sfu)
    assert estimate(b).macs == res.macs


def test_errors():
    with pytest.raises(DeviceError, match="DEADLOCK"):
        estimate([mm(pop=["ld"]), HALT], DEFAULT)
    with pytest.raises(DeviceError, match="FETCH_OOB"):
        estimate([mm()], DEFAULT)
    with pytest.raises(SdacError, match="unknown parameter"):
        Timing.from_machine(DEFAULT, warp_drive=1)


def test_speed_100k_instructions():
    import time
    prog = []
    for i in range(25000):
        prog += [load(run=50, push=["cmp"]), mm(pop=["ld"], push=["sfu"]),
                 Instr.make("act", s=0, srs=1, d=0, drs=1, rows=40, cols=20, pop=["cmp"])]
    prog += [Instr.make("sync", q="sfu")] * 0 + [HALT]
    t0 = time.perf_counter()
    r = estimate(prog, DEFAULT)
    assert time.perf_counter() - t0 < 10
    assert r.instructions == 75001 and r.total_cycles > 25000 * 100


# ---------------------------------------------------------------- an independent, cycle-stepped reference

def _stepped(instrs, lat, t: Timing):
    """Tick-by-tick simulation of the same rules (fetch slots, FIFO depth, in-order units, FIFO tokens)."""
    n = len(instrs)
    Q = ["ld", "cmp", "sfu", "st"]
    fifo = {q: [] for q in Q}
    res = {"ld": "dma", "st": "dma", "cmp": "cmp", "sfu": "sfu"} if t.dma_shared else {q: q for q in Q}
    busy_until = {r: None for r in set(res.values())}        # (index, queue, end)
    tokens = {(s, d): 0 for s in Q for d in Q}
    start, end = [None] * n, [None] * n
    pc, next_fetch, halted, now = 0, t.fetch_latency, False, 0
    while True:
        changed = True
        while changed:                       # settle everything that can happen at `now`
            changed = False
            for r, b in busy_until.items():  # completions push tokens
                if b is not None and b[2] <= now:
                    for d in instrs[b[0]].push:
                        tokens[(b[1], d)] += 1
                    busy_until[r] = None
                    changed = True
            for q in Q:                      # starts (queue order breaks ties on a shared unit)
                if busy_until[res[q]] is None and fifo[q]:
                    i = fifo[q][0]
                    if all(tokens[(s, q)] > 0 for s in instrs[i].pop):
                        for s in instrs[i].pop:
                            tokens[(s, q)] -= 1
                        fifo[q].pop(0)
                        start[i], end[i] = now, now + lat[i]
                        busy_until[res[q]] = (i, q, end[i])
                        changed = True
            if not halted and pc < n and now >= next_fetch:     # fetch
                ins = instrs[pc]
                if ins.op == "halt":
                    halted, halt_fetch = True, now
                    pc += 1
                    changed = True
                elif len(fifo[ins.queue]) < t.queue_depth:
                    fifo[ins.queue].append(pc)
                    pc += 1
                    next_fetch = now + t.fetch_interval
                    changed = True
        if halted and all(not fifo[q] for q in Q) and all(b is None for b in busy_until.values()):
            break
        now += 1
        assert now < 10_000_000
    last = max([e for e in end if e is not None] + [halt_fetch])
    return start, last + t.halt_cycles


def _random_program(seed, n=40):
    """Token-balanced random programs: tokens from access overlaps (the compiler's ProgramBuilder)."""
    from sdac.compiler.lower.program import ProgramBuilder, R, W
    rng = np.random.default_rng(seed)
    pb = ProgramBuilder()
    for _ in range(n):
        kind = rng.integers(4)
        a, b = int(rng.integers(0, 4)) * 100, int(rng.integers(0, 4)) * 100
        if kind == 0:
            pb.emit("load", [W("act", a, 50)], buf="act", dram=0, sram=a, run=int(rng.integers(1, 200)))
        elif kind == 1:
            pb.emit("mm", [R("act", a, 50), W("acc", b, 50)], a=a, ars=1, w=0, ws=1, c=b, crs=1,
                    m=int(rng.integers(1, 90)), n=20, k=int(rng.integers(1, 60)))
        elif kind == 2:
            pb.emit("act", [R("acc", b, 50), W("act", a, 50)], s=b, srs=1, out="act", d=a, drs=1,
                    rows=int(rng.integers(1, 50)), cols=20)
        else:
            pb.emit("store", [R("act", a, 50)], buf="act", dram=0, sram=a, run=int(rng.integers(1, 100)))
    pb.emit("halt")
    return pb.finish()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("depth", [1, 2, 64])
@pytest.mark.parametrize("shared", [False, True])
def test_event_simulation_equals_cycle_stepped_reference(seed, depth, shared):
    prog = _random_program(seed)
    m = dataclasses.replace(DEFAULT, queue_depth=depth, dma_latency=8)
    t = Timing.from_machine(m, dma_shared=shared, fetch_interval_cycles=3 if shared else 0)
    r = estimate(prog, m, timing=t)
    start, total = _stepped(prog, r.work.latency.tolist(), t)
    assert total == r.total_cycles
    assert [s for s, ins in zip(start, prog) if ins.op != "halt"] == \
        [int(s) for s, ins in zip(r.schedule.start, prog) if ins.op != "halt"]


def test_every_timing_parameter_is_documented():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "performance.md").read_text()
    missing = [f.name for f in dataclasses.fields(Timing) if f"`{f.name}`" not in doc
               and f.name not in ("array_rows", "array_cols", "macs_per_pe", "lanes")]
    assert not missing, f"docs/performance.md does not describe {missing}"
