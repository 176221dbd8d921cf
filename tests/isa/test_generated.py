"""Files derived from the ISA spec are current (regenerate with `make gen`)."""
from sdac.isa import gen


def test_generated_files_are_current():
    assert gen.stale() == [], "run `make gen` and commit the result"
