"""The DSP48E2 packing model (sdac.hw.packing) is exact for every int8 x int4 input."""
import numpy as np

from sdac.hw import packing


def test_packing_exact_for_all_inputs():
    # All 2^24 (a0, a1, w0, w1): every slot of the 2x2 outer product equals plain multiplication.
    assert packing.check_exhaustive() == []


def test_packing_exact_at_smallest_field():
    assert packing.check_exhaustive(field=8) == []


def test_too_few_guard_bits_fail_at_weight_minus_8():
    bad = packing.check_exhaustive(field=7, stop_at=5)
    assert bad and all(-8 in (w0, w1) for _, _, w0, w1, *_ in bad)


def test_unpack_without_borrow_correction_fails():
    assert packing.check_exhaustive(correct=False, stop_at=1)


def test_every_slice_input_with_five_bit_weights():
    # The fields of one slice are the only values sharing a multiplication: exhaustive per slice.
    assert packing.check_dsp_exhaustive() == 0
    assert packing.check_dsp_exhaustive(field=9) == 0


def test_five_bit_weights_need_nine_bit_fields():
    assert packing.check_dsp_exhaustive(field=8) > 0
    assert packing.check_dsp_exhaustive(field=8, wmin=-8, wmax=7) == 0
    assert packing.check_dsp_exhaustive(correct=False) > 0


def test_ports_fit_the_dsp():
    # Largest packed operands stay inside the 27-bit pre-adder and 18-bit B port without wrapping.
    n = np.arange(-8, 16)
    w = np.arange(-16, 16)
    ad = n[:, None] + (n[None, :] << (2 * packing.FIELD))
    b = w[:, None] + (w[None, :] << packing.FIELD)
    assert np.abs(ad).max() < 1 << (packing.A_BITS - 1)
    assert np.abs(b).max() < 1 << (packing.B_BITS - 1)
    assert (np.abs(ad).max() * np.abs(b).max()) < 1 << (packing.M_BITS - 1)


def test_split_act():
    a = np.arange(-128, 128)
    lo, hi = packing.split_act(a)
    assert lo.min() == 0 and lo.max() == 15 and hi.min() == -8 and hi.max() == 7
    assert np.array_equal(16 * hi + lo, a)
