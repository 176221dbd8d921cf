"""Scheduling experiments: re-derived tokens keep the program's meaning and timing; the lowering's
attention is software-pipelined (the scores of query tile t+1 are issued before tile t's P.V)."""
import dataclasses

import numpy as np

from sdac.compiler.verify import verify
from sdac.isa.machine import DEFAULT
from sdac.perf.experiments import retoken
from sdac.perf.model import estimate
from sdac.perf.samples import compile_slice
from sdac.runtime.golden import run_bundle


def test_retoken_keeps_meaning_and_timing_and_attention_is_pipelined():
    m = dataclasses.replace(DEFAULT, acc_lines=2048)          # several query tiles per head
    b = compile_slice(m, hw=16, ch=40, heads=2, calibrate=True)
    att = next(d for d in b.debug if d.get("kind") == "attention")
    mms = [i for i in range(att["first"], att["last"] + 1) if b.instrs[i].op == "mm"]
    kinds = [b.instrs[i].wsrc for i in mms]
    assert kinds.count("act_t") >= 4
    assert kinds[:2] == ["act_t", "act_t"]                  # scores of tile 1 before the values of tile 0
    same = dataclasses.replace(b, instrs=retoken(b.instrs, m.lanes))
    verify(same)
    assert estimate(same).total_cycles == estimate(b).total_cycles
    rng = np.random.default_rng(0)
    x = {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in b.inputs}
    want, got = run_bundle(b, x), run_bundle(same, x)
    assert all(np.array_equal(want[k], got[k]) for k in want)
