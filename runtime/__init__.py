"""Execution of bundles: the golden model, the RTL co-simulation and board backends.

Installed as ``sdac.runtime`` (see docs/ARCHITECTURE.md).
"""
