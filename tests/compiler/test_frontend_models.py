"""Whole small models: ONNX QDQ -> KernelGraph, its float reference against onnxruntime.

Two references (onnxruntime on the `sdac reference` hard-activation model):
  * the QDQ model as quantize_static wrote it: it also quantizes the intermediates that a
    fused kernel keeps on chip, so it differs by those roundings: SQNR >= 30 dB;
  * the same model with Q/DQ kept only at the kernel boundaries: this is exactly what the
    KernelGraph means, so it must agree to rounding ties (SQNR >= 60 dB).
"""
import numpy as np
import onnxruntime as ort
import pytest

from sdac import models
from sdac.compiler.frontend import load_model
from sdac.compiler.hardref import hard_reference, run_kernel_graph
from sdac.compiler.passes import PassContext, run_passes
from sdac.compiler.reference import sqnr_db


def compile_model(path):
    return run_passes(load_model(path), PassContext())


def ort_run(model, inputs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))


def measure(path, name, seed=7):
    kg = compile_model(path)
    inp = models.sample_inputs(name, seed=seed)
    got = run_kernel_graph(kg, inp)["out"]
    full = ort_run(hard_reference(path), inp)["out"]
    acts = {a.name for a in kg.inputs} | {e.out.name for k in kg.kernels for e in k.epilogue if hasattr(e, "out")}
    bound = ort_run(hard_reference(path, keep_qdq=acts), inp)["out"]
    return kg, sqnr_db(full, got), sqnr_db(bound, got)


@pytest.mark.parametrize("name", ["conv3x3", "conv_gn_silu"])
def test_small_model_matches_onnxruntime(build_model, name):
    q, _ = build_model(name)
    kg, s_full, s_bound = measure(q, name)
    print(f"{name}: SQNR vs QDQ model {s_full:.1f} dB, vs boundary-only QDQ {s_bound:.1f} dB")
    assert s_full >= 30
    assert s_bound >= 60
