"""`sdac report`: text, JSON, HTML and PNG outputs exist and carry the model's numbers."""
import json
import sys

import pytest

from sdac.bundle import write_bundle
from sdac.cli import main
from sdac.errors import SdacError
from sdac.perf.model import estimate
from sdac.perf.samples import compile_slice


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("rep") / "slice.sdab"
    b = compile_slice(hw=8, ch=40)
    write_bundle(b, p)
    return p, estimate(b)


def test_text_and_json(bundle_path, tmp_path, capsys):
    p, rep = bundle_path
    assert main(["report", str(p), "--compare-sda", "--top", "0", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert f"{rep.total_cycles:,} cycles" in out
    assert f"{rep.iters_per_s:.4g}" in out
    assert "roofline bound" in out and "where the time goes" in out
    assert "SDA paper" in out and "0.389" in out and "332.5" in out
    for k in rep.kernels:
        assert k.name in out
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["total_cycles"] == rep.total_cycles and len(d["kernels"]) == len(rep.kernels)
    # refuses to overwrite
    assert main(["report", str(p), "--json", str(tmp_path / "r.json")]) == 2


def test_html(bundle_path, tmp_path, capsys):
    p, rep = bundle_path
    h = tmp_path / "sub" / "report.html"
    assert main(["report", str(p), "--html", str(h), "--compare-sda"]) == 0
    text = h.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 3
    assert f"{rep.total_cycles:,} cycles" in text and "Queue timeline" in text
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_plots(bundle_path, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    p, _ = bundle_path
    assert main(["report", str(p), "--plots", str(tmp_path / "plots")]) == 0
    for name in ("timeline.png", "roofline.png", "kernels.png"):
        f = tmp_path / "plots" / name
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def test_plots_without_matplotlib(bundle_path, tmp_path, monkeypatch):
    from sdac.perf.render import write_plots
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SdacError, match="matplotlib"):
        write_plots(bundle_path[1], tmp_path)


def test_timing_override(bundle_path, tmp_path, capsys):
    p, rep = bundle_path
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"dma_bytes_per_cycle": 4}))
    assert main(["report", str(p), "--timing", str(f), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["timing"]["dma_bytes_per_cycle"] == 4 and d["total_cycles"] > rep.total_cycles
    f.write_text(json.dumps({"nonsense": 1}))
    assert main(["report", str(p), "--timing", str(f)]) == 2
    assert "unknown parameter" in capsys.readouterr().err


def test_bad_bundle(tmp_path, capsys):
    f = tmp_path / "x.sdab"
    f.write_bytes(b"not a bundle")
    assert main(["report", str(f)]) == 2
