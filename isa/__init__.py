"""The sdac instruction set: one declarative spec (isa.toml) and what derives from it.

Installed as ``sdac.isa`` (the top-level ``isa/`` folder is mapped into the
``sdac`` namespace by pyproject.toml; see docs/ARCHITECTURE.md).
"""
from .spec import SPEC, Field, InstrSpec, IsaSpec, QUEUES
from .encoding import DecodeError, Instr, decode, decode_program, encode, encode_program

__all__ = [
    "SPEC", "Field", "InstrSpec", "IsaSpec", "QUEUES",
    "DecodeError", "Instr", "decode", "decode_program", "encode", "encode_program",
]
