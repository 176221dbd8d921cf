"""Cycle-level performance model of an sdac program (a bundle or an instruction list).

``estimate(bundle)`` times every instruction from its fields (sdac/perf/timing.py),
then simulates the machine's overlap: in-order fetch into four FIFOs of
``queue_depth`` entries, four units each running its queue in order, and
dependency tokens that make an instruction wait for its producers (the k-th pop
of a channel consumes the k-th push, available when the pushing instruction
ends). The result is a ``Report``: total cycles, UNet iterations per second,
busy cycles and utilisation of the array, DMA and SFU, per-kernel times, the
roofline bound and where the time goes. docs/performance.md defines the model
in words.

The simulation is exact for the model (not an approximation of it): the only
shared resources are the fetch unit and each queue's unit, so every time is a
maximum over already known times and the order in which the loop resolves
instructions does not change the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DeviceError, SdacError
from ..isa.machine import Machine
from .timing import QUEUES, Timing, Work, latencies

UNITS = ("array", "dma_load", "sfu", "dma_store")       # what each queue's unit is, for reports


@dataclass
class Schedule:
    """Per-instruction times (cycles since START)."""

    fetch: np.ndarray        # entered its FIFO
    start: np.ndarray        # began executing (tokens and unit available)
    end: np.ndarray          # finished; pushes become visible
    total: int               # cycles until DONE


@dataclass
class KernelTime:
    name: str
    kind: str
    first: int
    last: int
    start: int               # first instruction start
    end: int                 # last instruction end
    attributed: int          # cycles this kernel adds to the total (end minus the previous kernels' end)
    busy: dict[str, int]     # per queue
    macs: int
    pass_macs: int
    dram_bytes: int
    sfu_elems: int

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "kind", "first", "last", "start", "end", "attributed", "busy",
                                              "macs", "pass_macs", "dram_bytes", "sfu_elems")}


@dataclass
class Report:
    timing: Timing
    instructions: int
    total_cycles: int
    busy: dict[str, int]                 # per queue: cycles its unit executes instructions
    array_cycles: int                    # cycles the array executes mm/conv
    macs: int
    pass_macs: int                       # MACs x passes (int8 x int8 twice)
    dram_read: int
    dram_written: int
    sfu_elems: int
    time_split: dict[str, int]           # where the time goes (sums to total_cycles)
    kernels: list[KernelTime] = field(default_factory=list)
    schedule: Schedule | None = None
    work: Work | None = None

    # ---------------------------------------------------------------- figures
    @property
    def clock_hz(self) -> float:
        return self.timing.clock_mhz * 1e6

    @property
    def seconds(self) -> float:
        return self.total_cycles / self.clock_hz

    @property
    def iters_per_s(self) -> float:
        """UNet evaluations per second (one program run = one denoising iteration)."""
        return self.clock_hz / max(1, self.total_cycles)

    @property
    def gops(self) -> float:
        """Achieved GOP/s counting a MAC as two operations."""
        return 2 * self.macs / self.seconds / 1e9 if self.total_cycles else 0.0

    @property
    def compute_bound(self) -> int:
        """Cycles the array needs at peak for all MACs (int8 x int8 counted as two passes)."""
        return -(-self.pass_macs // self.timing.peak_macs_per_cycle)

    @property
    def memory_bound(self) -> int:
        """Cycles the DMA needs for all DRAM bytes at full bandwidth (reads and writes use the two
        independent AXI channels, so the larger of the two bounds)."""
        bw = self.timing.dma_bytes_per_cycle
        return -(-max(self.dram_read, self.dram_written) // bw)

    @property
    def roofline_cycles(self) -> int:
        return max(self.compute_bound, self.memory_bound, 1)

    @property
    def roofline_iters_per_s(self) -> float:
        return self.clock_hz / self.roofline_cycles

    @property
    def bound_by(self) -> str:
        return "compute" if self.compute_bound >= self.memory_bound else "memory"

    @property
    def roofline_fraction(self) -> float:
        return self.roofline_cycles / max(1, self.total_cycles)

    def utilisation(self) -> dict[str, float]:
        T = max(1, self.total_cycles)
        return {"array (MACs)": self.pass_macs / (self.timing.peak_macs_per_cycle * T),
                "array (busy)": self.array_cycles / T,
                "dma load": self.busy["ld"] / T,
                "dma store": self.busy["st"] / T,
                "dram bandwidth": (self.dram_read + self.dram_written) / (2 * self.timing.dma_bytes_per_cycle * T),
                "sfu": self.busy["sfu"] / T}

    def to_json(self) -> dict:
        return {"format": "sdac-perf", "version": 1, "timing": self.timing.to_dict(),
                "instructions": self.instructions, "total_cycles": self.total_cycles,
                "seconds": self.seconds, "iters_per_s": self.iters_per_s, "gops": self.gops,
                "busy": dict(self.busy), "array_cycles": self.array_cycles, "macs": self.macs,
                "pass_macs": self.pass_macs, "dram_read": self.dram_read, "dram_written": self.dram_written,
                "sfu_elems": self.sfu_elems, "compute_bound": self.compute_bound,
                "memory_bound": self.memory_bound, "roofline_cycles": self.roofline_cycles,
                "roofline_iters_per_s": self.roofline_iters_per_s, "roofline_fraction": self.roofline_fraction,
                "bound_by": self.bound_by, "utilisation": self.utilisation(), "time_split": dict(self.time_split),
                "kernels": [k.to_json() for k in self.kernels]}


# -------------------------------------------------------------------- simulation

def simulate(instrs, work: Work, t: Timing) -> Schedule:
    """Event-driven schedule of fetch, four in-order units and tokens (see the module docstring)."""
    n = len(instrs)
    Q = work.queue.tolist()
    LAT = work.latency.tolist()
    masks: dict = {frozenset(): None}

    def qlist_of(s):
        v = masks.get(s, 0)
        if v == 0:
            v = masks[s] = [QUEUES.index(p) for p in sorted(s)]
        return v

    pops = [qlist_of(ins.pop) for ins in instrs]
    pushes = [qlist_of(ins.push) for ins in instrs]
    fetch = [0] * n
    start = [0] * n
    end = [0] * n
    qlist: list[list[int]] = [[], [], [], []]           # fetched instructions per queue, in order
    head = [0, 0, 0, 0]                                  # next to execute (position in qlist)
    free = [0, 0, 0, 0]                                  # unit free at
    chan = [[[] for _ in range(4)] for _ in range(4)]    # chan[s][d]: push times, in order
    popped = [[0] * 4 for _ in range(4)]
    depth = t.queue_depth
    fi = t.fetch_interval
    shared = t.dma_shared
    res = [0, 1, 2, 0] if shared else [0, 1, 2, 3]       # unit (resource) of each queue
    t_prev = t.fetch_latency - fi
    pc = 0
    halt_at = -1
    while True:
        progress = False
        while halt_at < 0 and pc < n:                    # fetch in program order
            q = Q[pc]
            ft = t_prev + fi
            if q < 0:
                fetch[pc] = ft
                halt_at = pc
                pc += 1
                progress = True
                break
            lst = qlist[q]
            pos = len(lst)
            if pos >= depth:
                if head[q] <= pos - depth:               # the slot's previous owner has not started yet
                    break
                ft = max(ft, start[lst[pos - depth]])
            fetch[pc] = ft
            t_prev = ft
            lst.append(pc)
            pc += 1
            progress = True
        if shared:
            progress |= _run_time_ordered(qlist, head, free, res, fetch, start, end, pops, pushes, LAT, chan, popped)
        else:
            for q in range(4):                               # run each unit as far as tokens allow
                lst = qlist[q]
                h = head[q]
                f = free[q]
                while h < len(lst):
                    i = lst[h]
                    st = fetch[i]
                    if f > st:
                        st = f
                    p = pops[i]
                    if p is not None:
                        ok = True
                        for s in p:
                            c = chan[s][q]
                            k = popped[s][q]
                            if k >= len(c):
                                ok = False
                                break
                            if c[k] > st:
                                st = c[k]
                        if not ok:
                            break
                        for s in p:
                            popped[s][q] += 1
                    e = st + LAT[i]
                    start[i] = st
                    end[i] = e
                    f = e
                    u = pushes[i]
                    if u is not None:
                        for d in u:
                            chan[q][d].append(e)
                    h += 1
                    progress = True
                head[q] = h
                free[q] = f
        if halt_at >= 0 and all(head[q] == len(qlist[q]) for q in range(4)):
            break
        if not progress:
            if halt_at < 0 and pc >= n:
                raise DeviceError("FETCH_OOB", f"the {n}-instruction program has no halt", n)
            blocked = [qlist[q][head[q]] for q in range(4) if head[q] < len(qlist[q])]
            raise DeviceError("DEADLOCK", "performance model: no queue can make progress (instructions "
                              + ", ".join(f"{i} ({instrs[i].op})" for i in blocked) + " wait for tokens)",
                              min(blocked) if blocked else pc)
    f_arr, s_arr, e_arr = (np.asarray(x, dtype=np.int64) for x in (fetch, start, end))
    last = max(int(e_arr.max()) if n else 0, fetch[halt_at] if halt_at >= 0 else 0)
    if halt_at >= 0:
        s_arr[halt_at] = last
        e_arr[halt_at] = last + LAT[halt_at]
        last = int(e_arr[halt_at])
    return Schedule(f_arr, s_arr, e_arr, last)


def _run_time_ordered(qlist, head, free, res, fetch, start, end, pops, pushes, LAT, chan, popped) -> bool:
    """Units that share a resource (dma_shared: one DMA engine for ld and st): start instructions in global
    time order, the earliest candidate first (ties: queue order), so no later-resolved instruction could
    have claimed the resource earlier. Returns whether anything started."""
    progress = False
    while True:
        best, best_q = None, -1
        for q in range(4):
            h = head[q]
            lst = qlist[q]
            if h >= len(lst):
                continue
            i = lst[h]
            st = max(fetch[i], free[res[q]])
            p = pops[i]
            if p is not None:
                for s in p:
                    c = chan[s][q]
                    k = popped[s][q]
                    if k >= len(c):
                        st = None
                        break
                    if c[k] > st:
                        st = c[k]
            if st is not None and (best is None or st < best):
                best, best_q = st, q
        if best_q < 0:
            return progress
        q = best_q
        i = qlist[q][head[q]]
        if pops[i] is not None:
            for s in pops[i]:
                popped[s][q] += 1
        e = best + LAT[i]
        start[i], end[i] = best, e
        free[res[q]] = e
        if pushes[i] is not None:
            for d in pushes[i]:
                chan[q][d].append(e)
        head[q] += 1
        progress = True
        return progress             # one at a time: fetch may now admit an instruction that starts earlier


def _busy_mask(starts: np.ndarray, ends: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For disjoint intervals sorted by start: is each point inside one?"""
    if starts.size == 0:
        return np.zeros(points.size, dtype=bool)
    return (np.searchsorted(starts, points, "right") - np.searchsorted(ends, points, "right")) > 0


def time_split(sched: Schedule, work: Work, t: Timing) -> dict[str, int]:
    """Attribute every cycle to one cause, in priority order (sums to the total):

    array at peak  - the compute bound (pass MACs / peak)
    array overhead - array busy beyond that: fill/drain, partial tiles, instruction overhead
    load           - array idle while a load runs (waiting for data)
    sfu            - array and loads idle, the SFU runs
    store          - only stores run
    other          - nothing executes: fetch, token latency, halt
    """
    T = sched.total
    sel = [(work.queue == QUEUES.index(q)) for q in QUEUES]
    arr = work.is_array
    pts_list = [np.array([0, T], dtype=np.int64)]
    ivs = {}
    for name, m in (("array", arr), ("ld", sel[0] & (work.latency > 0)), ("sfu", sel[2]), ("st", sel[3])):
        s, e = sched.start[m], sched.end[m]
        o = np.argsort(s, kind="stable")
        ivs[name] = (s[o], e[o])
        pts_list += [s, e]
    pts = np.unique(np.concatenate(pts_list))
    pts = pts[(pts >= 0) & (pts <= T)]
    seg = np.diff(pts)
    left = pts[:-1]
    busy = {k: _busy_mask(*v, left) for k, v in ivs.items()}
    a = busy["array"]
    ld = ~a & busy["ld"]
    sf = ~a & ~busy["ld"] & busy["sfu"]
    st = ~a & ~busy["ld"] & ~busy["sfu"] & busy["st"]
    array_time = int(seg[a].sum())
    ideal = min(array_time, -(-int(work.pass_macs.sum()) // t.peak_macs_per_cycle))
    out = {"array at peak": ideal, "array overhead": array_time - ideal, "load": int(seg[ld].sum()),
           "sfu": int(seg[sf].sum()), "store": int(seg[st].sum())}
    out["other"] = T - sum(out.values())
    return out


def kernel_times(debug: list[dict], sched: Schedule, work: Work) -> list[KernelTime]:
    out = []
    prev_end = 0
    n = len(work.latency)
    for d in debug:
        a, b = int(d.get("first", 0)), int(d.get("last", -1))
        a, b = max(0, a), min(n - 1, b)
        if b < a:
            continue
        sl = slice(a, b + 1)
        q = work.queue[sl]
        s, e = sched.start[sl], sched.end[sl]
        end = int(e.max())
        busy = {name: int(work.latency[sl][q == k].sum()) for k, name in enumerate(QUEUES)}
        out.append(KernelTime(str(d.get("kernel", f"{a}..{b}")), str(d.get("kind", "")), a, b, int(s.min()), end,
                              max(0, end - prev_end), busy, int(work.macs[sl].sum()), int(work.pass_macs[sl].sum()),
                              int(work.dram_read[sl].sum() + work.dram_written[sl].sum()),
                              int(work.sfu_elems[sl].sum())))
        prev_end = max(prev_end, end)
    return out


def _discount_padding(instrs, work: Work, debug: list[dict]) -> None:
    """A matmul the compiler ran as CONV-WS (a stride-3 conv over nine taps of whole lines; its kernel map
    entry names the true reduction `linear_k`) multiplies zero weights on the padded taps: count its
    useful MACs, oh x ow x cout x linear_k per conv, so that the roofline is the model's own work."""
    for d in debug:
        k = d.get("linear_k")
        if not k:
            continue
        for i in range(max(0, int(d["first"])), min(len(instrs) - 1, int(d["last"])) + 1):
            ins = instrs[i]
            if ins.op == "conv":
                a = ins.args
                useful = min(int(work.macs[i]), a["oh"] * a["ow"] * a["cout"] * int(k))
                work.macs[i] = work.pass_macs[i] = useful


def estimate(program, machine: Machine | None = None, timing: Timing | None = None, *,
             debug: list[dict] | None = None, keep_schedule: bool = True) -> Report:
    """Time a program: a Bundle (its machine, instructions and kernel map) or a list of Instr."""
    instrs = getattr(program, "instrs", program)
    if machine is None:
        machine = getattr(program, "machine", None)
    if debug is None:
        debug = getattr(program, "debug", None) or []
    if timing is None:
        if machine is None:
            raise SdacError("estimate: give a Bundle, a machine or a Timing")
        timing = Timing.from_machine(machine)
    instrs = list(instrs)
    if not instrs:
        raise SdacError("estimate: the program is empty")
    work = latencies(instrs, timing)
    _discount_padding(instrs, work, debug)
    sched = simulate(instrs, work, timing)
    busy = {q: int(work.latency[work.queue == k].sum()) for k, q in enumerate(QUEUES)}
    rep = Report(timing=timing, instructions=len(instrs), total_cycles=sched.total, busy=busy,
                 array_cycles=int(work.latency[work.is_array].sum()), macs=int(work.macs.sum()),
                 pass_macs=int(work.pass_macs.sum()), dram_read=int(work.dram_read.sum()),
                 dram_written=int(work.dram_written.sum()), sfu_elems=int(work.sfu_elems.sum()),
                 time_split=time_split(sched, work, timing), kernels=kernel_times(debug, sched, work))
    if keep_schedule:
        rep.schedule, rep.work = sched, work
    return rep
