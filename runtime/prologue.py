"""The host prologue: the part of the model that runs on the host before each step.

The compiler moves everything that depends only on the timestep (and
constants) — the sinusoidal embedding and its MLP, the per-block time
projections — into a small ONNX model stored in the bundle's HOST section.
Its outputs are device inputs. ``device_inputs`` runs it (onnxruntime, on the
host's CPU, as on the board's ARM cores) and returns every device input by name.
"""
from __future__ import annotations

import numpy as np

from ..errors import SdacError

_SESSIONS: dict[int, object] = {}


def _session(bundle):
    key = id(bundle.host)
    if key not in _SESSIONS:
        import onnxruntime as ort
        try:
            _SESSIONS[key] = ort.InferenceSession(bytes(bundle.host), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise SdacError(f"the bundle's host prologue cannot be loaded by onnxruntime: {e}") from None
    return _SESSIONS[key]


def device_inputs(bundle, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Graph inputs (by ONNX name) -> device inputs: runs the host prologue when the bundle has one."""
    wanted = {t.name for t in bundle.inputs}
    out = {k: v for k, v in inputs.items() if k in wanted}
    if bundle.host:
        sess = _session(bundle)
        feeds = {}
        for i in sess.get_inputs():
            if i.name not in inputs:
                raise SdacError(f"missing input {i.name!r} (the host prologue needs it)")
            feeds[i.name] = np.asarray(inputs[i.name], dtype=np.float32 if "float" in i.type else None)
        for o, v in zip(sess.get_outputs(), sess.run(None, feeds)):
            if o.name in wanted:
                out[o.name] = v
    return out
