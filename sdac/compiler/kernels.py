"""Kernels: the contract between the graph passes and the lowering.

The passes turn an ONNX graph into a list of ``Kernel`` objects in execution
order (one per fusion group of the brief); the lowering turns each kernel into
instructions. A kernel reads and writes int8 activation tensors (``Act``) that
live in DRAM between kernels; everything inside a kernel stays on chip.

Float meaning (the reference the lowering is tested against): an ``Act`` holds
``real = int8 * scales[step]``. A kernel computes its main operation in real
numbers on dequantized inputs, then applies its epilogue steps in order; an
``Emit`` step quantizes the current value to an output ``Act`` (round to
nearest, saturate to [-128, 127]) and the value flows on unchanged.

All activation tensors are channels-last: feature maps are (B, H, W, C) and
sequences (B, T, C); a vector (e.g. a time embedding) is (B, C).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ActFn = Literal["silu", "gelu"]


@dataclass(eq=False)
class Act:
    """An int8 activation tensor between kernels, with one scale per denoising step."""

    name: str
    shape: tuple[int, ...]
    scales: np.ndarray  # float32 [n_steps] (n_steps = 1 for static quantization)

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def __repr__(self) -> str:
        return f"Act({self.name!r}, {self.shape})"


@dataclass(eq=False)
class Weights:
    """Quantized weights: values in [-7, 7] (int4 symmetric) with one float scale per output channel.

    conv3x3: q has shape (Cout, Cin, 3, 3); matmul: (K, N). real = q * scale[out_channel].
    """

    q: np.ndarray        # int8 holding int4 values
    scale: np.ndarray    # float32 [out_channels]


# --------------------------------------------------------------- epilogue

@dataclass(eq=False)
class Bias:
    """y += b[c]."""
    b: np.ndarray  # float32 [C]
    absmax: float = 0.0  # |y| after this step over calibration (0 = unknown)


@dataclass(eq=False)
class AddVec:
    """y[b, ..., c] += v[b, c] (e.g. the projected time embedding)."""
    v: Act
    absmax: float = 0.0


@dataclass(eq=False)
class AddTensor:
    """y += r (same shape; residual or shortcut)."""
    r: Act
    absmax: float = 0.0


@dataclass(eq=False)
class Scale:
    """y *= factor (e.g. 1 / output_scale_factor)."""
    factor: float
    absmax: float = 0.0


@dataclass(eq=False)
class Norm:
    """GroupNorm (kind='gn', over H, W and each group of C/groups channels) or LayerNorm ('ln', over C)."""
    kind: Literal["gn", "ln"]
    groups: int
    eps: float
    gamma: np.ndarray  # float32 [C]
    beta: np.ndarray   # float32 [C]
    absmax: float = 0.0
    # optional (frontend, PassContext.requant_inside): the model rounds the normalized value (before
    # gamma) and its product with gamma to int8 with these per-step scales (None = not rounded)
    norm_scales: np.ndarray | None = None
    gamma_scales: np.ndarray | None = None


@dataclass(eq=False)
class Activation:
    """Hard SiLU x*relu6(x+3)/6 or hard GeLU x*relu6(1.702x+3)/6."""
    fn: ActFn
    absmax: float = 0.0


@dataclass(eq=False)
class GeGLU:
    """y = y[..., :C/2] * gelu_hard(y[..., C/2:])."""
    absmax: float = 0.0
    # optional (frontend, PassContext.requant_inside): the model rounds gelu_hard(gate) to int8 with
    # these per-step scales before the product (None = not rounded)
    gate_scales: np.ndarray | None = None


@dataclass(eq=False)
class Emit:
    """Quantize the current value into an output tensor (the value flows on)."""
    out: Act


@dataclass(eq=False)
class Requant:
    """y = fake_quant(y, scales[step]): the model quantizes this intermediate value (a QDQ pair inside
    the fusion group); it is rounded to that int8 grid (round to nearest, saturate) and flows on.

    Optional (added by the frontend): the passes emit it only with PassContext.requant_inside, so
    that the kernel computes exactly what the QDQ model says between its fused operators.
    """
    scales: np.ndarray   # float32 [n_steps]
    tensor: str = ""     # the ONNX tensor the model quantizes here
    absmax: float = 0.0


Epilogue = Bias | AddVec | AddTensor | Scale | Norm | Activation | GeGLU | Emit | Requant


# ---------------------------------------------------------------- kernels

@dataclass(eq=False)
class Kernel:
    """One fusion group.

    kind and main operation (on dequantized inputs):
      conv3x3    inputs [x (B,H,W,Cin)];  y = conv2d(x, W, stride, pad)          -> (B,Ho,Wo,Cout)
      matmul     inputs [x (B,T,K) | (B,H,W,K) | (B,K)];  y = x @ W               -> (..., N)
      attention  inputs [q (B,T,heads*d), k (B,S,heads*d), v (B,S,heads*d)];
                 per head: y = softmax(q k^T * sm_scale) v; the probabilities are
                 quantized to int8 in units of 1/127 before the product   -> (B,T,heads*d)
      norm       inputs [x];  y = x (the epilogue holds the Norm)
      add        inputs [a, b];  y = a + b  (b may be (B,C), broadcast)
      concat     inputs [a, b, ...] along channels;  y = concat
      upsample   inputs [x];  nearest-neighbour 2x in H and W
    The epilogue then runs in order; every kernel ends with an Emit.
    """

    name: str
    kind: Literal["conv3x3", "matmul", "attention", "norm", "add", "concat", "upsample"]
    inputs: list[Act]
    epilogue: list[Epilogue]
    weights: Weights | None = None
    stride: int = 1
    pad: int = 1
    heads: int = 1
    sm_scale: float = 1.0
    dataflow: Literal["os", "ws"] = "os"
    dataflow_reason: str = ""
    sources: tuple[str, ...] = ()      # ONNX node names fused into this kernel
    main_absmax: float = 0.0           # |y| of the main operation over calibration (0 = unknown)
    # attention only, optional (frontend, PassContext.requant_inside): the model quantizes the scores
    # s = q k^T * sm_scale to int8 with these per-step scales before the SoftMax (None = not rounded)
    score_scales: np.ndarray | None = None

    @property
    def outputs(self) -> list[Act]:
        return [e.out for e in self.epilogue if isinstance(e, Emit)]


@dataclass(eq=False)
class KernelGraph:
    """What the passes hand to the lowering."""

    kernels: list[Kernel]
    inputs: list[Act]                 # device inputs (quantized by the host)
    outputs: list[Act]                # device outputs (dequantized by the host)
    n_steps: int = 1
    host_prologue: bytes | None = None    # ONNX model the host runs before each step (e.g. timestep embedding)
    io_names: dict[str, str] = field(default_factory=dict)  # device tensor -> ONNX graph input/output name
