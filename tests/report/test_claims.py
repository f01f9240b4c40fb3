"""Claim statuses on fabricated records: supported, contradicted, partly, not measured."""

from mgkit.report.analysis import Analysis
from mgkit.report.claims import all_claims
from mgkit.report.records import Source, to_points
from mgkit.report.tables import all_tables

from fabricate import main_records, other_records, record, shift


def claims(recs):
    points, _ = to_points(Source("mem.json", r) for r in recs)
    an = Analysis(points)
    return {c.number: c for c in all_claims(an, all_tables(an))}


def test_fabricated_paper_like_records():
    c = claims(main_records() + other_records())
    assert c[1].status == "supported"  # Energy's EPG front covers L1 and PPCE in both configurations
    assert any("l1 2/2, ppce 1/1" in d for _, d in c[1].units)
    assert c[10].status == "supported"
    assert c[8].status == "supported"
    # Claim 2: L1's IoU front misses Energy's high-F1 vanilla point and PPCE's 80.0 F1 point -> both fail.
    assert c[2].status == "contradicted"
    # Claim 9: mid2 gain 65 - 40 = 25 vs input 75 - 40 = 35 (71 % < 75 %), though 9 s / 5 s = 1.8x faster.
    assert c[9].status == "contradicted"
    assert c[9].units == [(False, "synthetic bcos-resnet18/bcos energy guided at mid2: EPG gain +25.0 vs +35.0 "
                                  "at input, speed-up 1.80×")]
    # Claim 7: Energy loses 6 EPG points under 50 % dilation (fails), 1 IoU point (holds) -> partly.
    assert c[7].status == "partly supported"
    assert c[4].status == "not measured" and "B-cos" in c[4].reason
    assert c[11].status == "not measured"


def test_claim1_contradicted_when_l1_dominates():
    b = "bcos-resnet18"
    recs = [record(b, None, f1=0.8, epg=0.4), record(b, "energy", f1=0.79, epg=0.5),
            record(b, "l1", f1=0.80, epg=0.6),
            record("resnet18", None, f1=0.7, epg=0.3), record("resnet18", "energy", f1=0.7, epg=0.4),
            record("resnet18", "l1", f1=0.7, epg=0.403)]  # within the 0.5-point tolerance: still covered
    c = claims(recs)[1]
    assert [ok for ok, _ in c.units] == [True, False] and c.status == "partly supported"
    recs[4] = record("resnet18", "energy", f1=0.7, epg=0.39)
    c = claims(recs)[1]
    assert [ok for ok, _ in c.units] == [False, False] and c.status == "contradicted"


def test_claim10_contradicted_when_guidance_hurts():
    cls = ["landbird", "waterbird"]
    recs = [shift(None, 0.5, 0.7, 0, cls), shift("energy", 0.4, 0.6, 0, cls), shift("l1", 0.45, 0.65, 0, cls)]
    c = claims(recs)[10]
    assert c.status == "contradicted"
    assert (False, "waterbirds bcos-resnet18 conventional (test): energy worst 40.0 vs baseline 50.0") in c.units
    # Energy > L1 fails too (40 < 45): every check fails.
    assert not any(ok for ok, _ in c.units)


def test_claim11_from_optional_targets_field():
    b = "bcos-resnet18"
    rand = record(b, "energy", f1=0.79, epg=0.60)
    every = record(b, "energy", f1=0.79, epg=0.61)
    rand["identity"]["targets"], every["identity"]["targets"] = "random", "all"
    c = claims([record(b, None, f1=0.8, epg=0.4), rand, every])[11]
    assert c.status == "supported"
    every["metrics"]["epg"] = 0.70
    assert claims([record(b, None, f1=0.8, epg=0.4), rand, every])[11].status == "contradicted"


def test_nothing_measured():
    c = claims([])
    assert {x.status for x in c.values()} == {"not measured"}
    assert all(x.reason for x in c.values())
