"""Scheduling experiments: re-derived tokens keep the program's meaning and timing; software-pipelined
attention computes the same outputs on the golden model, passes the verifier, and is faster."""
import dataclasses

import numpy as np

from sdac.compiler.verify import verify
from sdac.isa.machine import DEFAULT
from sdac.perf.experiments import pipeline_attention, retoken
from sdac.perf.model import estimate
from sdac.perf.samples import compile_slice
from sdac.runtime.golden import run_bundle


def test_pipelined_attention_same_outputs_and_faster():
    m = dataclasses.replace(DEFAULT, acc_lines=2048)          # several query tiles per head
    b = compile_slice(m, hw=16, ch=40, heads=2, calibrate=True)
    assert sum(1 for i in b.instrs if i.op == "softmax") >= 8
    same = dataclasses.replace(b, instrs=retoken(b.instrs, m.lanes))
    verify(same)
    assert estimate(same).total_cycles == estimate(b).total_cycles
    p = pipeline_attention(b)
    verify(p)
    assert [i.op for i in p.instrs] != [i.op for i in b.instrs]        # really reordered
    rng = np.random.default_rng(0)
    x = {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in b.inputs}
    want, got = run_bundle(b, x), run_bundle(p, x)
    assert all(np.array_equal(want[k], got[k]) for k in want)
    r0, r1 = estimate(b), estimate(p)
    assert r1.total_cycles < r0.total_cycles
    att0 = sum(k.attributed for k in r0.kernels if k.kind == "attention")
    att1 = sum(k.attributed for k in r1.kernels if k.kind == "attention")
    assert att1 < 0.95 * att0
