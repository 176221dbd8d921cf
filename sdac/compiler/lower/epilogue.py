"""Planning a kernel's epilogue as SFU operations in fixed point.

The main operation leaves a tile in ``acc`` (int32 products with a real scale
per column and step) or reads an int8 tensor from ``act``. The epilogue steps
of kernels.py become a short list of SFU operations, each with its prm
entries and fixed-point formats; the same plan is then emitted for every tile.

Formats: the value before the first Norm / GeGLU / Activation is held with
F fractional bits chosen from the largest calibrated magnitude of that
segment; a Norm produces a new format FO; everything is int16. Two
exceptions follow the step's own scales instead of the largest step's range
(docs/numerics.md): a value on its way to an int8 rounding (a Requant or the
final Emit, after at most a bias and one add) is held in units of 1/256 of
that grid's step (1/2**g after an add, g <= 8 from the int8 input's range;
``_grid``), and an int8 tensor going straight into a Norm
is held exactly, as q * 256, with eps scaled per step.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ...errors import CompileError
from ..kernels import Act, Activation, AddTensor, AddVec, Bias, Emit, GeGLU, Kernel, Norm, Requant, Scale
from .fixed import frac_bits, scale_entries, scale_entry, to_int32
from .params import PrmImage, PrmRef

GAMMA_FRAC = 16
ONE = scale_entry(1.0)
GRID = 256          # a value about to be rounded to an int8 grid is held in units of 1/GRID of its step


@dataclass
class StatSpec:
    mode: str           # row | chan
    gsize: int
    clear_each_tile: bool


@dataclass
class SfuOp:
    kind: str                       # deq | add | act | norm | geglu | deqact (parts: the deq and the act)
    frac: int = 0                   # fractional bits of the op's input (act/norm/geglu) or output (deq)
    sc: PrmRef | None = None        # scale entry (word) or per-column vector (deq per_ch)
    per_ch: bool = False
    bias: PrmRef | None = None
    src_act: bool = False           # deq/act reading int8 from act (the kernel input)
    operand: Act | None = None      # add: the second operand (int8 tensor)
    vec: bool = False               # add: operand is one row per batch (broadcast)
    fn: str = "none"
    out_act: Act | None = None      # writes int8 into this output's tile (else acc int16 in place)
    on_chip: bool = False           # out_act is a temporary that never goes to DRAM (a Requant)
    src_tmp: Act | None = None      # deq reading a temporary int8 tile written by an earlier op
    st: StatSpec | None = None      # accumulate statistics of the result (the op before a norm)
    group: StatSpec | None = None   # norm: which statistics registers it reads
    nd: PrmRef | None = None        # norm descriptor, gamma, beta
    gamma: PrmRef | None = None
    beta: PrmRef | None = None
    cols_out: int = 0               # geglu: output columns (half the input)
    parts: tuple = ()               # deqact: (deq, act), its fields the act's but for the deq's source


@dataclass
class EpiloguePlan:
    ops: list[SfuOp]
    split: int          # ops[:split] run per tile before the statistics are complete, ops[split:] after
    gn: bool            # GroupNorm: statistics over the whole image (possibly a second pass)
    stat_groups: int    # registers used
    out_cols: int       # columns of the value at the end (GeGLU halves it)


def _absmax(k: Kernel, steps: list, i: int) -> float:
    """Calibrated magnitude after step i (-1: the main op); fall back on the next Emit's range."""
    v = k.main_absmax if i < 0 else getattr(steps[i], "absmax", 0.0)
    if v:
        return float(v)
    for e in steps[i + 1:]:
        if isinstance(e, Emit):
            return float(np.max(e.out.scales)) * 127.0
    return 8.0


def _grid(steps: list, j: int, n_steps: int, s_in: np.ndarray | None = None) -> np.ndarray | None:
    """The int16 unit (real value of one step, per denoising step) in which the SFU holds the value from
    here until it is rounded to an int8 grid, or None for the static format (2**-F).

    When steps[j:] is [Bias] [Add] then a Requant or the final Emit, the value is held in units of
    1/2**g of that grid's step: 1/256 (127 * 256 fits int16 and saturates where the int8 does) when
    nothing else is held on the way, else (s_in: the int8 tensor the value starts as, before an Add)
    as fine as that tensor allows in int16 at every step. Each step then gets the finest format its own
    scales allow, instead of one format fixed by the largest step's range.
    """
    if j < len(steps) and isinstance(steps[j], Bias):
        j += 1
    add = s_in is not None and j < len(steps) and isinstance(steps[j], (AddVec, AddTensor))
    if add:
        j += 1
    if j < len(steps) and isinstance(steps[j], Requant):
        s = np.broadcast_to(np.asarray(steps[j].scales, np.float64), (n_steps,))
    elif j == len(steps) - 1 and isinstance(steps[j], Emit):
        s = np.broadcast_to(np.asarray(steps[j].out.scales, np.float64), (n_steps,))
    else:
        return None
    g = 8
    if add:     # the int8 input, held alone first, must fit int16
        g = min(g, math.floor(math.log2(32767.0 * float(np.min(s / s_in)) / 128.0)))
        if g < 4:
            return None
    return s / 2.0 ** g


def _units(grid: np.ndarray | None, F: int):
    """Real -> int16 units: 2**F (static format) or 1 / grid[step] (per step, a column vector)."""
    return 2.0 ** F if grid is None else (1.0 / grid)[:, None]


def _bias(k: Kernel, prm: PrmImage, b: np.ndarray, grid: np.ndarray | None, F: int):
    if grid is None:
        return prm.vector(to_int32(b, F, f"kernel {k.name} bias"))
    return prm.vector(to_int32(b[None, :] * _units(grid, F), 0, f"kernel {k.name} bias"))


def plan_epilogue(k: Kernel, prm: PrmImage, main: str, main_scale: np.ndarray | None,
                  cols: int, image_rows: int, in_act: Act | None = None) -> EpiloguePlan:
    """Plan the epilogue of kernel k.

    main: 'acc32' (int32 tile, real = v * main_scale[step, col] or [step]) or
    'act8' (the int8 input in_act); image_rows: rows of one batch element
    (the extent of a GroupNorm).
    """
    steps = list(k.epilogue)
    if not steps or not isinstance(steps[-1], Emit):
        raise CompileError(f"kernel {k.name}: the epilogue must end with an Emit")
    ops: list[SfuOp] = []
    # Format of the first segment: up to the first Norm / GeGLU / Activation.
    seg_end = next((i for i, e in enumerate(steps) if isinstance(e, (Norm, GeGLU, Activation))), len(steps))
    mags = [_absmax(k, steps, -1)] + [_absmax(k, steps, i) for i in range(seg_end) if not isinstance(steps[i], Emit)]
    F = frac_bits(max(mags))
    i = 0
    n_steps = prm.n_steps
    # grid: the real value of one int16 unit per step until the next rounding to int8 (None: 2**-F);
    # norm_grid: the value entering a Norm is an int8 tensor with these scales, held exactly as q * GRID
    grid = norm_grid = None
    # 1. into the int16 domain
    if main == "acc32":
        ms = np.asarray(main_scale, np.float64)
        grid = _grid(steps, 0, n_steps)
        bias = None
        if steps and isinstance(steps[0], Bias):
            b = steps[0].b.astype(np.float64)
            if b.shape != (cols,):
                raise CompileError(f"kernel {k.name}: bias has {b.shape[0]} values for {cols} columns")
            bias = _bias(k, prm, b, grid, F)
            i = 1
        if grid is None:
            ms = ms * 2.0 ** F
        elif ms.ndim == 2:
            ms = np.broadcast_to(ms, (n_steps, ms.shape[1])) * _units(grid, F)
        else:
            ms = np.broadcast_to(ms.reshape(-1), (n_steps,)) / grid
        if ms.ndim == 2:
            sc = prm.vector(scale_entries(ms, f"kernel {k.name} dequantize"))
            ops.append(SfuOp("deq", frac=F, sc=sc, per_ch=True, bias=bias))
        else:
            sc = prm.word(scale_entries(ms, f"kernel {k.name} dequantize"))
            ops.append(SfuOp("deq", frac=F, sc=sc, bias=bias))
    elif isinstance(steps[0], Norm):
        # an int8 tensor straight into a normalization: held exactly, as q * GRID (eps follows the step)
        norm_grid = np.broadcast_to(np.asarray(in_act.scales, np.float64), (n_steps,))
        ops.append(SfuOp("deq", frac=F, sc=prm.word(scale_entry(GRID)), src_act=True))
    else:
        sc = prm.word(scale_entries(np.asarray(in_act.scales, np.float64) * 2.0 ** F, f"kernel {k.name} dequantize"))
        ops.append(SfuOp("deq", frac=F, sc=sc, src_act=True))
    split = None
    gn = False
    stat_groups = 0
    out_cols = cols
    while i < len(steps):
        e = steps[i]
        if isinstance(e, Bias):
            # the dequantize that produced the current value adds it (e.g. after a Requant)
            if ops[-1].kind != "deq" or ops[-1].bias is not None or ops[-1].st is not None:
                raise CompileError(f"kernel {k.name}: a bias must follow the main operation or a requantization")
            b = e.b.astype(np.float64)
            if b.shape != (out_cols,):
                raise CompileError(f"kernel {k.name}: bias has {b.shape[0]} values for {out_cols} columns")
            ops[-1].bias = _bias(k, prm, b, grid, F)
        elif isinstance(e, (AddVec, AddTensor)):
            a = e.v if isinstance(e, AddVec) else e.r
            sa = np.broadcast_to(np.asarray(a.scales, np.float64), (n_steps,))
            sc = prm.word(scale_entries(sa * np.ravel(_units(grid, F)), f"kernel {k.name} add"))
            ops.append(SfuOp("add", frac=F, sc=sc, operand=a, vec=isinstance(e, AddVec)))
        elif isinstance(e, Scale):
            ops.append(SfuOp("act", frac=F, sc=prm.word(scale_entry(e.factor, f"kernel {k.name} scale"))))
        elif isinstance(e, Emit):
            ops.append(_emit(k, prm, F, e.out, grid))
        elif isinstance(e, Requant):
            # round to the model's int8 grid (an on-chip int8 tile) and bring it back at the same format;
            # when the kernel also stores that very value (an Emit of the same tensor next), the stored
            # tile is the rounding and the value comes back from it (one SFU pass fewer)
            nxt = steps[i + 1] if i + 2 < len(steps) else None
            stored = isinstance(nxt, Emit) and nxt.out.name == e.tensor and \
                np.array_equal(np.asarray(nxt.out.scales, np.float32), np.asarray(e.scales, np.float32))
            tmp = nxt.out if stored else Act(f"{k.name}/requant{i}", (1, out_cols), np.asarray(e.scales, np.float32))
            rq = _emit(k, prm, F, tmp, grid)
            rq.on_chip = not stored
            ops.append(rq)
            if stored:
                i += 1                      # the Emit is done
            r = np.broadcast_to(np.asarray(e.scales, np.float64), (n_steps,))
            grid = _grid(steps, i + 1, n_steps, s_in=r)
            if i + 1 < len(steps) and isinstance(steps[i + 1], Norm):
                norm_grid, sc = r, prm.word(scale_entry(GRID))
            else:
                sc = prm.word(scale_entries(r * np.ravel(_units(grid, F)), f"kernel {k.name} requant"))
            ops.append(SfuOp("deq", frac=F, sc=sc, src_act=True, src_tmp=tmp))
        elif isinstance(e, Activation):
            if ops and ops[-1].out_act is None and ops[-1].kind == "norm" and ops[-1].fn == "none":
                ops[-1].fn = e.fn            # fused into the norm instruction
            else:
                ops.append(SfuOp("act", frac=F, sc=prm.word(ONE), fn=e.fn))
        elif isinstance(e, GeGLU):
            if out_cols % 2:
                raise CompileError(f"kernel {k.name}: GeGLU needs an even number of columns, got {out_cols}")
            out_cols //= 2
            if out_cols % prm.lanes:
                raise CompileError(f"kernel {k.name}: GeGLU halves of {out_cols} columns are not a multiple of "
                                   f"the {prm.lanes} lanes")
            Fn = frac_bits(_absmax(k, steps, i))
            sc = prm.word(scale_entry(2.0 ** (Fn - F)))
            ops.append(SfuOp("geglu", frac=F, sc=sc, cols_out=out_cols))
            F = Fn
        elif isinstance(e, Norm):
            if split is not None:
                raise CompileError(f"kernel {k.name}: only one normalization per kernel is supported")
            prev = ops[-1]
            while prev.out_act is not None:        # statistics come from the last op writing the int16 value
                prev = ops[ops.index(prev) - 1]
            if prev.kind not in ("deq", "add", "act"):
                raise CompileError(f"kernel {k.name}: normalization must follow a dequantize, add or scale step")
            if e.kind == "gn":
                if out_cols % e.groups:
                    raise CompileError(f"kernel {k.name}: {out_cols} channels do not split into {e.groups} groups")
                prev.st = StatSpec("chan", out_cols // e.groups, False)
                gn, stat_groups = True, e.groups
            else:
                prev.st = StatSpec("row", 1, True)
            split = len(ops)
            # output format: the norm's range, or the activation after it
            mag = _absmax(k, steps, i)
            if i + 1 < len(steps) and isinstance(steps[i + 1], Activation):
                mag = max(mag, _absmax(k, steps, i + 1))
            FO = frac_bits(mag)
            g = to_int32(e.gamma.astype(np.float64), GAMMA_FRAC, f"kernel {k.name} gamma")
            b = to_int32(e.beta.astype(np.float64), FO, f"kernel {k.name} beta")
            if norm_grid is not None and prev is ops[-1]:
                eps = np.minimum(np.round(e.eps * (GRID / norm_grid) ** 2), 0xFFFFFFFF).astype(np.int64)
            else:
                eps = min(int(round(e.eps * 2.0 ** (2 * F))), 0xFFFFFFFF)
            n = image_rows * (out_cols // e.groups) if e.kind == "gn" else out_cols
            inv_n = min(int(round(2.0 ** 32 / n)), 0xFFFFFFFF)
            if getattr(e, "norm_scales", None) is not None:
                grid = _grid(steps, i + 1, n_steps)
                ops.extend(_rounded_norm(k, prm, e, i, prev.st, out_cols, inv_n, eps, FO, grid))
            else:
                ops.append(SfuOp("norm", frac=FO, sc=prm.word(ONE), nd=_descriptor(prm, inv_n, eps, FO),
                                 gamma=prm.vector(g), beta=prm.vector(b), group=prev.st))
            F = FO
        else:
            raise CompileError(f"kernel {k.name}: unsupported epilogue step {type(e).__name__}")
        i += 1
    # Fold an Emit into the op before it when nothing else needs the int16 value.
    folded: list[SfuOp] = []
    for j, op in enumerate(ops):
        # (only ops whose own scale entry is 1: a norm, or an activation function)
        if (op.kind == "act" and op.fn == "none" and op.out_act is not None and folded
                and (folded[-1].kind == "norm" or (folded[-1].kind == "act" and folded[-1].fn != "none"))
                and folded[-1].out_act is None and j == len(ops) - 1):
            prev = folded[-1]
            prev.out_act, prev.sc = op.out_act, op.sc
            continue
        folded.append(op)
    split = min(split, len(folded)) if split is not None else len(folded)
    if not any(op.kind == "geglu" for op in folded):     # (GeGLU projections sequence their own ops)
        folded, split = fuse_deq_act(folded, split)
    return EpiloguePlan(folded, split, gn, stat_groups, out_cols)


def _reads_value(op: SfuOp) -> bool:
    """Does op read the int16 value held at the tile's acc lines?"""
    return not (op.kind in ("deq", "deqact") and op.src_act)


def _writes_value(op: SfuOp) -> bool:
    """Does op (re)write the value held at the tile's acc lines?"""
    return op.kind in ("deq", "add") or op.out_act is None


def fuse_deq_act(ops: list[SfuOp], split: int) -> tuple[list[SfuOp], int]:
    """Each deq followed by an act that reads its value becomes one deqact (one SFU pass, one instruction)
    where the deq's int16 value is not needed afterwards: the act writes its result back in place, or no
    later op reads the tile's acc lines before one rewrites them. Neither may accumulate statistics.
    Returns the ops and the split index among them."""
    out: list[SfuOp] = []
    new_split = None
    j = 0
    while j < len(ops):
        if j == split:
            new_split = len(out)
        op = ops[j]
        nxt = ops[j + 1] if j + 1 < len(ops) else None
        if (op.kind == "deq" and op.st is None and nxt is not None and nxt.kind == "act" and nxt.st is None
                and j + 1 != split and (nxt.out_act is None or _value_dead(ops[j + 2:]))):
            out.append(dataclasses.replace(nxt, kind="deqact", src_act=op.src_act, src_tmp=op.src_tmp,
                                           parts=(op, nxt)))
            j += 2
            continue
        out.append(op)
        j += 1
    return out, len(out) if new_split is None else new_split


def _value_dead(rest: list[SfuOp]) -> bool:
    """No op of rest reads the tile's acc value before one rewrites it."""
    for op in rest:
        if _reads_value(op):
            return False
        if _writes_value(op):
            return True
    return True


def _descriptor(prm: PrmImage, inv_n: int, eps, FO: int) -> PrmRef:
    """The norm descriptor words [inv_n, eps, nsh]: static, or a per-step line when eps is per step."""
    nsh = 12 + GAMMA_FRAC - FO
    if np.ndim(eps) == 0:
        return prm.words([inv_n, int(eps), nsh])
    words = np.stack([np.full(prm.n_steps, inv_n), np.asarray(eps, np.int64), np.full(prm.n_steps, nsh)], 1)
    ref = prm.vector(words)
    return PrmRef(prm, ref.step, ref.line0, 0)


def _rounded_norm(k: Kernel, prm: PrmImage, e: Norm, i: int, group: StatSpec, cols: int, inv_n: int, eps,
                  FO: int, grid: np.ndarray | None) -> list[SfuOp]:
    """A Norm whose model rounds inside (requant_inside): the normalized value to int8 (norm_scales), its
    product with gamma to int8 (gamma_scales, if given), then + beta at FO fractional bits.

    norm (gamma 1, beta 0) -> on-chip int8 tile; deq per column (scale * gamma) -> int8 tile; deq + beta.
    gamma is applied by unsigned scale entries, so form_kernels only asks for this with gamma >= 0.
    """
    s1 = np.asarray(e.norm_scales, np.float64)
    gamma = e.gamma.astype(np.float64)
    if (gamma < 0).any():
        raise CompileError(f"kernel {k.name}: a rounded normalization needs gamma >= 0")
    FN = frac_bits(float(s1.max()) * 127.0)
    tmp1 = Act(f"{k.name}/norm{i}", (1, cols), s1.astype(np.float32))
    nd = _descriptor(prm, inv_n, eps, FN)
    ones = prm.vector(to_int32(np.ones(cols), GAMMA_FRAC, f"kernel {k.name} gamma"))
    zeros = prm.vector(np.zeros(cols, np.int64))
    ops = [SfuOp("norm", frac=FN, sc=_emit(k, prm, FN, tmp1).sc, nd=nd, gamma=ones, beta=zeros, group=group,
                 out_act=tmp1, on_chip=True)]
    beta = e.beta.astype(np.float64)
    n = prm.n_steps
    s1 = np.broadcast_to(s1, (n,))
    if getattr(e, "gamma_scales", None) is None:
        sc = prm.vector(scale_entries(s1[:, None] * gamma[None, :] * _units(grid, FO), f"kernel {k.name} gamma"))
        ops.append(SfuOp("deq", frac=FO, sc=sc, per_ch=True, src_act=True, src_tmp=tmp1,
                         bias=_bias(k, prm, beta, grid, FO)))
        return ops
    s2 = np.broadcast_to(np.asarray(e.gamma_scales, np.float64), (n,))
    FG = frac_bits(float(s2.max()) * 127.0)
    tmp2 = Act(f"{k.name}/gamma{i}", (1, cols), s2.astype(np.float32))
    sc = prm.vector(scale_entries(s1[:, None] * gamma[None, :] * _units(s2 / GRID, FG),
                                  f"kernel {k.name} gamma"))
    ops.append(SfuOp("deq", frac=FG, sc=sc, per_ch=True, src_act=True, src_tmp=tmp1))
    rq = _emit(k, prm, FG, tmp2, s2 / GRID)
    rq.on_chip = True
    ops.append(rq)
    ops.append(SfuOp("deq", frac=FO, sc=prm.word(scale_entries(s2 * np.ravel(_units(grid, FO)),
                                                               f"kernel {k.name} gamma")),
                     src_act=True, src_tmp=tmp2, bias=_bias(k, prm, beta, grid, FO)))
    return ops


def _emit(k: Kernel, prm: PrmImage, F: int, out: Act, grid: np.ndarray | None = None) -> SfuOp:
    s = np.asarray(out.scales, np.float64)
    e = scale_entries((2.0 ** -F if grid is None else grid) / s, f"kernel {k.name} output {out.name}")
    if grid is not None and (e == e.flat[0]).all():
        e = int(e.flat[0])      # a power of two: one static word
    return SfuOp("act", frac=F, sc=prm.word(e), out_act=out)
