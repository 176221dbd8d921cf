"""The machine description: one dataclass holds every hardware parameter.

The compiler tiles for it, the golden model sizes its buffers from it, the
performance model times instructions with it, the RTL package is generated
from it, and a bundle records the one it was compiled for.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Machine:
    name: str = "sda-zcu102"
    # Hybrid systolic array: X rows x Y columns of PEs; each PE computes a 2x2
    # outer product per cycle (2 DSP48E2, 4 int8 x int4 MACs).
    array_rows: int = 20
    array_cols: int = 10
    macs_per_pe: int = 4
    lanes: int = 20            # L: elements per buffer line
    clock_mhz: float = 250.0
    # On-chip buffers, in lines of `lanes` elements.
    act_lines: int = 49152     # int8   -> 960 KiB
    wgt_lines: int = 65536     # int4   -> 640 KiB
    acc_lines: int = 20480     # int32  -> 1.6 MiB
    prm_lines: int = 4096      # uint32 -> 320 KiB (per-channel scale, bias and norm vectors of the widest layer)
    stat_groups: int = 1024    # statistics registers (sum, sum of squares)
    # Queues and tokens.
    queue_depth: int = 64      # instruction FIFO per queue
    token_max: int = 255       # largest value of a token counter
    # DRAM and DMA (timing).
    dma_bytes_per_cycle: int = 16     # one 128-bit HP port
    dma_latency: int = 64             # cycles from request to first beat
    dma_burst_bytes: int = 256        # AXI burst (16 beats)
    dma_burst_gap: int = 2            # idle cycles between bursts
    # SFU timing.
    sfu_lines_per_cycle: int = 1      # lanes processed per cycle = lanes * this
    sfu_pipeline: int = 12            # pipeline depth of the SFU datapath
    instr_overhead: int = 4           # decode/issue cycles per instruction

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(v, int) or v <= 0):
                if not (f.name in ("dma_burst_gap",) and v == 0):
                    raise ValueError(f"machine: {f.name} must be a positive integer, got {v!r}")
        if self.lanes % 2:
            raise ValueError(f"machine: lanes must be even (int4 lines pack two per byte), got {self.lanes}")

    # Derived quantities ---------------------------------------------------
    @property
    def tile_m(self) -> int:
        """Output rows of one array tile in MM-OS."""
        return 2 * self.array_rows

    @property
    def tile_n(self) -> int:
        """Output columns of one array tile."""
        return 2 * self.array_cols

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.array_rows * self.array_cols * self.macs_per_pe

    def line_bytes(self, buf: str) -> int:
        return {"act": self.lanes, "wgt": self.lanes // 2, "acc": 4 * self.lanes, "prm": 4 * self.lanes}[buf]

    def buf_lines(self, buf: str) -> int:
        return {"act": self.act_lines, "wgt": self.wgt_lines, "acc": self.acc_lines, "prm": self.prm_lines}[buf]

    def buf_bytes(self, buf: str) -> int:
        return self.line_bytes(buf) * self.buf_lines(buf)

    def with_array(self, spec: str) -> "Machine":
        """Return a copy with an array shape given as 'RxC' (lanes follow the rows)."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
        if not m:
            raise ValueError(f"--array expects ROWSxCOLS such as 20x10, got {spec!r}")
        r, c = int(m.group(1)), int(m.group(2))
        if r < 2 or c < 1 or r % 2:
            raise ValueError(f"--array {spec}: rows must be even and >= 2, columns >= 1")
        return replace(self, array_rows=r, array_cols=c, lanes=r)

    # Serialization --------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "Machine":
        known = {f.name for f in fields(Machine)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"machine description: unknown key(s) {', '.join(sorted(unknown))}")
        return Machine(**d)


DEFAULT = Machine()
