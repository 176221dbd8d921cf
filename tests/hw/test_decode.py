"""sdac_decode.sv against the Python decoder (sdac.isa.decode) on random and mutated words."""
import importlib.util
from pathlib import Path

import pytest

from sdac.hw import sim

pytestmark = [pytest.mark.needs_verilator, pytest.mark.xdist_group("rtl_decode")]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def decoder_build():
    return sim.build_cocotb("sdac_decode", sim.rtl_sources("sdac_decode"))


def test_decoder_matches_python(decoder_build):
    sim.run_cocotb(decoder_build, "cocotb_decode", HERE, extra_env={"SDAC_DECODE_WORDS": "20000",
                                                                    "SDAC_DECODE_SEED": "11"})


def test_word_stream_covers_every_error_class():
    # The generator itself: mutated words must really be invalid in the reference decoder.
    from sdac.isa.encoding import DecodeError, decode_int
    spec = importlib.util.spec_from_file_location("sdac_test_words", HERE / "words.py")
    words = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(words)
    kinds = {}
    for kind, w in words.word_stream(3, 2000):
        try:
            decode_int(w)
            ok = True
        except DecodeError:
            ok = False
        kinds.setdefault(kind, []).append(ok)
    assert all(kinds["valid"])
    for k in ("opcode", "reserved", "token"):
        assert not any(kinds[k]), k
    assert sum(kinds["enum"]) < len(kinds["enum"]) and sum(kinds["min"]) < len(kinds["min"])
