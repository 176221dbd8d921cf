"""Lowering: KernelGraph -> tiled, scheduled instruction stream with tokens -> Bundle."""
from .lowering import lower

__all__ = ["lower"]
