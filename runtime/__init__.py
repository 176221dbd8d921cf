"""Execution of bundles: the golden model, the RTL co-simulation and board backends.

Installed as ``sdac.runtime`` (see docs/ARCHITECTURE.md).

* ``golden``: the bit-exact ISA interpreter (``Golden``, ``run_bundle``, ``execute_bundle``);
  docs/golden.md.
* ``host``: float host tensors <-> int8 device lines (``to_device``, ``from_device``).
* ``bench_golden``: ``python -m sdac.runtime.bench_golden`` times the golden model.
"""
