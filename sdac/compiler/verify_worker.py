"""The static verifier in a second process, fed kernel by kernel while the lowering still emits.

On a large model the lowering and the verifier's per-instruction checks (bounds, SFU operand rules, races:
verify.ProgramChecker) are each about a second of pure Python; run one after the other they take both,
run in two processes they take about the longer one. The parent (``StreamingVerifier``) pickles each
kernel's instructions as the lowering finishes it and a sender thread writes them to the worker's stdin
(the lowering never waits for the worker); the worker (``python -m sdac.compiler.verify_worker``) checks
them as they come. When the program is complete the parent sends what only the end knows (the DRAM layout,
the relocated addresses, every push bit) and runs the queue simulation (verify.check_queues) while the
worker finishes; the worker's verdict comes back on its stdout.

The worker is a fresh interpreter (not a fork): it imports only the verifier, holds only the checker's
state, and its memory is its own (the compile's peak memory is the two processes' peaks, both measured).
"""
from __future__ import annotations

import json
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import warnings

from ..errors import SdacError
from ..isa.machine import Machine
from .verify import ProgramChecker, VerifyError, _readonly_ranges, check_program, check_queues

_LEN = struct.Struct("<Q")


class StreamingVerifier:
    """Parent side. ``send`` after each kernel, ``finish`` with the lowered bundle (raises VerifyError);
    ``close`` stops the worker (after an error of the lowering)."""

    command = [sys.executable, "-m", __name__]

    def __init__(self, machine: Machine):
        """Starts the worker (OSError if it cannot be started)."""
        self._stderr = tempfile.TemporaryFile()     # (a pipe could fill while we wait on stdout)
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self.sent = 0                   # instructions sent
        self.builder = None             # the lowering's ProgramBuilder (its push masks are final at the end)
        self.peak_rss = 0               # the worker's peak resident set (bytes), once it has finished
        self.deferred: list[int] = []   # instructions whose DRAM address the lowering sets at the end
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="sdac-verify-send", daemon=True)
        self._sender.start()
        self._put(("machine", machine.to_json()))

    def _put(self, msg) -> None:
        self._out.put(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_loop(self) -> None:
        stdin = self.proc.stdin
        try:
            while (blob := self._out.get()) is not None:
                stdin.write(_LEN.pack(len(blob)))
                stdin.write(blob)
            stdin.close()
        except OSError:             # the worker is gone: finish() reports what it said
            pass

    def send(self, builder, end: int, deferred=()) -> None:
        """Instructions [sent, end) of the builder (ops, pop masks, pop sources); deferred: those among them
        whose DRAM address is patched at the end. An instruction's fields and pops must be final once sent
        (the lowering patches only relocated DRAM addresses, and the control instruction setstep)."""
        self.builder = builder
        start = self.sent
        late = [d for d in deferred if not start <= d < end]
        if late:        # its pre-patch address would have been checked as an ordinary access
            raise SdacError(f"streaming verifier: instruction {late[0]} became relocated after it was sent "
                            f"(compiler bug)")
        if end <= start:
            return
        src = builder.pop_sources
        self._put(("add", builder.ops[start:end], builder.pops[start:end],
                   {i: src[i] for i in range(start, end) if i in src}, tuple(deferred)))
        self.deferred.extend(deferred)
        self.sent = end

    def finish(self, bundle) -> None:
        if self.sent != len(bundle.instrs):
            self.close()
            raise SdacError(f"streaming verifier: {self.sent} of {len(bundle.instrs)} instructions were sent "
                            f"(compiler bug)")
        self._put(("end", bundle.dram_size, (bundle.n_steps - 1) * bundle.step_bank, _readonly_ranges(bundle),
                   {i: dict(bundle.instrs[i].args) for i in self.deferred}, self.builder.pushes))
        self._out.put(None)
        try:
            check_queues(bundle)        # (on this core, while the worker finishes)
        except BaseException:
            self.close()
            raise
        self._sender.join()
        out = self.proc.stdout.read()
        self.proc.wait()
        try:
            verdict = pickle.loads(out)
        except Exception:       # noqa: BLE001 - the worker died without a verdict
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace").strip()[-1000:]
            verdict = ("crash", f"the worker process ended with code {self.proc.returncode}: {err}")
        finally:
            self._stderr.close()
        if verdict[0] == "error":
            raise VerifyError(verdict[1], verdict[2])
        if verdict[0] == "ok":
            self.peak_rss = verdict[1]
            return
        # the worker could not check the program (it died, or the checker failed there): check it here, so the
        # bundle is still verified, and say why
        warnings.warn(f"streaming verifier: {verdict[1].strip()}; verifying in the compiler's process instead",
                      RuntimeWarning, stacklevel=2)
        check_program(bundle)

    def close(self) -> None:
        self._out.put(None)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stderr.close()


# ------------------------------------------------------------------ worker side

def _read(stream):
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    return pickle.loads(stream.read(_LEN.unpack(head)[0]))


def run_worker(stdin, stdout) -> int:
    import traceback
    try:
        verdict = _check_stream(stdin)
    except VerifyError as e:
        verdict = ("error", e.index, e.detail)
    except BaseException:       # noqa: BLE001 - the parent reports it
        verdict = ("crash", traceback.format_exc())
    stdout.write(pickle.dumps(verdict))
    stdout.flush()
    return 0


def _check_stream(stdin):
    msg = _read(stdin)
    if msg is None:
        return ("crash", "no input")
    machine = Machine.from_dict(json.loads(msg[1]))
    checker = ProgramChecker(machine, None)
    while (msg := _read(stdin)) is not None:
        if msg[0] == "end":
            _, dram_size, step_extra, readonly, deferred_args, pushes = msg
            checker.finish(dram_size, step_extra, readonly, deferred_args, pushes)
            return ("ok", _peak_rss())
        _, ops, pop_masks, pop_sources, deferred = msg
        base = len(checker.ops)
        sources = [pop_sources.get(base + k, ()) if m else () for k, m in enumerate(pop_masks)]
        checker.add(ops, pop_masks, sources=sources, deferred=frozenset(deferred))
    return ("crash", "the input ended before the program did")


def _peak_rss() -> int:
    """This process's peak resident set since its exec (VmHWM; ru_maxrss would include the parent's pages
    the fork before the exec counted)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    # (not niced: a niced worker was 0.1-0.3 s faster on an idle machine, and up to 0.9 s slower on a loaded
    # one, where other processes took its core)
    sys.exit(run_worker(sys.stdin.buffer, sys.stdout.buffer))
