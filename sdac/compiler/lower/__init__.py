"""Lowering: KernelGraph -> Program (tiling, memory planning, scheduling, tokens, emission)."""
