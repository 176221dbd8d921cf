"""RTL tests: every test under tests/hw is marked `rtl` and skipped only if Verilator cannot run."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    from sdac.hw.sim import verilator_status
    mine = [it for it in items if HERE in Path(str(it.path)).resolve().parents]
    if not mine:
        return
    ok, reason = verilator_status()
    for it in mine:
        it.add_marker(pytest.mark.rtl)
        if not ok and "needs_verilator" in it.keywords:
            it.add_marker(pytest.mark.skip(reason=f"Verilator cannot run here: {reason}"))


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_verilator: builds or runs RTL with Verilator")
