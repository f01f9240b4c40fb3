"""`mgkit inspect`: validate a prepared data file and summarise what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mgkit.data.format import DatasetFile, open_dataset
from mgkit.errors import FormatError


def _check_values(ds: DatasetFile, split: str) -> str | None:
    """Value-level checks beyond the layout: labels binary, boxes inside the grid and labelled."""
    g = ds.split(split)
    h, w = ds.image_size
    labels = g["labels"][:]
    if labels.size and labels.max() > 1:
        return f"'{split}/labels' holds values other than 0 and 1"
    index = g["box_index"][:]
    if np.any(np.diff(index) < 0):
        return f"'{split}/box_index' is not non-decreasing"
    boxes = g["boxes"][:]
    if len(boxes):
        cls = boxes[:, 0]
        if np.any(cls < 0) or np.any(cls >= ds.num_classes) or np.any(cls != np.round(cls)):
            return f"'{split}/boxes' has class ids outside 0..{ds.num_classes - 1}"
        x0, y0, x1, y1 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
        if np.any(x0 < 0) or np.any(y0 < 0) or np.any(x1 > w) or np.any(y1 > h):
            return f"'{split}/boxes' has coordinates outside the {w}x{h} grid"
        if np.any(x0 >= x1) or np.any(y0 >= y1):
            return f"'{split}/boxes' has empty boxes (x0 >= x1 or y0 >= y1)"
        owner = np.repeat(np.arange(len(index) - 1), np.diff(index))
        if np.any(labels[owner, cls.astype(np.int64)] == 0):
            return f"'{split}/boxes' has a box whose class is not among its image's labels"
    return None


def summarize(path: str | Path) -> dict[str, Any]:
    """Everything `inspect` shows, as plain data; raises FormatError on the first problem found."""
    with open_dataset(path) as ds:
        out: dict[str, Any] = {
            "path": str(path), "source": ds.source, "task": ds.task, "classes": ds.classes,
            "image_size": list(ds.image_size), "bbox_frac": ds.bbox_frac, "seed": ds.seed,
            "mask_mode": ds.mask_mode, "options": ds.options, "provenance": ds.provenance,
            "format_version": int(ds.h5.attrs["format_version"]), "splits": {},
        }
        h, w = ds.image_size
        for split in ds.splits:
            problem = _check_values(ds, split)
            if problem:
                raise FormatError(f"{path}: {problem}")
            g = ds.split(split)
            labels = g["labels"][:]
            boxes = g["boxes"][:]
            annotated = g["annotated"][:]
            index = g["box_index"][:]
            frac = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]) / float(h * w) if len(boxes) else np.zeros(0)
            cls = boxes[:, 0].astype(np.int64) if len(boxes) else np.zeros(0, np.int64)
            s: dict[str, Any] = {
                "images": int(labels.shape[0]),
                "boxes": int(len(boxes)),
                "annotated": int(annotated.sum()),
                "images_with_boxes": int((np.diff(index) > 0).sum()),
                "negatives": int((labels.sum(1) == 0).sum()),
                "classes": {
                    name: {"images": int(labels[:, k].sum()), "boxes": int((cls == k).sum())}
                    for k, name in enumerate(ds.classes)
                },
                "box_area_fraction": {
                    "min": float(frac.min()) if len(frac) else None,
                    "median": float(np.median(frac)) if len(frac) else None,
                    "mean": float(frac.mean()) if len(frac) else None,
                    "max": float(frac.max()) if len(frac) else None,
                },
            }
            if "segmentation" in g:
                s["with_segmentation"] = int(g["has_segmentation"][:].sum())
            if "groups" in g:
                names = json.loads(g.attrs["group_names"])
                groups = g["groups"][:]
                s["groups"] = {name: int((groups == i).sum()) for i, name in enumerate(names)}
            out["splits"][split] = s
        if "summary" in ds.h5.attrs:
            out["prepare_summary"] = json.loads(ds.h5.attrs["summary"])
        return out


def render_summary(s: dict[str, Any]) -> None:
    """Rich tables for a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    h, w = s["image_size"]
    console.print(f"[bold]{s['path']}[/bold]  source={s['source']} task={s['task']} size={w}x{h} "
                  f"bbox_frac={s['bbox_frac']} seed={s['seed']} mask={s['mask_mode']} "
                  f"(format v{s['format_version']}, mgkit {s['provenance'].get('mgkit_version')})")
    splits = Table("split", "images", "boxes", "annotated", "with boxes", "negatives", "box area (median)", title="Splits")
    for name, c in s["splits"].items():
        med = c["box_area_fraction"]["median"]
        splits.add_row(name, str(c["images"]), str(c["boxes"]), str(c["annotated"]), str(c["images_with_boxes"]),
                       str(c["negatives"]), "-" if med is None else f"{100 * med:.1f}%")
    console.print(splits)
    classes = Table("class", *[f"{n} imgs/boxes" for n in s["splits"]], title="Classes")
    for name in s["classes"]:
        classes.add_row(name, *[f"{c['classes'][name]['images']}/{c['classes'][name]['boxes']}" for c in s["splits"].values()])
    console.print(classes)
    for name, c in s["splits"].items():
        if "groups" in c:
            console.print(f"groups in {name}: " + ", ".join(f"{g}={n}" for g, n in c["groups"].items()))
    prov = {k: v for k, v in s["provenance"].items() if k not in ("host",)}
    console.print("provenance: " + json.dumps(prov, sort_keys=True, default=str))
