"""Shared helpers of the benchmark scripts: child processes that report JSON, tables, profiles.

Every heavy measurement runs in its own child process, so its peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that measurement's alone and the
memory goes back to the OS afterwards (the machine is shared).
"""
from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
import traceback

RESULT_TAG = "@@RESULT@@ "


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def limit_memory(gib: float | None) -> None:
    """Cap this process's address space (RLIMIT_AS) so a runaway stage raises MemoryError with a stack
    trace instead of exhausting the shared machine."""
    if gib:
        lim = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def emit(result: dict) -> None:
    """Child side: the last line of stdout carries the JSON result."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(argv: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``python argv...``; stream its output (progress) and return the JSON it emitted
    ({"error": ...} if it emitted none)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=e, bufsize=1)
    result = None
    tail = []
    t0 = time.monotonic()
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        else:
            print("    " + line.rstrip(), flush=True)
            tail = (tail + [line.rstrip()])[-15:]
        if timeout and time.monotonic() - t0 > timeout:
            p.kill()
            return {"error": f"timed out after {timeout:.0f} s", "tail": tail}
    rc = p.wait()
    if result is None:
        return {"error": f"child exited with code {rc} without a result", "tail": tail}
    return result


def error_info(exc: BaseException) -> dict:
    """Error text and the innermost stack frames (file:line function) for the findings file."""
    tb = traceback.extract_tb(exc.__traceback__)
    return {"type": type(exc).__name__, "message": str(exc)[:2000],
            "stack": [f"{os.path.relpath(f.filename)}:{f.lineno} {f.name}" for f in tb[-6:]]}


class Profile:
    """cProfile around a block when enabled; ``top(n)`` gives the hotspots as text (by own time and cumulative)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.prof = cProfile.Profile() if enabled else None

    def __enter__(self):
        if self.prof:
            self.prof.enable()
        return self

    def __exit__(self, *exc):
        if self.prof:
            self.prof.disable()
        return False

    def top(self, n: int = 15) -> str:
        if not self.prof:
            return ""
        out = io.StringIO()
        st = pstats.Stats(self.prof, stream=out)
        st.sort_stats("tottime").print_stats(n)
        st.sort_stats("cumulative").print_stats(n)
        text = out.getvalue()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return text.replace(root + "/", "").replace(sys.prefix + "/", "")


def md_table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f} GiB"


def secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f} s"
