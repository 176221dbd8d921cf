"""benchmarks/run_all.py: --quick leaves out the SD-v1.5 benchmarks; every listed script exists."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _list(*flags) -> list[str]:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--list", *flags],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_quick_skips_sd15_and_scripts_exist():
    full, quick = _list(), _list("--quick")
    assert set(quick) < set(full)
    assert not any("SD-v1.5" in line for line in quick)
    assert any("compile_sd15.py" in line for line in full) and any("golden_sd15.py" in line for line in full)
    for line in full:
        cmd = line.split(": ", 1)[1].split()
        if cmd[0].endswith(".py"):
            assert (ROOT / cmd[0]).exists(), line
