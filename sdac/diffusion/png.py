"""A minimal PNG writer (8-bit grey or RGB), so writing images needs nothing beyond numpy."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 image (H, W) grey or (H, W, 3) RGB -> PNG file bytes."""
    im = np.ascontiguousarray(image, dtype=np.uint8)
    if im.ndim == 2:
        color = 0
    elif im.ndim == 3 and im.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"png: expected (H, W) or (H, W, 3) uint8, got shape {im.shape}")
    h, w = im.shape[:2]
    raw = b"".join(b"\x00" + im[y].tobytes() for y in range(h))     # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.write_bytes(png_bytes(image))
    return path
