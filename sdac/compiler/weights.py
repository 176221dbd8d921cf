"""Constants held out of memory until a pass needs their values.

SD-v1.5 has 860 M weights: as float32 they are 3.4 GB, as int4 codes in the model's external-data
file 0.43 GB. The compiler keeps them where they are and reads them when a stage needs the numbers:

* ``LazyArray``   an array whose values are read on demand (``np.asarray(x)``) from a ``source`` — an
                  ONNX external-data file region, a TensorProto's raw bytes, or an in-memory array —
                  through a recorded chain of cheap views (transpose, indexing, cast). ``shape``,
                  ``dtype``, ``ndim``, ``size`` need no read. Nothing is cached: every read costs a
                  file read (page cache) and an int4 unpack, and leaves nothing behind.
* ``QuantWeight`` a dequantized weight ``codes * scale`` (per output channel along ``axis``) that
                  fold_qdq makes of DequantizeLinear(constant). Views keep it quantized (the axis
                  follows a transpose); ``form_kernels`` takes ``codes`` and ``scale`` without ever
                  forming the float values.

Both behave as numpy arrays for any other use (arithmetic, ufuncs, methods): they read and
compute then, so a pass that does not know about them stays correct, only slower.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# ONNX TensorProto data types -> numpy (int4/uint4 are unpacked to int8/uint8)
_ONNX_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
            9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64, 21: np.uint8, 22: np.int8}
INT4, UINT4 = 22, 21

SMALL_EXTERNAL = 1 << 16    # bytes: external tensors up to this size (shapes, scales) are read when a model loads
_EXTERNAL = 1               # TensorProto.EXTERNAL


def external_length(t) -> int:
    """Bytes of an external-data initializer (its `length` entry, else an upper bound from its dims)."""
    info = {e.key: e.value for e in t.external_data}
    if info.get("length"):
        return int(info["length"])
    return int(np.prod(t.dims, dtype=np.int64)) * 8


def is_small_external(t) -> bool:
    return t.data_location == _EXTERNAL and external_length(t) <= SMALL_EXTERNAL


def inlined(t, base_dir: str):
    """A copy of an initializer with its external data read in (t itself if it has none)."""
    if t.data_location != _EXTERNAL:
        return t
    from onnx import TensorProto
    c = TensorProto()
    c.CopyFrom(t)
    inline(c, base_dir)
    return c


def inline(t, base_dir: str) -> None:
    """Read an initializer's external data into it (no data_location, no external_data entries after)."""
    if t.data_location != _EXTERNAL:
        return
    from onnx.external_data_helper import load_external_data_for_tensor
    load_external_data_for_tensor(t, base_dir)
    t.ClearField("data_location")
    del t.external_data[:]


def _nibble_pairs(signed: bool) -> np.ndarray:
    """Per byte value, the little-endian uint16 whose two bytes are its low and high nibble as int8/uint8."""
    b = np.arange(256)
    lo, hi = b & 0xF, b >> 4
    if signed:
        lo, hi = lo - ((lo & 8) << 1), hi - ((hi & 8) << 1)
    return ((lo & 0xFF) | ((hi & 0xFF) << 8)).astype("<u2")


_PAIRS = {True: _nibble_pairs(True), False: _nibble_pairs(False)}


def unpack_int4(packed: np.ndarray, n: int, signed: bool) -> np.ndarray:
    """ONNX int4/uint4 storage (two per byte, the first element in the low nibble) -> int8/uint8."""
    b = np.asarray(packed, np.uint8).reshape(-1)
    # one table lookup per byte gives both elements (contiguous writes; shifts into every other byte are slower)
    return np.take(_PAIRS[signed], b).view(np.int8 if signed else np.uint8)[:n]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int4 values (any shape, flattened) -> ONNX int4 storage: two per byte, the first in the low nibble
    (an odd count padded with a zero nibble); the inverse of unpack_int4."""
    u = np.asarray(q, np.int8).reshape(-1).view(np.uint8) & 0x0F
    if u.size % 2:
        u = np.concatenate([u, np.zeros(1, np.uint8)])
    return u[0::2] | (u[1::2] << 4)


_NIB8, _NIB7 = np.uint64(0x8888888888888888), np.uint64(0x7777777777777777)


def _int4_min_words(packed) -> np.ndarray:
    """The packed bytes (zero padded to whole uint64 words) with bit 3 of each nibble set where that nibble is
    0b1000 (int4 -8) and every other bit clear, without unpacking: per nibble, bit 3 set and the low three
    bits clear (adding 7 to them carries into bit 3 unless they are all zero; no carry crosses a nibble)."""
    b = np.asarray(packed, np.uint8).reshape(-1)
    if b.size % 8:
        b = np.concatenate([b, np.zeros(8 - b.size % 8, np.uint8)])
    x = b.view(np.uint64)
    return x & ~((x & _NIB7) + _NIB7) & _NIB8


def has_int4_min(packed: np.ndarray) -> bool:
    """Whether any nibble of the packed bytes is int4 -8."""
    return bool(np.any(_int4_min_words(packed)))


_CHUNK = 1 << 18    # bytes per read of external_has_int4_min (a reused buffer that stays in cache)


def _chunk_has_int4_min(x: np.ndarray, t: np.ndarray) -> bool:
    """has_int4_min of the uint64 words ``x``: _int4_min_words' test computed in place in ``t`` (same size),
    for the chunked read of a large tensor (no allocation per chunk)."""
    np.bitwise_and(x, _NIB7, out=t)
    np.add(t, _NIB7, out=t)
    np.invert(t, out=t)
    np.bitwise_and(t, x, out=t)
    np.bitwise_and(t, _NIB8, out=t)
    return bool(t.any())


def int4_min_flags(b: np.ndarray) -> np.ndarray:
    """Per byte of packed int4 storage (same shape): bit 3 set where its low nibble is -8, bit 7 where its high
    one is (_int4_min_words, byte by byte)."""
    return _int4_min_words(b).view(np.uint8)[:np.size(b)].reshape(np.shape(b))


def _external_rows(src: "ExternalData", row_bytes: int, first_row: int = 0):
    """The packed bytes of ``src`` from row ``first_row`` on, in chunks of whole rows of ``row_bytes`` (views
    of one reused buffer), or None at once if the file is short (the caller's plain read raises its error)."""
    total = (int(np.prod(src.dims, dtype=np.int64)) + 1) // 2
    rows = max(1, _CHUNK // row_bytes) * row_bytes
    buf = np.empty(max(1, min(rows, total - first_row * row_bytes)), np.uint8)
    view = memoryview(buf)
    with open(src.path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size < src.offset + total:
            yield None
            return
        f.seek(src.offset + first_row * row_bytes)
        left = total - first_row * row_bytes
        while left:
            k = min(left, buf.size)
            if f.readinto(view[:k]) != k:
                yield None
                return
            yield buf[:k]
            left -= k


def external_has_int4_min(src: "ExternalData", clean: dict | None = None) -> bool:
    """has_int4_min(src.packed()) read in chunks into one small buffer (_external_rows), stopping at the first
    -8: no allocation of the whole tensor (its page faults cost more than the read). A short file falls back
    to src.packed(), which raises its error. ``clean[src]`` is set to the number of leading bytes found free
    of -8 (int4_min_channels need not read them again)."""
    tmp = np.empty(_CHUNK // 8, np.uint64)
    done = 0
    for b in _external_rows(src, 8):        # (8-byte rows: chunks of whole uint64 words, but for the tail)
        if b is None:
            return has_int4_min(src.packed())
        w = b.size // 8
        if _chunk_has_int4_min(b[:w * 8].view(np.uint64), tmp[:w]) or (b.size % 8 and has_int4_min(b[w * 8:])):
            if clean is not None:
                clean[src] = done
            return True
        done += b.size
    return False


@dataclass(frozen=True)
class ExternalData:
    """A tensor stored in an ONNX external-data file."""
    path: str
    offset: int
    length: int
    data_type: int
    dims: tuple[int, ...]

    def packed(self) -> np.ndarray:
        """The stored bytes of an int4/uint4 tensor (two elements per byte)."""
        n = int(np.prod(self.dims, dtype=np.int64))
        raw = np.fromfile(self.path, np.uint8, count=(n + 1) // 2, offset=self.offset)
        if raw.size != (n + 1) // 2:
            raise OSError(f"{self.path}: {raw.size} bytes at offset {self.offset}, expected {(n + 1) // 2}")
        return raw

    def read(self) -> np.ndarray:
        n = int(np.prod(self.dims, dtype=np.int64))
        if self.data_type in (INT4, UINT4):
            return unpack_int4(self.packed(), n, self.data_type == INT4).reshape(self.dims)
        dt = np.dtype(_ONNX_NP[self.data_type]).newbyteorder("<")
        arr = np.fromfile(self.path, dt, count=n, offset=self.offset)
        if arr.size != n:
            raise OSError(f"{self.path}: {arr.size} elements at offset {self.offset}, expected {n}")
        return arr.astype(dt.newbyteorder("="), copy=False).reshape(self.dims)


@dataclass(frozen=True)
class ProtoData:
    """A tensor in a TensorProto's raw_data (kept packed; int4 stays 2 per byte)."""
    tensor: object      # onnx.TensorProto

    def read(self) -> np.ndarray:
        t = self.tensor
        dims = tuple(t.dims)
        if t.data_type in (INT4, UINT4) and t.raw_data:
            n = int(np.prod(dims, dtype=np.int64))
            return unpack_int4(np.frombuffer(t.raw_data, np.uint8), n, t.data_type == INT4).reshape(dims)
        from onnx import numpy_helper
        arr = np.asarray(numpy_helper.to_array(t))
        if t.data_type in (INT4, UINT4):
            arr = arr.astype(np.int8 if t.data_type == INT4 else np.uint8)
        return arr


def _shape_of(shape, op, arg) -> tuple[int, ...]:
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape=shape, strides=(0,) * len(shape))
    if op == "transpose":
        return probe.transpose(arg).shape
    if op == "getitem":
        return probe[arg].shape
    if op == "reshape":
        return probe.reshape(arg).shape
    return tuple(shape)


_NO_READ = {
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
}


class LazyArray(np.lib.mixins.NDArrayOperatorsMixin):
    """See the module docstring. ``source`` has ``read() -> np.ndarray`` or is an ndarray."""

    __array_priority__ = 100

    def __init__(self, source, shape, dtype, ops: tuple = ()):
        self.source = source
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ops = ops

    @staticmethod
    def of(source) -> "LazyArray":
        if isinstance(source, np.ndarray):
            return LazyArray(source, source.shape, source.dtype)
        if isinstance(source, ProtoData):
            return LazyArray(source, tuple(source.tensor.dims), _ONNX_NP[source.tensor.data_type])
        return LazyArray(source, source.dims, _ONNX_NP[source.data_type])

    # -------------------------------------------------- cheap properties and views
    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def _view(self, op, arg, shape=None, dtype=None) -> "LazyArray":
        return LazyArray(self.source, shape if shape is not None else _shape_of(self.shape, op, arg),
                         dtype or self.dtype, self.ops + ((op, arg),))

    def transpose(self, *axes) -> "LazyArray":
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return self._view("transpose", axes or tuple(reversed(range(self.ndim))))

    T = property(lambda self: self.transpose())

    def __getitem__(self, idx) -> "LazyArray":
        return self._view("getitem", idx)

    def reshape(self, *shape) -> "LazyArray":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._view("reshape", shape)

    def astype(self, dtype, copy=True):
        if np.dtype(dtype) == self.dtype and not copy:
            return self
        return np.asarray(self).astype(dtype)

    def cast(self, dtype) -> "LazyArray":
        """A lazy cast (``astype`` reads)."""
        return self._view("cast", np.dtype(dtype), self.shape, np.dtype(dtype))

    def put(self, axis: int, index, values: np.ndarray) -> "LazyArray":
        """A lazy copy with the entries ``index`` along ``axis`` replaced by ``values`` (that axis first)."""
        return self._view("put", (axis, np.asarray(index), np.asarray(values, self.dtype)), self.shape)

    def map(self, fn, dtype=None) -> "LazyArray":
        """A lazy ``fn(values)`` that keeps the shape (``fn`` must be deterministic)."""
        return self._view("map", fn, self.shape, np.dtype(dtype or self.dtype))

    # -------------------------------------------------- reading
    def read(self) -> np.ndarray:
        a = self.source if isinstance(self.source, np.ndarray) else self.source.read()
        for op, arg in self.ops:
            if op == "transpose":
                a = a.transpose(arg)
            elif op == "getitem":
                a = a[arg]
            elif op == "reshape":
                a = a.reshape(arg)
            elif op == "cast":
                a = a.astype(arg)
            elif op == "put":
                axis, index, values = arg
                a = np.array(a)
                np.moveaxis(a, axis, 0)[index] = values
            else:   # a deterministic function of the array
                a = arg(a)
        return a

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, LazyArray) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in _NO_READ and len(args) == 1 and args[0] is self:   # np.shape(w), np.size(w): no read
            return _NO_READ[func](self, **kwargs)

        def conv(x):
            if isinstance(x, LazyArray):
                return np.asarray(x)
            if isinstance(x, (list, tuple)):
                return type(x)(conv(y) for y in x)
            return x
        return func(*conv(args), **{k: conv(v) for k, v in kwargs.items()})

    def __getattr__(self, name):
        if name.startswith("__") or name in ("source", "shape", "dtype", "ops"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)   # any other ndarray method: read, then apply

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class QuantWeight(LazyArray):
    """``codes * scale`` along ``axis`` as float32; ``qtype`` is the model's code type (int4, int8, ...)."""

    def __init__(self, codes, scale, axis: int, qtype: str):
        codes = codes if isinstance(codes, LazyArray) else LazyArray.of(np.asarray(codes))
        super().__init__(codes, codes.shape, np.float32)
        self.codes = codes
        self.scale = np.asarray(scale, np.float32)
        self.axis = axis
        self.qtype = qtype

    def read(self) -> np.ndarray:
        q = np.asarray(self.codes).astype(np.float32)
        if self.scale.size > 1:
            shape = [1] * q.ndim
            shape[self.axis] = -1
            return q * self.scale.reshape(shape)
        return q * self.scale.reshape(())

    def transpose(self, *axes) -> "QuantWeight":
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        return QuantWeight(self.codes.transpose(axes), self.scale, list(axes).index(self.axis), self.qtype)

    T = property(lambda self: self.transpose())

    def __getitem__(self, idx):
        """Basic indexing that keeps the channel axis whole (e.g. ``w[:, :, 0, 0]``) stays quantized."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if Ellipsis not in idx and all(isinstance(i, (int, np.integer, slice)) for i in idx) and \
                (len(idx) <= self.axis or idx[self.axis] == slice(None)):
            dropped = sum(1 for i in idx[:self.axis] if not isinstance(i, slice))
            return QuantWeight(self.codes[idx], self.scale, self.axis - dropped, self.qtype)
        return np.asarray(self)[idx]

    def reshape(self, *shape):
        return np.asarray(self).reshape(*shape)

    def cast(self, dtype):
        return np.asarray(self).astype(dtype)


def external_source(tensor, base_dir: str) -> ExternalData | None:
    """The external-data location of a TensorProto (None if its data is inline)."""
    if tensor.data_location != _EXTERNAL:
        return None
    info = {e.key: e.value for e in tensor.external_data}
    loc = info.get("location", "")
    path = os.path.normpath(os.path.join(base_dir, loc))
    if os.path.isabs(loc) or os.path.relpath(path, base_dir).startswith(".."):
        raise ValueError(f"external data location {loc!r} lies outside the model's directory")
    return ExternalData(path, int(info.get("offset", 0)), int(info.get("length", 0) or 0), tensor.data_type,
                        tuple(int(d) for d in tensor.dims))


def int4_may_hold_min(codes, clean: dict | None = None) -> bool | None:
    """For views (transpose, indexing, reshape) of a stored int4 tensor: whether the stored tensor holds the
    code -8 anywhere (so the view may), from its packed bytes. None for anything else (read the values).
    ``clean``: see external_has_int4_min (pass the same dict to int4_min_channels)."""
    if not isinstance(codes, LazyArray) or any(op not in ("transpose", "getitem", "reshape") for op, _ in codes.ops):
        return None
    packed = _stored_bytes(codes)
    if packed is None:
        return None
    if isinstance(codes.source, ExternalData):
        return external_has_int4_min(codes.source, clean)
    return has_int4_min(packed())


def _stored_bytes(a):
    """A function giving the packed bytes of the int4 tensor under ``a`` (a fresh, writable array), or None."""
    if type(a) is not LazyArray or a.dtype != np.int8:
        return None
    src = a.source
    if isinstance(src, ExternalData) and src.data_type == INT4:
        return src.packed
    if isinstance(src, ProtoData) and src.tensor.data_type == INT4 and src.tensor.raw_data:
        return lambda: np.frombuffer(src.tensor.raw_data, np.uint8).copy()
    return None


def _whole_bytes(shape, axis: int) -> bool:
    """Channels along ``axis`` (the first or the last) of an int4 tensor own whole bytes of its storage."""
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    return axis in (0, len(shape) - 1) and cols % 2 == 0 and (axis == 0 or shape[-1] % 2 == 0)


def stored_int4(a) -> np.ndarray | None:
    """The packed bytes (two codes per byte, the first in the low nibble) when ``a`` is a stored int4 tensor
    (a LazyArray without views, or with ``put`` along its first or last axis of whole bytes), else None: the
    lowering regroups them without unpacking."""
    packed = _stored_bytes(a)
    if packed is None or len(a.ops) > 1 or (a.ops and a.ops[0][0] != "put"):
        return None
    if not a.ops:
        return packed()
    axis, index, values = a.ops[0][1]
    if not _whole_bytes(a.shape, axis):
        return None
    rows, cols = a.shape[0], a.size // a.shape[0]
    b = packed().reshape(rows, cols // 2)
    nib = values.astype(np.uint8).reshape(len(index), -1) & 0xF      # channel first, the others in order
    if axis == 0:        # whole rows of bytes
        b[index] = pack_int4(nib).reshape(len(index), -1)
    else:                # one nibble of every row: even channels low, odd high
        b = b.reshape(-1, a.shape[-1] // 2)
        for c, v in zip(index.tolist(), nib):
            hi = c % 2
            b[:, c // 2] = (b[:, c // 2] & (0x0F if hi else 0xF0)) | (v << 4 if hi else v)
        b = b.reshape(rows, cols // 2)
    return b.reshape(-1)


def int4_min_channels(codes, axis: int, clean: dict | None = None) -> np.ndarray | None:
    """Per channel along ``axis`` (first or last) of a stored int4 tensor without views: whether it holds the
    code -8, from the packed bytes. None for anything else (read the values). ``clean``: the leading bytes
    int4_may_hold_min found free of -8, per external tensor (their whole rows are not read again)."""
    packed = _stored_bytes(codes)
    if packed is None or codes.ops or not _whole_bytes(codes.shape, axis):
        return None
    n = codes.shape[axis]
    if isinstance(codes.source, ExternalData):    # in chunks of whole rows, without allocating the tensor
        row_bytes = codes.size // 2 // n if axis == 0 else n // 2
        first_row = (clean or {}).get(codes.source, 0) // row_bytes
        acc = np.zeros(row_bytes, np.uint8)
        rows = [np.zeros(first_row, bool)] if axis == 0 else []
        for b in _external_rows(codes.source, row_bytes, first_row):
            if b is None:      # a short file: the plain read below raises its error
                break
            flags = int4_min_flags(b).reshape(-1, row_bytes)
            if axis == 0:
                rows.append(flags.any(axis=1))
            else:
                acc |= np.bitwise_or.reduce(flags, axis=0)
        else:
            return np.concatenate(rows) if axis == 0 else _column_channels(acc, n)
    flags = int4_min_flags(packed().reshape(-1, n // 2) if axis else packed().reshape(n, -1))
    return flags.any(axis=1) if axis == 0 else _column_channels(np.bitwise_or.reduce(flags, axis=0), n)


def _column_channels(acc: np.ndarray, n: int) -> np.ndarray:
    """Channels along the last axis from the OR of every row's int4_min_flags: byte j holds channels 2j (low
    nibble, bit 3) and 2j+1 (high nibble, bit 7)."""
    out = np.empty(n, bool)
    out[0::2], out[1::2] = (acc & 0x08) != 0, (acc & 0x80) != 0
    return out


def _external_channel_bytes(src: ExternalData, n: int, axis: int, chans: np.ndarray) -> np.ndarray | None:
    """The packed bytes of channels ``chans`` along ``axis`` (first: their rows; last: the byte columns
    holding them, every row) read from the file: only those rows, or in chunks. None if the file is short."""
    total = (int(np.prod(src.dims, dtype=np.int64)) + 1) // 2
    with open(src.path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size < src.offset + total:
            return None
        if axis == 0:
            row = total // n
            out = np.empty((len(chans), row), np.uint8)
            for i, c in enumerate(chans.tolist()):
                f.seek(src.offset + c * row)
                if f.readinto(memoryview(out[i])) != row:
                    return None
            return out
    cols = chans // 2
    parts = []
    for b in _external_rows(src, n // 2):
        if b is None:
            return None
        parts.append(b.reshape(-1, n // 2)[:, cols])
    return np.concatenate(parts)


def int4_channel_codes(codes, axis: int, chans: np.ndarray) -> np.ndarray:
    """np.take(np.asarray(codes), chans, axis) for a tensor int4_min_channels accepts, unpacking only those
    channels."""
    shape, n = codes.shape, codes.shape[axis]
    b = _external_channel_bytes(codes.source, n, axis, chans) if isinstance(codes.source, ExternalData) else None
    if axis == 0:
        rows = _stored_bytes(codes)().reshape(n, -1)[chans] if b is None else b
        return unpack_int4(rows, rows.size * 2, True).reshape((len(chans),) + tuple(shape[1:]))
    if b is None:
        b = _stored_bytes(codes)().reshape(-1, n // 2)[:, chans // 2]
    nib = np.where(chans % 2 == 1, b >> 4, b & 0x0F).astype(np.int8)
    return ((nib ^ 8) - 8).astype(np.int8).reshape(tuple(shape[:-1]) + (len(chans),))
