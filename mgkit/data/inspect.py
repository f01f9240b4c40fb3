"""`mgkit inspect`: validate a prepared data file and summarise what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mgkit.data.format import open_dataset
from mgkit.errors import FormatError


def summarize(path: str | Path) -> dict[str, Any]:
    """Everything `inspect` shows, as plain data; raises FormatError on the first problem found."""
    try:
        return _summarize(path)
    except (OSError, ValueError, KeyError) as e:  # damaged bytes past the layout checks
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FormatError(f"{path}: damaged file ({type(e).__name__}: {first})") from None


def _summarize(path: str | Path) -> dict[str, Any]:
    with open_dataset(path) as ds:
        out: dict[str, Any] = {
            "path": str(path), "source": ds.source, "task": ds.task, "classes": ds.classes,
            "image_size": list(ds.image_size), "bbox_frac": ds.bbox_frac, "seed": ds.seed,
            "mask_mode": ds.mask_mode, "options": ds.options, "provenance": ds.provenance,
            "format_version": int(ds.h5.attrs["format_version"]), "splits": {},
        }
        h, w = ds.image_size
        for split in ds.splits:
            g = ds.split(split)  # checks the split's values (format.split_problem)
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
