"""Batched evaluation of one split: classification metrics and localization over (image, class) pairs."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from mgkit.attribution import PostProcess, attribute_pairs
from mgkit.data.loader import images_to_float
from mgkit.metrics import LocalizationAccumulator, classification_metrics, group_metrics
from mgkit.masks import box_area, box_masks
from mgkit.progress import Reporter


def evaluate(model, loader, *, device: torch.device, attribution: str, layer: str, outside: bool = False,
             iou_threshold: float = 0.5, ig_steps: int = 16, localization: bool = True,
             group_names: list[str] | None = None, amp: bool = False, channels_last: bool = False,
             reporter: Reporter | None = None, description: str = "eval") -> dict[str, Any]:
    """Every metric of a split in one pass over it.

    Localization covers every (image, ground-truth class) pair of the images that have boxes (the
    reference evaluates every pair; images without any box, e.g. Waterbirds without CUB boxes, have
    no ground truth to localise against and are left out). Maps are raw attributions (no clamp or
    normalisation): EPG and IoU apply their own.
    """
    model.eval()
    acc = LocalizationAccumulator(iou_threshold=iou_threshold)
    all_logits, all_labels, all_groups = [], [], []
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext())
    batches = loader if reporter is None else reporter.track(loader, len(loader), description)
    for batch in batches:
        b = batch.to(device)
        x = model.prepare_input(images_to_float(b.images, channels_last))
        with torch.no_grad(), autocast:
            logits = model(x).float()
        all_logits.append(logits.cpu())
        all_labels.append(b.labels.cpu())
        if b.groups is not None:
            all_groups.append(b.groups.cpu())
        if not localization:
            continue
        has_boxes = (b.boxes[:, :, 0] >= 0).any(1)
        img, cls = torch.nonzero((b.labels > 0) & has_boxes[:, None], as_tuple=True)
        if img.numel() == 0:
            continue
        with autocast:
            maps = attribute_pairs(model, x, img, cls, method=attribution, layer=layer, post=PostProcess(),
                                   out_size=tuple(x.shape[-2:]), ig_steps=ig_steps).float()
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
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    out: dict[str, Any] = {"images": int(labels.shape[0]), "classification": classification_metrics(logits, labels)}
    if localization:
        out["localization"] = acc.result()
    if all_groups and group_names:
        out["groups"] = group_metrics(logits.argmax(1), labels.argmax(1), torch.cat(all_groups), group_names)
    return out


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The three numbers model selection uses: F1, EPG and IoU (fixed threshold)."""
    loc = result.get("localization") or {}
    return {
        "f1": float(result["classification"]["f1"]),
        "epg": float(loc.get("epg", 0.0) or 0.0),
        "iou": float(loc.get("iou", 0.0) or 0.0),
    }
