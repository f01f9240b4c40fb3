"""MS COCO instances JSONs (read with pycocotools): multi-hot labels over the categories, object boxes.

Paper protocol (reference + NN-Explainer): `train{year}` is split into train / val, `val{year}` is the
test set. The split comes from, in this order of precedence:

* `val_ann_file`: an instances JSON for val (with `val_image_dir`); train is then all of the train JSON,
  or the images `train_split_file` names;
* `train_split_file` / `val_split_file`. The NN-Explainer files the reference uses
  (`train2014_train_split.json`, `train2014_val_split.json`) are themselves instances JSONs (the
  reference opens them with `COCO(...)`), so such a file is used directly, annotations included, and
  `instances_train{year}.json` is not needed. A split file may also be a JSON list of image ids, of
  digit strings or of file names (matched by base name), or a dict holding such a list under "images"
  (image dicts with an "id" count too), "ids" or "image_ids"; those select images of the train JSON.
  Given only one of the two files, the other split is the rest of the train JSON;
* otherwise a seeded split: the train JSON's image ids in ascending order are permuted with
  `numpy.random.RandomState(seed)` and the first `int(val_frac * n)` become val.

Within a split images are in ascending image-id order, as the reference's `sorted(coco.imgs)`, so that
`--bbox-frac` picks the same images as the reference for the same seed. Categories map to contiguous
label ids in ascending COCO category id (the reference's 91 -> 80 mapper); names come from the JSON, and
every JSON used must list the same categories. Crowd annotations count for labels and boxes unless
`include_crowd=False`. Boxes [x, y, w, h] become (x, y, x + w, y + h) and are scaled with the decoded
image's size, as the reference does. Images without annotations are kept, all-negative.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from mgkit.artifacts import file_sha256
from mgkit.data.format import Sample
from mgkit.data.prepare import BadSample, Record, SourcePlan, read_rgb, resize_rgb, scale_boxes
from mgkit.data.sources.classes import multi_hot
from mgkit.errors import MgkitError, UsageError


@dataclass(frozen=True)
class CocoItem:
    """Payload of one COCO record: the image path and its already parsed annotations."""

    image: str
    width: int | None  # as the JSON says; boxes are scaled with the decoded size
    height: int | None
    boxes: np.ndarray  # float64 [m, 5] (class, x0, y0, x1, y1) in original pixels
    num_classes: int
    crowd_excluded: int = 0
    problem: str | None = None  # an annotation that cannot be used: load() raises BadSample


@dataclass
class _Annotations:
    """One loaded instances JSON."""

    path: Path
    coco: COCO
    categories: list[tuple[int, str]]
    orphans: int = 0  # annotations whose image_id is not among the images: never used
    orphan_example: Any = None


def plan(root: Path | None = None, year: str = "2014", train_split_file: Path | None = None,
         val_split_file: Path | None = None, val_frac: float = 0.1, include_crowd: bool = True,
         train_ann_file: Path | None = None, train_image_dir: Path | None = None,
         val_ann_file: Path | None = None, val_image_dir: Path | None = None,
         test_ann_file: Path | None = None, test_image_dir: Path | None = None, seed: int = 0) -> SourcePlan:
    """Describe COCO train / val / test; the instances JSONs are read here, images in `load`."""
    root = Path(root) if root is not None else None
    if root is not None and root.exists() and not root.is_dir():
        raise MgkitError(f"{root}: is a file; --root must be the COCO folder holding annotations/")
    if root is not None and not root.is_dir():
        raise MgkitError(f"{root}: COCO root not found")
    if val_ann_file is not None and val_split_file is not None:
        raise UsageError("give --val-ann-file or --val-split-file, not both")
    if not 0.0 <= val_frac < 1.0:
        raise UsageError(f"--val-frac must lie in [0, 1), got {val_frac}")

    def default(given: Path | None, *parts: str) -> Path | None:
        return Path(given) if given is not None else (root.joinpath(*parts) if root is not None else None)

    train_ann = default(train_ann_file, "annotations", f"instances_train{year}.json")
    train_dir = default(train_image_dir, f"train{year}")
    test_ann = default(test_ann_file, "annotations", f"instances_val{year}.json")
    test_dir = default(test_image_dir, f"val{year}")
    notes: list[str] = []
    files: dict[str, Path] = {}
    cache: dict[Path, _Annotations] = {}

    defaulted = {"train": train_ann_file is None, "test": test_ann_file is None}
    defaulted_dirs = {"train": train_image_dir is None, "test": test_image_dir is None}

    def annotations(path: Path | None, role: str, option: str) -> _Annotations:
        if path is None:
            raise UsageError(f"the {role} annotations are needed: give --root or {option}")
        if root is not None and defaulted.get(role) and not path.is_file():
            raise MgkitError(_layout_hint(root, path, f"{role} annotation file", year, option))
        files[role] = path
        if path not in cache:
            cache[path] = _read_instances(path, _read_json(path, f"{role} annotation file"))
        return cache[path]

    def image_dir(path: Path | None, role: str, option: str) -> Path:
        if path is None:
            raise UsageError(f"the {role} images are needed: give {option}" + ("" if role == "val" else " or --root"))
        if not path.is_dir():
            if root is not None and defaulted_dirs.get(role):
                raise MgkitError(_layout_hint(root, path, f"{role} image folder", year, option))
            raise MgkitError(f"{path}: {role} image folder not found")
        return path

    # Each split: (annotations, image ids, image folder).
    chosen, mode = _train_val(annotations, image_dir, train_ann, train_dir, train_split_file, val_split_file,
                              val_ann_file, val_image_dir, val_frac, seed, files, notes)
    if test_ann is not None:
        test = annotations(test_ann, "test", "--test-ann-file")
        chosen["test"] = (test, sorted(test.coco.imgs), image_dir(test_dir, "test", "--test-image-dir"))
    else:
        notes.append("no test annotations (give --root or --test-ann-file): no test split")

    classes, splits = _records(chosen, include_crowd, notes)
    orphans, warnings = _orphans(chosen)
    provenance: dict[str, Any] = {
        "source_root": str(root) if root is not None else None,
        "year": year,
        "split_mode": mode,
        "val_frac": val_frac if mode == "seeded" else None,
        "split_seed": seed if mode == "seeded" else None,
        "include_crowd": include_crowd,
        "files": {role: str(p) for role, p in files.items()},
        "files_sha256": {role: file_sha256(p) for role, p in files.items()},
        "image_dirs": {s: str(folder) for s, (_, _, folder) in chosen.items()},
        "annotations_without_image": orphans,
    }
    return SourcePlan(source="coco", task="multilabel", classes=classes, splits=splits, load=load,
                      provenance=provenance, notes=notes, warnings=warnings,
                      source_stats={"annotations_without_image": sum(orphans.values())})


def _train_val(annotations: Callable[[Path | None, str, str], _Annotations],
               image_dir: Callable[[Path | None, str, str], Path], train_ann: Path | None, train_dir: Path | None,
               train_split_file: Path | None, val_split_file: Path | None, val_ann_file: Path | None,
               val_image_dir: Path | None, val_frac: float, seed: int, files: dict[str, Path],
               notes: list[str]) -> tuple[dict[str, tuple[_Annotations, list[int], Path]], str]:
    """The train and val splits (annotations, image ids, image folder) and how they were chosen: from a
    val annotation file, from split files (the rest of the train JSON fills the other split) or by a
    seeded split of the train JSON."""
    chosen: dict[str, tuple[_Annotations, list[int], Path]] = {}
    split_files = {"train": train_split_file, "val": val_split_file}
    picked: dict[str, tuple[_Annotations, list[int]]] = {}
    for split, f in split_files.items():
        if f is not None:
            files[f"{split}_split"] = Path(f)
            picked[split] = _read_split(Path(f), lambda: annotations(train_ann, "train", "--train-ann-file"))
    if val_ann_file is not None:
        val = annotations(Path(val_ann_file), "val", "--val-ann-file")
        val_dir = Path(val_image_dir) if val_image_dir is not None else None
        chosen["val"] = (val, sorted(val.coco.imgs), image_dir(val_dir, "val", "--val-image-dir"))
        mode = "val annotation file"
        if "train" not in picked:
            train = annotations(train_ann, "train", "--train-ann-file")
            picked["train"] = (train, sorted(train.coco.imgs))
    elif picked:
        mode = "split files"
        for split, other in (("train", "val"), ("val", "train")):
            if split not in picked:  # the rest of the train JSON
                train = annotations(train_ann, "train", "--train-ann-file")
                taken = set(picked[other][1])
                picked[split] = (train, [i for i in sorted(train.coco.imgs) if i not in taken])
        overlap = set(picked["train"][1]) & set(picked["val"][1])
        if overlap:
            raise MgkitError(f"{len(overlap)} images are in both the train and the val split "
                             f"(e.g. image id {min(overlap)}); check --train-split-file and --val-split-file")
    else:
        mode = "seeded"
        train = annotations(train_ann, "train", "--train-ann-file")
        train_ids, val_ids = seeded_split(sorted(train.coco.imgs), val_frac, seed)
        picked["train"] = (train, train_ids)
        if val_ids:
            picked["val"] = (train, val_ids)
        else:
            notes.append("--val-frac gives no validation images: no val split")
    for split in ("train", "val"):
        if split in picked and split not in chosen:
            ann, ids = picked[split]
            chosen[split] = (ann, ids, image_dir(train_dir, "train", "--train-image-dir"))
    return chosen, mode


def _records(chosen: dict[str, tuple[_Annotations, list[int], Path]], include_crowd: bool,
             notes: list[str]) -> tuple[list[str], dict[str, list[Record]]]:
    """The class names (the shared category list; a note when it is not COCO's 80) and each split's records."""
    first = next(iter(chosen.values()))[0]
    for ann, _, _ in chosen.values():
        if ann.categories != first.categories:
            raise MgkitError(f"{ann.path} and {first.path} list different categories; all splits must share "
                             "one category list")
    index = {cid: k for k, (cid, _) in enumerate(first.categories)}
    classes = [name for _, name in first.categories]
    if len(classes) != 80:
        notes.append(f"{len(classes)} categories (MS COCO has 80)")
    splits: dict[str, list[Record]] = {}
    for split in ("train", "val", "test"):
        if split in chosen:
            ann, ids, folder = chosen[split]
            splits[split] = [_record(ann, i, folder, index, include_crowd) for i in ids]
    return classes, splits


def _orphans(chosen: dict[str, tuple[_Annotations, list[int], Path]]) -> tuple[dict[str, int], list[str]]:
    """Per annotation file, the annotations naming an image it lacks (dropped), and a warning for each file."""
    warnings: list[str] = []
    orphans: dict[str, int] = {}
    for ann in {id(a): a for a, _, _ in chosen.values()}.values():
        if ann.orphans:
            orphans[str(ann.path)] = ann.orphans
            warnings.append(f"{ann.path}: {ann.orphans} annotations name an image_id that is not in 'images' "
                            f"(e.g. {ann.orphan_example!r}); they were dropped")
    return orphans, warnings


def _layout_hint(root: Path, path: Path, what: str, year: str, option: str) -> str:
    """One line for a --root layout file that is missing: what was looked for, and which flag fixes it."""
    ann_dir = root / "annotations"
    found = sorted(p.name for p in ann_dir.glob("instances_*.json")) if ann_dir.is_dir() else []
    years = sorted({m.group(1) for n in found if (m := re.fullmatch(r"instances_(?:train|val)(\d{4})\.json", n))})
    msg = f"{path}: {what} not found (looked for it under --root {root} with --year {year})"
    other = [y for y in years if y != year]
    if other:
        msg += f"; {ann_dir} holds {', '.join(found)}: pass --year {other[-1]}"
    elif found:
        msg += f"; {ann_dir} holds {', '.join(found)}: name the file with {option}"
    else:
        msg += f"; pass the right --year, or name the files with {option}"
    return msg


def seeded_split(ids: list[int], val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) ids: `ids` permuted by RandomState(seed), the first int(val_frac * n) go to val; both sorted."""
    order = np.random.RandomState(seed).permutation(len(ids))
    n_val = int(val_frac * len(ids))
    return sorted(ids[k] for k in order[n_val:]), sorted(ids[k] for k in order[:n_val])


def _read_json(path: Path, what: str) -> Any:
    if path.is_dir():
        raise MgkitError(f"{path}: is a folder; the {what} must be a JSON file")
    if not path.is_file():
        raise MgkitError(f"{path}: {what} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise MgkitError(f"{path}: not a readable JSON file ({e})") from None


def _read_instances(path: Path, data: Any) -> _Annotations:
    """Index an instances JSON with pycocotools, keeping its progress prints off stdout."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data.get("categories"):
        raise MgkitError(f"{path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError) as e:
        raise MgkitError(f"{path}: malformed COCO instances file ({type(e).__name__}: {e})") from None
    orphan_ids = [i for i in coco.imgToAnns if i not in coco.imgs]
    orphans = sum(len(coco.imgToAnns[i]) for i in orphan_ids)
    return _Annotations(path, coco, categories, orphans, orphan_ids[0] if orphan_ids else None)


def _read_split(path: Path, train: Any) -> tuple[_Annotations, list[int]]:
    """Annotations and ascending image ids of one split file (see the module docstring for formats).

    `train` is called only when the file selects images of the train JSON rather than being one itself.
    """
    data = _read_json(path, "split file")
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        ann = _read_instances(path, data)
        return ann, sorted(ann.coco.imgs)
    entries = data
    if isinstance(data, dict):
        key = next((k for k in ("images", "ids", "image_ids") if k in data), None)
        if key is None:
            raise MgkitError(f"{path}: split file has none of the keys 'images', 'ids', 'image_ids'")
        entries = data[key]
    if not isinstance(entries, list):
        raise MgkitError(f"{path}: split file must hold a list of image ids or file names")
    ann: _Annotations = train()
    by_name = {Path(info["file_name"]).name: i for i, info in ann.coco.imgs.items()
               if isinstance(info.get("file_name"), str)}
    ids, unknown = [], []
    for e in entries:
        if isinstance(e, dict):
            e = e.get("id", e.get("file_name"))
        if isinstance(e, str) and e.strip().isdigit():
            e = int(e)
        if isinstance(e, int) and not isinstance(e, bool) and e in ann.coco.imgs:
            ids.append(e)
        elif isinstance(e, str) and Path(e).name in by_name:
            ids.append(by_name[Path(e).name])
        else:
            unknown.append(e)
    if unknown:
        raise MgkitError(f"{path}: {len(unknown)} entries are not images of {ann.path} "
                         f"(first: {unknown[0]!r})")
    return ann, sorted(set(ids))


def _record(ann: _Annotations, image_id: int, folder: Path, index: dict[int, int], include_crowd: bool) -> Record:
    """Parse one image's annotations into a light Record."""
    coco = ann.coco
    info = coco.imgs[image_id]
    name = info.get("file_name")
    if not isinstance(name, str) or not name:
        item = CocoItem(image="", width=None, height=None, boxes=np.zeros((0, 5)), num_classes=len(index),
                        problem=f"{ann.path}: image id {image_id} has no 'file_name'")
        return Record(str(image_id), item)
    rows, problem, crowd = [], None, 0
    for a in coco.imgToAnns.get(image_id, []):
        if a.get("iscrowd", 0) and not include_crowd:
            crowd += 1
            continue
        bbox = a.get("bbox")
        if a.get("category_id") not in index:
            problem = f"annotation {a.get('id')} has unknown category_id {a.get('category_id')!r}"
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            problem = f"annotation {a.get('id')} has no valid bbox [x, y, w, h]"
        else:
            x, y, w, h = bbox
            rows.append((index[a["category_id"]], x, y, x + w, y + h))
    item = CocoItem(image=str(folder / name), width=info.get("width"), height=info.get("height"),
                    boxes=np.array(rows, dtype=np.float64).reshape(-1, 5), num_classes=len(index),
                    crowd_excluded=crowd, problem=problem)
    return Record(str(image_id), item)


def load(record: Record, size: int) -> Sample:
    """Decode, resize and annotate one COCO image."""
    item: CocoItem = record.payload
    if item.problem is not None:
        raise BadSample(f"{item.image}: {item.problem}" if item.image else item.problem)
    im = read_rgb(item.image)
    width, height = im.size
    boxes, stats = scale_boxes(item.boxes, width, height, size)
    if item.crowd_excluded:
        stats["crowd_excluded"] = item.crowd_excluded
    if item.width is not None and (item.width, item.height) != (width, height):
        stats["json_size_mismatch"] = 1
    labels = multi_hot(item.boxes[:, 0].astype(np.int64), item.num_classes)
    return Sample(id=record.id, image=resize_rgb(im, size), labels=labels, boxes=boxes, stats=dict(stats))
