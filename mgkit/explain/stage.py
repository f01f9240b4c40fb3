"""`mgkit explain`: pick images of a split, load checkpoints, draw the explanation figure, write a sidecar.

Images: `--ids` (ids as stored in /<split>/ids, or `#INDEX`), otherwise the first `n` images of the split,
in file order, that have at least one box (deterministic, so a figure can be made again and compared).
Only the chosen images are read from the HDF5 file.

Attribution and layer of each model: `--attribution` / `--layer` when given (an explicit attribution
without `--layer` is drawn at the input, or at "final" for gradcam and captum layer methods); otherwise a
guided checkpoint's own setting (`CheckpointInfo.own_setting`: the attribution and layer it validated
with, as `mgkit evaluate` uses), and for a baseline (train stage) the setting of a guided model of the
same family in the figure (a like-for-like comparison), or else the family's default attribution at the
input.

Writes the figure (.png or .pdf; `pdf=True` adds a PDF beside a PNG) and a JSON sidecar (same stem,
.json) naming what was drawn: each model's result-schema identity, attribution and layer, the data file's
hash, the images' ids and the EPG of every pair. All files are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkit import results
from mgkit.artifacts import check_output, provenance, save_figure, write_text_atomic
from mgkit.data.facts import DataFacts, read_facts
from mgkit.errors import MgkitError, UsageError
from mgkit.progress import log
from mgkit.explain.figure import (ModelMaps, Pairs, check_method, default_layer, explanation_pairs,
                                  render_explanations)

__all__ = ["Selection", "read_selection", "parse_ids", "explain"]

FIGURE_SUFFIXES = (".png", ".pdf")


@dataclass
class Selection:
    """The chosen images of a split, in figure order."""

    index: np.ndarray  # int [N], rows of the split
    ids: list[str]
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # [N, K]
    boxes: list[np.ndarray]  # per image float [m, 5]


def parse_ids(spec: str, stored: Sequence[str]) -> np.ndarray:
    """`--ids a,b,#3` -> row indices; unknown ids and out-of-range indices are refused in one line."""
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    if not wanted:
        raise UsageError("--ids is empty; give a comma-separated list of image ids (or #INDEX).")
    where = {name: i for i, name in enumerate(stored)}
    rows, unknown = [], []
    for w in wanted:
        if w.startswith("#"):
            try:
                i = int(w[1:])
            except ValueError:
                i = -1
            if 0 <= i < len(stored):
                rows.append(i)
            else:
                unknown.append(w)
        elif w in where:
            rows.append(where[w])
        else:
            unknown.append(w)
    if unknown:
        raise UsageError(f"--ids: {', '.join(unknown[:8])}{' …' if len(unknown) > 8 else ''} not in this split "
                         f"({len(stored)} images; ids as stored in /<split>/ids, or #0..#{len(stored) - 1}).")
    if len(set(rows)) != len(rows):
        raise UsageError("--ids names an image twice.")
    return np.asarray(rows, dtype=np.int64)


def read_selection(ds: Any, split: str, *, n: int, ids: str | None) -> Selection:
    """Read only the chosen images of `split` (see the module docstring for the choice)."""
    if split not in ds.splits:
        raise UsageError(f"--split {split}: {ds.path} has no such split (it has {', '.join(ds.splits)}).")
    g = ds.split(split)
    stored = [str(s) for s in g["ids"].asstr()[...]]
    box_index = g["box_index"][...]
    if ids:
        rows = parse_ids(ids, stored)
    else:
        rows = np.flatnonzero(np.diff(box_index) > 0)[:n]
        if len(rows) == 0:
            raise MgkitError(f"{ds.path}: no image of split '{split}' has a box; choose images with --ids.")
    order = np.argsort(rows)  # h5py reads increasing indices; put the rows back in the asked order after
    back = np.argsort(order)
    images = g["images"][rows[order]][back]
    labels = g["labels"][rows[order]][back]
    boxes = [g["boxes"][box_index[i]:box_index[i + 1]] for i in rows]
    return Selection(rows, [stored[i] for i in rows], images, labels, boxes)


@dataclass
class _Model:
    path: Path
    model: Any
    info: Any
    method: str = ""
    layer: str = ""
    label: str = ""


def _resolve_methods(models: list[_Model], attribution: str | None, layer: str | None) -> None:
    """Fill each model's attribution and layer (module docstring) and refuse unusable ones."""
    guided = [m for m in models if m.info.stage == "guide"]
    for m in models:
        # a baseline is drawn like a guided model of its family in the figure (like for like)
        peer = m if m.info.stage == "guide" else next(
            (g for g in guided if g.info.family.name == m.info.family.name), None)
        if attribution is not None:
            m.method, m.layer = attribution, layer or default_layer(attribution)
        elif peer is not None:
            m.method, own_layer = peer.info.own_setting()
            m.layer = layer or own_layer
        else:
            m.method, m.layer = m.info.family.default_attribution, layer or "input"
        try:
            check_method(m.model, m.method, m.layer)
        except UsageError as e:
            raise UsageError(f"{m.path}: {e}") from None


def _labels(models: list[_Model]) -> None:
    """Short, unique panel labels: "baseline", "guided energy", then a letter when two would clash."""
    for m in models:
        cfg = m.info.config
        m.label = f"guided {cfg.get('loss') or ''}".strip() if m.info.stage == "guide" else "baseline"
    for m in models:
        same = [o for o in models if o.label == m.label]
        if len(same) > 1 and len({o.info.model_name for o in same}) == len(same):
            for o in same:  # e.g. two baselines of different models: the model names tell them apart
                loss = o.info.config.get("loss") or ""
                o.label = o.info.model_name if o.label == "baseline" else f"{o.info.model_name} {loss}".strip()
        elif len(same) > 1:
            for k, o in enumerate(same):
                o.label = f"{o.label} {'ABCDEFGH'[k]}" if k < 8 else f"{o.label} {k + 1}"


def _describe(m: _Model) -> str:
    """One line for the figure title: what the label stands for."""
    cfg = m.info.config
    what = f"{m.info.model_name}"
    if m.info.stage == "guide":
        lam = cfg.get("lam")
        lam_text = "?" if lam is None else f"{lam:g}"
        what += f" ({cfg.get('loss')}, {cfg.get('attribution')}@{cfg.get('layer')}, λ={lam_text})"
    return f"{m.label} = {what}; drawn: {m.method}@{m.layer}"


def _identity(m: _Model, facts: DataFacts) -> dict[str, Any]:
    """The checkpoint's result-schema identity; data_hash is that of its TRAINING data (the explained
    file's hash is the sidecar's top-level data_hash)."""
    d = m.info.data
    return results.identity(m.info.config, family=m.info.family.name, data_hash=d.get("fingerprint"),
                            dataset=d.get("dataset", facts.source), task=d.get("task", facts.task),
                            classes=m.info.classes,
                            bbox_frac=d.get("bbox_frac"), checkpoint=str(m.path), epoch=m.info.epoch)


def _figure_outputs(out: Path, pdf: bool) -> tuple[list[Path], Path]:
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out {out}: the figure is written as .png or .pdf, not {out.suffix or 'no suffix'}.")
    figures = [out]
    if pdf and out.suffix.lower() != ".pdf":
        figures.append(out.with_suffix(".pdf"))
    return figures, out.with_suffix(".json")


def _drawn(fig: Any, labels: Sequence[str], n: int) -> dict[str, Any]:
    """What the figure holds, counted from its axes (axis labels of render_explanations)."""
    names = [ax.get_label() for ax in fig.axes]
    return {
        "rows": sum(x.startswith("image:") for x in names),
        "images_expected": n,
        "panels": {lab: {"maps": sum(x.startswith(f"map:{lab}:") for x in names),
                         "colour": sum(x.startswith(f"colour:{lab}:") for x in names)} for lab in labels},
    }


def _load_models(checkpoints: Sequence[str | Path], facts: DataFacts, dev: torch.device, attribution: str | None,
                 layer: str | None) -> list[_Model]:
    """Each checkpoint's model (checked against the data file), its attribution, layer and label."""
    from mgkit.engine.checkpoint import model_from_checkpoint

    models = []
    for path in checkpoints:
        model, info = model_from_checkpoint(path, device=dev, expect_classes=facts.classes,
                                            expect_image_size=facts.image_size)
        models.append(_Model(Path(path), model, info))
    _resolve_methods(models, attribution, layer)
    _labels(models)
    return models


def _explain_all(models: list[_Model], sel: Selection, facts: DataFacts, dev: torch.device, *, max_classes: int,
                 ig_steps: int, quiet: bool) -> tuple[Pairs, list[ModelMaps]]:
    """The (image, class) pairs to draw (chosen with the first model) and every model's maps of them."""
    pairs: Pairs | None = None
    drawn: list[ModelMaps] = []
    for m in models:
        log(f"explaining {len(sel.ids)} images with {m.path} ({m.method}@{m.layer})", quiet=quiet)
        pairs, maps = explanation_pairs(m.model, sel.images, sel.labels, sel.boxes, method=m.method, layer=m.layer,
                                        label=m.label, pairs=pairs, max_classes=max_classes, outside=facts.outside,
                                        device=dev, ig_steps=ig_steps)
        drawn.append(maps)
    assert pairs is not None
    return pairs, drawn


def _images_section(sel: Selection, pairs: Pairs, classes: list[str]) -> list[dict[str, Any]]:
    """The sidecar's drawn images: id, row in the split, ground-truth and explained classes."""
    return [{"id": sel.ids[i], "row": int(sel.index[i]),
             "classes": [classes[k] for k in np.flatnonzero(sel.labels[i] > 0)],
             "explained": [classes[int(c)] for c in pairs.classes[pairs.image == i]]}
            for i in range(len(sel.ids))]


def _model_section(m: _Model, d: ModelMaps, sel: Selection, pairs: Pairs, facts: DataFacts) -> dict[str, Any]:
    """The sidecar's entry of one model: what was drawn with it and the EPG of each pair."""
    classes = facts.classes
    return {
        "label": m.label, "checkpoint": str(m.path), "model": m.info.model_name,
        "family": m.info.family.name, "stage": m.info.stage, "attribution": m.method, "layer": m.layer,
        "colour_images": d.colour is not None,
        "mean_epg": _mean(d.epg),
        "pairs": [{"id": sel.ids[int(i)], "class": classes[int(c)], "epg": float(e)}
                  for i, c, e in zip(pairs.image, pairs.classes, d.epg)],
        "identity": _identity(m, facts),
    }


def explain(checkpoints: Sequence[str | Path], data: str | Path, out: str | Path, *, split: str = "test",
            n: int = 16, ids: str | None = None, attribution: str | None = None, layer: str | None = None,
            max_classes: int = 4, pdf: bool = False, device: str = "auto", seed: int = 0, ig_steps: int = 16,
            dpi: int = 100, quiet: bool = False) -> dict[str, Any]:
    """Make the explanation figure of `checkpoints` (first = left block) on images of `data`/`split`.

    Returns the description also written to the sidecar: files, data identity, the drawn images (id,
    row, ground-truth and explained classes), per model its identity, attribution, layer and the EPG of
    each (image, class) pair, and `figure` (rows and panels counted on the drawn figure).
    """
    from mgkit.data.format import open_dataset
    from mgkit.engine.distributed import DistEnv, pick_device
    from mgkit.options import EXPLAIN, coerce

    for name, value in (("n", n), ("max_classes", max_classes), ("ig_steps", ig_steps), ("seed", seed)):
        coerce(EXPLAIN[name], value)  # the bounds `mgkit explain` declares, for callers from Python too
    if not checkpoints:
        raise UsageError("give at least one checkpoint.")
    out = Path(out)
    figures, sidecar = _figure_outputs(out, pdf)
    for path, flag in [*((f, "--out") for f in figures), (sidecar, "the sidecar of --out")]:
        check_output(path, flag=flag, inputs=[*checkpoints, data])  # before anything is drawn
    dev = pick_device(device, DistEnv())
    torch.manual_seed(seed)  # sampling captum methods (ShapleyValueSampling, NoiseTunnel) draw from it
    facts = read_facts(data)
    classes = facts.classes
    with open_dataset(data) as ds:
        sel = read_selection(ds, split, n=n, ids=ids)
        models = _load_models(checkpoints, facts, dev, attribution, layer)
        pairs, drawn = _explain_all(models, sel, facts, dev, max_classes=max_classes, ig_steps=ig_steps, quiet=quiet)
        # one line per model: narrow figures (one class per image, one model) stay readable
        title = "\n".join([f"{Path(data).name}, split {split}"] + [_describe(m) for m in models])
        fig = render_explanations(sel.images, sel.boxes, classes, pairs, drawn, ids=sel.ids, title=title, dpi=dpi)
        description = {
            "tool": "mgkit explain",
            "figures": [str(f) for f in figures],
            "sidecar": str(sidecar),
            "data": str(data), "data_hash": facts.fingerprint, "dataset": facts.source, "task": facts.task,
            "split": split,
            "classes": classes,
            "images": _images_section(sel, pairs, classes),
            "models": [_model_section(m, d, sel, pairs, facts) for m, d in zip(models, drawn)],
            "figure": _drawn(fig, [m.label for m in models], len(sel.ids)),
            "options": {"n": n, "ids": ids, "attribution": attribution, "layer": layer, "max_classes": max_classes,
                        "seed": seed, "ig_steps": ig_steps, "device": str(dev)},
            "provenance": provenance(),
        }
    for f in figures:
        save_figure(fig, f)
    write_text_atomic(sidecar, results.dumps(description, indent=2) + "\n")
    return results.strict(description)


def _mean(values: np.ndarray | None) -> float | None:
    if values is None:
        return None
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
