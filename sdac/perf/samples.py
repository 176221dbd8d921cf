"""Hand-built KernelGraphs shaped like pieces of an SD UNet, for timing the model without an ONNX file.

``unet_slice(hw, ch, ctx, heads)`` is a ResNet block (conv3x3 + GroupNorm + SiLU,
time-embedding add, conv3x3 + residual) followed by a transformer block
(LayerNorm'd projections, self-attention, cross-attention against `ctx`
tokens, GeGLU feed-forward), at one resolution. Weights are random int4;
the magnitudes (absmax) are either calibrated on random inputs (small shapes)
or set to a fixed value (timing does not depend on them).
"""
from __future__ import annotations

import numpy as np

from ..compiler import kernels as K
from ..isa.machine import DEFAULT, Machine


def _act(name, shape, scale=0.05, n_steps=1):
    return K.Act(name, tuple(shape), np.full(n_steps, scale, np.float32))


def _w(rng, shape, out_axis):
    q = rng.integers(-7, 8, size=shape).astype(np.int8)
    n = shape[out_axis]
    return K.Weights(q, (rng.uniform(0.5, 1.5, n) / (7 * np.sqrt(np.prod(shape) / n))).astype(np.float32))


def unet_slice(hw: int = 8, ch: int = 40, ctx: int = 10, ctx_ch: int = 40, heads: int = 2, seed: int = 0,
               dataflow: str = "ws") -> K.KernelGraph:
    rng = np.random.default_rng(seed)
    H = W = hw
    T = H * W
    x = _act("x", (1, H, W, ch))
    temb = _act("temb", (1, ch))
    enc = _act("enc", (1, ctx, ctx_ch))
    ks = []
    h1 = _act("h1", (1, H, W, ch))
    ks.append(K.Kernel("res.conv1", "conv3x3", [x], [
        K.Bias(np.zeros(ch, np.float32)), K.AddVec(temb),
        K.Norm("gn", max(1, ch // 20), 1e-5, np.ones(ch), np.zeros(ch)), K.Activation("silu"), K.Emit(h1)],
        weights=_w(rng, (ch, ch, 3, 3), 0), dataflow=dataflow))
    h2 = _act("h2", (1, H, W, ch))
    ks.append(K.Kernel("res.conv2", "conv3x3", [h1], [K.Bias(np.zeros(ch, np.float32)), K.AddTensor(x), K.Emit(h2)],
                       weights=_w(rng, (ch, ch, 3, 3), 0), dataflow=dataflow))
    # the transformer block reads the same rows as a sequence (a separate graph input keeps shapes simple)
    hs = _act("hs", (1, T, ch))
    seq = _act("seq", (1, T, ch))
    ks.append(K.Kernel("proj_in", "matmul", [hs], [K.Bias(np.zeros(ch, np.float32)),
                                                   K.Norm("ln", 1, 1e-5, np.ones(ch), np.zeros(ch)), K.Emit(seq)],
                       weights=_w(rng, (ch, ch), 1)))
    q, k, v = (_act(n, (1, T, ch)) for n in ("q", "k", "v"))
    for name, out in (("q", q), ("k", k), ("v", v)):
        ks.append(K.Kernel(f"attn1.{name}", "matmul", [seq], [K.Emit(out)], weights=_w(rng, (ch, ch), 1)))
    a1 = _act("a1", (1, T, ch))
    ks.append(K.Kernel("attn1", "attention", [q, k, v], [K.Emit(a1)], heads=heads, sm_scale=1 / np.sqrt(ch // heads)))
    s1 = _act("s1", (1, T, ch))
    ks.append(K.Kernel("attn1.out", "matmul", [a1], [K.Bias(np.zeros(ch, np.float32)), K.AddTensor(seq), K.Emit(s1)],
                       weights=_w(rng, (ch, ch), 1)))
    q2 = _act("q2", (1, T, ch))
    k2, v2 = _act("k2", (1, ctx, ch)), _act("v2", (1, ctx, ch))
    ks.append(K.Kernel("attn2.q", "matmul", [s1], [K.Emit(q2)], weights=_w(rng, (ch, ch), 1)))
    ks.append(K.Kernel("attn2.k", "matmul", [enc], [K.Emit(k2)], weights=_w(rng, (ctx_ch, ch), 1)))
    ks.append(K.Kernel("attn2.v", "matmul", [enc], [K.Emit(v2)], weights=_w(rng, (ctx_ch, ch), 1)))
    a2 = _act("a2", (1, T, ch))
    ks.append(K.Kernel("attn2", "attention", [q2, k2, v2], [K.Emit(a2)], heads=heads,
                       sm_scale=1 / np.sqrt(ch // heads)))
    s2 = _act("s2", (1, T, ch))
    ks.append(K.Kernel("attn2.out", "matmul", [a2], [K.AddTensor(s1), K.Emit(s2)], weights=_w(rng, (ch, ch), 1)))
    g = _act("g", (1, T, 4 * ch))
    ks.append(K.Kernel("ff.geglu", "matmul", [s2], [K.Bias(np.zeros(8 * ch, np.float32)), K.GeGLU(), K.Emit(g)],
                       weights=_w(rng, (ch, 8 * ch), 1)))
    y = _act("y", (1, T, ch))
    ks.append(K.Kernel("ff.out", "matmul", [g], [K.AddTensor(s2), K.Emit(y)], weights=_w(rng, (4 * ch, ch), 1)))
    return K.KernelGraph(ks, [x, temb, hs, enc], [h2, y])


def fix_absmax(kg: K.KernelGraph, value: float = 4.0) -> None:
    """Set every calibrated magnitude to `value` (enough for lowering when only timing matters)."""
    for k in kg.kernels:
        k.main_absmax = k.main_absmax or value
        for e in k.epilogue:
            if hasattr(e, "absmax") and not e.absmax:
                e.absmax = value


def compile_slice(machine: Machine = DEFAULT, *, calibrate: bool = False, **kw):
    """Lower (and verify) a unet_slice into a Bundle."""
    from ..compiler.lower import lower
    from ..compiler.verify import verify
    kg = unet_slice(**kw)
    if calibrate:
        from ..compiler.calibrate import calibrate_absmax
        rng = np.random.default_rng(1)
        calibrate_absmax(kg, [{a.name: rng.normal(0, 1.5, a.shape) for a in kg.inputs}])
    else:
        fix_absmax(kg)
    b = lower(kg, machine)
    verify(b)
    return b
