"""The PNG writer against an independent decoder (PIL, from the test extras)."""
import io

import numpy as np
import pytest

from sdac.diffusion.png import png_bytes


@pytest.mark.parametrize("shape", [(5, 7), (8, 3, 3), (1, 1)])
def test_png_roundtrip(shape):
    Image = pytest.importorskip("PIL.Image")
    im = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = np.asarray(Image.open(io.BytesIO(png_bytes(im))))
    assert np.array_equal(got, im)


def test_png_rejects_other_shapes():
    with pytest.raises(ValueError, match="expected"):
        png_bytes(np.zeros((2, 2, 4), np.uint8))
