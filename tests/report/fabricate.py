"""Small fabricated result records (schema v1) for the report tests."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

FAMILY = {"resnet18": ("vanilla", "ixg"), "xdnn-resnet18": ("xdnn", "intgrad"), "bcos-resnet18": ("bcos", "bcos")}
CLASSES = ["circle", "square"]


def record(model: str = "bcos-resnet18", loss: str | None = None, layer: str = "input", *, f1: float, epg: float,
           iou: float | None = None, lam: float = 0.0, eval_layer: str | None = None, bbox_frac: float = 1.0,
           dilate: float = 0.0, seed: int = 0, dataset: str = "synthetic", data_hash: str = "a" * 16,
           classes: list[str] | None = None, kind: str = "evaluation", experiment: str | None = None,
           on_object: float | None = None, seconds_per_epoch: float | None = None, split: str = "test",
           ci: float | None = None, targets: str | None = None, attribution: str | None = None,
           **metrics: Any) -> dict[str, Any]:
    """One evaluation record; `ci` adds symmetric 95 % intervals (±ci) to F1, EPG, IoU and on-object."""
    family, attr = FAMILY[model]
    attr = attribution or attr
    if ci is not None:
        for k, v in (("f1", f1), ("epg", epg), ("iou", iou), ("on_object", on_object)):
            if v is not None:
                metrics.update({f"{k}_lo": v - ci, f"{k}_hi": v + ci})
    rec: dict[str, Any] = {
        "schema": "mgkit.result", "schema_version": 1, "kind": kind, "mgkit_version": "0.1.0",
        "created": "2026-11-28T17:00:00+00:00",
        "identity": {"run": f"runs/{model}/{loss}/{layer}", "stage": "train" if loss is None else "guide",
                     "model": model, "family": family, "loss": loss, "layer": None if loss is None else layer,
                     "attribution": None if loss is None else attr, "lambda": lam, "bbox_frac": bbox_frac,
                     "dilate": dilate, "seed": seed, "data": "data/synth.h5", "data_hash": data_hash,
                     "dataset": dataset, "task": "multilabel", "classes": classes or CLASSES,
                     "checkpoint": None, "epoch": None, "parent": None, "parent_sha256": None},
        "evaluation": {"split": split, "attribution": attr, "layer": eval_layer or layer, "maps": "raw",
                       "iou_threshold": 0.5, "chosen_threshold": None, "threshold_split": None},
        "metrics": {"f1": f1, "epg": epg, "iou": iou, "on_object": on_object, **metrics},
        "training": None if seconds_per_epoch is None else {"epochs": 2, "seconds_per_epoch": seconds_per_epoch},
    }
    if experiment:
        rec["experiment"] = experiment
    if targets:
        rec["identity"]["targets"] = targets
    return rec


def pareto(entries: list[dict[str, Any]], experiment: str | None = None) -> dict[str, Any]:
    rec = {k: v for k, v in entries[0].items() if k not in ("metrics", "evaluation")}
    rec.update(kind="pareto", entries=entries, front=list(range(len(entries))), evaluation=entries[0]["evaluation"])
    if experiment:
        rec["experiment"] = experiment
    return rec


def shift(loss: str | None, worst: float, overall: float, seed: int, classes: list[str]) -> dict[str, Any]:
    rec = record("bcos-resnet18", loss, "input", f1=0.8, epg=0.3, kind="shift", dataset="waterbirds",
                 classes=classes, seed=seed, data_hash="b" * 16 if classes[0] == "landbird" else "c" * 16)
    rec["splits"] = {"test": {"accuracy": overall, "overall": overall, "worst_group": worst}}
    return rec


def main_records(ci: float | None = None) -> list[dict[str, Any]]:
    """B-cos input (Energy dominates L1, PPCE; L1 wins IoU) and vanilla final (a guided model beats the baseline);
    `ci`: intervals of ±ci on every metric."""
    b = "bcos-resnet18"
    rec = partial(record, ci=ci)
    recs = [rec(b, None, f1=0.80, epg=0.40, iou=0.10),
            pareto([rec(b, "energy", f1=0.795, epg=0.70, iou=0.12, lam=1e-3),
                    rec(b, "energy", f1=0.77, epg=0.75, iou=0.13, lam=1e-2),
                    rec(b, "energy", f1=0.70, epg=0.80, iou=0.14, lam=1e-1)]),
            rec(b, "l1", f1=0.79, epg=0.55, iou=0.30, lam=1e-3),
            rec(b, "l1", f1=0.74, epg=0.60, iou=0.35, lam=1e-2),
            rec(b, "ppce", f1=0.80, epg=0.42, iou=0.11, lam=1e-3),
            rec("resnet18", None, "final", f1=0.70, epg=0.30, iou=0.20),
            rec("resnet18", "energy", "final", f1=0.71, epg=0.45, iou=0.22, lam=1e-3),
            rec("resnet18", "energy", "final", f1=0.60, epg=0.65, iou=0.25, lam=1e-2),
            rec("resnet18", "l1", "final", f1=0.69, epg=0.40, iou=0.30, lam=1e-3)]
    return recs


def other_records() -> list[dict[str, Any]]:
    """Annotations, dilation, depth, segmentation and shift, a handful each."""
    b = "bcos-resnet18"
    recs = [record(b, "energy", f1=0.79, epg=0.60, iou=0.11, bbox_frac=0.01),
            record(b, "energy", f1=0.795, epg=0.69, iou=0.12, bbox_frac=0.1),
            record(b, "energy", f1=0.79, epg=0.69, iou=0.12, dilate=0.5),
            record(b, "l1", f1=0.79, epg=0.45, iou=0.20, dilate=0.5),
            record(b, "energy", "mid2", eval_layer="input", f1=0.79, epg=0.65, iou=0.11, seconds_per_epoch=5.0),
            record(b, "energy", "input", f1=0.795, epg=0.70, iou=0.12, seconds_per_epoch=9.0, experiment="depth"),
            record(b, "energy", f1=0.79, epg=0.6, iou=0.1, on_object=0.8, experiment="segmentation"),
            record(b, "l1", f1=0.79, epg=0.5, iou=0.2, on_object=0.6, experiment="segmentation"),
            record(b, None, f1=0.80, epg=0.40, iou=0.10, on_object=0.5, experiment="segmentation")]
    for seed, (bw, ew, lw) in enumerate([(0.40, 0.55, 0.50), (0.44, 0.57, 0.52)]):
        for cls in (["landbird", "waterbird"], ["land", "water"]):
            recs += [shift(None, bw, 0.68, seed, cls), shift("energy", ew, 0.71, seed, cls),
                     shift("l1", lw, 0.70, seed, cls)]
    return recs


def write(path: Path, obj: Any) -> Path:
    """One record as .json; a list of records as .jsonl (one per line), as the stages write them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, list):
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        path.write_text(json.dumps(obj))
    return path
