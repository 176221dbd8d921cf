"""The streaming verifier (a worker process fed while the lowering emits) checks what verify() checks."""
import dataclasses
import types

import pytest

from sdac.bundle import encode_program
from sdac.compiler import verify as V
from sdac.compiler.driver import compile_model
from sdac.compiler.verify_worker import StreamingVerifier
from sdac.isa.machine import DEFAULT
from sdac.isa.spec import QUEUES
from sdac.models import build

QI = {q: j for j, q in enumerate(QUEUES)}


def test_parallel_verification_gives_the_same_bundle():
    q, _ = build("unet_cond")
    alone = compile_model(q, verify_in_parallel=False)
    both = compile_model(q, verify_in_parallel=True)
    assert both.verifier_peak_rss > 0 and alone.verifier_peak_rss == 0     # the worker did run
    assert encode_program(both.bundle.instrs) == encode_program(alone.bundle.instrs)
    assert both.bundle.data == alone.bundle.data


def _as_builder(instrs):
    """What the lowering's ProgramBuilder holds for these instructions: (op, fields), pop and push masks, and
    per popping instruction the instructions whose pushes it takes (FIFO order per channel)."""
    pushed = {}             # channel -> pushing instructions not yet taken
    b = types.SimpleNamespace(ops=[], pops=[], pushes=[], pop_sources={})
    for i, ins in enumerate(instrs):
        b.ops.append((ins.op, dict(ins.args)))
        q = ins.queue
        b.pops.append(sum(1 << QI[p] for p in ins.pop))
        b.pushes.append(sum(1 << QI[r] for r in ins.push))
        srcs = [pushed[(p, q)].pop(0) for p in sorted(ins.pop, key=QI.get)]
        if srcs:
            b.pop_sources[i] = srcs
        for r in ins.push:
            pushed.setdefault((q, r), []).append(i)
    return b


@pytest.fixture(scope="module")
def bundle():
    from tests.compiler.test_verify import bundle as make      # the two-kernel program of the verifier tests
    return make.__wrapped__()


def _stream(bundle, instrs=None, chunk=7, deferred=()):
    instrs = instrs if instrs is not None else bundle.instrs
    b = _as_builder(instrs)
    sv = StreamingVerifier(bundle.machine)
    for end in range(chunk, len(instrs) + chunk, chunk):
        end = min(end, len(instrs))
        sv.send(b, end, [d for d in deferred if sv.sent <= d < end])
    sv.finish(dataclasses.replace(bundle, instrs=list(instrs)))
    return sv


def test_the_worker_accepts_a_compiled_program(bundle):
    assert _stream(bundle).peak_rss > 0


def test_the_worker_names_an_out_of_bounds_instruction(bundle):
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.op == "conv")
    bad = list(bundle.instrs)
    bad[i] = bad[i].replace(o=DEFAULT.acc_lines - 1)
    with pytest.raises(V.VerifyError, match=f"instruction {i}: conv touches acc") as e:
        _stream(bundle, bad)
    assert e.value.index == i and e.value.exit_code == 3


def test_the_worker_finds_a_missing_token(bundle):
    instrs = list(bundle.instrs)
    i = next(j for j, ins in enumerate(instrs) if ins.pop and ins.queue == "cmp")
    p = sorted(instrs[i].pop)[0]
    q = instrs[i].queue
    j = max(k for k in range(i) if instrs[k].queue == p and q in instrs[k].push)
    instrs[i] = instrs[i].replace(pop=instrs[i].pop - {p})
    instrs[j] = instrs[j].replace(push=instrs[j].push - {q})
    with pytest.raises(V.VerifyError, match="race|no earlier|deadlock|tokens left"):
        _stream(bundle, instrs)


# ------------------------------------------------- streaming mode of the checker, in process

def _streaming_checker(instrs, L=20, caps=True):
    """ProgramChecker in streaming mode over instrs (pop sources from FIFO matching), chunk by chunk.
    (test_verify.py runs it against the brute-force race reference.)"""
    c = V.ProgramChecker(dataclasses.replace(DEFAULT, lanes=L), None, operands=caps)
    b = _as_builder(instrs)
    fps = [V.footprint(ins, L) for ins in instrs]
    for s in range(0, len(instrs), 5):
        e = min(s + 5, len(instrs))
        c.add(b.ops[s:e], b.pops[s:e], sources=[b.pop_sources.get(i, ()) for i in range(s, e)],
              footprints=fps[s:e], queues=[ins.queue for ins in instrs[s:e]])
    return c, b


def test_streaming_end_checks(bundle):
    instrs = list(bundle.instrs)
    ro = V._readonly_ranges(bundle)
    extra = (bundle.n_steps - 1) * bundle.step_bank
    c, b = _streaming_checker(instrs)
    c.finish(bundle.dram_size, extra, ro, {}, b.pushes)           # the program as compiled: fine
    # a push bit no pop announced
    c, b = _streaming_checker(instrs)
    m = list(b.pushes)
    k = next(i for i, ins in enumerate(instrs) if ins.queue == "cmp" and "st" not in ins.push)
    m[k] |= 1 << QI["st"]
    with pytest.raises(V.VerifyError, match=f"instruction {k}: push bits"):
        c.finish(bundle.dram_size, extra, ro, {}, m)
    # a store into the static data, seen only at the end
    st = next(i for i, ins in enumerate(instrs) if ins.op == "store")
    bad = list(instrs)
    bad[st] = bad[st].replace(dram=bundle.data_base)
    c, b = _streaming_checker(bad)
    with pytest.raises(V.VerifyError, match=f"instruction {st}: store writes DRAM .* read-only"):
        c.finish(bundle.dram_size, extra, ro, {}, b.pushes)
    # a deferred load whose final address is not in the static data
    ld = next(i for i, ins in enumerate(instrs) if ins.op == "load" and ins.args["dram"] >= bundle.data_base)
    c = V.ProgramChecker(DEFAULT, None)
    b = _as_builder(instrs)
    c.add(b.ops, b.pops, sources=[b.pop_sources.get(i, ()) for i in range(len(instrs))], deferred={ld})
    with pytest.raises(V.VerifyError, match=f"instruction {ld}: load: its DRAM address"):
        c.finish(bundle.dram_size, extra, ro, {ld: {**instrs[ld].args, "dram": 0}}, b.pushes)


def test_a_pop_taking_a_repeated_push_is_rejected(bundle):
    instrs = list(bundle.instrs)
    b = _as_builder(instrs)
    by_channel = {}         # (producer, consumer) -> popping instructions
    for k, ins in enumerate(instrs):
        for p in ins.pop:
            by_channel.setdefault((p, ins.queue), []).append(k)
    ch, (first, second) = next((c, ks[:2]) for c, ks in sorted(by_channel.items()) if len(ks) >= 2)
    order = sorted(instrs[second].pop, key=QI.get)
    srcs = list(b.pop_sources[second])
    srcs[order.index(ch[0])] = b.pop_sources[first][sorted(instrs[first].pop, key=QI.get).index(ch[0])]
    b.pop_sources[second] = srcs        # the push the first pop took, taken again
    with pytest.raises(V.VerifyError, match=f"instruction {second}: pops {ch[0]}->{ch[1]} from instruction"):
        V.ProgramChecker(DEFAULT, None).add(b.ops, b.pops, sources=[b.pop_sources.get(k, ()) for k in range(len(instrs))])


def test_a_worker_that_dies_leaves_the_check_to_the_compiler(bundle, monkeypatch):
    import sys
    monkeypatch.setattr(StreamingVerifier, "command", [sys.executable, "-c", "import sys; sys.exit(5)"])
    with pytest.warns(RuntimeWarning, match="code 5.*verifying in the compiler's process"):
        _stream(bundle)                                 # verified in process: fine
    i = next(j for j, ins in enumerate(bundle.instrs) if ins.op == "conv")
    bad = list(bundle.instrs)
    bad[i] = bad[i].replace(o=DEFAULT.acc_lines - 1)
    with pytest.warns(RuntimeWarning), pytest.raises(V.VerifyError, match=f"instruction {i}: conv touches acc"):
        _stream(bundle, bad)


def test_compile_without_a_second_interpreter_still_verifies(monkeypatch):
    from sdac.compiler import verify_worker
    monkeypatch.setattr(verify_worker.StreamingVerifier, "command", ["/nonexistent/python"])
    q, _ = build("resnet")
    with pytest.warns(RuntimeWarning, match="streaming verifier not started"):
        r = compile_model(q, verify_in_parallel=True)
    assert r.verifier_peak_rss == 0 and "verify" in r.timings


def test_a_relocation_after_sending_is_a_compiler_bug(bundle):
    from sdac.errors import SdacError
    sv = StreamingVerifier(bundle.machine)
    try:
        b = _as_builder(bundle.instrs)
        sv.send(b, 10)
        with pytest.raises(SdacError, match="instruction 3 became relocated after it was sent"):
            sv.send(b, 20, [3])
    finally:
        sv.close()


def test_cli_verify_worker_option(tmp_path, capsys):
    from sdac.cli import main
    q, _ = build("resnet")
    for flag, said in (("--verify-worker", True), ("--no-verify-worker", False)):
        out = tmp_path / f"r{said}.sdab"
        assert main(["compile", q, "-o", str(out), flag]) == 0
        err = capsys.readouterr().err
        assert ("after a worker process checked" in err) == said, err
    assert (tmp_path / "rTrue.sdab").read_bytes() == (tmp_path / "rFalse.sdab").read_bytes()


def test_a_failing_compile_stops_the_worker(monkeypatch):
    """The worker starts when the model is imported; a pass that fails afterwards stops it."""
    from sdac.compiler import passes, verify_worker
    from sdac.errors import CompileError
    closed = []
    real_close = verify_worker.StreamingVerifier.close
    monkeypatch.setattr(verify_worker.StreamingVerifier, "close", lambda self: (closed.append(self), real_close(self)))

    def broken(*a, **k):
        raise CompileError("a pass failed")
    monkeypatch.setattr(passes, "run_passes", broken)
    q, _ = build("resnet")
    with pytest.raises(CompileError, match="a pass failed"):
        compile_model(q, verify_in_parallel=True)
    assert len(closed) == 1 and closed[0].proc.poll() is not None
