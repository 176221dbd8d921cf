"""The parameter memory (prm) image of one kernel: static lines and per-step lines.

Scale entries, biases, norm descriptors and gamma/beta vectors are allocated
while a kernel is planned and get their buffer addresses when the kernel's prm
region is placed (``place``). Static lines go to the bundle's DATA image,
per-step lines to every bank of the STEP table; one step-relative load brings
the selected step's lines on chip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PrmRef:
    """A vector (line address) or a word (word address) in a kernel's prm region, resolved by place()."""

    image: "PrmImage"
    step: bool
    line0: int          # line offset within its part
    lane: int = -1      # word: lane within the line; vector: -1

    @property
    def line(self) -> int:
        return self.image.base_of(self.step) + self.line0

    @property
    def word(self) -> int:
        assert self.lane >= 0, "a vector has no word address"
        return self.line * self.image.lanes + self.lane


@dataclass
class PrmImage:
    lanes: int
    n_steps: int
    static: list = field(default_factory=list)     # np.uint32 [L] per line
    stepped: list = field(default_factory=list)    # np.uint32 [n_steps, L] per line
    _words: dict = field(default_factory=dict)     # step(bool) -> (line0, used lanes)
    base: int | None = None

    def base_of(self, step: bool) -> int:
        assert self.base is not None, "prm region not placed yet"
        return self.base + (len(self.static) if step else 0)

    @property
    def lines(self) -> int:
        return len(self.static) + len(self.stepped)

    def vector(self, values) -> PrmRef:
        """A per-column vector: values [C] (static) or [n_steps, C] (per step); int64 -> uint32 two's complement."""
        v = np.asarray(values, np.int64)
        step = v.ndim == 2
        part = self.stepped if step else self.static
        line0 = len(part)
        c = v.shape[-1]
        n = -(-c // self.lanes)
        padded = np.zeros((*v.shape[:-1], n * self.lanes), np.int64)
        padded[..., :c] = v
        u = (padded & 0xFFFFFFFF).astype(np.uint32)
        for i in range(n):
            part.append(u[..., i * self.lanes:(i + 1) * self.lanes].copy())
        return PrmRef(self, step, line0)

    def word(self, value) -> PrmRef:
        """A scalar word: an int (static) or an [n_steps] array (per step)."""
        v = np.asarray(value, np.int64)
        step = v.ndim == 1
        part = self.stepped if step else self.static
        line0, used = self._words.get(step, (-1, self.lanes))
        if used == self.lanes:
            part.append(np.zeros((self.n_steps, self.lanes) if step else self.lanes, np.uint32))
            line0, used = len(part) - 1, 0
        part[line0][..., used] = (v & 0xFFFFFFFF).astype(np.uint32)
        self._words[step] = (line0, used + 1)
        return PrmRef(self, step, line0, used)

    def words(self, values) -> PrmRef:
        """Consecutive static words (e.g. a norm descriptor); returns the first."""
        vals = [int(v) for v in values]
        line0, used = self._words.get(False, (-1, self.lanes))
        if used + len(vals) > self.lanes:
            self.static.append(np.zeros(self.lanes, np.uint32))
            line0, used = len(self.static) - 1, 0
        for i, v in enumerate(vals):
            self.static[line0][used + i] = v & 0xFFFFFFFF
        self._words[False] = (line0, used + len(vals))
        return PrmRef(self, False, line0, used)

    def static_bytes(self) -> bytes:
        return b"".join(line.astype("<u4").tobytes() for line in self.static)

    def step_bytes(self, s: int) -> bytes:
        return b"".join(line[s].astype("<u4").tobytes() for line in self.stepped)
