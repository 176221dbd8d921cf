"""A KernelGraph with the shapes of the SD-v1.5 UNet (random int4 weights), to time the machine on it.

This is a stand-in until the ONNX frontend compiles the real model: the same
layers, channels, resolutions, attention heads and skip connections as
diffusers' UNet2DConditionModel for SD-v1.5 (64x64 latent, 77x768 text
context, batch 1), expressed in sdac's kernel vocabulary:

* ResNet block: GroupNorm+SiLU (norm kernel) -> conv3x3 (+bias, + time
  embedding projection, GroupNorm, SiLU) -> conv3x3 (+bias, + shortcut, a
  1x1 conv when the channels change).
* Transformer block: GroupNorm -> proj_in (LayerNorm fused) -> q, k, v ->
  self-attention -> out (+residual, LayerNorm) -> q; k, v from the context
  -> cross-attention -> out (+residual, LayerNorm) -> GeGLU feed-forward ->
  out (+residual) -> proj_out (+residual).
* Down-sampling: conv3x3 stride 2; up-sampling: nearest 2x then conv3x3;
  skip connections: concat.
The time-embedding MLP runs on the device as two small matmuls (its input,
the sinusoidal embedding, comes from the host). Weight values do not affect
timing; the calibrated magnitudes are fixed (``fix_absmax``).
"""
from __future__ import annotations

import math

import numpy as np

from ..compiler import kernels as K


class _Builder:
    def __init__(self, seed: int, ctx: int, ctx_ch: int, heads: int, random_weights: bool = True):
        self.rng = np.random.default_rng(seed)
        self.random_weights = random_weights
        self.kernels: list[K.Kernel] = []
        self.n = 0
        self.heads = heads
        self.ctx_ch = ctx_ch
        self.enc = self.act("encoder_hidden_states", (1, ctx, ctx_ch))

    def act(self, name, shape):
        self.n += 1
        return K.Act(f"{name}", tuple(int(s) for s in shape), np.full(1, 0.05, np.float32))

    def w(self, shape, out_axis):
        q = self.rng.integers(-7, 8, size=shape, dtype=np.int8) if self.random_weights \
            else np.broadcast_to(np.int8(1), shape)           # no memory: for counting and tests
        n = shape[out_axis]
        return K.Weights(q, np.full(n, 1.0 / (7 * np.sqrt(np.prod(shape) / n)), np.float32))

    def add(self, name, kind, inputs, epilogue, **kw):
        self.kernels.append(K.Kernel(name, kind, inputs, epilogue, **kw))
        return [e.out for e in epilogue if isinstance(e, K.Emit)]

    # ------------------------------------------------------------- layers
    def gn_silu(self, name, x, silu=True):
        c = x.channels
        groups = math.gcd(32, c)         # 32 groups (SD-v1.5); fewer for the scaled-down test copies
        y = self.act(f"{name}.out", x.shape)
        ep = [K.Norm("gn", groups, 1e-5, np.ones(c), np.zeros(c))] + ([K.Activation("silu")] if silu else []) \
            + [K.Emit(y)]
        return self.add(name, "norm", [x], ep)[0]

    def conv(self, name, x, cout, stride=1, epilogue=(), df="ws"):
        B, H, W, C = x.shape
        Ho, Wo = (H + 2 - 3) // stride + 1, (W + 2 - 3) // stride + 1
        y = self.act(f"{name}.out", (B, Ho, Wo, cout))
        ep = [K.Bias(np.zeros(cout, np.float32)), *epilogue, K.Emit(y)]
        return self.add(name, "conv3x3", [x], ep, weights=self.w((cout, C, 3, 3), 0), stride=stride, dataflow=df)[0]

    def linear(self, name, x, n, epilogue=(), bias=True):
        y = self.act(f"{name}.out", (*x.shape[:-1], n))
        ep = ([K.Bias(np.zeros(n, np.float32))] if bias else []) + [*epilogue, K.Emit(y)]
        return self.add(name, "matmul", [x], ep, weights=self.w((x.channels, n), 1))[0]

    def resnet(self, name, x, cout, temb):
        cin = x.channels
        h = self.gn_silu(f"{name}.norm1", x)
        t = self.linear(f"{name}.time_emb_proj", temb, cout)
        h = self.conv(f"{name}.conv1", h, cout, epilogue=[
            K.AddVec(t), K.Norm("gn", math.gcd(32, cout), 1e-5, np.ones(cout), np.zeros(cout)), K.Activation("silu")])
        sc = x if cin == cout else self.linear(f"{name}.conv_shortcut", x, cout)
        return self.conv(f"{name}.conv2", h, cout, epilogue=[K.AddTensor(sc)])

    def transformer(self, name, x):
        B, H, W, C = x.shape
        T = H * W
        heads = self.heads
        ln = lambda: K.Norm("ln", 1, 1e-5, np.ones(C), np.zeros(C))      # noqa: E731
        h = self.gn_silu(f"{name}.norm", x, silu=False)
        seq_in = K.Act(h.name, (B, T, C), h.scales)      # the same rows, read as a sequence
        r0 = self.act(f"{name}.proj_in.out", (B, T, C))
        n1 = self.act(f"{name}.norm1.out", (B, T, C))
        self.add(f"{name}.proj_in", "matmul", [seq_in], [K.Bias(np.zeros(C, np.float32)), K.Emit(r0), ln(),
                                                          K.Emit(n1)], weights=self.w((C, C), 1))
        q, k, v = (self.linear(f"{name}.attn1.to_{p}", n1, C, bias=False) for p in "qkv")
        a = self.act(f"{name}.attn1.out", (B, T, C))
        self.add(f"{name}.attn1", "attention", [q, k, v], [K.Emit(a)], heads=heads,
                 sm_scale=1 / np.sqrt(C // heads))
        r1 = self.act(f"{name}.attn1.res", (B, T, C))
        n2 = self.act(f"{name}.norm2.out", (B, T, C))
        self.add(f"{name}.attn1.to_out", "matmul", [a], [K.Bias(np.zeros(C, np.float32)), K.AddTensor(r0),
                                                          K.Emit(r1), ln(), K.Emit(n2)], weights=self.w((C, C), 1))
        q2 = self.linear(f"{name}.attn2.to_q", n2, C, bias=False)
        k2 = self.linear(f"{name}.attn2.to_k", self.enc, C, bias=False)
        v2 = self.linear(f"{name}.attn2.to_v", self.enc, C, bias=False)
        a2 = self.act(f"{name}.attn2.out", (B, T, C))
        self.add(f"{name}.attn2", "attention", [q2, k2, v2], [K.Emit(a2)], heads=heads,
                 sm_scale=1 / np.sqrt(C // heads))
        r2 = self.act(f"{name}.attn2.res", (B, T, C))
        n3 = self.act(f"{name}.norm3.out", (B, T, C))
        self.add(f"{name}.attn2.to_out", "matmul", [a2], [K.Bias(np.zeros(C, np.float32)), K.AddTensor(r1),
                                                           K.Emit(r2), ln(), K.Emit(n3)], weights=self.w((C, C), 1))
        g = self.act(f"{name}.ff.proj.out", (B, T, 4 * C))       # GeGLU halves the 8C columns
        self.add(f"{name}.ff.proj", "matmul", [n3], [K.Bias(np.zeros(8 * C, np.float32)), K.GeGLU(), K.Emit(g)],
                 weights=self.w((C, 8 * C), 1))
        r3 = self.linear(f"{name}.ff.out", g, C, epilogue=[K.AddTensor(r2)])
        y = self.act(f"{name}.proj_out.out", (B, H, W, C))
        r3_img = K.Act(r3.name, (B, H, W, C), r3.scales)
        self.add(f"{name}.proj_out", "matmul", [r3_img], [K.Bias(np.zeros(C, np.float32)), K.AddTensor(x),
                                                          K.Emit(y)], weights=self.w((C, C), 1))
        return y

    def concat(self, name, a, b):
        y = self.act(f"{name}.out", (*a.shape[:-1], a.channels + b.channels))
        return self.add(name, "concat", [a, b], [K.Emit(y)])[0]

    def upsample(self, name, x):
        B, H, W, C = x.shape
        y = self.act(f"{name}.out", (B, 2 * H, 2 * W, C))
        return self.add(name, "upsample", [x], [K.Emit(y)])[0]


def sd15_kernel_graph(latent: int = 64, ctx: int = 77, ctx_ch: int = 768, heads: int = 8, seed: int = 0,
                      channels: tuple[int, ...] = (320, 640, 1280, 1280), random_weights: bool = True) -> K.KernelGraph:
    b = _Builder(seed, ctx, ctx_ch, heads, random_weights)
    c0 = channels[0]
    sample = b.act("sample", (1, latent, latent, 4))
    t_sin = b.act("time_proj", (1, c0))
    temb = b.linear("time_embedding.linear_1", t_sin, 4 * c0, epilogue=[K.Activation("silu")])
    temb = b.linear("time_embedding.linear_2", temb, 4 * c0, epilogue=[K.Activation("silu")])
    h = b.conv("conv_in", sample, c0)
    skips = [h]
    attn_levels = len(channels) - 1
    for i, c in enumerate(channels):                             # down
        for j in range(2):
            h = b.resnet(f"down{i}.res{j}", h, c, temb)
            if i < attn_levels:
                h = b.transformer(f"down{i}.attn{j}", h)
            skips.append(h)
        if i < len(channels) - 1:
            h = b.conv(f"down{i}.downsample", h, c, stride=2)
            skips.append(h)
    h = b.resnet("mid.res0", h, channels[-1], temb)              # mid
    h = b.transformer("mid.attn", h)
    h = b.resnet("mid.res1", h, channels[-1], temb)
    for i, c in enumerate(reversed(channels)):                   # up
        level = len(channels) - 1 - i
        for j in range(3):
            h = b.concat(f"up{i}.cat{j}", h, skips.pop())
            h = b.resnet(f"up{i}.res{j}", h, c, temb)
            if level < attn_levels:
                h = b.transformer(f"up{i}.attn{j}", h)
        if level > 0:
            h = b.upsample(f"up{i}.upsample", h)
            h = b.conv(f"up{i}.upsample.conv", h, c)
    h = b.gn_silu("conv_norm_out", h)
    out = b.conv("conv_out", h, 4)
    kg = K.KernelGraph(b.kernels, [sample, t_sin, b.enc], [out],
                       io_names={out.name: "out_sample"})
    return kg


def kernel_macs(k: K.Kernel) -> int:
    """Multiply-accumulates of a kernel's main operation (as the ISA counts them)."""
    if k.kind == "conv3x3":
        B, H, W, C = k.inputs[0].shape
        Ho, Wo = (H + 2 * k.pad - 3) // k.stride + 1, (W + 2 * k.pad - 3) // k.stride + 1
        return B * Ho * Wo * k.weights.q.shape[0] * 9 * C
    if k.kind == "matmul":
        x = k.inputs[0]
        return int(np.prod(x.shape[:-1])) * x.channels * k.weights.q.shape[1]
    if k.kind == "attention":
        q, kk, _ = k.inputs
        B, T, C = q.shape
        return 2 * B * T * kk.shape[1] * C
    return 0
