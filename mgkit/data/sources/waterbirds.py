"""Waterbirds (Sagawa et al.; Waterbirds-100 of GALS): metadata.csv splits and groups, CUB bird boxes.

`metadata.csv` columns: img_id, img_filename, y (1 = waterbird), split (0/1/2 = train/val/test),
place (1 = water)[, place_filename]. Two binary tasks (one-hot labels over two classes):

* `bird`: landbird vs waterbird; guidance keeps attributions inside the bird box (mask_mode "inside");
* `place`: land vs water background; the box is still the bird's, and guidance keeps attributions
  outside it (mask_mode "outside").

Groups are y * 2 + place: landbird_on_land, landbird_on_water, waterbird_on_land, waterbird_on_water.
Bird boxes come from CUB-200-2011 (`images.txt`: `image_id relative/path.jpg`; `bounding_boxes.txt`:
`image_id x y width height` in original pixels), joined by the image's relative path, which Waterbirds
keeps as img_filename. Waterbirds images keep CUB's size, so a box is scaled with the decoded image's
size. A box's class is the image's label id under the chosen task.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgkit.artifacts import file_sha256
from mgkit.data.format import Sample
from mgkit.data.prepare import Record, SourcePlan, read_rgb, resize_rgb, scale_boxes
from mgkit.data.sources.classes import multi_hot
from mgkit.errors import MgkitError, UsageError
from mgkit.registry import WATERBIRDS_TASKS

TASKS = WATERBIRDS_TASKS
CLASSES = {"bird": ["landbird", "waterbird"], "place": ["land", "water"]}
MASK_MODES = {"bird": "inside", "place": "outside"}
GROUP_NAMES = ["landbird_on_land", "landbird_on_water", "waterbird_on_land", "waterbird_on_water"]
SPLITS = {0: "train", 1: "val", 2: "test"}
REQUIRED_COLUMNS = ("img_filename", "y", "split", "place")


@dataclass(frozen=True)
class WaterbirdsItem:
    """Payload of one Waterbirds record."""

    image: str
    label: int
    group: int
    box: tuple[float, float, float, float] | None  # CUB (x, y, width, height) in original pixels
    box_expected: bool  # CUB files were given: a missing box is counted


def plan(root: Path, cub_root: Path | None = None, task: str = "bird") -> SourcePlan:
    """Describe a Waterbirds folder; with `cub_root`, attach each image's CUB bird box."""
    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    root = Path(root)
    meta = root / "metadata.csv"
    if root.exists() and not root.is_dir():
        raise MgkitError(f"{root}: is a file; --root must be the Waterbirds folder holding metadata.csv")
    if not root.is_dir():
        raise MgkitError(f"{root}: Waterbirds root not found")
    if not meta.is_file():
        raise MgkitError(f"{meta}: not found (--root must be the Waterbirds folder holding metadata.csv)")
    rows = _read_metadata(meta)
    provenance = {"source_root": str(root), "task": task, "metadata_sha256": file_sha256(meta)}
    notes: list[str] = []
    boxes: dict[str, tuple[float, float, float, float]] = {}
    if cub_root is not None:
        images_txt, boxes_txt = _cub_files(Path(cub_root))
        boxes = _read_cub_boxes(images_txt, boxes_txt)
        provenance.update(cub_root=str(cub_root), cub_images_sha256=file_sha256(images_txt),
                          cub_bounding_boxes_sha256=file_sha256(boxes_txt))
    else:
        notes.append("no --cub-root: no bird boxes, so no image is annotated and guidance is not possible")
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS.values()}
    for filename, y, split, place in rows:
        item = WaterbirdsItem(image=str(root / filename), label=place if task == "place" else y,
                              group=2 * y + place, box=boxes.get(filename), box_expected=cub_root is not None)
        splits[SPLITS[split]].append(Record(filename, item))
    missing = sum(1 for filename, *_ in rows if filename not in boxes)
    if cub_root is not None and missing:
        notes.append(f"{missing} of {len(rows)} images have no box in the CUB files (counted as missing_cub_box)")
    return SourcePlan(source="waterbirds", task="binary", classes=list(CLASSES[task]), splits=splits, load=load,
                      provenance=provenance, group_names=list(GROUP_NAMES), mask_mode=MASK_MODES[task],
                      has_boxes=cub_root is not None, notes=notes)


def _read_text(path: Path) -> str:
    """A text file's content, with one-line errors for binary or unreadable files."""
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise MgkitError(f"{path}: not a text file") from None
    except OSError as e:
        raise MgkitError(f"{path}: cannot be read ({(e.strerror or type(e).__name__).lower()})") from None


def _read_metadata(path: Path) -> list[tuple[str, int, int, int]]:
    """(img_filename, y, split, place) per row of metadata.csv, validated."""
    try:
        return _parse_metadata(path, io.StringIO(_read_text(path), newline=""))
    except csv.Error as e:
        raise MgkitError(f"{path}: not a readable CSV file ({e})") from None


def _parse_metadata(path: Path, f: io.StringIO) -> list[tuple[str, int, int, int]]:
    """Rows of an already read metadata.csv (see `_read_metadata`)."""
    reader = csv.DictReader(f)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MgkitError(f"{path}: missing column(s) {', '.join(missing)}")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            y, split, place = int(float(row["y"])), int(float(row["split"])), int(float(row["place"]))
        except (TypeError, ValueError, OverflowError):
            raise MgkitError(f"{path}, line {line}: y, split and place must be integers") from None
        if y not in (0, 1) or place not in (0, 1) or split not in SPLITS:
            raise MgkitError(f"{path}, line {line}: y and place must be 0 or 1, split 0, 1 or 2")
        if not isinstance(row["img_filename"], str) or not row["img_filename"].strip():
            raise MgkitError(f"{path}, line {line}: img_filename is empty")
        rows.append((row["img_filename"].strip(), y, split, place))
    return rows


def _cub_files(cub_root: Path) -> tuple[Path, Path]:
    """CUB's images.txt and bounding_boxes.txt, in cub_root or its CUB_200_2011 subfolder."""
    if not cub_root.is_dir():
        raise MgkitError(f"{cub_root}: CUB root not found")
    base = cub_root
    if not (base / "images.txt").exists() and (base / "CUB_200_2011").is_dir():
        base = base / "CUB_200_2011"
    for name in ("images.txt", "bounding_boxes.txt"):
        if not (base / name).is_file():
            raise MgkitError(f"{base / name}: not found (--cub-root must be the CUB_200_2011 folder)")
    return base / "images.txt", base / "bounding_boxes.txt"


def _read_cub_boxes(images_txt: Path, boxes_txt: Path) -> dict[str, tuple[float, float, float, float]]:
    """Relative image path -> (x, y, width, height), joining the two CUB files by image id."""
    paths: dict[str, str] = {}
    for line, text in enumerate(_read_text(images_txt).splitlines(), start=1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise MgkitError(f"{images_txt}, line {line}: expected 'image_id path'")
        paths[parts[0]] = parts[1]
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for line, text in enumerate(_read_text(boxes_txt).splitlines(), start=1):
        parts = text.split()
        if not parts:
            continue
        try:
            x, y, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise MgkitError(f"{boxes_txt}, line {line}: expected 'image_id x y width height'") from None
        if parts[0] in paths:
            boxes[paths[parts[0]]] = (x, y, w, h)
    return boxes


def load(record: Record, size: int) -> Sample:
    """Decode and resize one Waterbirds image; its bird box, if any, is scaled with the decoded size."""
    item: WaterbirdsItem = record.payload
    im = read_rgb(item.image)
    rows = np.zeros((0, 5))
    if item.box is not None:
        x, y, w, h = item.box
        rows = np.array([[item.label, x, y, x + w, y + h]])
    boxes, stats = scale_boxes(rows, im.size[0], im.size[1], size)
    if item.box_expected and item.box is None:
        stats["missing_cub_box"] = 1
    return Sample(id=record.id, image=resize_rgb(im, size), labels=multi_hot([item.label], 2), boxes=boxes,
                  group=item.group, stats=dict(stats))
