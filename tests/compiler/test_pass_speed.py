"""Fast paths of the frontend and the graph passes against the plain definitions they replace (same results,
same errors)."""
import numpy as np
import pytest

from sdac.compiler import weights as W

RNG = np.random.default_rng(12)


def _external(tmp_path, q: np.ndarray, offset: int = 5, truncate: int = 0) -> W.LazyArray:
    """q stored as int4 in an external-data file (at ``offset``, the file cut ``truncate`` bytes short)."""
    u = q.astype(np.uint8).reshape(-1) & 0xF
    if u.size % 2:
        u = np.append(u, np.uint8(0))
    packed = (u[0::2] | (u[1::2] << 4)).tobytes()
    path = tmp_path / "w.data"
    path.write_bytes((bytes(range(offset)) + packed)[:offset + len(packed) - truncate])
    return W.LazyArray.of(W.ExternalData(str(path), offset, len(packed), W.INT4, q.shape))


@pytest.mark.parametrize("shape,axis", [((6, 4, 3, 3), 0), ((12, 10), 1), ((1, 2), 1), ((4, 6), 0),
                                        ((3, 700, 2), 0), ((1100, 700), 1), ((1100, 700), 0)])
def test_int4_min_checks_on_external_data_read_in_chunks(tmp_path, monkeypatch, shape, axis):
    """The chunked reads of external data give what the whole-tensor reads give (chunks smaller than a row,
    than the tensor, odd sizes), and a short file raises the whole-tensor read's error."""
    for chunk in (8, 24, 1 << 18):
        monkeypatch.setattr(W, "_CHUNK", chunk)
        for trial in range(4):
            q = RNG.integers(-7, 8, shape).astype(np.int8)
            if trial:
                q.reshape(-1)[RNG.integers(q.size, size=trial)] = -8
            lz = _external(tmp_path, q)
            want = (np.moveaxis(q, axis, 0).reshape(shape[axis], -1) == -8).any(axis=1)
            assert W.int4_may_hold_min(lz) == bool(want.any()) == W.int4_may_hold_min(lz.T)
            assert np.array_equal(W.int4_min_channels(lz, axis), want)
        short = _external(tmp_path, q, truncate=1)
        with pytest.raises(OSError, match="expected"):
            W.int4_may_hold_min(short.T)
        with pytest.raises(OSError, match="expected"):
            W.int4_min_channels(short, axis)
