"""Each claim's rule on constructed records with a known answer: clearly supported, clearly contradicted,
within noise (inconclusive), and not measured; intervals, pairing and the verdict logic on their own."""

import numpy as np
import pytest

from mgkit.bootstrap import encode_per_image
from mgkit.report.analysis import Analysis
from mgkit.report.claims import (FAILS, HOLDS, UNCLEAR, Num, all_claims, resolution, timings_from, verdict_above,
                                 verdict_below, verdict_within)
from mgkit.report.records import Source, to_points

from fabricate import main_records, other_records, record, shift

B, V, X = "bcos-resnet18", "resnet18", "xdnn-resnet18"


def claims(recs, timings=None, judge=False):
    points, _ = to_points(Source("mem.json", r) for r in recs)
    out, j = all_claims(Analysis(points), timings=timings)
    out = {c.number: c for c in out}
    return (out, j) if judge else out


def verdicts(c):
    return [v for v, _ in c.units]


def test_verdicts_against_a_margin():
    assert verdict_above(Num(0.1, 0.05, 0.15), 0.0) == HOLDS
    assert verdict_above(Num(-0.1, -0.15, -0.05), 0.0) == FAILS
    assert verdict_above(Num(0.01, -0.02, 0.04), 0.0) == UNCLEAR
    assert verdict_above(Num(0.5), 0.0) == UNCLEAR  # no interval: never decisive
    assert verdict_above(Num(0.03, 0.02, 0.04), 0.05) == FAILS  # clearly positive, clearly below the margin
    assert verdict_below(Num(0.01, 0.0, 0.02), 0.03) == HOLDS and verdict_below(Num(0.1, 0.05, 0.15), 0.03) == FAILS
    assert verdict_within(Num(0.0, -0.02, 0.02), 0.03) == HOLDS
    assert verdict_within(Num(0.1, 0.05, 0.15), 0.03) == FAILS
    assert verdict_within(Num(0.02, -0.01, 0.05), 0.03) == UNCLEAR


def test_independent_difference_combines_half_widths():
    d = Num(0.7, 0.67, 0.73).minus(Num(0.5, 0.46, 0.54))
    assert d.value == pytest.approx(0.2) and d.hi - d.value == pytest.approx(np.hypot(0.03, 0.04))
    assert Num(0.7).minus(Num(0.5, 0.4, 0.6)).has_interval is False


def _front_recs(e_epg, l1_epg, ci):
    return [record(B, None, f1=0.80, epg=0.40, iou=0.1, ci=ci),
            record(B, "energy", f1=0.79, epg=e_epg, iou=0.1, ci=ci), record(B, "energy", f1=0.70, epg=0.9, iou=0.1, ci=ci),
            record(B, "l1", f1=0.78, epg=l1_epg, iou=0.3, ci=ci),
            # L1's point above Energy's whole F1 range (a λ that barely moved the model) is outside the shared range
            record(B, "l1", f1=0.81, epg=0.41, iou=0.2, ci=ci)]


@pytest.mark.parametrize("e_epg, l1_epg, ci, status", [
    (0.70, 0.50, 0.01, "supported"),  # 20 points better, ±1.4 combined
    (0.50, 0.70, 0.01, "contradicted"),
    (0.60, 0.59, 0.02, "inconclusive"),  # 1 point apart, ±2.8 combined
    (0.70, 0.50, None, "inconclusive"),  # no intervals: never decisive
])
def test_claim1_front_over_the_shared_f1_range(e_epg, l1_epg, ci, status):
    c = claims(_front_recs(e_epg, l1_epg, ci))[1]
    assert c.status == status and len(c.units) == 1
    assert "over F1 78.0–79.0" in c.units[0][1] and "at F1 81.0" not in c.units[0][1]


def test_claim1_paired_bootstrap_resolves_what_independent_intervals_cannot():
    """Two models 1 point apart on every image: independent ±2 intervals straddle 0, the paired one does not."""
    rng = np.random.default_rng(0)
    n = 200
    hard = rng.random(n)
    idx = np.arange(n)

    def sums(epg_shift):
        e = np.clip(hard + epg_shift, 0, 1)
        return encode_per_image({"index": idx, "tp": np.ones(n), "fp": np.zeros(n), "fn": np.zeros(n),
                                 "pairs": np.ones(n), "epg_sum": e, "iou_sum": e})

    recs = [record(B, None, f1=0.80, epg=0.40, ci=0.02), record(B, "energy", f1=0.79, epg=0.51, ci=0.02),
            record(B, "l1", f1=0.79, epg=0.50, ci=0.02)]
    assert claims(recs)[1].status == "inconclusive"
    recs[1]["per_image"] = sums(0.01 + 0.001 * rng.random(n))
    recs[2]["per_image"] = sums(0.0)
    recs[1]["metrics"]["epg"], recs[2]["metrics"]["epg"] = float(np.mean(np.clip(hard + 0.01, 0, 1))), float(hard.mean())
    c = claims(recs)[1]
    assert c.status == "supported" and "paired" not in c.units[0][1]  # the text shows numbers, not the method
    _, j = claims(recs, judge=True)
    assert any(d.how == "diff (paired)" for d in j.diffs["epg"])


@pytest.mark.parametrize("g_epg, g_iou, status", [(0.45, 0.35, "supported"), (0.25, 0.35, "contradicted"),
                                                  (0.315, 0.35, "inconclusive")])
def test_claim3_final_layer_gain_beyond_one_point(g_epg, g_iou, status):
    recs = [record(V, None, "final", f1=0.7, epg=0.30, iou=0.20, ci=0.01),
            record(V, "energy", "final", f1=0.69, epg=g_epg, iou=g_iou, ci=0.01),
            record(V, "l1", "final", f1=0.60, epg=0.9, iou=0.9, ci=0.01)]  # 10 F1 points lower: not a candidate
    c = claims(recs)[3]
    assert c.status == status and len(c.units) == 2


def _families(bcos_base, ci=0.01, gradcam_base=None):
    recs = [record(B, None, f1=0.8, epg=bcos_base, iou=0.3, ci=ci), record(B, "energy", f1=0.8, epg=bcos_base + 0.3, iou=0.5, ci=ci),
            record(X, None, f1=0.8, epg=0.40, iou=0.2, ci=ci), record(X, "energy", f1=0.8, epg=0.55, iou=0.3, ci=ci),
            record(V, None, f1=0.8, epg=0.30, iou=0.1, ci=ci), record(V, "energy", f1=0.8, epg=0.45, iou=0.2, ci=ci)]
    if gradcam_base is not None:  # another attribution of the vanilla model: not like for like, left out
        recs += [record(V, None, f1=0.8, epg=gradcam_base, iou=0.9, ci=ci, attribution="gradcam"),
                 record(V, "energy", f1=0.8, epg=0.99, iou=0.95, ci=ci, attribution="gradcam")]
    return recs


def test_claim4_like_for_like_on_epg_and_iou():
    c = claims(_families(0.5, gradcam_base=0.95))[4]
    assert c.status == "supported"
    assert not any("gradcam" in d for _, d in c.units)
    assert any("baseline IoU" in d for _, d in c.units) and any("best EPG bcos" in d for _, d in c.units)
    assert claims(_families(0.3))[4].status == "contradicted"  # B-cos baseline EPG below X-DNN's
    assert claims(_families(0.5, ci=0.2))[4].status == "inconclusive"
    assert claims([record(B, None, f1=0.8, epg=0.5)])[4].status == "not measured"


@pytest.mark.parametrize("f1_gain, status", [(0.02, "supported"), (-0.02, "contradicted"), (0.006, "inconclusive")])
def test_claim5_f1_gain_beyond_the_margin(f1_gain, status):
    recs = []
    for model, layer, attr in ((X, "input", None), (X, "final", None), (V, "final", None)):
        recs += [record(model, None, layer, f1=0.70, epg=0.30, iou=0.2, ci=0.003),
                 record(model, "energy", layer, f1=0.70 + f1_gain, epg=0.35, iou=0.25, ci=0.003),
                 record(model, "energy", layer, f1=0.60, epg=0.60, iou=0.3, ci=0.003)]  # the trade-off
    c = claims(recs)[5]
    assert c.status == status
    assert "trade-off" in c.units[-1][1] and c.units[-1][0] == HOLDS


def _annotations(g1, ten, ci=0.01):
    return [record(B, None, f1=0.8, epg=0.40, ci=ci),
            record(B, "energy", f1=0.8, epg=0.70, ci=ci, bbox_frac=1.0),
            record(B, "energy", f1=0.8, epg=ten, ci=ci, bbox_frac=0.1),
            record(B, "energy", f1=0.8, epg=0.40 + g1, ci=ci, bbox_frac=0.01)]


def test_claim6_large_gain_at_one_percent_and_ten_equals_hundred():
    assert claims(_annotations(0.2, 0.69))[6].status == "supported"
    c = claims(_annotations(0.03, 0.69))[6]  # a clear gain, but below the 5-point 'large'
    assert c.status == "contradicted" and verdicts(c) == [FAILS, HOLDS]
    assert verdicts(claims(_annotations(0.2, 0.60))[6]) == [HOLDS, FAILS]  # 10 % is 10 points short of 100 %
    assert claims(_annotations(0.2, 0.675))[6].status == "inconclusive"  # −2.5 ± 1.4 straddles −3


def _dilation(e_hi, l_hi, ci=0.01):
    return [record(B, None, f1=0.8, epg=0.4, iou=0.1, ci=ci),
            record(B, "energy", f1=0.8, epg=0.7, iou=0.3, ci=ci), record(B, "l1", f1=0.8, epg=0.6, iou=0.4, ci=ci),
            record(B, "energy", f1=0.8, epg=e_hi, iou=0.3, ci=ci, dilate=0.5),
            record(B, "l1", f1=0.8, epg=l_hi, iou=0.3, ci=ci, dilate=0.5)]


def test_claim7_markedly_is_a_stated_drop():
    c = claims(_dilation(0.7, 0.45))[7]
    assert c.status == "supported" and len(c.units) == 6  # EPG and IoU: Energy, L1, L1 − Energy each
    assert claims(_dilation(0.6, 0.45))[7].status == "contradicted"  # Energy loses 10 points
    c = claims(_dilation(0.7, 0.58))[7]  # L1 loses 2 points: degrades, but not markedly
    assert c.status == "contradicted" and "L1 drop +2.0" in c.units[1][1]
    assert claims(_dilation(0.7, 0.55, ci=0.02))[7].status == "inconclusive"  # L1 drop 5 ± 2.8


def test_claim8_on_object_difference():
    recs = [record(B, None, f1=0.8, epg=0.4, ci=0.01),
            record(B, "energy", f1=0.8, epg=0.6, on_object=0.8, ci=0.01, experiment="segmentation"),
            record(B, "l1", f1=0.8, epg=0.5, on_object=0.6, ci=0.01, experiment="segmentation")]
    assert claims(recs)[8].status == "supported"
    recs[2]["metrics"].update(on_object=0.9, on_object_lo=0.89, on_object_hi=0.91)
    assert claims(recs)[8].status == "contradicted"


def _depth(mid_epg):
    return [record(B, None, f1=0.8, epg=0.4, ci=0.01),
            record(B, "energy", "input", f1=0.8, epg=0.7, ci=0.01, experiment="depth"),
            record(B, "energy", "mid2", eval_layer="input", f1=0.8, epg=mid_epg, ci=0.01)]


def test_claim9_gain_share_and_speed_from_timings_made_alone():
    fast = timings_from([{"config": "guided/bcos/input", "step_s": [2.0, 2.1, 2.2]},
                         {"config": "guided/bcos/mid2", "step_s": [1.0, 1.05, 1.1]},
                         {"config": "eval/bcos/input", "step_s": [9.0]}])
    assert set(fast) == {("bcos", "input"), ("bcos", "mid2")}
    c = claims(_depth(0.68), fast)[9]
    assert c.status == "supported" and "speed-up 2.00× [1.82, 2.20]" in c.units[-1][1]
    slow = timings_from([{"config": "guided/bcos/input", "step_s": [2.0, 2.1]},
                         {"config": "guided/bcos/mid2", "step_s": [1.9, 2.0]}])
    assert claims(_depth(0.68), slow)[9].status == "contradicted"
    assert claims(_depth(0.50), fast)[9].status == "contradicted"  # gain 10 vs 30 at the input
    c = claims(_depth(0.68))[9]
    assert c.status == "supported" and "speed not measured" in c.reason  # the EPG part alone, speed noted


def _shift(base, energy, l1):
    cls = ["landbird", "waterbird"]
    return [r for s, (b, e, l) in enumerate(zip(base, energy, l1))
            for r in (shift(None, b, b + 0.2, s, cls), shift("energy", e, e + 0.2, s, cls), shift("l1", l, l + 0.2, s, cls))]


def test_claim10_against_the_spread_over_seeds():
    c = claims(_shift([0.40, 0.42, 0.41], [0.56, 0.57, 0.55], [0.50, 0.51, 0.52]))[10]
    assert c.status == "supported" and len(c.units) == 5
    assert claims(_shift([0.50, 0.52, 0.51], [0.40, 0.41, 0.42], [0.45, 0.44, 0.46]))[10].status == "contradicted"
    # The paper's L1 case: a mean gain smaller than its spread over seeds.
    assert claims(_shift([0.40, 0.42, 0.41], [0.56, 0.57, 0.55], [0.35, 0.50, 0.45]))[10].status == "inconclusive"
    assert claims(_shift([0.40], [0.56], [0.50]))[10].status == "inconclusive"  # one seed: no spread


@pytest.mark.parametrize("all_epg, status", [(0.60, "supported"), (0.70, "contradicted"), (0.625, "inconclusive")])
def test_claim11_random_against_all_targets(all_epg, status):
    recs = [record(B, None, f1=0.8, epg=0.4, ci=0.01), record(B, "energy", f1=0.79, epg=0.60, ci=0.01, targets="random"),
            record(B, "energy", f1=0.79, epg=all_epg, ci=0.01, targets="all")]
    assert claims(recs)[11].status == status


def test_claim11_reads_the_targets_experiment_beside_the_main_runs():
    """The pipeline evaluates the --targets all runs as experiment "targets"; the main runs are the reference."""
    recs = [record(B, None, f1=0.8, epg=0.4, ci=0.01), record(B, "energy", f1=0.79, epg=0.60, ci=0.01, targets="random"),
            record(B, "energy", f1=0.79, epg=0.70, ci=0.01, targets="all", experiment="targets")]
    c = claims(recs)[11]
    assert c.status == "contradicted" and len(c.units) == 1


def test_claim11_not_measured_without_all_targets_runs():
    c = claims(main_records())[11]
    assert c.status == "not measured" and "--targets" in c.reason


def test_paper_like_records_without_intervals_decide_nothing():
    """Old records (no intervals): every measured claim is inconclusive, never supported or contradicted."""
    c = claims(main_records() + other_records())
    assert {x.status for x in c.values()} <= {"inconclusive", "not measured"}
    assert c[1].status == "inconclusive" and c[4].status == "not measured"


def test_resolution_reports_single_and_difference_half_widths():
    _, j = claims(_front_recs(0.7, 0.5, 0.02), judge=True)
    res = {m: (s, d, n) for m, s, d, n in resolution(j)}
    assert res["epg"][0] == pytest.approx(0.02) and res["epg"][1] == pytest.approx(0.02 * np.sqrt(2))
    assert res["f1"][0] == pytest.approx(0.02)


def test_nothing_measured():
    c = claims([])
    assert {x.status for x in c.values()} == {"not measured"}
    assert all(x.reason for x in c.values())


def test_claim10_one_seed_decided_by_its_test_set_intervals():
    recs = _shift([0.40], [0.56], [0.50])
    for r in recs:
        m = r["splits"]["test"]
        m.update(worst_group_lo=m["worst_group"] - 0.02, worst_group_hi=m["worst_group"] + 0.02,
                 overall_lo=m["overall"] - 0.02, overall_hi=m["overall"] + 0.02)
    c = claims(recs)[10]
    assert c.status == "supported" and "energy 56.0 [54.0, 58.0] − baseline 40.0 [38.0, 42.0]" in c.units[0][1]


@pytest.mark.parametrize("l1_iou, status", [(0.40, "supported"), (0.05, "contradicted"), (0.105, "inconclusive")])
def test_claim2_l1_iou_front(l1_iou, status):
    recs = [record(V, None, "final", f1=0.70, epg=0.3, iou=0.05, ci=0.01),
            record(V, "l1", "final", f1=0.69, epg=0.3, iou=l1_iou, ci=0.01),
            record(V, "energy", "final", f1=0.69, epg=0.5, iou=0.10, ci=0.01)]
    assert claims(recs)[2].status == status


def test_claim8_within_noise_is_inconclusive():
    recs = [record(B, None, f1=0.8, epg=0.4, ci=0.01),
            record(B, "energy", f1=0.8, epg=0.6, on_object=0.70, ci=0.02, experiment="segmentation"),
            record(B, "l1", f1=0.8, epg=0.5, on_object=0.69, ci=0.02, experiment="segmentation")]
    assert claims(recs)[8].status == "inconclusive"


def test_claims_average_each_seeds_best_like_the_tables():
    """Seed 1's lucky candidate does not decide: the seeds' bests (0.45, 0.31) average to 0.38, not 0.45."""
    recs = [record(V, None, "final", f1=0.70, epg=0.30, iou=0.20, ci=0.01, seed=0),
            record(V, "energy", "final", f1=0.69, epg=0.45, iou=0.35, ci=0.01, seed=0),
            record(V, "energy", "final", f1=0.69, epg=0.31, iou=0.35, ci=0.01, seed=1)]
    c = claims(recs)[3]
    assert "best guided 38.0 [" in c.units[0][1] and c.units[0][0] == UNCLEAR  # two seeds 14 points apart


def test_claim1_compares_fronts_within_each_training_seed():
    """Seed 1's Energy point cannot rescue seed 0's front: each seed's fronts are compared on their own."""
    recs = [r for seed, e in ((0, 0.50), (1, 0.90)) for r in
            [record(B, None, f1=0.80, epg=0.40, iou=0.1, ci=0.01, seed=seed),
             record(B, "energy", f1=0.79, epg=e, iou=0.1, ci=0.01, seed=seed),
             record(B, "energy", f1=0.70, epg=0.95, iou=0.1, ci=0.01, seed=seed),
             record(B, "l1", f1=0.78, epg=0.70, iou=0.3, ci=0.01, seed=seed)]]
    c = claims(recs)[1]
    assert [(v, d.split(":")[0]) for v, d in c.units] == [(FAILS, "synthetic bcos-resnet18/bcos/input seed 0"),
                                                          (HOLDS, "synthetic bcos-resnet18/bcos/input seed 1")]


def test_results_whose_every_candidate_costs_too_much_f1_are_inconclusive_not_unmeasured():
    """The experiments ran, but no guided model is within the rule's F1 budget: each such claim says so in
    an inconclusive unit (with the candidates' best F1), instead of 'not measured'."""
    recs = [record(B, None, f1=0.80, epg=0.40, iou=0.1, ci=0.01),
            record(B, None, "final", f1=0.80, epg=0.40, iou=0.1, ci=0.01),
            record(B, "energy", "final", f1=0.60, epg=0.9, iou=0.9, ci=0.01),
            record(B, "energy", f1=0.70, epg=0.9, ci=0.01, bbox_frac=0.01),
            record(B, "energy", f1=0.60, epg=0.9, ci=0.01, targets="all", experiment="targets"),
            record(B, "energy", f1=0.79, epg=0.6, ci=0.01, targets="random")]
    out = claims(recs)
    for number, phrase in ((3, "bcos/final EPG: no candidate at most 5 F1 points below the baseline's 80.0 "
                               "(1 candidates, highest F1 60.0)"),
                           (6, "energy: 1 % boxes: no candidate at most 1 F1 points below the baseline's 80.0 "
                               "(1 candidates, highest F1 70.0)"),
                           (11, "energy: all classes: no candidate at most 5 F1 points below the baseline's 80.0")):
        c = out[number]
        assert c.status == "inconclusive" and any(v == UNCLEAR and phrase in d for v, d in c.units), (number, c.units)
    recs[3] = record(B, "energy", f1=0.795, epg=0.9, ci=0.01, bbox_frac=0.01)  # within 1 point: decided again
    assert out[6].status != claims(recs)[6].status == "supported"
