"""Every RTL module passes `verilator --lint-only -Wall` (with the whole hw/rtl as library)."""
import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator]

MODULES = [p.stem for p in sim.all_rtl_files() if p.stem != sim.PKG]


@pytest.mark.parametrize("top", MODULES)
def test_lint_clean(top):
    res = sim.lint(sim.all_rtl_files(), top)
    assert res.ok, f"{' '.join(res.command)}\n{res.output[-4000:]}"


def test_lint_catches_a_width_bug(tmp_path):
    bad = tmp_path / "bad.sv"
    bad.write_text("module bad(input logic [7:0] a, output logic [3:0] y);\n  assign y = a;\nendmodule\n")
    res = sim.lint([bad], "bad")
    assert not res.ok and "WIDTH" in res.output
