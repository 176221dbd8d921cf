"""cocotb bench for sdac_decode.sv: every word is compared with sdac.isa.encoding.decode_int.

Run from tests/hw/test_decode.py (not collected by pytest itself). The number of
words and the seed come from SDAC_DECODE_WORDS / SDAC_DECODE_SEED.
"""
import collections
import os

import cocotb
from cocotb.triggers import Timer

from sdac.isa.encoding import DecodeError, decode_int
from sdac.isa.spec import SPEC

from words import word_stream

QCODE = dict(SPEC.enums["queue"])
ERR = {name: code for name, (code, _) in SPEC.errors.items()}
REASONS = {  # first words of the Python decoder's message -> RTL flag
    "reserved bit": "bad_reserved",
    "is not a member": "bad_enum",
    "below its minimum": "bad_min",
    "takes no tokens": "bad_token",
    "names its own queue": "bad_token",
}


def expected(word: int):
    """(err code, reason flag or None, instr or None) from the Python reference decoder."""
    try:
        return ERR["OK"], None, decode_int(word)
    except DecodeError as e:
        if e.reason.startswith("BAD_OPCODE"):
            return ERR["BAD_OPCODE"], None, None
        flag = next((f for k, f in REASONS.items() if k in e.reason), None)
        assert flag is not None, f"unclassified decoder message {e.reason!r}"
        return ERR["BAD_FIELD"], flag, None


@cocotb.test()
async def decode_matches_python(dut):
    n = int(os.environ.get("SDAC_DECODE_WORDS", "6000"))
    seed = int(os.environ.get("SDAC_DECODE_SEED", "1"))
    mismatches = []
    seen = collections.Counter()
    for i, (kind, word) in enumerate(word_stream(seed, n)):
        dut.word.value = word
        await Timer(1, unit="ns")
        err = int(dut.err.value)
        want_err, want_flag, ins = expected(word)
        flags = {f for f in ("bad_reserved", "bad_enum", "bad_min", "bad_token") if int(getattr(dut, f).value)}
        problems = []
        if err != want_err:
            problems.append(f"err {err} != {want_err}")
        if int(dut.valid.value) != (want_err == 0):
            problems.append("valid")
        if want_flag is not None and want_flag not in flags:
            problems.append(f"{want_flag} not raised (got {sorted(flags)})")
        if want_err == ERR["OK"] and flags:
            problems.append(f"flags {sorted(flags)} on a valid word")
        if ins is not None:
            seen[ins.op] += 1
            if int(dut.opcode.value) != ins.spec.opcode:
                problems.append("opcode")
            if ins.queue == "ctl":
                if not int(dut.is_ctl.value):
                    problems.append("is_ctl")
            else:
                if int(dut.is_ctl.value) or int(dut.queue_id.value) != QCODE[ins.queue]:
                    problems.append(f"queue {int(dut.queue_id.value)} != {ins.queue}")
            pop = sum(1 << QCODE[q] for q in ins.pop)
            push = sum(1 << QCODE[q] for q in ins.push)
            if int(dut.pop.value) != pop or int(dut.push.value) != push:
                problems.append("pop/push")
        seen[(kind, want_err, want_flag)] += 1
        if problems and len(mismatches) < 20:
            mismatches.append(f"word {i} ({kind}) {word:#066x}: {'; '.join(problems)}")
        elif problems:
            mismatches.append("...")
    dut._log.info("decoded %d words; classes %s", n, dict(seen))
    # Every instruction decoded validly and every error class exercised.
    for ispec in SPEC.instrs:
        assert seen[ispec.name] > 0, f"no valid {ispec.name} word"
    classes = {k[1:] for k in seen if isinstance(k, tuple)}
    for need in [(ERR["BAD_OPCODE"], None), (ERR["BAD_FIELD"], "bad_reserved"), (ERR["BAD_FIELD"], "bad_enum"),
                 (ERR["BAD_FIELD"], "bad_min"), (ERR["BAD_FIELD"], "bad_token"), (ERR["OK"], None)]:
        assert need in classes, f"error class {need} never produced"
    assert not mismatches, f"{len(mismatches)} mismatch(es):\n" + "\n".join(mismatches[:20])
