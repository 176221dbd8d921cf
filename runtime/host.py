"""Host side of a device tensor: float host arrays <-> int8 lines in device DRAM.

The device layout (docs/ARCHITECTURE.md, "Data layout"): a tensor is a rows x
cols int8 matrix, each row ceil(cols/L) lines of L bytes, padding lanes zero.
NCHW host tensors become NHWC rows; "rows" tensors are reshaped to (-1, C).
Quantization: q = clip(np.round(x / scale), -128, 127) with the scale of the
denoising step.
"""
from __future__ import annotations

import numpy as np

from ..errors import SdacError


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def step_scale(io, step: int) -> float:
    """The quantization scale of ``io`` at denoising step ``step`` (one scale serves every step)."""
    scales = tuple(io.scales)
    if not scales:
        raise SdacError(f"tensor {io.name!r} has no quantization scale")
    if len(scales) == 1:
        return float(scales[0])
    if not 0 <= step < len(scales):
        raise SdacError(f"tensor {io.name!r}: step {step} is outside 0..{len(scales) - 1}")
    return float(scales[step])


def _host_to_rows(io, x: np.ndarray) -> np.ndarray:
    if tuple(x.shape) != tuple(io.shape):
        raise SdacError(f"input {io.name!r}: expected shape {tuple(io.shape)}, got {tuple(x.shape)}")
    if io.layout == "nchw":
        if x.ndim < 2:
            raise SdacError(f"tensor {io.name!r}: layout nchw needs at least 2 dimensions, got {tuple(x.shape)}")
        x = np.moveaxis(x, 1, -1)           # channels last: NCHW -> NHWC (any number of spatial dims)
    elif io.layout != "rows":
        raise SdacError(f"tensor {io.name!r}: unknown layout {io.layout!r}")
    m = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if m.shape != (io.rows, io.cols):
        raise SdacError(f"tensor {io.name!r}: host shape {tuple(io.shape)} ({io.layout}) gives "
                        f"{m.shape[0]} x {m.shape[1]}, the device tensor is {io.rows} x {io.cols}")
    return m


def _rows_to_host(io, m: np.ndarray) -> np.ndarray:
    shape = tuple(io.shape)
    if io.layout == "nchw":
        return np.moveaxis(m.reshape(shape[0], *shape[2:], shape[1]), -1, 1)
    return m.reshape(shape)


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) / scale), -128, 127).astype(np.int8)


def to_device(io, x: np.ndarray, step: int, lanes: int) -> bytes:
    """Float host tensor -> the int8 lines the device reads (rows * ceil(cols/L) * L bytes)."""
    m = _host_to_rows(io, np.asarray(x))
    if not np.isfinite(m).all():
        raise SdacError(f"input {io.name!r}: contains NaN or infinity")
    q = quantize(m, step_scale(io, step))
    lines = np.zeros((io.rows, _cdiv(io.cols, lanes) * lanes), dtype=np.int8)
    lines[:, :io.cols] = q
    return lines.tobytes()


def from_device(io, raw, step: int, lanes: int) -> np.ndarray:
    """Int8 lines read from device DRAM -> float host tensor (dequantized with the step's scale)."""
    width = _cdiv(io.cols, lanes) * lanes
    need = io.rows * width
    a = np.frombuffer(raw, dtype=np.int8) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.asarray(raw).reshape(-1).view(np.int8)
    if a.size < need:
        raise SdacError(f"tensor {io.name!r}: {a.size} bytes given, {need} needed")
    m = a[:need].reshape(io.rows, width)[:, :io.cols].astype(np.float32) * np.float32(step_scale(io, step))
    return np.ascontiguousarray(_rows_to_host(io, m)).astype(io.dtype or "float32", copy=False)
