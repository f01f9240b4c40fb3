"""Bootstrap intervals: batched resampling against a brute-force loop over the same draws."""

import json

import numpy as np
import pytest

from mgkit.bootstrap import (align, combine_seeds, decode_per_image, encode_per_image, headline_intervals,
                             paired_difference, per_image_sums, ratio_interval, resample_indices)


def _brute(num, den, reps, seed):
    stats = []
    for chunk in resample_indices(len(num), reps, seed):
        for idx in chunk:  # one resample at a time, summing the drawn images one by one
            n = sum(num[i] for i in idx)
            d = sum(den[i] for i in idx)
            stats.append(n / d if d > 0 else np.nan)
    return np.asarray(stats)


def test_ratio_interval_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(1)
    num, den = rng.random(37) * 3, rng.integers(0, 4, 37).astype(float)  # images with 0 pairs included
    iv = ratio_interval(num, den, reps=250, seed=7)  # 250: chunks of 100, 100, 50
    s = _brute(num, den, 250, 7)
    s = s[np.isfinite(s)]
    assert iv.value == pytest.approx(num.sum() / den.sum())
    assert (iv.lo, iv.hi) == pytest.approx((np.quantile(s, 0.025), np.quantile(s, 0.975)))
    assert iv.lo < iv.value < iv.hi


def test_paired_difference_matches_a_loop_and_is_narrower_than_unpaired():
    rng = np.random.default_rng(2)
    hard = rng.random(60)  # a per-image difficulty both models share
    den = np.ones(60)
    a, b = hard + 0.05 + 0.01 * rng.random(60), hard + 0.01 * rng.random(60)
    d = paired_difference(a, den, b, den, reps=200, seed=3)
    sa, sb = _brute(a, den, 200, 3), _brute(b, den, 200, 3)
    assert (d.lo, d.hi) == pytest.approx((np.quantile(sa - sb, 0.025), np.quantile(sa - sb, 0.975)))
    ia, ib = ratio_interval(a, den, reps=200, seed=3), ratio_interval(b, den, reps=200, seed=3)
    assert d.lo > 0.03 and d.half_width < 0.1 * (ia.half_width + ib.half_width)


def test_interval_covers_the_truth_at_about_the_level():
    # Coverage over repeated samples of a known population: 95 % nominal, ~90-99 % allowed for 200 trials.
    rng = np.random.default_rng(0)
    hits = 0
    for t in range(200):
        x = rng.random(80) < 0.3
        iv = ratio_interval(x.astype(float), np.ones(80), reps=300, seed=t)
        hits += iv.lo <= 0.3 <= iv.hi
    assert 0.88 <= hits / 200 <= 0.99


def test_undefined_and_bad_input():
    assert ratio_interval(np.zeros(5), np.zeros(5)) is None
    with pytest.raises(ValueError, match="same images"):
        paired_difference(np.ones(3), np.ones(3), np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match=r"\[N\]"):
        ratio_interval(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="different images"):
        align([0, 1, 2], [1, 2, 3])
    ra, rb = align([5, 3, 9], [9, 5, 3])
    assert [5, 3, 9][ra[0]] == [9, 5, 3][rb[0]] and list(np.asarray([5, 3, 9])[ra]) == list(np.asarray([9, 5, 3])[rb])


def test_headline_intervals_from_counts():
    per = {"tp": np.array([1, 0, 2, 1]), "fp": np.array([0, 1, 0, 0]), "fn": np.array([0, 1, 1, 0]),
           "epg_sum": np.array([0.5, 0.0, 1.2, 0.9]), "iou_sum": np.array([0.1, 0.0, 0.4, 0.3]),
           "pairs": np.array([1, 0, 2, 1])}
    out = headline_intervals(per, reps=100)
    assert out["f1_lo"] <= 8 / 11 <= out["f1_hi"]  # 2*4 / (2*4 + 1 + 2)
    assert out["epg_lo"] <= 2.6 / 4 <= out["epg_hi"]
    assert set(out) == {f"{m}_{s}" for m in ("f1", "epg", "iou") for s in ("lo", "hi")}
    one = ratio_interval(per["epg_sum"], per["pairs"], reps=100)  # the shared draws equal a call of its own
    assert (out["epg_lo"], out["epg_hi"]) == (one.lo, one.hi)
    # optional sums: IoU at a chosen threshold; on-object ratio over the pairs that have a mask
    per["iou_chosen_sum"] = per["iou_sum"] * 2
    per["on_object_sum"], per["on_object_pairs"] = np.array([0.9, 0.0, 0.7, 0.0]), np.array([1, 0, 1, 0])
    out = headline_intervals(per, reps=100)
    assert out["on_object_lo"] <= 0.8 <= out["on_object_hi"] and out["iou_chosen_lo"] <= 1.6 / 4 <= out["iou_chosen_hi"]
    back = decode_per_image(json.loads(json.dumps(encode_per_image(
        per_image_sums([2, 0, 1], -np.ones((3, 2)), np.ones((3, 2)), [0, 2, 2], [0.5, 0.25, 0.75], [0.1, 0.2, 0.3],
                       pair_on_object=[np.nan, 0.5, 1.0])))))
    assert list(back["pairs"]) == [1, 0, 2] and back["on_object_sum"].tolist() == [0.0, 0.0, 1.5]
    assert back["on_object_pairs"].tolist() == [0, 0, 2] and back["fn"].tolist() == [2, 2, 2]


def test_combine_seeds_adds_between_seed_spread():
    mean, std, iv = combine_seeds([0.5, 0.6], [0.45, 0.55], [0.55, 0.65])
    assert mean == pytest.approx(0.55) and std == pytest.approx(np.std([0.5, 0.6], ddof=1))
    se_test = 0.05 / 1.959964
    assert iv.half_width == pytest.approx(1.959964 * np.sqrt(se_test ** 2 + std ** 2 / 2), rel=1e-5)
    one = combine_seeds([0.5], [0.45], [0.55])
    assert one[1] is None and (one[2].lo, one[2].hi) == pytest.approx((0.45, 0.55))


def test_group_intervals_match_a_loop_and_the_metric():
    import torch

    from mgkit.bootstrap import group_intervals
    from mgkit.metrics import group_metrics

    rng = np.random.default_rng(4)
    groups = rng.integers(0, 4, 50)
    correct = (rng.random(50) < np.array([0.9, 0.5, 0.7, 0.8])[groups]).astype(float)
    iv = group_intervals(correct, groups, reps=150, seed=2)
    ref = group_metrics(torch.tensor(correct.astype(int)), torch.ones(50, dtype=torch.long), torch.tensor(groups),
                        ["a", "b", "c", "d"])
    assert iv["worst_group"].value == pytest.approx(ref["worst_group"])
    assert iv["mean_group"].value == pytest.approx(ref["mean_group"])
    assert iv["overall"].value == pytest.approx(ref["overall"])
    worst = []
    for chunk in resample_indices(50, 150, 2):
        for idx in chunk:
            accs = [correct[idx][groups[idx] == g].mean() for g in range(4) if (groups[idx] == g).any()]
            worst.append(min(accs))
    assert (iv["worst_group"].lo, iv["worst_group"].hi) == pytest.approx(
        (np.quantile(worst, 0.025), np.quantile(worst, 0.975)))
