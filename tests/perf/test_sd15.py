"""The SD-v1.5-shaped stand-in: its work matches the model's published MAC counts; a scaled-down copy
lowers, verifies, times, and the benchmark script prints its figures."""
import collections

import pytest

from sdac.bundle import write_bundle
from sdac.compiler.lower import lower
from sdac.compiler.verify import verify
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.perf.samples import fix_absmax
from sdac.perf.sd15 import kernel_macs, sd15_kernel_graph


def test_sd15_shapes_give_the_known_macs():
    kg = sd15_kernel_graph(random_weights=False)
    by = collections.Counter()
    for k in kg.kernels:
        one_by_one = k.kind == "matmul" and any(s in k.name for s in ("conv_shortcut", "proj_in", "proj_out"))
        by["conv1x1" if one_by_one else k.kind] += kernel_macs(k)
    g = {k: v / 1e9 for k, v in by.items()}
    # counted from diffusers' SD-v1.5 UNet at batch 1, 64x64 latent: 200 / 22 / 117 / 63, about 402 GMAC
    assert g["conv3x3"] == pytest.approx(200, abs=1.5)
    assert g["conv1x1"] == pytest.approx(22, abs=0.5)
    assert g["matmul"] == pytest.approx(117, abs=1)
    assert g["attention"] == pytest.approx(63, abs=0.5)
    assert sum(g.values()) == pytest.approx(402, abs=1)
    assert sum(k.kind == "attention" for k in kg.kernels) == 32      # 16 transformer blocks x (self, cross)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    kg = sd15_kernel_graph(latent=16, channels=(40, 80, 160, 160), heads=2, ctx=10, ctx_ch=40)
    fix_absmax(kg)
    b = lower(kg, DEFAULT)
    verify(b)
    p = tmp_path_factory.mktemp("sd") / "small.sdab"
    write_bundle(b, p)
    return b, p


def test_small_copy_times(small):
    b, _ = small
    r = estimate(b)
    assert r.macs == sum(kernel_macs(k) for k in sd15_kernel_graph(
        latent=16, channels=(40, 80, 160, 160), heads=2, ctx=10, ctx_ch=40, random_weights=False).kernels)
    assert 0 < r.roofline_fraction <= 1
    assert {k.kind for k in r.kernels} >= {"conv3x3", "matmul", "attention", "norm", "concat", "upsample"}


def test_benchmark_script(small, capsys):
    import importlib.util
    from pathlib import Path
    _, p = small
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "perf_sd15.py"
    spec = importlib.util.spec_from_file_location("perf_sd15", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(p), "--what-if", "--top", "3"]) == 0
    out = capsys.readouterr().out
    r = estimate(small[0])
    assert f"{r.iters_per_s:.4f} UNet iterations/s" in out and f"{r.roofline_iters_per_s:.4f}" in out
    assert f"{100 * r.roofline_fraction:.1f}% of the roofline" in out
    assert "where the time goes" in out and "one OS accumulator set" in out and "SDA paper" in out


@pytest.mark.slow
def test_full_sd15_stand_in(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "perf_sd15.py"
    spec = importlib.util.spec_from_file_location("perf_sd15", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--save", str(tmp_path / "sd15.sdab")]) == 0
    out = capsys.readouterr().out
    assert "UNet iterations/s" in out and "401.6 GMAC" in out
