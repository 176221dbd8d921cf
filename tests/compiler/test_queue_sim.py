"""The verifier's queue simulation (verify.simulate_queues) against a plain model of the same machine.

The reference keeps each FIFO as a list of fetched instructions, as the hardware does; the verifier's
version keeps a window over each queue's instructions. On random programs (small FIFOs and token counters,
so that deadlocks, overflows and leaks all occur) both must agree: the same verdict, naming the same
instruction."""
import numpy as np
import pytest

from sdac.compiler.verify import PRIORITIES, VerifyError, queue_program, simulate_queues
from sdac.isa.encoding import Instr
from sdac.isa.spec import QUEUES

NQ = len(QUEUES)


def reference(prog, depth, token_max, priority):
    fifo = [[] for _ in QUEUES]
    tokens = [0] * (NQ * NQ)
    order = [QUEUES.index(q) for q in priority]
    pc, n, halted = 0, len(prog), False
    while True:
        while not halted and pc < n:            # fetch in program order until a FIFO is full
            j, halt, _, _ = prog[pc]
            if j < 0:
                halted = halted or halt
            elif len(fifo[j]) >= depth:
                break
            else:
                fifo[j].append(pc)
            pc += 1
        progressed = False
        for j in order:                         # each unit: its head, if its tokens are there
            if not fifo[j]:
                continue
            i = fifo[j][0]
            _, _, pops, pushes = prog[i]
            if all(tokens[c] for c in pops):
                for c in pops:
                    tokens[c] -= 1
                for c in pushes:
                    tokens[c] += 1
                    if tokens[c] > token_max:
                        return i, "overflow"
                fifo[j].pop(0)
                progressed = True
        if not progressed:
            busy = [f[0] for f in fifo if f]
            if busy or (not halted and pc < n):
                return (min(busy) if busy else pc), "deadlock"
            break
    if not halted:
        return n - 1, "halt"
    if any(tokens[p * NQ + q] for p in range(NQ) for q in range(NQ) if p != q):
        return n - 1, "leak"
    return None


def verdict(prog, depth, token_max, priority):
    try:
        simulate_queues(None, depth, token_max, priority, prog)
    except VerifyError as e:
        kind = ("overflow" if "token counter" in e.detail else "deadlock" if "deadlock" in e.detail
                else "halt" if "halt" in e.detail and "left" not in e.detail else "leak")
        return e.index, kind
    return None


def random_program(rng, n):
    """Mostly balanced: a pop usually takes a token pushed earlier (sometimes one that never comes)."""
    prog = []
    pending = [0] * (NQ * NQ)
    for _ in range(n):
        if rng.random() < 0.03:
            prog.append((-1, False, (), ()))        # a control instruction (setstep)
            continue
        j = int(rng.integers(NQ))
        others = [p for p in range(NQ) if p != j]
        pops = tuple(p * NQ + j for p in others
                     if (pending[p * NQ + j] and rng.random() < 0.7) or rng.random() < 0.02)
        for c in pops:
            pending[c] = max(0, pending[c] - 1)
        pushes = tuple(j * NQ + r for r in others if rng.random() < 0.3)
        for c in pushes:
            pending[c] += 1
        prog.append((j, False, pops, pushes))
    if rng.random() < 0.95:
        prog.append((-1, True, (), ()))
    return prog


@pytest.mark.parametrize("seed", range(40))
def test_simulation_agrees_with_the_plain_model(seed):
    rng = np.random.default_rng(seed)
    kinds = set()
    for _ in range(25):
        prog = random_program(rng, int(rng.integers(1, 60)))
        depth, token_max = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        for prio in PRIORITIES:
            want = reference(prog, depth, token_max, prio)
            assert verdict(prog, depth, token_max, prio) == want, (prog, depth, token_max, prio)
            kinds.add(want[1] if want else "ok")
    assert len(kinds) >= 3      # the random programs do reach different verdicts


def test_balanced_pipeline_passes_and_queue_program_reads_the_token_sets():
    # ld loads and pushes to cmp; cmp pops it, computes and pushes to st; st pops and stores
    instrs = []
    for _ in range(20):
        instrs += [Instr.make("load", buf="act", push=["cmp"]), Instr.make("mm", pop=["ld"], push=["st"]),
                   Instr.make("store", buf="act", pop=["cmp"])]
    instrs.append(Instr.make("halt"))
    prog = queue_program(instrs)
    ld, cmp, st = (QUEUES.index(q) for q in ("ld", "cmp", "st"))
    assert prog[0] == (ld, False, (), (ld * NQ + cmp,))
    assert prog[1] == (cmp, False, (ld * NQ + cmp,), (cmp * NQ + st,))
    assert prog[-1] == (-1, True, (), ())
    for prio in PRIORITIES:
        simulate_queues(instrs, 2, 3, prio)
    with pytest.raises(VerifyError, match="deadlock"):
        simulate_queues(instrs[1:], 2, 3, PRIORITIES[0])     # the first mm's token never comes
