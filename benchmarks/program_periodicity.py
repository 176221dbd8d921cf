"""How many instructions would an emitter that replicates periodic runs still have to emit? (issue #3 design)

    .venv/bin/python benchmarks/program_periodicity.py build/sd15/unet.qdq.sdab

Per kernel, greedily from each instruction: the period p (1..96) whose run repeats most instructions, where
repeat n of an instruction equals repeat n-1 but for some fields that step by the same amount every repeat.
A run of n >= 3 periods costs p instructions plus one loop record; anything else costs one instruction each.
Three readings of "equal":
  exact   same mnemonic, fields and tokens; only the DRAM address steps (what the builder could replicate
          without new token logic)
  notok   as exact, tokens ignored (if the builder derived a period's tokens once)
  affine  same mnemonic, enum fields and tokens; every integer field may step (one loop level in the ISA)
  affine-notok  as affine, tokens ignored
Nested loops are not searched: the figures are what one level of replication removes.
"""
from __future__ import annotations

import argparse
import collections

from sdac.bundle import read_bundle


def _keys(instrs, mode: str):
    def key(x):
        if mode.startswith("affine"):
            enums = tuple((k, v) for k, v in x.args.items() if isinstance(v, str))
            return (x.op, enums) if mode.endswith("notok") else (x.op, enums, x.pop, x.push)
        fields = tuple((k, v) for k, v in x.args.items() if k != "dram")
        return (x.op, fields) if mode == "notok" else (x.op, fields, x.pop, x.push)

    def steps(x):
        if mode.startswith("affine"):
            return tuple(v for v in x.args.values() if not isinstance(v, str))
        return (x.args.get("dram", 0),)
    return [key(x) for x in instrs], [steps(x) for x in instrs]


def _delta(a, b):
    return tuple(y - x for x, y in zip(a, b))


def emitted(lo: int, hi: int, keys, vals, max_period: int = 96) -> int:
    i, n_emit = lo, 0
    while i < hi:
        best = None                 # (period, repeats)
        for p in range(1, max_period + 1):
            if i + 2 * p > hi:
                break
            if any(keys[i + j] != keys[i + p + j] for j in range(p)):
                continue
            d = [_delta(vals[i + j], vals[i + p + j]) for j in range(p)]
            n = 2
            while i + (n + 1) * p <= hi and all(
                    keys[i + n * p + j] == keys[i + j] and _delta(vals[i + (n - 1) * p + j], vals[i + n * p + j]) == d[j]
                    for j in range(p)):
                n += 1
            if best is None or (n - 1) * p > (best[1] - 1) * best[0]:
                best = (p, n)
        if best and best[1] >= 3:
            n_emit += best[0] + 1
            i += best[0] * best[1]
        else:
            n_emit += 1
            i += 1
    return n_emit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--modes", default="exact,notok,affine,affine-notok")
    a = ap.parse_args(argv)
    b = read_bundle(a.bundle)
    print(f"{a.bundle}: {len(b.instrs)} instructions, {len(b.debug)} kernels")
    print("| reading | instructions to emit | fewer | conv3x3 | matmul | attention |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in a.modes.split(","):
        keys, vals = _keys(b.instrs, mode)
        total, by_kind, all_kind = 0, collections.Counter(), collections.Counter()
        for k in b.debug:
            lo, hi = k["first"], k["last"] + 1
            n = emitted(lo, hi, keys, vals)
            total += n
            by_kind[k["kind"]] += n
            all_kind[k["kind"]] += hi - lo
        cells = " | ".join(f"{all_kind[kind]} -> {by_kind[kind]}" for kind in ("conv3x3", "matmul", "attention"))
        print(f"| {mode} | {total} | {len(b.instrs) / total:.1f}x | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
