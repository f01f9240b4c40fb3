"""Metrics against hand-worked numbers and brute-force loops written from the reference's semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgkit.errors import UsageError
from mgkit.metrics import (
    DEFAULT_IOU_GRID,
    LocalizationAccumulator,
    average_precision,
    classification_metrics,
    epg,
    group_metrics,
    iou,
    iou_sweep,
    pareto_front,
)

H = W = 4
TL = torch.zeros(H, W)
TL[:2, :2] = 1


def _hand_map() -> torch.Tensor:
    return torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, -3, 0], [0, 0, 0, 1]])


# ------------------------------------------------------------------ brute-force references


def _ap_loop(scores: list[float], labels: list[int]) -> float:
    """AP = mean over positives of precision among all items scoring >= that positive (sklearn)."""
    pos = [i for i, y in enumerate(labels) if y]
    if not pos:
        return float("nan")
    total = 0.0
    for i in pos:
        above = [j for j in range(len(scores)) if scores[j] >= scores[i]]
        total += sum(labels[j] for j in above) / len(above)
    return total / len(pos)


def _epg_loop(a: torch.Tensor, m: torch.Tensor) -> float:
    pos = a.clamp(min=0)
    inside, total = pos[m == 1].sum(), pos.sum()
    return 0.0 if total < 1e-7 else float(inside / total)


def _iou_loop(a: torch.Tensor, m: torch.Tensor, thr: float) -> float:
    pos = a.clamp(min=0)
    mx, mn = pos.max(), pos.min()
    if mx == 0:
        b = pos
    elif torch.abs(mx - mn) < 1e-7:
        b = pos / mx
    else:
        b = (pos - mn) / (mx - mn)
    inter = len(torch.where((b > thr) & (m == 1))[0])
    union = len(torch.where(b > thr)[0]) + len(torch.where(m == 1)[0]) - inter
    return 0.0 if union == 0 else inter / union


def _random_pairs(gen: torch.Generator, p: int, h: int = 9, w: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    maps = torch.randn(p, h, w, generator=gen)
    maps[0] = 0.0  # all-zero map
    maps[1] = 0.7  # constant map: max == min
    maps[2] = -maps[2].abs()  # no positive energy
    maps[3] = maps[3].round()  # ties
    masks = torch.zeros(p, h, w)
    for i in range(p):
        y0, x0 = torch.randint(0, h, (1,), generator=gen).item(), torch.randint(0, w, (1,), generator=gen).item()
        y1 = y0 + torch.randint(0, h - y0 + 1, (1,), generator=gen).item()
        x1 = x0 + torch.randint(0, w - x0 + 1, (1,), generator=gen).item()
        masks[i, y0:y1, x0:x1] = 1
    masks[4] = 0.0  # empty mask
    masks[5] = 1.0  # full mask
    return maps, masks


# ------------------------------------------------------------------ classification


def test_classification_hand():
    # logits >= 0 are positive: preds [[1,1],[1,0],[0,0]] vs labels [[1,0],[1,1],[0,1]] (3rd class empty)
    # TP 2 (0,0),(1,0); FP 1 (0,1); FN 2 (1,1),(2,1); TN 1 (2,0) + 3 from the empty class
    logits = np.array([[2.0, 0.3, -1.0], [0.0, -0.5, -2.0], [-3.0, -0.1, -0.5]])
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    r = classification_metrics(logits, labels)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 2, 4)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(4 / 7)  # 2TP / (2TP + FP + FN)
    assert r["accuracy"] == pytest.approx(6 / 9)
    assert r["exact_match"] == 0.0  # every image has at least one wrong entry
    # AP class 0: positives score 2 and 0, both above the negative -> 1
    # AP class 1: sorted 0.3 (neg), -0.1 (pos, P=1/2), -0.5 (pos, P=2/3) -> 7/12
    assert r["per_class"][0]["ap"] == pytest.approx(1.0)
    assert r["per_class"][1]["ap"] == pytest.approx(7 / 12)
    assert r["per_class"][2]["ap"] is None  # no positive: left out of mAP
    assert r["mAP"] == pytest.approx((1 + 7 / 12) / 2)
    assert r["per_class"][1] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": pytest.approx(7 / 12), "support": 2}
    named = classification_metrics(logits, labels, class_names=["cat", "dog", "cow"])
    assert named["per_class"]["dog"]["support"] == 2


def test_average_precision_known_values():
    # sklearn's documented example: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333
    s = torch.tensor([[0.1], [0.4], [0.35], [0.8]], dtype=torch.float64)
    y = torch.tensor([[0], [0], [1], [1]], dtype=torch.bool)
    assert average_precision(s, y).item() == pytest.approx(0.8333333333)
    # a tie between a positive and a negative forms one threshold: P(0.5) = 1/2, P(0.2) = 2/3
    # AP = (1/2 * 1/2) + (1/2 * 2/3) = 0.58333 (sklearn gives the same)
    s = torch.tensor([[0.5], [0.5], [0.2]], dtype=torch.float64)
    y = torch.tensor([[1], [0], [1]], dtype=torch.bool)
    assert average_precision(s, y).item() == pytest.approx(7 / 12)


def test_classification_matches_loops():
    gen = torch.Generator().manual_seed(0)
    n, k = 60, 7
    logits = torch.randn(n, k, generator=gen).mul(2).round().div(2)  # many ties, some exact zeros
    labels = (torch.rand(n, k, generator=gen) < 0.3).float()
    labels[:, 3] = 0  # a class without positives
    r = classification_metrics(logits, labels)
    tp = fp = fn = tn = 0
    for i in range(n):
        for j in range(k):
            p, y = logits[i, j] >= 0, labels[i, j] == 1
            tp += int(p and y)
            fp += int(p and not y)
            fn += int(not p and y)
            tn += int(not p and not y)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (tp, fp, fn, tn)
    assert r["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert r["accuracy"] == pytest.approx((tp + tn) / (n * k))
    exact = sum(all((logits[i, j] >= 0) == (labels[i, j] == 1) for j in range(k)) for i in range(n)) / n
    assert r["exact_match"] == pytest.approx(exact)
    aps = []
    for j in range(k):
        ap = _ap_loop(logits[:, j].tolist(), labels[:, j].int().tolist())
        if math.isnan(ap):
            assert r["per_class"][j]["ap"] is None
        else:
            assert r["per_class"][j]["ap"] == pytest.approx(ap, rel=1e-12)
            aps.append(ap)
    assert r["mAP"] == pytest.approx(sum(aps) / len(aps), rel=1e-12)


def test_classification_errors():
    with pytest.raises(UsageError):
        classification_metrics(torch.zeros(3, 2), torch.zeros(3, 4))


# ------------------------------------------------------------------ EPG / IoU


def test_epg_iou_hand():
    maps = torch.stack([_hand_map(), -_hand_map().abs(), torch.full((H, W), 3.0), torch.zeros(H, W)])
    masks = TL.expand(4, H, W)
    # EPG: 3/4; no positive energy -> 0; constant map 12/48; zero map -> 0
    assert epg(maps, masks).tolist() == pytest.approx([0.75, 0.0, 0.25, 0.0])
    # IoU @0.5: normalised map [[.5,0,0,0],[0,1,0,0],[0]*4,[0,0,0,.5]]; only (1,1) is > .5
    #   -> inter 1, union 1 + 4 - 1 = 4 -> 0.25
    # negative map: clamps to 0, max 0 -> unchanged, nothing on -> inter 0 / union 4 = 0
    # constant 3: max == min -> A / max = 1 everywhere -> inter 4 / union 16 = 0.25
    # zero map -> 0
    assert iou(maps, masks).tolist() == pytest.approx([0.25, 0.0, 0.25, 0.0])
    # IoU @0.4 on the first map: on (0,0), (1,1), (3,3) -> inter 2, union 3 + 4 - 2 = 5 -> 0.4
    assert iou(maps[:1], masks[:1], 0.4).tolist() == pytest.approx([0.4])
    # empty mask and nothing on: union 0 -> 0
    assert iou(torch.zeros(1, H, W), torch.zeros(1, H, W)).tolist() == [0.0]


def test_epg_iou_match_loops_and_sweep():
    gen = torch.Generator().manual_seed(1)
    maps, masks = _random_pairs(gen, 24)
    e = epg(maps, masks)
    thr = torch.tensor(DEFAULT_IOU_GRID)
    sweep = iou_sweep(maps, masks, thr)
    assert sweep.shape == (24, len(DEFAULT_IOU_GRID))
    for t_idx, t in enumerate(DEFAULT_IOU_GRID):
        direct = iou(maps, masks, t)
        assert torch.equal(sweep[:, t_idx], direct), t  # the sweep is exact, not approximate
    for i in range(24):
        assert e[i].item() == pytest.approx(_epg_loop(maps[i], masks[i]), rel=1e-6, abs=1e-9)
        for t in (0.0, 0.5, 0.95):
            assert iou(maps[i : i + 1], masks[i : i + 1], t).item() == pytest.approx(_iou_loop(maps[i], masks[i], t))


# ------------------------------------------------------------------ accumulator


def test_accumulator_matches_loops():
    gen = torch.Generator().manual_seed(2)
    n, h, w = 30, 9, 11
    maps, masks = _random_pairs(gen, n, h, w)
    classes = torch.randint(0, 4, (n,), generator=gen)
    groups = torch.randint(0, 3, (n,), generator=gen)
    seg = masks * (torch.rand(n, h, w, generator=gen) < 0.6)
    seg_valid = torch.rand(n, generator=gen) < 0.5
    areas = masks.sum(dim=(-2, -1)) * 1.3  # summed-box areas can exceed the union

    acc = LocalizationAccumulator()
    for lo, hi in ((0, 7), (7, 8), (8, 30)):  # uneven batches, one of size 1
        sl = slice(lo, hi)
        acc.update(maps[sl], masks[sl], classes[sl], box_areas=areas[sl], seg_masks=seg[sl], group=groups[sl],
                   seg_valid=seg_valid[sl])
    r = acc.result()

    e = [_epg_loop(maps[i], masks[i]) for i in range(n)]
    io = [_iou_loop(maps[i], masks[i], 0.5) for i in range(n)]
    assert r["count"] == n and r["counts"]["pairs"] == n
    assert r["epg"] == pytest.approx(sum(e) / n, rel=1e-6)
    assert r["iou"] == pytest.approx(sum(io) / n) and r["iou_threshold"] == 0.5
    for t, v in r["iou_sweep"].items():
        assert v == pytest.approx(sum(_iou_loop(maps[i], masks[i], t) for i in range(n)) / n)
    best = max(r["iou_sweep"].values())
    assert r["best_iou"] == best
    assert r["best_threshold"] == min(t for t, v in r["iou_sweep"].items() if v == best)
    for c in range(4):
        idx = [i for i in range(n) if classes[i] == c]
        if not idx:
            assert c not in r["per_class"]
            continue
        assert r["per_class"][c]["count"] == len(idx)
        assert r["per_class"][c]["epg"] == pytest.approx(sum(e[i] for i in idx) / len(idx), rel=1e-6)
        assert r["per_class"][c]["iou"] == pytest.approx(sum(io[i] for i in idx) / len(idx))
    for g in range(3):
        idx = [i for i in range(n) if groups[i] == g]
        assert r["per_group"][g]["count"] == len(idx)
        assert r["per_group"][g]["epg"] == pytest.approx(sum(e[i] for i in idx) / len(idx), rel=1e-6)
    # size bins: fraction = area / (H*W), [0,.1), [.1,.25), [.25,.5), [.5,1] (+ overflow)
    edges = (0.0, 0.1, 0.25, 0.5)
    names = list(r["size_bins"])
    assert names == ["[0, 0.1)", "[0.1, 0.25)", "[0.25, 0.5)", "[0.5, 1]"]
    for b, name in enumerate(names):
        idx = [i for i in range(n) if max(j for j, lo in enumerate(edges) if areas[i].item() / (h * w) >= lo) == b]
        assert r["size_bins"][name]["count"] == len(idx)
        if idx:
            assert r["size_bins"][name]["epg"] == pytest.approx(sum(e[i] for i in idx) / len(idx), rel=1e-6)
        else:
            assert r["size_bins"][name]["epg"] is None
    # on-object: E(seg & box) / E(box), 0 when E(box) < 1e-7, over pairs with a valid seg mask
    ratios, segs, boxes = [], [], []
    for i in range(n):
        if not seg_valid[i]:
            continue
        pos = maps[i].clamp(min=0)
        eb, es, et = pos[masks[i] == 1].sum(), pos[(masks[i] == 1) & (seg[i] == 1)].sum(), pos.sum()
        ratios.append(0.0 if eb < 1e-7 else float(es / eb))
        segs.append(0.0 if et < 1e-7 else float(es / et))
        boxes.append(e[i])
    oo = r["on_object"]
    assert oo["count"] == len(ratios) == r["counts"]["on_object"]
    assert oo["ratio"] == pytest.approx(sum(ratios) / len(ratios), rel=1e-6)
    assert oo["seg_epg"] == pytest.approx(sum(segs) / len(segs), rel=1e-6)
    assert oo["box_epg"] == pytest.approx(sum(boxes) / len(boxes), rel=1e-6)
    assert r["counts"]["zero_energy"] == sum(maps[i].clamp(min=0).sum() < 1e-7 for i in range(n))

    pp = acc.per_pair()
    assert pp["epg"].shape == (n,) and torch.equal(pp["cls"], classes)
    assert pp["iou"].tolist() == pytest.approx(io)
    obj = pp["on_object"][~torch.isnan(pp["on_object"])]  # the pairs with a segmentation mask
    assert len(obj) == oo["count"] and float(obj.mean()) == pytest.approx(oo["ratio"], rel=1e-6)


def test_accumulator_chosen_threshold_protocol():
    gen = torch.Generator().manual_seed(3)
    maps, masks = _random_pairs(gen, 12)
    acc = LocalizationAccumulator()
    acc.update(maps, masks, 0)
    # a threshold chosen on validation (a grid value) gives the exact IoU at that threshold
    t = acc.result()["best_threshold"]
    assert acc.result(iou_threshold=t)["iou"] == pytest.approx(float(iou(maps, masks, t).double().mean()))
    assert acc.result(iou_threshold=0.15)["iou"] == pytest.approx(float(iou(maps, masks, 0.15).double().mean()))
    with pytest.raises(UsageError):
        acc.result(iou_threshold=0.123)
    # an off-grid threshold is supported by naming it up front
    acc2 = LocalizationAccumulator(iou_threshold=0.123)
    acc2.update(maps, masks, 0)
    assert acc2.result()["iou"] == pytest.approx(float(iou(maps, masks, 0.123).double().mean()))
    assert acc2.result()["per_class"][0]["iou"] == acc2.result()["iou"]


def test_accumulator_empty():
    r = LocalizationAccumulator().result()
    assert r["count"] == 0 and r["epg"] is None and r["iou"] is None and r["on_object"] is None
    assert r["best_threshold"] is None


# ------------------------------------------------------------------ groups and Pareto


def test_group_metrics_hand():
    names = ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    preds = torch.tensor([0, 0, 0, 1, 0, 1, 1, 0, 0, 1])
    r = group_metrics(preds, labels, groups, names)
    # per group: 3/4, 1/2, 1/3, 1/1; worst 1/3; mean (.75 + .5 + .3333 + 1) / 4 = 0.645833; overall 6/10
    assert r["per_group"] == pytest.approx({"landbird_land": 0.75, "landbird_water": 0.5,
                                            "waterbird_land": 1 / 3, "waterbird_water": 1.0})
    assert r["worst_group"] == pytest.approx(1 / 3) and r["worst_group_name"] == "waterbird_land"
    assert r["mean_group"] == pytest.approx((0.75 + 0.5 + 1 / 3 + 1.0) / 4)
    assert r["overall"] == pytest.approx(0.6)
    # an empty group is None and does not count in worst / mean
    r = group_metrics(preds[:6], labels[:6], groups[:6], names)
    assert r["per_group"]["waterbird_land"] is None and r["worst_group"] == pytest.approx(0.5)
    with pytest.raises(UsageError):
        group_metrics(preds, labels, groups, names[:2])


def _pareto_reference(points: list[tuple[float, ...]], bw: float) -> list[int]:
    """The reference's sequential filter (utils.ParetoFrontModels.is_pareto_efficient), as loops."""
    costs = [[-np.round(v / bw) * bw for v in p] for p in points]
    alive = list(range(len(points)))
    k = 0
    while k < len(alive):
        ci = costs[alive[k]]
        keep = [j for j in alive if j == alive[k] or any(a < b for a, b in zip(costs[j], ci))]
        k = sum(1 for j in keep if j in alive[:k]) + 1
        alive = keep
    return alive


def _pareto_brute(points: list[tuple[float, ...]], bw: float) -> list[int]:
    """O(n^2): drop strictly dominated points and later copies of an equal (rounded) point."""
    r = [tuple(np.round(v / bw) for v in p) for p in points]
    out = []
    for j, pj in enumerate(r):
        dominated = any(all(a >= b for a, b in zip(pi, pj)) and any(a > b for a, b in zip(pi, pj)) for pi in r)
        dup = any(r[i] == pj for i in range(j))
        if not dominated and not dup:
            out.append(j)
    return out


def test_pareto_hand():
    pts = [(0.80, 0.50), (0.70, 0.60), (0.60, 0.40), (0.80, 0.50), (0.801, 0.502), (0.75, 0.55)]
    # (0.60, 0.40) is dominated; (0.80, 0.50) repeats -> the earlier copy stays; (0.801, 0.502) rounds to
    # the same bins (160.2 -> 160, 100.4 -> 100) and goes too; (0.75, 0.55) is a trade-off point.
    assert pareto_front(pts) == [0, 1, 5]
    assert pareto_front([]) == []
    with pytest.raises(UsageError):
        pareto_front([(0.1, float("nan"))])


def test_pareto_matches_brute_force_and_reference():
    rng = np.random.default_rng(4)
    for trial in range(30):
        n, d = int(rng.integers(1, 40)), int(rng.integers(1, 4))
        pts = [tuple(float(v) for v in row) for row in rng.integers(0, 6, size=(n, d)) * 0.004 + 0.5]
        got = pareto_front(pts)
        assert got == _pareto_brute(pts, 0.005), trial
        assert got == sorted(_pareto_reference(pts, 0.005)), trial


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_accumulator_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(6)
    maps, masks = _random_pairs(gen, 16)
    classes = torch.randint(0, 3, (16,), generator=gen)
    results = []
    for dev in ("cpu", "cuda"):
        acc = LocalizationAccumulator()
        acc.update(maps.to(dev), masks.to(dev), classes.to(dev), seg_masks=masks.to(dev), group=1)
        results.append(acc.result())
    cpu, gpu = results
    assert gpu["iou_sweep"] == pytest.approx(cpu["iou_sweep"])
    assert gpu["epg"] == pytest.approx(cpu["epg"], rel=1e-5)
    assert gpu["on_object"] == pytest.approx(cpu["on_object"], rel=1e-5)
