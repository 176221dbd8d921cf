"""The RTL of the accelerator (SystemVerilog under rtl/) and its simulation helpers.

Installed as ``sdac.hw`` so the runtime can find the sources; see docs/hardware.md.
"""
from pathlib import Path

RTL_DIR = Path(__file__).resolve().parent / "rtl"
TB_DIR = Path(__file__).resolve().parent / "tb"
