"""Reading result records (schema v1, `mgkit.results`) into flat, comparable points for the tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mgkit.errors import FormatError, UsageError
from mgkit.pipeline.experiments import EXPERIMENTS as RECORDS
from mgkit.results import records_in

EXPERIMENTS = tuple(e.name for e in RECORDS)
# Kinds that hold measurements of one checkpoint. Epoch records (metrics.jsonl) are validation-time and only
# match `--split val`; run records (summary.json) repeat the best epoch and are not read.
USED_KINDS = ("evaluation", "pareto", "shift", "epoch")


@dataclass(frozen=True)
class Source:
    """One record and the file it came from (for error messages)."""

    path: str
    record: dict[str, Any]


def load(paths: Iterable[str | Path]) -> list[Source]:
    """Every mgkit result record in `paths` (files, or directories searched for *.json / *.jsonl).

    A named file must be an mgkit result; inside a directory other JSON files are skipped.
    """
    sources: list[Source] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted([*p.rglob("*.json"), *p.rglob("*.jsonl")]):
                sources += [Source(str(f), r) for r in records_in(f, skip_foreign=True)]
        elif p.exists():
            sources += [Source(str(p), r) for r in records_in(p)]
        else:
            raise UsageError(f"{p}: no such file or directory")
    return sources


@dataclass
class Point:
    """One model measured on one split: what a table row or a plotted marker is made of."""

    source: str
    experiment: str | None  # None: a baseline (stage train) shared by every experiment but shift
    dataset: str
    data_hash: str | None
    classes: tuple[str, ...]
    model: str
    family: str
    stage: str
    loss: str | None
    glayer: str | None  # guidance layer
    gattr: str | None  # guidance attribution
    lam: float | None
    bbox_frac: float
    dilate: float
    seed: int | None
    targets: str | None  # optional identity.targets (random | all), for claim 11
    eattr: str | None  # evaluation attribution
    elayer: str | None  # evaluation layer
    split: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds_per_epoch: float | None = None
    run: str | None = None
    per_image: dict[str, Any] | None = None  # encoded per-image sums (mgkit.bootstrap), for paired comparisons
    selected_on: str | None = None  # pareto entries: the split whose front selected the checkpoint

    def m(self, key: str) -> float | None:
        v = self.metrics.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    @property
    def is_baseline(self) -> bool:
        return self.stage == "train"


def _need(obj: dict[str, Any], key: str, path: str, where: str) -> Any:
    if key not in obj or obj[key] is None:
        raise FormatError(f"{path}: result field {where}{key} is missing")
    return obj[key]


def _dataset(ident: dict[str, Any], path: str) -> str:
    """The data set's name (identity.dataset), else the data file's stem: tables are made per data set."""
    if ident.get("dataset"):
        return str(ident["dataset"])
    if ident.get("data"):
        return Path(str(ident["data"])).stem
    raise FormatError(f"{path}: result fields identity.dataset and identity.data are both missing")


def _experiment(rec: dict[str, Any], ident: dict[str, Any], elayer: str | None, path: str) -> str | None:
    exp = rec.get("experiment")
    if exp is not None:
        if exp not in EXPERIMENTS:
            raise FormatError(f"{path}: experiment {exp!r} is not one of {', '.join(EXPERIMENTS)}")
        return exp
    if rec.get("kind") == "shift":
        return "shift"
    if ident.get("stage") == "train":
        return None
    # No explicit tag: infer from what differs from the main comparison.
    if float(ident.get("dilate") or 0.0) > 0:
        return "dilation"
    if float(ident.get("bbox_frac", 1.0) if ident.get("bbox_frac") is not None else 1.0) < 1.0:
        return "annotations"
    if ident.get("layer") and elayer and ident.get("layer") != elayer:
        return "depth"
    return "main"


def _point(path: str, rec: dict[str, Any], metrics: dict[str, Any], ev: dict[str, Any], split: str | None,
           exp_rec: dict[str, Any]) -> Point:
    ident = _need(rec, "identity", path, "")
    if not isinstance(ident, dict):
        raise FormatError(f"{path}: result field identity is not an object")
    if not isinstance(metrics, dict):
        raise FormatError(f"{path}: result field metrics is not an object")
    stage = _need(ident, "stage", path, "identity.")
    training = rec.get("training") or exp_rec.get("training") or {}
    exp = _experiment(exp_rec, ident, ev.get("layer"), path)
    return Point(
        source=path, experiment=None if stage == "train" and exp != "shift" else exp,
        dataset=_dataset(ident, path), data_hash=ident.get("data_hash"),
        classes=tuple(ident.get("classes") or ()), model=str(_need(ident, "model", path, "identity.")),
        family=str(ident.get("family") or ""), stage=str(stage), loss=ident.get("loss"),
        glayer=ident.get("layer"), gattr=ident.get("attribution"), lam=ident.get("lambda"),
        bbox_frac=float(ident["bbox_frac"]) if ident.get("bbox_frac") is not None else 1.0,
        dilate=float(ident.get("dilate") or 0.0), seed=ident.get("seed"), targets=ident.get("targets"),
        eattr=ev.get("attribution"), elayer=ev.get("layer"), split=split, metrics=metrics,
        seconds_per_epoch=(training or {}).get("seconds_per_epoch") or rec.get("seconds"),
        run=ident.get("run"), per_image=rec.get("per_image") if isinstance(rec.get("per_image"), dict) else None,
    )


def to_points(sources: Iterable[Source]) -> tuple[list[Point], dict[str, int]]:
    """Flatten records into points (pareto entries and shift splits become one point each).

    Returns the points and a count of records skipped by kind (epoch, run).
    """
    points: list[Point] = []
    skipped: dict[str, int] = {}
    for s in sources:
        rec, path = s.record, s.path
        kind = rec.get("kind")
        no_eval = kind == "epoch" and not isinstance(rec.get("evaluation"), dict)
        # A guided run's epoch 0 is its parent (the baseline) validated before any guidance step.
        parent_line = kind == "epoch" and rec.get("epoch") == 0 and (rec.get("identity") or {}).get("stage") == "guide"
        if kind not in USED_KINDS or no_eval or parent_line:
            skipped[str(kind)] = skipped.get(str(kind), 0) + 1
            continue
        if kind == "pareto":
            entries = rec.get("entries")
            if not isinstance(entries, list):
                raise FormatError(f"{path}: pareto result has no list field entries")
            for i, e in enumerate(entries):
                if not isinstance(e, dict):
                    raise FormatError(f"{path}: pareto entries[{i}] is not an object")
                ev = e.get("evaluation") or rec.get("evaluation") or {}
                merged = {**e, "identity": e.get("identity") or rec.get("identity")}
                p = _point(path, merged, _need(e, "metrics", path, f"entries[{i}]."), ev,
                           ev.get("split"), {**e, "experiment": rec.get("experiment", e.get("experiment"))})
                # records written before selection moved to validation have no "selection": their
                # front was taken on the evaluated split
                p.selected_on = (rec.get("selection") or {}).get("split") or ev.get("split")
                points.append(p)
        elif kind == "shift" and isinstance(rec.get("splits"), dict):
            ev = rec.get("evaluation") or {}
            for split, metrics in sorted(rec["splits"].items()):
                points.append(_point(path, rec, metrics, ev, split, rec))
            base = rec.get("baseline")  # an embedded baseline shift record (deduplicated by the tables)
            if isinstance(base, dict) and isinstance(base.get("splits"), dict) and isinstance(base.get("identity"), dict):
                for split, metrics in sorted(base["splits"].items()):
                    points.append(_point(path, base, metrics, base.get("evaluation") or ev, split,
                                         {**base, "kind": "shift"}))
        else:
            ev = rec.get("evaluation")
            if not isinstance(ev, dict):
                raise FormatError(f"{path}: {kind} result field evaluation is missing")
            points.append(_point(path, rec, _need(rec, "metrics", path, ""), ev, ev.get("split"), rec))
    return points, skipped
