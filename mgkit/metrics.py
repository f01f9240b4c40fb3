"""Evaluation metrics: multi-label classification, localization (EPG, IoU), groups, Pareto fronts.

Localization metrics are computed per (image, class) pair, vectorised over a batch of pairs, and
accumulated by ``LocalizationAccumulator`` so that evaluation can stream over a data set.
Undefined averages (nothing to average) are reported as ``None``.

Why not torchmetrics (MultilabelF1Score, MultilabelAveragePrecision): it is not among the allowed
dependencies, and its definitions differ at the edges the spec fixes: its AP of a class without
positives is NaN with a warning (torchmetrics issue #2494), which then enters its macro average, where
the spec leaves such classes out of mAP (None when no class has a positive); its "micro" AP pools all
classes into one ranking rather than averaging per-class APs. The few lines here are checked against brute-force
loops and sklearn-style hand examples in tests/test_metrics.py. Validation still runs on rank 0 only:
AP needs every score of a class, so sharding it would mean gathering all logits anyway, and the
localization sums (the costly part) would need per-pair lists for the threshold choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mgkit.errors import UsageError
from mgkit.fronts import pareto_front  # noqa: F401  (part of this module's API)

__all__ = [
    "classification_metrics",
    "average_precision",
    "epg",
    "iou",
    "iou_sweep",
    "normalize_for_iou",
    "LocalizationAccumulator",
    "DEFAULT_IOU_GRID",
    "DEFAULT_SIZE_BINS",
    "group_metrics",
    "pareto_front",
]

_EPS_ENERGY = 1e-7  # reference: a pair whose positive energy is below this scores EPG 0
_THR_TOL = 1e-9  # how close a requested IoU threshold must be to a stored one

DEFAULT_IOU_GRID: tuple[float, ...] = tuple(i / 20 for i in range(20))  # 0.0, 0.05, ..., 0.95
DEFAULT_SIZE_BINS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)  # box area as a fraction of the image


def _tensor(x: Tensor | np.ndarray | Sequence, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name} must be a tensor or an array of numbers ({exc}).") from None


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division=0 convention: an empty denominator scores 0 rather than NaN.
    return num / den if den > 0 else 0.0


# ------------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------------


def average_precision(scores: Tensor, positives: Tensor) -> Tensor:
    """Per-column average precision ``[K]`` of ``scores [N, K]`` against bool ``positives [N, K]``.

    AP = mean over positives of the precision at that positive's score, where the precision at score s
    counts every item scoring >= s. Tied scores therefore form one threshold, which is what sklearn's
    ``average_precision_score`` computes. Columns without positives give NaN.
    """
    n, k = scores.shape
    if n == 0:
        return torch.full((k,), float("nan"), dtype=torch.float64)
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s = scores.gather(0, order)
    y = positives.gather(0, order).to(torch.float64)
    tp = y.cumsum(0)
    idx = torch.arange(n, device=scores.device)[:, None].expand(n, k)
    # For each sorted position, the index of the last item of its tie group: every tie member
    # is scored with the precision after the whole group.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[:-1] != s[1:]
    cand = torch.where(last, idx, torch.full_like(idx, n))
    end = cand.flip(0).cummin(0).values.flip(0)
    prec = tp.gather(0, end) / (end + 1).to(torch.float64)
    npos = y.sum(0)
    ap = (y * prec).sum(0) / npos.clamp(min=1)
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def classification_metrics(
    logits: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    threshold: float = 0.0,
    *,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Multi-label metrics for ``logits [N, K]`` and multi-hot ``labels [N, K]``.

    A prediction is positive iff ``logit >= threshold`` (reference: threshold 0, i.e. sigmoid >= 0.5).
    Returns micro ``precision``, ``recall``, ``f1`` = 2TP/(2TP+FP+FN) and ``accuracy`` over all N·K
    entries; ``exact_match`` (all K entries right, per image); ``mAP`` = mean AP over classes with at
    least one positive; raw ``tp/fp/fn/tn``; and ``per_class`` {name or index: {precision, recall, f1,
    ap, support}}. A zero denominator gives 0 (sklearn's default); AP of a class without positives and
    mAP without any positive class are None.
    """
    s = _tensor(logits, "logits").to(torch.float64).cpu()
    y = _tensor(labels, "labels").cpu()
    if s.dim() == 1:
        s, y = s[:, None], y.reshape(-1, 1)
    if s.dim() != 2 or y.shape != s.shape:
        raise UsageError(f"logits and labels must both be [N, K]; got {tuple(s.shape)} and {tuple(y.shape)}.")
    k = s.shape[1]
    if class_names is not None and len(class_names) != k:
        raise UsageError(f"class_names has {len(class_names)} names for {k} classes.")
    pos = y.to(torch.float64) > 0.5
    pred = s >= threshold
    tp_c = (pred & pos).sum(0)
    fp_c = (pred & ~pos).sum(0)
    fn_c = (~pred & pos).sum(0)
    tn_c = (~pred & ~pos).sum(0)
    tp, fp, fn, tn = (int(v.sum()) for v in (tp_c, fp_c, fn_c, tn_c))
    ap = average_precision(s, pos)
    defined = ~torch.isnan(ap)
    per_class = {}
    for j in range(k):  # reporting only: the numbers above are already computed
        a, b, c = int(tp_c[j]), int(fp_c[j]), int(fn_c[j])
        per_class[class_names[j] if class_names is not None else j] = {
            "precision": _ratio(a, a + b),
            "recall": _ratio(a, a + c),
            "f1": _ratio(2 * a, 2 * a + b + c),
            "ap": float(ap[j]) if defined[j] else None,
            "support": a + c,
        }
    n_img = s.shape[0]
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "exact_match": _ratio(float((pred == pos).all(1).sum()), n_img),
        "mAP": float(ap[defined].mean()) if bool(defined.any()) else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": n_img,
        "per_class": per_class,
    }


# ------------------------------------------------------------------------------------------------
# Localization, per (image, class) pair
# ------------------------------------------------------------------------------------------------


def _check_pairs(maps: Tensor, masks: Tensor) -> None:
    if maps.dim() != 3 or masks.shape != maps.shape:
        raise UsageError(
            f"maps and masks must both have shape [P, H, W]; got {tuple(maps.shape)} and {tuple(masks.shape)}."
        )


def _maps(maps: Tensor) -> Tensor:
    # Half-precision sums over 50k pixels overflow or lose most digits: evaluate in fp32 at least.
    maps = maps.detach()
    return maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps


def epg(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy pointing game ``[P]``: positive energy inside the mask / total positive energy.

    A pair with total positive energy < 1e-7 scores 0 (reference), and still counts in averages.
    """
    _check_pairs(maps, masks)
    pos = _maps(maps).clamp(min=0)
    return _epg_of(pos, masks.to(pos.dtype), pos.sum(dim=(-2, -1)))


def _epg_of(pos: Tensor, masks: Tensor, total: Tensor) -> Tensor:
    """EPG from the positive part of the maps, the masks (same dtype) and the total positive energy."""
    inside = (pos * masks).sum(dim=(-2, -1))
    dead = total < _EPS_ENERGY
    return torch.where(dead, torch.zeros_like(total), inside / torch.where(dead, torch.ones_like(total), total))


def normalize_for_iou(maps: Tensor) -> Tensor:
    """The reference's IoU normalisation of each map: clamp >= 0, then min-max to [0, 1].

    If the max is 0 the map is left as is; if max - min < 1e-7 it is divided by the max; otherwise
    (A - min) / (max - min).
    """
    return _normalized(_maps(maps).clamp(min=0))


def _normalized(pos: Tensor) -> Tensor:
    """`normalize_for_iou` of maps already clamped at 0."""
    mx = pos.amax(dim=(-2, -1), keepdim=True)
    mn = pos.amin(dim=(-2, -1), keepdim=True)
    rng = mx - mn
    zero = mx == 0
    flat = rng.abs() < 1e-7
    # The three cases differ only in what is subtracted and what divides, per map, so one pass over
    # the pixels does: (A - 0) / 1 where the max is 0, (A - 0) / max where flat, (A - min) / range.
    # Subtracting 0 and dividing by 1 are exact, so the values are those of the three formulas.
    sub = torch.where(zero | flat, torch.zeros_like(mn), mn)
    div = torch.where(zero, torch.ones_like(mx), torch.where(flat, mx, rng))
    return (pos - sub) / div


def _iou_from_counts(inter: Tensor, n_on: Tensor, area: Tensor) -> Tensor:
    union = n_on + area - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def iou(maps: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU ``[P]`` between the mask and the map binarised strictly above ``threshold`` after
    ``normalize_for_iou``; 0 when the union is empty (reference)."""
    _check_pairs(maps, masks)
    on = normalize_for_iou(maps) > threshold
    m = masks.to(on.device) > 0.5
    inter = (on & m).sum(dim=(-2, -1)).to(torch.float64)
    return _iou_from_counts(inter, on.sum(dim=(-2, -1)).to(torch.float64), m.sum(dim=(-2, -1)).to(torch.float64))


def iou_sweep(maps: Tensor, masks: Tensor, thresholds: Tensor | Sequence[float]) -> Tensor:
    """IoU ``[P, T]`` at every threshold, equal to ``iou(maps, masks, t)`` column by column.

    Each pixel is bucketed once among the sorted thresholds and counted per pair (O(P·HW·log T), no
    per-pair sort); "above t" counts are then suffix sums of those histograms.
    """
    _check_pairs(maps, masks)
    return _sweep(_maps(maps).clamp(min=0), masks.to(maps.device) > 0.5, thresholds)


def _sweep(pos: Tensor, inside: Tensor, thresholds: Tensor | Sequence[float]) -> Tensor:
    """`iou_sweep` of maps already clamped at 0, with the masks as booleans."""
    norm = _normalized(pos).flatten(1)
    m = inside.flatten(1)
    thr = torch.as_tensor(thresholds, dtype=norm.dtype, device=norm.device).reshape(-1)
    sorted_thr, order = thr.sort()
    t = thr.numel()
    p = norm.shape[0]
    # bucket b = number of thresholds strictly below the value, so value > sorted_thr[k] <=> b > k.
    # Offsetting each pair's buckets by (t + 1) * pair turns the per-pair histograms into one bincount.
    # (No scatter: bincount is one serial pass; the mask enters as 0/1 weights, exact in float64.)
    bucket = torch.bucketize(norm, sorted_thr, out_int32=True)
    bucket += torch.arange(0, p * (t + 1), t + 1, device=norm.device, dtype=torch.int32)[:, None]
    bucket = bucket.flatten()
    hist = torch.bincount(bucket, minlength=p * (t + 1)).view(p, t + 1)
    hist_in = torch.bincount(bucket, weights=m.flatten().to(torch.float64), minlength=p * (t + 1))
    hist_in = hist_in.to(torch.int64).view(p, t + 1)
    # count of b > k = all pixels (in the mask) - those with b <= k
    area = m.sum(dim=1, keepdim=True)
    n_on = norm.shape[1] - hist.cumsum(1)[:, :t]
    inter = area - hist_in.cumsum(1)[:, :t]
    unsort = torch.empty_like(order)
    unsort[order] = torch.arange(t, device=order.device)
    return _iou_from_counts(inter[:, unsort].to(torch.float64), n_on[:, unsort].to(torch.float64),
                            area.to(torch.float64))


class LocalizationAccumulator:
    """Streams localization metrics over batches of (image, class) pairs.

    Kept per pair: EPG, IoU at the fixed threshold, class, box-area fraction, group. Kept as sums:
    EPG and IoU at every threshold of the grid, overall and per class, per box-size bin and per group,
    and the on-object energy sums. IoU is therefore exact at any threshold of ``thresholds`` or at
    ``iou_threshold`` (the two are merged into one grid): choose the threshold on validation with
    ``result()["best_threshold"]``, then read test IoU with ``result(iou_threshold=that)``.

    Box-size bins use the box area as a fraction of the image (``box_areas / (H·W)`` when given, else
    the mask's pixel count / (H·W)); the bins are [e0, e1), ..., [e_{n-1}, e_n], a fraction above
    the last edge (summed overlapping boxes) falls into the last bin and one below e0 into the first.

    On-object energy (paper R3, formula not published; our reading of §5.4): for pairs with a
    segmentation mask S of the class and box mask M, ``ratio = E(S∩M) / E(M)`` with E the summed
    positive attribution (0 when E(M) < 1e-7, like EPG). Also reported: ``seg_epg = E(S∩M) / E(all)``
    and ``box_epg`` (EPG) on the same pairs.
    """

    def __init__(
        self,
        iou_threshold: float = 0.5,
        thresholds: Sequence[float] = DEFAULT_IOU_GRID,
        size_bins: Sequence[float] = DEFAULT_SIZE_BINS,
    ) -> None:
        grid = sorted({float(t) for t in thresholds} | {float(iou_threshold)})
        # Merge values that differ only by float noise (0.15 vs 0.15000000000000002).
        self.thresholds: list[float] = [t for i, t in enumerate(grid) if i == 0 or t - grid[i - 1] > _THR_TOL]
        self.iou_threshold = float(iou_threshold)
        edges = [float(e) for e in size_bins]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise UsageError(f"size_bins must be at least two increasing edges, got {list(size_bins)}.")
        self.size_edges = edges
        t = len(self.thresholds)
        nb = len(edges) - 1
        self._n = 0
        self._epg_sum = 0.0
        self._iou_sum = torch.zeros(t, dtype=torch.float64)
        self._dead = 0
        self._cls = _GroupSums(t)
        self._grp = _GroupSums(t)
        self._bins = _GroupSums(t, size=nb)
        self._seg = torch.zeros(4, dtype=torch.float64)  # count, ratio, seg_epg, box_epg
        self._pairs: dict[str, list[Tensor]] = {k: [] for k in ("epg", "iou", "cls", "size", "group", "on_object")}
        self._sweeps: list[Tensor] = []  # per-pair IoU at every threshold (float32), for pair_iou

    def update(
        self,
        maps: Tensor,
        masks: Tensor,
        classes: Tensor | int,
        box_areas: Tensor | None = None,
        seg_masks: Tensor | None = None,
        group: Tensor | int | None = None,
        *,
        seg_valid: Tensor | None = None,
    ) -> None:
        """Add P pairs: maps/masks ``[P, H, W]``, classes ``[P]`` (or one int for all).

        ``box_areas [P]`` in pixels (e.g. ``mgkit.masks.box_area``) sets the size bin; ``seg_masks
        [P, H, W]`` with ``seg_valid [P]`` (default: pairs whose seg mask is non-empty) feed the
        on-object energy; ``group`` ([P] or one int) feeds per-group sums.
        """
        _check_pairs(maps, masks)
        p = maps.shape[0]
        if seg_masks is not None and seg_masks.shape != maps.shape:
            raise UsageError(f"seg_masks must have shape {tuple(maps.shape)}, got {tuple(seg_masks.shape)}.")
        if p == 0:
            return
        # Everything is validated and computed on the maps' device before any state changes, so a
        # failing update leaves the accumulator as it was.
        dev = maps.device
        cls = self._ids(classes, p, dev, "classes")
        grp = None if group is None else self._ids(group, p, dev, "group")
        e, sweep, total, frac, seg_sums, on_object = self._pair_stats(_maps(maps), masks, box_areas, seg_masks,
                                                                       seg_valid)
        bins = torch.bucketize(frac, torch.tensor(self.size_edges[1:-1], dtype=torch.float64, device=dev), right=True)
        # Per-pair results are small: move them to the host once per batch and keep float64 sums there.
        e, sweep, total, frac, cls, bins = (x.cpu() for x in (e, sweep, total, frac, cls, bins))
        self._add(e, sweep, total, frac, cls, bins, None if grp is None else grp.cpu(),
                  None if seg_sums is None else seg_sums.cpu(), on_object)

    def _pair_stats(self, maps: Tensor, masks: Tensor, box_areas: Tensor | None, seg_masks: Tensor | None,
                    seg_valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """Per pair: EPG [P] and the IoU sweep [P, T] (float64), total positive energy [P], box-area
        fraction [P]; the on-object sums [4] (count, ratio, seg_epg, box_epg) when seg masks are given;
        and the per-pair on-object ratio (host, NaN without segmentation)."""
        p, h, w = maps.shape
        dev = maps.device
        m = masks.to(device=dev, dtype=maps.dtype)
        if box_areas is None:
            frac = m.sum(dim=(-2, -1)).to(torch.float64) / (h * w)
        else:
            frac = torch.as_tensor(box_areas, device=dev).to(torch.float64).reshape(p) / (h * w)
        # the positive part and its total serve EPG, the IoU sweep and the on-object energy alike
        pos = maps.clamp(min=0)
        total = pos.sum(dim=(-2, -1))
        e = _epg_of(pos, m, total).to(torch.float64)
        sweep = _sweep(pos, m > 0.5, self.thresholds)  # [P, T] float64
        on_object = torch.full((p,), float("nan"), dtype=torch.float64)  # per pair; NaN: no segmentation
        if seg_masks is None:
            return e, sweep, total, frac, None, on_object
        sm = seg_masks.to(device=dev, dtype=maps.dtype)
        valid = (sm.sum(dim=(-2, -1)) > 0) if seg_valid is None else seg_valid.to(dev).bool().reshape(p)
        e_box = (pos * m).sum(dim=(-2, -1))
        e_seg = (pos * m * sm).sum(dim=(-2, -1))
        ratio = torch.where(e_box < _EPS_ENERGY, torch.zeros_like(e_box), e_seg / e_box.clamp(min=_EPS_ENERGY))
        seg_epg = torch.where(total < _EPS_ENERGY, torch.zeros_like(total), e_seg / total.clamp(min=_EPS_ENERGY))
        v = valid.to(torch.float64)
        seg_sums = torch.stack([v.sum(), (ratio.double() * v).sum(), (seg_epg.double() * v).sum(), (e * v).sum()])
        on_object = torch.where(valid, ratio.double(), torch.full_like(ratio.double(), float("nan"))).cpu()
        return e, sweep, total, frac, seg_sums, on_object

    def _add(self, e: Tensor, sweep: Tensor, total: Tensor, frac: Tensor, cls: Tensor, bins: Tensor,
             grp: Tensor | None, seg_sums: Tensor | None, on_object: Tensor) -> None:
        """Fold one batch of per-pair results (host tensors) into the sums and the per-pair columns."""
        p = e.shape[0]
        self._n += p
        self._epg_sum += float(e.sum())
        self._iou_sum += sweep.sum(0)
        self._dead += int((total < _EPS_ENERGY).sum())
        self._cls.add(cls, e, sweep)
        self._bins.add(bins, e, sweep)
        if grp is not None:
            self._grp.add(grp, e, sweep)
        if seg_sums is not None:
            self._seg += seg_sums
        k = self.thresholds.index(self._match(self.iou_threshold))
        self._pairs["epg"].append(e)
        self._pairs["iou"].append(sweep[:, k])
        self._sweeps.append(sweep.float())
        self._pairs["cls"].append(cls)
        self._pairs["size"].append(frac)
        # -1 marks "no group given" so per-pair columns stay aligned across updates.
        self._pairs["group"].append(grp if grp is not None else torch.full((p,), -1, dtype=torch.long))
        self._pairs["on_object"].append(on_object)

    @staticmethod
    def _ids(x: Tensor | int, p: int, dev: torch.device, name: str) -> Tensor:
        ids = torch.as_tensor(x, device=dev).reshape(-1).long()
        if ids.numel() == 1:
            ids = ids.expand(p)  # one id for every pair
        if ids.numel() != p:
            raise UsageError(f"{name} must have one entry per pair ({p}), got {ids.numel()}.")
        if p and int(ids.min()) < 0:
            raise UsageError(f"{name} must be non-negative integers.")
        return ids

    def _match(self, t: float) -> float:
        for g in self.thresholds:
            if abs(g - t) <= _THR_TOL:
                return g
        raise UsageError(
            f"IoU threshold {t} was not tracked; use one of {', '.join(f'{g:g}' for g in self.thresholds)} "
            "or create the accumulator with iou_threshold set to it."
        )

    def per_pair(self) -> dict[str, Tensor]:
        """Per-pair EPG, IoU at ``iou_threshold``, class, box-area fraction, group (-1 if not given) and
        on-object ratio (NaN for pairs without a segmentation mask)."""
        return {k: torch.cat(v) for k, v in self._pairs.items() if v}

    def pair_iou(self, threshold: float) -> Tensor:
        """Per-pair IoU at a tracked threshold (e.g. one chosen on another split), in the order of `per_pair`."""
        k = self.thresholds.index(self._match(threshold))
        if not self._sweeps:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([s[:, k] for s in self._sweeps]).double()

    def result(self, iou_threshold: float | None = None) -> dict:
        """Averages over all pairs so far; IoU values at ``iou_threshold`` (default: the fixed one)."""
        t = self._match(self.iou_threshold if iou_threshold is None else iou_threshold)
        k = self.thresholds.index(t)
        n = self._n
        mean_iou = self._iou_sum / n if n else None
        if mean_iou is not None:
            best = int(torch.argmax(mean_iou))  # first maximum: the lowest threshold among ties
        sweep = {g: (float(mean_iou[i]) if n else None) for i, g in enumerate(self.thresholds)}
        edges = self.size_edges
        bin_names = [
            f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}" for i in range(len(edges) - 1)
        ]
        sc = self._seg
        return {
            "count": n,
            "epg": self._epg_sum / n if n else None,
            "iou": sweep[t],
            "iou_threshold": t,
            "iou_sweep": sweep,
            "best_threshold": self.thresholds[best] if n else None,
            "best_iou": float(mean_iou[best]) if n else None,
            "per_class": self._cls.summary(k),
            "size_bins": {
                name: v for name, v in zip(bin_names, self._bins.summary(k, keep_empty=True).values())
            },
            "per_group": self._grp.summary(k),
            "on_object": (
                {"ratio": float(sc[1] / sc[0]), "seg_epg": float(sc[2] / sc[0]), "box_epg": float(sc[3] / sc[0]),
                 "count": int(sc[0])}
                if sc[0] > 0
                else None
            ),
            "counts": {"pairs": n, "on_object": int(sc[0]), "zero_energy": self._dead},
        }


class _GroupSums:
    """Sums of EPG and of IoU over a threshold grid, per integer id; grows as new ids appear."""

    def __init__(self, n_thr: int, size: int = 0) -> None:
        self.n = torch.zeros(size, dtype=torch.float64)
        self.epg = torch.zeros(size, dtype=torch.float64)
        self.iou = torch.zeros(size, n_thr, dtype=torch.float64)

    def add(self, ids: Tensor, e: Tensor, sweep: Tensor) -> None:
        need = int(ids.max()) + 1
        if need > self.n.shape[0]:
            grow = need - self.n.shape[0]
            self.n = torch.cat([self.n, self.n.new_zeros(grow)])
            self.epg = torch.cat([self.epg, self.epg.new_zeros(grow)])
            self.iou = torch.cat([self.iou, self.iou.new_zeros(grow, self.iou.shape[1])])
        self.n.index_add_(0, ids, torch.ones_like(e))
        self.epg.index_add_(0, ids, e)
        self.iou.index_add_(0, ids, sweep)

    def summary(self, k: int, keep_empty: bool = False) -> dict:
        out = {}
        for i in range(self.n.shape[0]):  # reporting loop over ids, not over pairs
            c = int(self.n[i])
            if c == 0 and not keep_empty:
                continue
            out[i] = {
                "epg": float(self.epg[i] / c) if c else None,
                "iou": float(self.iou[i, k] / c) if c else None,
                "count": c,
            }
        return out


# ------------------------------------------------------------------------------------------------
# Groups (Waterbirds) and Pareto fronts
# ------------------------------------------------------------------------------------------------


def group_metrics(
    preds: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    groups: Tensor | np.ndarray,
    group_names: Sequence[str],
) -> dict:
    """Accuracy per group, worst-group accuracy, mean of group accuracies and overall accuracy.

    ``preds`` are predicted class ids ``[N]`` (or scores ``[N, K]``, reduced with argmax); ``groups``
    holds ids into ``group_names``. Groups without samples report None and are left out of the worst
    and the mean.
    """
    p = _tensor(preds, "preds").cpu()
    if p.dim() == 2:
        p = p.argmax(1)
    y = _tensor(labels, "labels").cpu().reshape(-1)
    g = _tensor(groups, "groups").cpu().reshape(-1).long()
    p = p.reshape(-1)
    if not (p.numel() == y.numel() == g.numel()):
        raise UsageError(f"preds, labels and groups differ in length ({p.numel()}, {y.numel()}, {g.numel()}).")
    ng = len(group_names)
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= ng):
        raise UsageError(f"group ids must lie in [0, {ng - 1}] to index group_names.")
    correct = (p.long() == y.long()).to(torch.float64)
    n = torch.bincount(g, minlength=ng).to(torch.float64)
    hit = torch.bincount(g, weights=correct, minlength=ng)
    acc = {name: (float(hit[i] / n[i]) if n[i] > 0 else None) for i, name in enumerate(group_names)}
    seen = {name: a for name, a in acc.items() if a is not None}
    worst = min(seen, key=seen.get) if seen else None
    return {
        "per_group": acc,
        "group_counts": {name: int(n[i]) for i, name in enumerate(group_names)},
        "worst_group": seen[worst] if seen else None,
        "worst_group_name": worst,
        "mean_group": sum(seen.values()) / len(seen) if seen else None,
        "overall": float(correct.mean()) if correct.numel() else None,
    }
