"""The DDIM sampling loop with a pluggable UNet.

A UNet function is called once per denoising step as ``unet(x, t, step)`` with ``x`` float32
(B, C, H, W), ``t`` the integer timestep and ``step`` the step index i (0 = first, noisiest),
which selects the per-step activation scale bank on the device. Backends:
  * ``OrtUNet``: onnxruntime on an ONNX model (float, or QDQ = static scales);
    with a per-step table it runs one session per step with that step's scales (simulated per-step);
  * ``GoldenUNet``: a compiled .sdab bundle on the golden model (``sdac.runtime.golden.run_bundle``).
Classifier-free guidance: a conditional UNet is called with batch 2 ([unconditional, conditional])
per image and eps = eps_u + g * (eps_c - eps_u).
The scheduler math is float on the host (sdac.diffusion.ddim), as on the board.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import SdacError
from .ddim import DDIM, DDIMConfig
from .png import write_png


class UNetFn(Protocol):
    def __call__(self, x: np.ndarray, t: int, step: int) -> np.ndarray: ...


def _np_dtype(ort_type: str):
    return {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
            "tensor(double)": np.float64, "tensor(float16)": np.float16}.get(ort_type, np.float32)


class OrtUNet:
    """onnxruntime on an ONNX UNet with inputs ``sample`` and ``timestep`` (plus optional conditioning).

    The model may have a fixed batch (1, or 2 for guidance); larger batches are split.
    ``extra`` holds the other inputs (e.g. class labels / text embeddings for a conditional model),
    already batched like the model's batch. ``step_models``: optional list of ONNX models (bytes or
    paths), one per step, used instead of ``model`` at step i (per-step scale simulation).
    """

    def __init__(self, model: str | Path | bytes, extra: dict[str, np.ndarray] | None = None,
                 step_models: list | None = None, external_data_dir: str | None = None,
                 priority_order: bool = False):
        import onnxruntime as ort
        self._ort = ort
        self.external_data_dir = external_data_dir   # where a model given as bytes keeps its external data
        self.priority_order = priority_order         # run nodes in graph order (calibration probes early)
        self.path = model if not isinstance(model, bytes) else "<bytes>"
        self.sess = self._session(model)
        ins = {i.name: i for i in self.sess.get_inputs()}
        for need in ("sample", "timestep"):
            if need not in ins:
                raise SdacError(f"{self.path}: model has no input named {need!r} (inputs: {', '.join(ins)})")
        self.extra = dict(extra or {})
        missing = [n for n in ins if n not in ("sample", "timestep") and n not in self.extra]
        if missing:
            raise SdacError(f"{self.path}: conditional model needs inputs {', '.join(missing)} "
                            "(pass them with --cond FILE.npz)")
        self.batch = ins["sample"].shape[0] if isinstance(ins["sample"].shape[0], int) else None
        self.t_shape = tuple(d if isinstance(d, int) else 1 for d in ins["timestep"].shape)
        self.t_dtype = _np_dtype(ins["timestep"].type)
        # the types the model declares (a float16 export takes float16): the sampler's float32 state is cast
        # on the way in and the output back to float32
        self.x_dtype = _np_dtype(ins["sample"].type)
        self.extra = {k: np.asarray(v, _np_dtype(ins[k].type)) if k in ins and np.asarray(v).dtype.kind == "f"
                      else v for k, v in self.extra.items()}
        self.output = self.sess.get_outputs()[0].name
        self.step_sessions = [self._session(m) for m in step_models] if step_models else None
        self.conditional = bool(self.extra)

    def _session(self, model):
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if self.priority_order:
            so.execution_order = self._ort.ExecutionOrder.PRIORITY_BASED
        if self.external_data_dir and isinstance(model, bytes):
            so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                        self.external_data_dir)
        src = model if isinstance(model, bytes) else str(model)
        return self._ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray, t: int, step: int) -> np.ndarray:
        sess = self.sess
        if self.step_sessions is not None:
            if not 0 <= step < len(self.step_sessions):
                raise SdacError(f"{self.path}: step {step} outside the per-step table ({len(self.step_sessions)} steps)")
            sess = self.step_sessions[step]
        b = self.batch or x.shape[0]
        outs = []
        for s in range(0, x.shape[0], b):
            feed = {"sample": np.ascontiguousarray(x[s:s + b], self.x_dtype),
                    "timestep": np.full(self.t_shape, t, self.t_dtype)}
            feed.update(self.extra)
            outs.append(sess.run([self.output], feed)[0])
        return np.concatenate(outs).astype(np.float32)


class GoldenUNet:
    """A compiled bundle on the golden model, one image (or guidance pair) per call of run_bundle.

    ``extra``: the other inputs of a conditional model (by ONNX name, batched like the bundle).
    """

    def __init__(self, bundle_path: str | Path, extra: dict[str, np.ndarray] | None = None):
        from ..bundle import read_bundle
        from ..runtime.golden import expected_inputs
        self.path = Path(bundle_path)
        self.bundle = read_bundle(self.path)
        names = [io.name for io in self.bundle.inputs]
        if "sample" not in names:
            raise SdacError(f"{self.path}: bundle has no input named 'sample' (inputs: {', '.join(names)})")
        self.sample_io = next(io for io in self.bundle.inputs if io.name == "sample")
        self.batch = self.sample_io.shape[0]
        if not self.bundle.outputs:
            raise SdacError(f"{self.path}: bundle has no outputs")
        self.output = self.bundle.outputs[0].name
        self.n_steps = self.bundle.n_steps
        self.wants = set(expected_inputs(self.bundle))
        self.extra = {k: v for k, v in (extra or {}).items() if k in self.wants}
        missing = sorted(self.wants - {"sample", "timestep"} - set(self.extra))
        if missing:
            raise SdacError(f"{self.path}: conditional model needs inputs {', '.join(missing)} "
                            "(pass them with --cond FILE.npz)")
        self.conditional = bool(self.extra)

    def __call__(self, x: np.ndarray, t: int, step: int) -> np.ndarray:
        from ..runtime.golden import run_bundle
        if not 0 <= step < self.n_steps:
            raise SdacError(f"{self.path}: step {step} but the bundle has scales for {self.n_steps} steps")
        outs = []
        for s in range(0, x.shape[0], self.batch):
            feed = {"sample": np.ascontiguousarray(x[s:s + self.batch], np.float32), **self.extra}
            if "timestep" in self.wants:
                feed["timestep"] = np.full((1,), t, np.float32)
            res = run_bundle(self.bundle, feed, step=step)
            outs.append(np.asarray(res[self.output], np.float32))
        return np.concatenate(outs)


def guided(unet: UNetFn, guidance: float) -> UNetFn:
    """Classifier-free guidance: each image runs as a batch of 2 (row 0 unconditional, row 1 conditional)."""
    def fn(x: np.ndarray, t: int, step: int) -> np.ndarray:
        out = []
        for k in range(x.shape[0]):
            pair = np.concatenate([x[k:k + 1], x[k:k + 1]])
            e = unet(pair, t, step)
            out.append(e[0:1] + guidance * (e[1:2] - e[0:1]))
        return np.concatenate(out)
    return fn


def sample_images(unet: UNetFn, scheduler: DDIMConfig | dict, n_images: int, steps: int, seed: int,
                  eta: float = 0.0, shape: tuple[int, int, int] = (1, 8, 8), guidance: float | None = None,
                  progress: bool | Callable[[int, int], None] = False,
                  timesteps: list[int] | None = None, trace: Callable | None = None) -> np.ndarray:
    """Run DDIM from seeded Gaussian noise; returns float32 (n, C, H, W) (pixels ~[-1, 1]).

    Noise: x_T = rng.standard_normal((n, *shape)) with rng = np.random.default_rng(seed); for eta > 0
    each step draws its noise from the same rng. ``timesteps``: if given, must equal the scheduler's
    (e.g. the ones a per-step table was calibrated for). ``trace(i, t, x, eps)`` is called every step.
    """
    cfg = scheduler if isinstance(scheduler, DDIMConfig) else DDIMConfig.from_dict(scheduler)
    sched = DDIM(cfg)
    ts = sched.set_timesteps(steps)
    if timesteps is not None and [int(v) for v in timesteps] != [int(v) for v in ts]:
        raise SdacError(f"the model was calibrated for timesteps {list(timesteps)}, but DDIM with {steps} steps "
                        f"gives {ts.tolist()} (use --steps {len(timesteps)} and the same scheduler)")
    fn = guided(unet, guidance) if guidance is not None else unet
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, *shape)).astype(np.float32)

    report = progress_bar(f"DDIM {steps} steps x {n_images} images", steps) if progress is True else None
    try:
        for i, t in enumerate(ts):
            eps = fn(x, int(t), i)
            if trace is not None:
                trace(i, int(t), x, eps)
            x, _ = sched.step(eps, int(t), x, eta=eta, generator=rng)
            if report is not None:
                report(i + 1)
            elif callable(progress):
                progress(i + 1, steps)
    finally:
        if report is not None:
            report(None)
    return x


def progress_bar(what: str, total: int) -> Callable[[int | None], None]:
    """A progress reporter: rich if installed, else one updating line on stderr. Call with None to end."""
    import sys
    try:
        from rich.progress import Progress
    except ImportError:
        def plain(done):
            if done is None:
                print(file=sys.stderr)
            else:
                print(f"\r{what}: {done}/{total}", end="", file=sys.stderr, flush=True)
        return plain
    bar = Progress(transient=True)
    task = bar.add_task(what, total=total)
    bar.start()

    def fancy(done):
        if done is None:
            bar.stop()
        else:
            bar.update(task, completed=done)
    return fancy


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pictures of samples (n, C, H, W): C = 1 or 3, pixels in [-1, 1] -> uint8 (n, H, W) or (n, H, W, 3).
    Other C (latents: 4 for Stable Diffusion, decoded by a VAE elsewhere) -> (n, H, C*W): each channel as a
    grayscale tile over its own range, side by side."""
    x = np.asarray(images)
    n, c, h, w = x.shape
    if c in (1, 3):
        u = np.clip((x + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
        return u[:, 0] if c == 1 else u.transpose(0, 2, 3, 1)
    x = x.astype(np.float64)
    lo, hi = x.min(axis=(2, 3), keepdims=True), x.max(axis=(2, 3), keepdims=True)
    u = ((x - lo) / np.maximum(hi - lo, 1e-12) * 255.0).round().astype(np.uint8)
    return u.transpose(0, 2, 1, 3).reshape(n, h, c * w)


def save_grid(images: np.ndarray, path: str | Path, zoom: int = 8, cols: int | None = None) -> Path:
    """Write an image grid (nearest-neighbour zoom, 1-pixel dark gaps) as PNG."""
    u8 = to_uint8(images)
    n = len(u8)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = u8.shape[1] * zoom, u8.shape[2] * zoom
    gap = max(1, zoom // 4)
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, *u8.shape[3:]), 40, np.uint8)
    for k, im in enumerate(u8):
        r, c = divmod(k, cols)
        big = im.repeat(zoom, 0).repeat(zoom, 1)
        canvas[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = big
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, canvas)
    return path


def save_images(images: np.ndarray, out_dir: str | Path, zoom: int = 8) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, im in enumerate(to_uint8(images)):
        p = out / f"sample_{k:03d}.png"
        write_png(p, im.repeat(zoom, 0).repeat(zoom, 1))
        paths.append(p)
    return paths


def load_model_info(model_path: str | Path) -> dict:
    """The sidecar JSON of an ONNX model (X.json next to X.onnx, or next to X.qdq.onnx's base), if any."""
    p = Path(model_path)
    for cand in (p.with_suffix(".json"), p.with_name(p.name.split(".")[0] + ".json")):
        if cand.exists() and cand != p:
            from ..files import read_json_object
            return read_json_object(cand, "model description (sidecar JSON)")
    return {}
