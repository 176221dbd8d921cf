"""Every RTL module passes `verilator --lint-only -Wall` (with the whole hw/rtl as library)."""
import re

import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator]

MODULES = [p.stem for p in sim.all_rtl_files() if p.stem != sim.PKG]
_TEXT = {p.stem: p.read_text() for p in sim.all_rtl_files()}


def _instantiated(name: str) -> bool:
    return any(re.search(rf"^\s*{name}\s*(#|\w+\s*\()", text, re.M)
               for other, text in _TEXT.items() if other != name)


# Linting a module lints everything it instantiates, so only the roots are linted as tops
# (a module that nothing instantiates is a root, so every file is covered).
ROOTS = [m for m in MODULES if not _instantiated(m)]


def test_every_module_is_covered():
    assert "sdac_top" in ROOTS and "sdac_pe" not in ROOTS


@pytest.mark.parametrize("top", ROOTS)
def test_lint_clean(top):
    res = sim.lint(sim.all_rtl_files(), top)
    assert res.ok, f"{' '.join(res.command)}\n{res.output[-4000:]}"


def test_lint_clean_top_with_sfu():
    # sdac_top compiles sdac_sfu in with SDAC_HAVE_SFU (sdac.hw.sim.cosim_sources) when it exists.
    sources, defines = sim.cosim_sources()
    if not defines:
        pytest.skip("hw/rtl/sdac_sfu.sv not present")
    res = sim.lint(sources, "sdac_top", extra=defines)
    assert res.ok, f"{' '.join(res.command)}\n{res.output[-4000:]}"


def test_lint_catches_a_width_bug(tmp_path):
    bad = tmp_path / "bad.sv"
    bad.write_text("module bad(input logic [7:0] a, output logic [3:0] y);\n  assign y = a;\nendmodule\n")
    res = sim.lint([bad], "bad")
    assert not res.ok and "WIDTH" in res.output
