"""The device API: the golden backend equals run_bundle; the register-level backends (fake device, the RTL
backend given a port) give the same outputs through the CSR protocol; hooks, sampling, user errors."""
import numpy as np
import pytest

from sdac.compiler import kernels as K
from sdac.compiler.calibrate import calibrate_absmax
from sdac.compiler.lower import lower
from sdac.compiler.verify import verify
from sdac.errors import SdacError
from sdac.isa.machine import DEFAULT
from sdac.perf.model import estimate
from sdac.runtime.device import Device
from sdac.runtime.fake_device import FakeDevice
from sdac.runtime.golden import run_bundle


def _weights(rng, shape, out_axis):
    q = rng.integers(-7, 8, size=shape).astype(np.int8)
    n = shape[out_axis]
    return K.Weights(q, (rng.uniform(0.5, 1.5, n) / (7 * np.sqrt(np.prod(shape) / n))).astype(np.float32))


@pytest.fixture(scope="module")
def two_step():
    """A conv3x3 + GN + SiLU and a matmul, per-step scales (two steps), ONNX-style IO names."""
    rng = np.random.default_rng(0)
    sc = lambda a, b: np.array([a, b], np.float32)      # noqa: E731
    x = K.Act("x", (1, 6, 6, 20), sc(0.05, 0.2))
    h = K.Act("h", (1, 6, 6, 40), sc(0.04, 0.1))
    y = K.Act("y", (1, 6, 6, 20), sc(0.03, 0.09))
    k1 = K.Kernel("conv", "conv3x3", [x], [K.Bias(np.zeros(40, np.float32)),
                                           K.Norm("gn", 2, 1e-5, np.ones(40), np.zeros(40)), K.Activation("silu"),
                                           K.Emit(h)], weights=_weights(rng, (40, 20, 3, 3), 0), dataflow="ws")
    k2 = K.Kernel("mm", "matmul", [h], [K.Emit(y)], weights=_weights(rng, (40, 20), 1))
    kg = K.KernelGraph([k1, k2], [x], [y], n_steps=2, io_names={"x": "sample", "y": "eps"})
    samples = [{"x": rng.normal(0, sd, x.shape)} for sd in (1.0, 4.0)]
    calibrate_absmax(kg, samples)
    b = lower(kg, DEFAULT)
    verify(b)
    inputs = [{"sample": np.moveaxis(s["x"], -1, 1).astype(np.float32)} for s in samples]
    return b, inputs


@pytest.mark.parametrize("backend", ["golden", "fake"])
def test_equals_run_bundle(two_step, backend):
    b, inputs = two_step
    dev = Device.open(b, backend=backend)
    for step in (0, 1, 0):
        want = run_bundle(b, inputs[step], step=step)
        got = dev.step(inputs[step], step)
        assert set(got) == {"eps"}
        assert np.array_equal(got["eps"], want["eps"]), (backend, step)
        assert got["eps"].dtype == np.float32 and got["eps"].shape == (1, 20, 6, 6)
    info = dev.last_run
    assert info.backend == backend and info.step == 0
    assert info.retired == len(b.instrs)
    assert info.cycles == estimate(b).total_cycles          # golden: the model; fake: the model via CSR CYCLES
    dev.close()


def test_rtl_backend_with_a_port_and_irq(two_step):
    b, inputs = two_step
    port = FakeDevice(b.machine, b.dram_size + (1 << 17))
    with Device.open(b, backend="rtl", port=port, irq=True) as dev:
        got = dev.step(inputs[1], 1)
    assert np.array_equal(got["eps"], run_bundle(b, inputs[1], step=1)["eps"])
    assert port.starts == 1 and port.interrupt.waited == 1


def test_split_calls_and_hooks(two_step):
    b, inputs = two_step
    dev = Device.open(b, "golden", trace=True)
    seen = []
    dev.hooks.append(lambda ev, p: seen.append(ev))
    dev.write_inputs(inputs[1])
    info = dev.run(1)
    out = dev.read_outputs()
    assert seen == ["inputs", "run", "outputs"]
    assert info.result.trace and info.result.macs == estimate(b).macs
    assert np.array_equal(out["eps"], run_bundle(b, inputs[1], step=1)["eps"])
    with pytest.raises(SdacError, match="quantized for step 1"):
        dev.run(0)                                  # per-step input scales: re-write the inputs


def test_user_errors(two_step):
    b, inputs = two_step
    with pytest.raises(SdacError, match="unknown backend"):
        Device.open(b, backend="gpu")
    dev = Device.open(b, "golden")
    with pytest.raises(SdacError, match="nothing has run"):
        dev.read_outputs()
    with pytest.raises(SdacError, match="no inputs"):
        dev.run(0)
    with pytest.raises(SdacError, match="missing input"):
        dev.write_inputs({})
    with pytest.raises(SdacError, match="step 2 is outside"):
        dev.step(inputs[0], 2)
    with pytest.raises(SdacError, match="expected shape"):
        dev.write_inputs({"sample": np.zeros((1, 20, 5, 6), np.float32)})
    with pytest.raises(SdacError, match="unknown option"):
        Device.open(b, "rtl", port=FakeDevice(b.machine, 1 << 20), colour="red")
    with pytest.raises(SdacError, match="backend 'fake': unknown option.*colour"):
        Device.open(b, "fake", colour="red")


def test_open_from_path_and_sample(two_step, tmp_path):
    from sdac.bundle import write_bundle
    from sdac.diffusion.ddim import DDIMConfig
    from sdac.diffusion.sample import GoldenUNet, sample_images
    b, _ = two_step
    p = tmp_path / "m.sdab"
    write_bundle(b, p)
    dev = Device.open(p, "fake")
    steps = []
    imgs = dev.sample(DDIMConfig(), n_images=1, steps=2, seed=3, trace=lambda i, t, x, e: steps.append(i))
    assert imgs.shape == (1, 20, 6, 6) and steps == [0, 1]
    # same as the golden sampler of sdac.diffusion (bundles without a timestep input)
    class NoT(GoldenUNet):
        def __call__(self, x, t, step):
            return run_bundle(self.bundle, {"sample": x}, step=step)["eps"]
    want = sample_images(NoT(p), DDIMConfig(), 1, 2, 3, shape=(20, 6, 6))
    assert np.array_equal(imgs, want)
