"""Files derived from the ISA spec are current (regenerate with `make gen`)."""
from sdac.isa import gen


def test_generated_files_are_current():
    assert gen.stale() == [], "run `make gen` and commit the result"


def test_deqact_shares_deq_field_positions():
    """The SFU decodes deq's fields once for deq and deqact (hw/rtl/sdac_sfu.sv, `OP_DEQ, OP_DEQACT`): deqact
    must list them first, at the same bit positions and widths."""
    from sdac.isa.spec import SPEC
    deq, deqact = SPEC.by_name("deq"), SPEC.by_name("deqact")
    shared = ["sbuf", "s", "srs", "d", "drs", "rows", "cols", "sc", "per_ch", "bias", "bb"]
    for name in shared:
        a, b = deq.field_map[name], deqact.field_map[name]
        assert (a.offset, a.bits, a.kind) == (b.offset, b.bits, b.kind), name
    assert [f.name for f in deqact.fields[:len(shared)]] == shared
