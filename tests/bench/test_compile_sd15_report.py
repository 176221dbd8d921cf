"""benchmarks/compile_sd15.py: the run-by-run ratio pairs each compile with the session created after it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import compile_sd15  # noqa: E402


def test_paired_ratios_pair_runs_and_skip_failures():
    comps = [{"ok": True, "compile_s": 4.0}, {"ok": False}, {"ok": True, "compile_s": 3.0}]
    orts = [{"session_s": 2.0}, {"session_s": 1.0}, {"session_s": 1.5}, {"session_s": 9.0}]
    assert compile_sd15.paired_ratios(comps, orts) == [2.0, 2.0]
    assert compile_sd15.paired_ratios(comps, [{"error": "x"}] * 3) == []
