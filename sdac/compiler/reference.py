"""Float reference of a KernelGraph (numpy, float64).

Executes the documented float meaning of every kernel (see kernels.py) with
fake quantization at every Act boundary, so that:
  * the frontend can be checked against onnxruntime on the original model, and
  * the lowering can be checked against the golden model (the bit-exact
    device differs from this only by fixed-point rounding inside kernels).
"""
from __future__ import annotations

import numpy as np

from .kernels import (Act, Activation, AddTensor, AddVec, Bias, Emit, GeGLU, Kernel, KernelGraph, Norm,
                      Requant, Scale)


def fake_quant(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), -128, 127) * scale


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def hard_silu(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_gelu(x: np.ndarray) -> np.ndarray:
    return x * np.clip(1.702 * x + 3.0, 0.0, 6.0) / 6.0


def conv3x3(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x (B,H,W,Cin), w (Cout,Cin,3,3) -> (B,Ho,Wo,Cout)."""
    b, h, wd, cin = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (h + 2 * pad - 3) // stride + 1
    wo = (wd + 2 * pad - 3) // stride + 1
    out = np.zeros((b, ho, wo, w.shape[0]))
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            out += patch @ w[:, :, ky, kx].T
    return out


def group_norm(y: np.ndarray, groups: int, eps: float, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    shp = y.shape
    c = shp[-1]
    yr = y.reshape(shp[0], -1, groups, c // groups)
    mean = yr.mean(axis=(1, 3), keepdims=True)
    var = yr.var(axis=(1, 3), keepdims=True)
    return ((yr - mean) / np.sqrt(var + eps)).reshape(shp) * gamma + beta


def layer_norm(y: np.ndarray, eps: float, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = y.mean(axis=-1, keepdims=True)
    var = y.var(axis=-1, keepdims=True)
    return (y - mean) / np.sqrt(var + eps) * gamma + beta


def _bcast_vec(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """(B, C) -> broadcastable against (B, ..., C)."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 2)), v.shape[-1])


def main_op(k: Kernel, xs: list[np.ndarray], step: int = 0) -> np.ndarray:
    if k.kind == "conv3x3":
        w = k.weights.q.astype(np.float64) * k.weights.scale.astype(np.float64)[:, None, None, None]
        return conv3x3(xs[0], w, k.stride, k.pad)
    if k.kind == "matmul":
        w = k.weights.q.astype(np.float64) * k.weights.scale.astype(np.float64)[None, :]
        return xs[0] @ w
    if k.kind == "attention":
        q, kk, v = xs
        b, t, hd = q.shape
        d = hd // k.heads
        out = np.zeros((b, t, hd))
        for h in range(k.heads):
            sl = slice(h * d, (h + 1) * d)
            s = q[..., sl] @ np.swapaxes(kk[..., sl], -1, -2) * k.sm_scale
            if getattr(k, "score_scales", None) is not None:
                s = fake_quant(s, float(k.score_scales[step]))
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            p = np.clip(np.round(p * 127), 0, 127) / 127
            out[..., sl] = p @ v[..., sl]
        return out
    if k.kind == "norm":
        return xs[0]
    if k.kind == "add":
        a, b = xs
        return a + (_bcast_vec(b, a) if b.ndim == 2 and a.ndim > 2 else _same_rows(b, a))
    if k.kind == "concat":
        return np.concatenate(xs, axis=-1)
    if k.kind == "upsample":
        return xs[0].repeat(2, axis=1).repeat(2, axis=2)
    raise ValueError(f"kernel {k.name}: unknown kind {k.kind}")


def _same_rows(x: np.ndarray, like) -> np.ndarray:
    """x viewed with the shape of ``like`` (an array or an Act) when both are the same rows x channels.

    The device stores every tensor as rows x channels, so (B,H,W,C) and (B,H*W,C) are the same
    data: e.g. a matmul on a feature map emitting a sequence Act, or a residual read as a sequence.
    """
    shape = tuple(like.shape)
    if x.shape == shape or x.size != int(np.prod(shape)) or x.shape[-1] != shape[-1]:
        return x
    return x.reshape(shape)


def run_kernel(k: Kernel, env: dict[str, np.ndarray], step: int, observe=None) -> None:
    """Evaluate one kernel; reads inputs from and writes fake-quantized outputs to env.

    ``observe(stage, value)`` (optional) sees the value after the main operation
    (stage = the kernel) and after every epilogue step: calibration of the
    fixed-point formats uses it.
    """
    def get(a: Act) -> np.ndarray:
        return env[a.name]

    y = main_op(k, [get(a) for a in k.inputs], step)
    if observe:
        observe(k, y)
    for e in k.epilogue:
        if isinstance(e, Bias):
            y = y + e.b.astype(np.float64)
        elif isinstance(e, AddVec):
            y = y + _bcast_vec(get(e.v), y)
        elif isinstance(e, AddTensor):
            y = y + _same_rows(get(e.r), y)
        elif isinstance(e, Scale):
            y = y * e.factor
        elif isinstance(e, Norm):
            g, b = e.gamma.astype(np.float64), e.beta.astype(np.float64)
            if getattr(e, "norm_scales", None) is None:
                y = group_norm(y, e.groups, e.eps, g, b) if e.kind == "gn" else layer_norm(y, e.eps, g, b)
            else:   # the model rounds the normalized value and its product with gamma (requant_inside)
                one, zero = np.ones_like(g), np.zeros_like(b)
                y = group_norm(y, e.groups, e.eps, one, zero) if e.kind == "gn" else layer_norm(y, e.eps, one, zero)
                y = fake_quant(y, float(e.norm_scales[step])) * g
                if getattr(e, "gamma_scales", None) is not None:
                    y = fake_quant(y, float(e.gamma_scales[step]))
                y = y + b
        elif isinstance(e, Activation):
            y = hard_silu(y) if e.fn == "silu" else hard_gelu(y)
        elif isinstance(e, GeGLU):
            c = y.shape[-1] // 2
            gate = hard_gelu(y[..., c:])
            if getattr(e, "gate_scales", None) is not None:
                gate = fake_quant(gate, float(e.gate_scales[step]))
            y = y[..., :c] * gate
        elif isinstance(e, Requant):
            y = fake_quant(y, float(e.scales[step]))
        elif isinstance(e, Emit):
            env[e.out.name] = _same_rows(fake_quant(y, float(e.out.scales[step])), e.out)
        else:
            raise TypeError(f"kernel {k.name}: unknown epilogue step {e!r}")
        if observe:
            observe(e, y)


def run_reference(kg: KernelGraph, inputs: dict[str, np.ndarray], step: int = 0, observe=None) -> dict[str, np.ndarray]:
    """Evaluate the graph; inputs and the returned dict are keyed by Act name (real values).

    The returned dict holds every Act (inputs fake-quantized, all kernel outputs).
    """
    env: dict[str, np.ndarray] = {}
    for a in kg.inputs:
        if a.name not in inputs:
            raise KeyError(f"missing input {a.name}")
        x = np.asarray(inputs[a.name], np.float64)
        if x.shape != tuple(a.shape):
            raise ValueError(f"input {a.name}: shape {x.shape}, expected {a.shape}")
        env[a.name] = fake_quant(x, float(a.scales[step]))
    for k in kg.kernels:
        run_kernel(k, env, step, observe)
    return env


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `ref`, in dB."""
    ref = np.asarray(ref, np.float64)
    noise = np.asarray(test, np.float64) - ref
    p_sig = float(np.mean(ref ** 2))
    p_noise = float(np.mean(noise ** 2))
    if p_noise == 0:
        return float("inf")
    return 10.0 * np.log10(p_sig / p_noise) if p_sig > 0 else float("-inf")
