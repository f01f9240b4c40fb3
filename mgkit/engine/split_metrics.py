"""One pass over a split: classification metrics and localization over (image, class) pairs (the
validation pass of training, and each split that `mgkit evaluate` scores)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from mgkit.attribution import PostProcess, evaluation_maps
from mgkit.bootstrap import encode_per_image, headline_intervals, per_image_sums
from mgkit.data.loader import images_to_float
from mgkit.metrics import DEFAULT_IOU_GRID, LocalizationAccumulator, classification_metrics, group_metrics
from mgkit.masks import box_area, box_masks
from mgkit.progress import Reporter

# Images per attribution pass are capped so that H x W x images stays under this many pixels (8
# images at 224 px, the whole batch of 64 below ~79 px): an input-layer pass keeps the whole graph of
# its forward alive, which at 224 px and batch 64 took 7 GB (ResNet-50) to 18 GB (B-cos ResNet-50)
# of memory, while throughput no longer grows beyond a few images per pass.
MAX_PIXELS_PER_PASS = 8 * 224 * 224


def evaluate(model, loader, *, device: torch.device, attribution: str, layer: str, outside: bool = False,
             iou_threshold: float = 0.5, ig_steps: int = 16, group_names: list[str] | None = None,
             amp: bool = False, channels_last: bool = False, reporter: Reporter | None = None,
             description: str = "eval", post: PostProcess = PostProcess(),
             chosen_threshold: float | None = None, maps_fn=None,
             max_pixels: int = MAX_PIXELS_PER_PASS) -> dict[str, Any]:
    """Every metric of a split in one pass over it (on one process: validation under torchrun runs on
    rank 0 only; AP needs every score of a class, so sharding it would mean gathering all logits).

    Localization covers every (image, ground-truth class) pair of the images that have boxes (the
    reference evaluates every pair; images without any box, e.g. Waterbirds without CUB boxes, have
    no ground truth to localise against and are left out). Maps are raw attributions by default (no
    clamp or normalisation: EPG and IoU apply their own); `post` applies a training loss's
    post-processing before upsampling (`--maps reference`). Each batch runs ONE forward pass, whose
    logits are the classification scores (`mgkit.attribution.evaluation_maps`); `maps_fn` replaces
    that function (same signature), e.g. for captum methods. With `chosen_threshold` (a threshold
    chosen on another split) the result's localization also holds "iou_chosen", IoU at that threshold.
    A loader batch is attributed in chunks of at most `max_pixels` image pixels (same results).
    """
    model.eval()
    maps_fn = maps_fn or evaluation_maps
    grid = DEFAULT_IOU_GRID if chosen_threshold is None else (*DEFAULT_IOU_GRID, chosen_threshold)
    acc = LocalizationAccumulator(iou_threshold=iou_threshold, thresholds=grid)
    all_logits, all_labels, all_groups, all_index, pair_rows = [], [], [], [], []
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext())
    batches = loader if reporter is None else reporter.track(loader, len(loader), description)
    for batch in batches:
        whole = batch.to(device)
        n = whole.images.shape[0]
        step = max(1, max_pixels // (whole.images.shape[1] * whole.images.shape[2]))
        if step < n:
            # A pass costs one backward per class slot over all its images, so images with as many
            # (image, class) pairs go together: fewer slots per pass, same results.
            whole = whole.take(torch.argsort(_pair_mask(whole).sum(1), stable=True))
        for start in range(0, n, step):
            b = whole.take(slice(start, start + step))
            logits = _evaluate_chunk(model, b, acc, attribution=attribution, layer=layer, outside=outside,
                                     ig_steps=ig_steps, autocast=autocast, channels_last=channels_last, post=post,
                                     maps_fn=maps_fn)
            all_logits.append(logits)
            all_labels.append(b.labels.cpu())
            all_index.append(b.index.cpu())
            # the accumulator receives the pairs of `b` in this order (see _evaluate_chunk)
            pair_rows.append(b.index[torch.nonzero(_pair_mask(b), as_tuple=True)[0]].cpu())
            if b.groups is not None:
                all_groups.append(b.groups.cpu())
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    loc = acc.result()
    if chosen_threshold is not None:
        loc["iou_chosen"] = acc.result(iou_threshold=chosen_threshold)["iou"]
        loc["chosen_threshold"] = chosen_threshold
    out: dict[str, Any] = {"images": int(labels.shape[0]), "classification": classification_metrics(logits, labels),
                           "finite_logits": bool(torch.isfinite(logits).all()), "localization": loc}
    pairs = acc.per_pair()
    out["per_image"] = per_image_sums(torch.cat(all_index), logits, labels, torch.cat(pair_rows),
                                      pairs.get("epg", torch.zeros(0)), pairs.get("iou", torch.zeros(0)),
                                      None if chosen_threshold is None else acc.pair_iou(chosen_threshold),
                                      pairs.get("on_object"), torch.cat(all_groups) if all_groups else None)
    if all_groups and group_names:
        out["groups"] = group_metrics(logits.argmax(1), labels.argmax(1), torch.cat(all_groups), group_names)
    return out


def _pair_mask(b) -> torch.Tensor:
    """[B, K]: the evaluated (image, class) pairs, every ground-truth class of an image with any box."""
    return (b.labels > 0) & (b.boxes[:, :, 0] >= 0).any(1)[:, None]


def _evaluate_chunk(model, b, acc: LocalizationAccumulator, *, attribution: str, layer: str, outside: bool,
                    ig_steps: int, autocast, channels_last: bool, post: PostProcess, maps_fn) -> torch.Tensor:
    """One attribution pass over the images of `b`: feeds its pairs to `acc`, returns its logits (CPU)."""
    x = model.prepare_input(images_to_float(b.images, channels_last))
    img, cls = torch.nonzero(_pair_mask(b), as_tuple=True)
    with autocast:
        maps, logits = maps_fn(model, x, img, cls, method=attribution, layer=layer, post=post,
                               out_size=tuple(x.shape[-2:]), ig_steps=ig_steps)
    logits = logits.detach().float().cpu()
    if img.numel() == 0:
        return logits
    maps = maps.float()
    size = tuple(maps.shape[-2:])
    pair_boxes = b.boxes[img]
    masks = box_masks(pair_boxes, cls, size, outside=outside)
    seg = None
    seg_valid = None
    if b.segmentation is not None:
        # Segmentation maps hold class id + 1 (0 background, 255 void).
        seg = (b.segmentation[img].long() == (cls + 1)[:, None, None]).float()
        seg_valid = b.has_segmentation[img] & (seg.sum((1, 2)) > 0)
    acc.update(maps, masks, cls, box_areas=box_area(pair_boxes, cls), seg_masks=seg, seg_valid=seg_valid,
               group=None if b.groups is None else b.groups[img])
    return logits


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """The three numbers model selection uses: F1, EPG and IoU (fixed threshold); None when undefined
    (no pairs to localise), never 0.0, so a missing EPG cannot win a selection."""
    loc = result.get("localization") or {}
    return {"f1": float(result["classification"]["f1"]), "epg": loc.get("epg"), "iou": loc.get("iou")}


def result_sections(result: dict[str, Any], classes: list[str],
                    group_names: list[str] | None = None, keep_per_image: bool = False) -> dict[str, Any]:
    """An `evaluate` result as result-schema sections: flat `metrics`, and `per_class`, `per_size`,
    `groups`, `iou_sweep` keyed by name. The IoU threshold chosen on this split is its best_threshold."""
    cls = result["classification"]
    loc = result.get("localization") or {}
    grp = result.get("groups")
    metrics: dict[str, Any] = {k: cls.get(k) for k in ("f1", "precision", "recall", "accuracy", "exact_match", "mAP")}
    # iou_chosen: IoU at the threshold chosen on another split when one was given, else (validation
    # during training) at the best threshold of this split
    metrics.update(epg=loc.get("epg"), iou=loc.get("iou"), iou_chosen=loc.get("iou_chosen", loc.get("best_iou")),
                   best_threshold=loc.get("best_threshold"), best_iou=loc.get("best_iou"),
                   on_object=(loc.get("on_object") or {}).get("ratio"), pairs=loc.get("count", 0))
    if result.get("per_image") is not None and result["images"]:
        # 95 % bootstrap intervals over test images (mgkit.bootstrap), fixed seed: reruns agree
        metrics.update(headline_intervals(result["per_image"]))
    metrics.update(worst_group=grp["worst_group"] if grp else None, mean_group=grp["mean_group"] if grp else None,
                   overall=grp["overall"] if grp else None)
    per_class: dict[str, Any] = {}
    for j, name in enumerate(classes):
        c = dict(cls["per_class"].get(j, cls["per_class"].get(name, {})))
        l = (loc.get("per_class") or {}).get(j) or {}
        c.update(epg=l.get("epg"), iou=l.get("iou"), pairs=l.get("count", 0))
        per_class[name] = c
    per_size = {name: {"epg": v["epg"], "iou": v["iou"], "pairs": v["count"]}
                for name, v in (loc.get("size_bins") or {}).items()}
    out: dict[str, Any] = {
        "metrics": metrics, "per_class": per_class, "per_size": per_size,
        "iou_sweep": {f"{t:.2f}": v for t, v in (loc.get("iou_sweep") or {}).items()},
    }
    if keep_per_image and result.get("per_image") is not None:  # for paired comparisons in mgkit tables
        out["per_image"] = encode_per_image(result["per_image"])
    if grp and group_names:
        loc_groups = loc.get("per_group") or {}
        out["groups"] = {name: {"accuracy": grp["per_group"][name], "count": grp["group_counts"][name],
                                "epg": (loc_groups.get(i) or {}).get("epg"),
                                "iou": (loc_groups.get(i) or {}).get("iou"),
                                "pairs": (loc_groups.get(i) or {}).get("count", 0)}
                         for i, name in enumerate(group_names)}
    return out
