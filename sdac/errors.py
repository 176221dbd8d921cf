"""User-facing errors. The CLI prints them as one line and exits non-zero.

Raise a subclass of ``SdacError`` for anything a user can cause (a bad file,
an unsupported operator, a malformed instruction): the message must name the
problem (file, node, instruction index). ``DeviceError`` reports a program that
failed while running (exit code 1); everything else is bad input (exit code 2).
"""
from __future__ import annotations


class SdacError(Exception):
    """Bad input: the CLI prints the message and exits with status 2."""

    exit_code = 2


class BundleError(SdacError):
    """A bundle file is truncated, corrupted, of another version, or inconsistent."""


class CompileError(SdacError):
    """A model cannot be compiled (names the node, its op type and why)."""


class DeviceError(SdacError):
    """A program failed while executing. ``code`` is an ISA error name, ``index`` the instruction."""

    exit_code = 1

    def __init__(self, code: str, message: str, index: int | None = None):
        self.code = code
        self.index = index
        where = f"instruction {index}: " if index is not None else ""
        super().__init__(f"{code}: {where}{message}")
