"""The reference implementation's preprocessed `{train,val,test}.pt` files (VOC2007 or COCO2014).

Each file is `torch.save({"data": float32 [N, 3, S, S] in [0, 1], "labels": float32 [N, K],
"bbs": per image a list of [cls, xmin, ymin, xmax, ymax] rows on the S x S grid (or None), "mask": None})`.
Images are stored as uint8 = round(x * 255) clamped to [0, 255] at their native size S (no resize).
Boxes are already on the grid: kept as given, except rows with x0 >= x1 or y0 >= y1, which are dropped
and counted (values outside the grid would be clipped and counted).

Memory: files saved in torch's zip format (the default since torch 1.6) are opened with
`torch.load(mmap=True)`, so the image tensor stays on disk and pages are read as images are converted;
resident memory stays near one batch, not the whole split (VOC test is about 3 GB, COCO train about 50 GB).
Legacy-format files cannot be memory-mapped and are loaded whole into RAM. Loading unpickles Python
objects (the "bbs" lists), so only convert files you trust. Loaded files are kept in a module-level cache
that `load` reads, so the plan must run in-process (`workers_ok=False`). The files are not hashed for
provenance (tens of GB); their sizes and modification times are recorded instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkit.data.format import Sample
from mgkit.data.prepare import BadSample, Record, SourcePlan, scale_boxes
from mgkit.data.sources.classes import COCO_CLASSES, VOC_CLASSES
from mgkit.errors import MgkitError, UsageError
from mgkit.registry import REFERENCE_DATASETS

DATASETS = dict(zip(REFERENCE_DATASETS, (VOC_CLASSES, COCO_CLASSES)))
SPLITS = ("train", "val", "test")
_CACHE: dict[str, dict[str, Any]] = {}  # file path -> loaded dict, filled by plan(), read by load()


def plan(root: Path, dataset: str) -> SourcePlan:
    """Describe the .pt files under `root`; `dataset` ("voc" or "coco") gives the class list."""
    if dataset not in DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    classes = DATASETS[dataset]
    root = Path(root)
    if root.is_file():
        raise MgkitError(f"{root}: is a file; --root must be the folder holding train.pt, val.pt and test.pt")
    if not root.is_dir():
        raise MgkitError(f"{root}: folder of reference .pt files not found")
    paths = {s: root / f"{s}.pt" for s in SPLITS if (root / f"{s}.pt").is_file()}
    if not paths:
        raise MgkitError(f"{root}: none of {', '.join(s + '.pt' for s in SPLITS)} found")
    notes = [f"{root / (s + '.pt')} not found: no {s} split" for s in SPLITS if s not in paths]
    splits: dict[str, list[Record]] = {}
    native: int | None = None
    for split, path in paths.items():
        n, size = _check(path, _open(str(path), refresh=True), len(classes), dataset)
        if native is not None and size != native:
            raise MgkitError(f"{path}: images are {size}x{size}, but another split's are {native}x{native}")
        native = size
        splits[split] = [Record(f"{split}:{i}", (str(path), i)) for i in range(n)]
    provenance = {
        "source_root": str(root),
        "dataset": dataset,
        "files": {s: {"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                  for s, p in paths.items()},
    }
    return SourcePlan(source="reference", task="multilabel", classes=list(classes), splits=splits, load=load,
                      provenance=provenance, notes=notes, workers_ok=False, native_size=native)


def _open(path: str, refresh: bool = False) -> dict[str, Any]:
    """Load a .pt file (memory-mapped when its format allows), cached by path."""
    if refresh or path not in _CACHE:
        _CACHE.pop(path, None)
        try:
            try:
                obj = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
            except RuntimeError:  # legacy (non-zip) format: cannot be memory-mapped
                obj = torch.load(path, map_location="cpu", weights_only=False)
        except MemoryError:
            raise MgkitError(f"{path}: not a readable torch file (loading it asks for more memory than there is; damaged?)") from None
        except Exception as e:  # unpickling garbage can raise nearly anything (KeyError, ValueError, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise MgkitError(f"{path}: not a readable torch file ({type(e).__name__}: {first[:200]})") from None
        _CACHE[path] = obj
    return _CACHE[path]


def _check(path: Path, obj: Any, num_classes: int, dataset: str) -> tuple[int, int]:
    """(N, S) of a loaded reference file, after checking its layout."""
    if not isinstance(obj, dict) or not {"data", "labels"} <= set(obj):
        raise MgkitError(f"{path}: not a reference data file (expects a dict with 'data', 'labels', 'bbs')")
    data, labels, bbs = obj["data"], obj["labels"], obj.get("bbs")
    if not isinstance(data, torch.Tensor) or data.ndim != 4 or data.shape[1] != 3 or data.shape[2] != data.shape[3]:
        raise MgkitError(f"{path}: 'data' must be a [N, 3, S, S] tensor, got "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
    n = data.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.shape[0] != n:
        raise MgkitError(f"{path}: 'labels' must be a [{n}, K] tensor")
    if labels.shape[1] != num_classes:
        raise MgkitError(f"{path}: labels have {labels.shape[1]} classes, but --dataset {dataset} has {num_classes}")
    if bbs is not None and (not isinstance(bbs, (list, tuple)) or len(bbs) != n):
        raise MgkitError(f"{path}: 'bbs' must be a list with one entry per image ({n})")
    return n, int(data.shape[2])


def load(record: Record, size: int) -> Sample:
    """Convert image `i` of a cached reference file."""
    path, i = record.payload
    obj = _open(path)
    data = obj["data"]
    if data.shape[2] != size:
        raise MgkitError(f"{path}: images are {data.shape[2]}x{data.shape[2]}; reference files keep their size "
                         f"(asked for {size})")
    x = data[i]
    if x.dtype != torch.uint8:
        x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8)
    image = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    labels = (obj["labels"][i] > 0.5).to(torch.uint8).numpy()
    bbs = obj.get("bbs")
    rows = bbs[i] if bbs is not None else None
    try:
        rows = np.asarray(rows if rows is not None else [], dtype=np.float64).reshape(-1, 5)
    except (TypeError, ValueError):
        raise BadSample(f"{path}: image {i}: 'bbs' rows must be [cls, xmin, ymin, xmax, ymax]") from None
    if len(rows) and not np.isin(rows[:, 0], np.arange(len(labels))).all():
        raise BadSample(f"{path}: image {i}: a box has a class outside 0..{len(labels) - 1}")
    # Already on the grid: scale 1, so only degenerate rows are dropped (and stray values clipped).
    boxes, stats = scale_boxes(rows, size, size, size)
    return Sample(id=record.id, image=image, labels=labels, boxes=boxes, stats=dict(stats))
