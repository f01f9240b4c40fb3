"""Bootstrap intervals over test images for ratio metrics, and paired differences between two models.

Every headline metric is a ratio of per-image sums: micro F1 = Σ2TP / Σ(2TP+FP+FN), EPG and IoU =
Σ(per-pair value) / Σ(pairs) over the images' (image, class) pairs. Resampling images (not pairs) keeps
an image's pairs together, as the test set is a sample of images. A resample is a row of image weights
(how often each image was drawn), so all resamples of a chunk are one matrix product. Intervals are
percentile intervals. A paired comparison applies the same resamples to both models' per-image sums,
which cancels the variation the two share (easy or hard images).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

REPS = 1000
LEVEL = 0.95
CHUNK = 100  # resamples per matrix product: chunk x images weights in memory at a time


@dataclass(frozen=True)
class Interval:
    """An estimate with its (lo, hi) interval at `level`."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def resample_indices(n: int, reps: int = REPS, seed: int = 0) -> Iterator[np.ndarray]:
    """Chunks of [chunk, n] image indices drawn with replacement; the same (n, reps, seed) gives the same draws."""
    if n < 1 or reps < 1:
        raise ValueError(f"need at least one image and one resample, got n={n}, reps={reps}")
    rng = np.random.default_rng(seed)
    for start in range(0, reps, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, reps - start), n))


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """[chunk, n] draw counts of each image per resample."""
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _check(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.ndim != 1 or num.shape != den.shape:
        raise ValueError(f"per-image numerators and denominators must be [N] each, got {num.shape} and {den.shape}")
    return num, den


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    s = stats[np.isfinite(stats)]  # a resample without any pair has no EPG: left out
    if s.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def ratio_interval(num, den, *, reps: int = REPS, seed: int = 0, level: float = LEVEL) -> Interval | None:
    """Σnum / Σden over images with a bootstrap interval; None when Σden is 0 (metric undefined)."""
    return ratio_intervals({"x": (num, den)}, reps=reps, seed=seed, level=level)["x"]


def ratio_intervals(terms: dict[str, tuple], *, reps: int = REPS, seed: int = 0, level: float = LEVEL
                    ) -> dict[str, Interval | None]:
    """`ratio_interval` for several metrics of the same images at once: one set of resamples, one matrix
    product per chunk for all of them (the same draws as separate calls with this seed)."""
    checked = {k: _check(*v) for k, v in terms.items()}
    ok = [k for k, (_, den) in checked.items() if den.sum() > 0]
    out: dict[str, Interval | None] = {k: None for k in terms}
    if not ok:
        return out
    cols = np.stack([checked[k][i] for k in ok for i in (0, 1)], 1)  # [N, 2M]: num, den per metric
    n = cols.shape[0]
    stats = np.concatenate([_weights(idx, n) @ cols for idx in resample_indices(n, reps, seed)])
    for j, k in enumerate(ok):
        num, den = checked[k]
        r = _ratio(stats[:, 2 * j], stats[:, 2 * j + 1])
        out[k] = Interval(float(num.sum() / den.sum()), *_percentiles(r, level), level)
    return out


def paired_difference(num_a, den_a, num_b, den_b, *, reps: int = REPS, seed: int = 0,
                      level: float = LEVEL) -> Interval | None:
    """(Σnum_a/Σden_a) − (Σnum_b/Σden_b) over the same images (row i of a and b is one image), with a
    paired bootstrap interval; None when either ratio is undefined."""
    num_a, den_a = _check(num_a, den_a)
    num_b, den_b = _check(num_b, den_b)
    if num_a.shape != num_b.shape:
        raise ValueError(f"paired values need the same images: {len(num_a)} vs {len(num_b)}")
    if den_a.sum() <= 0 or den_b.sum() <= 0:
        return None
    n = len(num_a)
    stats = []
    for idx in resample_indices(n, reps, seed):
        w = _weights(idx, n)
        stats.append(_ratio(w @ num_a, w @ den_a) - _ratio(w @ num_b, w @ den_b))
    value = num_a.sum() / den_a.sum() - num_b.sum() / den_b.sum()
    return Interval(float(value), *_percentiles(np.concatenate(stats), level), level)


def align(index_a, index_b) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a and of b that hold the same images (by dataset index), in one order; refuses disjoint sets."""
    ia, ib = np.asarray(index_a), np.asarray(index_b)
    common, ra, rb = np.intersect1d(ia, ib, return_indices=True)
    if len(common) != len(ia) or len(common) != len(ib):
        raise ValueError(f"paired comparison over different images ({len(ia)} and {len(ib)}, {len(common)} shared)")
    return ra, rb


def combine_seeds(values, los, his, level: float = LEVEL) -> tuple[float, float | None, Interval]:
    """Mean and std over training seeds, and an interval that carries both sources of variation.

    Each seed's bootstrap half-width gives its test-set standard error (half-width / z). The seeds are
    evaluated on the same test images, so their test-set errors are correlated; the interval therefore
    adds the mean test-set variance unreduced to the between-seed variance of the mean (s²/S), which is
    conservative. With one seed this is that seed's own interval.
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.asarray(los, dtype=np.float64), np.asarray(his, dtype=np.float64)
    z = _z(level)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else None
    se_test2 = float(np.mean(((hi - lo) / (2 * z)) ** 2))
    se = np.sqrt(se_test2 + (std ** 2 / len(v) if std is not None else 0.0))
    return mean, std, Interval(mean, mean - z * se, mean + z * se, level)


def _z(level: float) -> float:
    """Two-sided normal quantile (for the levels used here; no scipy)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def headline_intervals(per_image: dict[str, np.ndarray], *, reps: int = REPS, seed: int = 0,
                       level: float = LEVEL) -> dict[str, float | None]:
    """f1_lo/f1_hi, epg_lo/epg_hi, iou_lo/iou_hi (and iou_chosen_lo/hi, on_object_lo/hi) for an evaluation's
    per-image sums (`per_image_sums`)."""
    out: dict[str, float | None] = {}
    for name, iv in ratio_intervals(ratio_terms(per_image), reps=reps, seed=seed, level=level).items():
        out[f"{name}_lo"], out[f"{name}_hi"] = (None, None) if iv is None else (iv.lo, iv.hi)
    if per_image.get("group") is not None and len(per_image["group"]):
        for name, iv in group_intervals(per_image["correct"], per_image["group"], reps=reps, seed=seed,
                                        level=level).items():
            out[f"{name}_lo"], out[f"{name}_hi"] = iv.lo, iv.hi
    return out


def group_accuracies(weights: np.ndarray, correct: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """worst_group, mean_group, overall accuracy per row of image weights [R, N] (as
    `mgkit.metrics.group_metrics`: groups without images are left out of the worst and the mean)."""
    onehot = np.eye(int(groups.max()) + 1)[groups]  # [N, G]
    hit, n = weights @ (onehot * correct[:, None]), weights @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, hit / np.where(n > 0, n, 1.0), np.nan)
        return {"worst_group": np.nanmin(acc, 1), "mean_group": np.nanmean(acc, 1),
                "overall": (weights @ correct) / weights.sum(1)}


def group_intervals(correct, groups, *, reps: int = REPS, seed: int = 0, level: float = LEVEL
                    ) -> dict[str, Interval]:
    """Bootstrap intervals over images of worst-group, mean-group and overall accuracy."""
    correct, groups = np.asarray(correct, dtype=np.float64), np.asarray(groups, dtype=np.int64)
    n = len(correct)
    point = {k: float(v[0]) for k, v in group_accuracies(np.ones((1, n)), correct, groups).items()}
    stats: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for idx in resample_indices(n, reps, seed):
        for k, v in group_accuracies(_weights(idx, n), correct, groups).items():
            stats[k].append(v)
    return {k: Interval(point[k], *_percentiles(np.concatenate(stats[k]), level), level) for k in point}


def ratio_terms(per_image: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Metric -> (per-image numerator, denominator) from the per-image sums an evaluation keeps."""
    tp, fp, fn = (np.asarray(per_image[k], dtype=np.float64) for k in ("tp", "fp", "fn"))
    pairs = np.asarray(per_image["pairs"], dtype=np.float64)
    out = {"f1": (2 * tp, 2 * tp + fp + fn), "epg": (np.asarray(per_image["epg_sum"], dtype=np.float64), pairs),
           "iou": (np.asarray(per_image["iou_sum"], dtype=np.float64), pairs)}
    if per_image.get("iou_chosen_sum") is not None:
        out["iou_chosen"] = (np.asarray(per_image["iou_chosen_sum"], dtype=np.float64), pairs)
    if per_image.get("on_object_sum") is not None:
        out["on_object"] = (np.asarray(per_image["on_object_sum"], dtype=np.float64),
                            np.asarray(per_image["on_object_pairs"], dtype=np.float64))
    return out


def per_image_sums(index, logits, labels, pair_rows, pair_epg, pair_iou, pair_iou_chosen=None,
                   pair_on_object=None, groups=None, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """The per-image sums the headline metrics are ratios of, ordered by dataset index.

    ``index [N]`` dataset rows of the evaluated images, ``logits``/``labels [N, K]`` (positive iff
    logit >= threshold, as `mgkit.metrics.classification_metrics`), ``pair_rows [P]`` the dataset row of
    each localised (image, class) pair with its ``pair_epg``/``pair_iou [P]`` (and ``pair_iou_chosen``, IoU
    at a threshold chosen on another split, when given; ``pair_on_object``, the on-object ratio, NaN for
    pairs without a segmentation mask). With ``groups [N]`` (Waterbirds-style group ids) it also keeps
    each image's group and whether its argmax prediction is its argmax label (group accuracy).
    """
    index = np.asarray(index, dtype=np.int64)
    pred = np.asarray(logits, dtype=np.float64) >= threshold
    pos = np.asarray(labels, dtype=np.float64) > 0.5
    order = np.argsort(index, kind="stable")
    index = index[order]
    slot = np.searchsorted(index, np.asarray(pair_rows, dtype=np.int64))
    n = len(index)
    out = {"index": index,
           "tp": (pred & pos).sum(1)[order], "fp": (pred & ~pos).sum(1)[order], "fn": (~pred & pos).sum(1)[order],
           "pairs": np.bincount(slot, minlength=n),
           "epg_sum": np.bincount(slot, weights=np.asarray(pair_epg, dtype=np.float64), minlength=n),
           "iou_sum": np.bincount(slot, weights=np.asarray(pair_iou, dtype=np.float64), minlength=n)}
    if pair_iou_chosen is not None:
        out["iou_chosen_sum"] = np.bincount(slot, weights=np.asarray(pair_iou_chosen, dtype=np.float64), minlength=n)
    if groups is not None:
        scores, truth = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        out["group"] = np.asarray(groups, dtype=np.int64)[order]
        out["correct"] = (scores.argmax(1) == truth.argmax(1)).astype(np.int64)[order]
    if pair_on_object is not None and np.isfinite(np.asarray(pair_on_object, dtype=np.float64)).any():
        obj = np.asarray(pair_on_object, dtype=np.float64)
        out["on_object_sum"] = np.bincount(slot, weights=np.nan_to_num(obj, nan=0.0), minlength=n)
        out["on_object_pairs"] = np.bincount(slot, weights=np.isfinite(obj).astype(np.float64), minlength=n)
    return out


_INT_KEYS = ("index", "tp", "fp", "fn", "pairs", "on_object_pairs", "group", "correct")
_OPTIONAL = ("iou_chosen_sum", "on_object_sum", "on_object_pairs", "group", "correct")


def encode_per_image(sums: dict[str, np.ndarray]) -> dict[str, Any]:
    """A record section for per-image sums: base64 little-endian arrays (int32 counts, float32 sums),
    about 5 characters a number, so paired comparisons can be made later from the records alone."""
    out: dict[str, Any] = {"n": int(len(sums["index"])), "encoding": "base64 little-endian int32/float32"}
    for k, v in sums.items():
        dt = "<i4" if k in _INT_KEYS else "<f4"
        out[k] = base64.b64encode(np.ascontiguousarray(v, dtype=dt).tobytes()).decode("ascii")
    return out


def decode_per_image(section: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of `encode_per_image`; raises ValueError on a malformed section."""
    try:
        n = int(section["n"])
        keys = ("index", "tp", "fp", "fn", "pairs", "epg_sum", "iou_sum", *(k for k in _OPTIONAL if k in section))
        out = {k: np.frombuffer(base64.b64decode(section[k]), dtype="<i4" if k in _INT_KEYS else "<f4") for k in keys}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"per_image section is malformed ({e})") from None
    if any(len(v) != n for v in out.values()):
        raise ValueError("per_image section is malformed (arrays of different lengths)")
    return {k: v.astype(np.int64 if k in _INT_KEYS else np.float64) for k, v in out.items()}
