"""PASCAL VOC (VOCdevkit layout): splits from ImageSets/Main, labels and boxes from the XML annotations.

Protocol (the reference's, via torchvision's VOCDetection): `train` trains, `val` selects models, `test`
reports; trainval is not used. Every object labels its image, difficult ones included (the reference
keeps them; `--exclude-difficult` drops them from labels and boxes alike).

Boxes: VOC stores 1-based pixel indices (xmin = 1 is the first column). Like the reference we take the
numbers as given and scale them, `int(min(max(v * size / width, 0), size - 1))`, with width and height
from the XML's <size>; we do not subtract 1 first, so boxes sit at most one original pixel to the right
and below. Coordinates are read as floats (a few VOC2012 files hold "273.5"); the reference's `int(...)`
would reject those.

Segmentation: `SegmentationClass/<id>.png` (palette PNG whose indices are the class map: 0 background,
1..20 the classes, 255 void) is stored, nearest-neighbour resized, wherever the file exists.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mgkit.artifacts import file_sha256
from mgkit.data.format import Sample
from mgkit.data.prepare import BadSample, Record, SourcePlan, read_rgb, resize_labels, resize_rgb, scale_boxes
from mgkit.data.sources.classes import VOC_CLASSES, multi_hot
from mgkit.errors import MgkitError

CLASSES = VOC_CLASSES
SPLITS = ("train", "val", "test")
_INDEX = {name: i for i, name in enumerate(CLASSES)}


@dataclass(frozen=True)
class VocItem:
    """Payload of one VOC record: file paths only; the XML is parsed in `load`."""

    xml: str
    image: str
    segmentation: str | None
    exclude_difficult: bool


def plan(root: Path, year: str = "2007", exclude_difficult: bool = False) -> SourcePlan:
    """Describe VOC{year} under the VOCdevkit folder `root` (split lists are read, XMLs are not)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MgkitError(f"{root}: is a file; --root must be the VOCdevkit folder holding VOC{year}/")
    if not root.is_dir():
        raise MgkitError(f"{root}: VOC root not found (pass the VOCdevkit folder holding VOC{year}/)")
    base = root / f"VOC{year}"
    if not base.is_dir():
        if (root / "Annotations").is_dir() and (root / "ImageSets").is_dir():
            raise MgkitError(f"{root} looks like the VOC{year} folder itself; --root must be the VOCdevkit folder "
                             f"that holds it (--root {root.resolve().parent})")
        others = sorted(p.name for p in root.glob("VOC[0-9][0-9][0-9][0-9]") if p.is_dir())
        hint = f"; {root} holds {', '.join(others)}: pass --year {others[-1][3:]}" if others else ""
        raise MgkitError(f"{base}: not found; --root must be the VOCdevkit folder that holds VOC{year}/{hint}")
    ann_dir, img_dir, seg_dir = base / "Annotations", base / "JPEGImages", base / "SegmentationClass"
    for d in (ann_dir, img_dir):
        if not d.is_dir():
            raise MgkitError(f"{d}: folder not found")
    lists = base / "ImageSets" / "Main"
    notes: list[str] = []
    split_files: dict[str, Path] = {}
    for split in SPLITS:
        path = lists / f"{split}.txt"
        if path.is_file():
            split_files[split] = path
        elif split == "test":
            notes.append(f"{path} not found: VOC{year} is prepared with train and val only (no test split)")
        else:
            raise MgkitError(f"{path}: split list not found")
    seg_names = {e.name for e in os.scandir(seg_dir) if e.name.endswith(".png")} if seg_dir.is_dir() else set()
    if not seg_names:
        notes.append(f"no segmentation masks ({seg_dir} missing or empty)")

    def record(image_id: str) -> Record:
        seg = str(seg_dir / f"{image_id}.png") if f"{image_id}.png" in seg_names else None
        return Record(image_id, VocItem(str(ann_dir / f"{image_id}.xml"), str(img_dir / f"{image_id}.jpg"),
                                        seg, exclude_difficult))

    splits = {split: [record(i) for i in _read_ids(path)] for split, path in split_files.items()}
    warnings = [f"{split_files[split]} lists no images: the {split} split will be empty"
                for split, records in splits.items() if not records]
    provenance = {
        "source_root": str(root),
        "year": year,
        "exclude_difficult": exclude_difficult,
        # Hashing thousands of XMLs is slow: the split lists are hashed, the XMLs counted.
        "split_files_sha256": {s: file_sha256(p) for s, p in split_files.items()},
        "num_annotation_files": sum(1 for e in os.scandir(ann_dir) if e.name.endswith(".xml")),
        "num_segmentation_files": len(seg_names),
    }
    return SourcePlan(source="voc", task="multilabel", classes=list(CLASSES), splits=splits, load=load,
                      provenance=provenance, segmentation_splits=set(splits) if seg_names else set(),
                      notes=notes, warnings=warnings)


def _read_ids(path: Path) -> list[str]:
    """Image ids of an ImageSets/Main list: first word of each non-empty line."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise MgkitError(f"{path}: not a text file of image ids") from None
    except OSError as e:
        raise MgkitError(f"{path}: cannot be read ({(e.strerror or type(e).__name__).lower()})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_annotation(xml_path: str, exclude_difficult: bool = False) -> tuple[int, int, list[tuple], int]:
    """(width, height, objects, excluded) of one VOC XML; objects are (class_id, xmin, ymin, xmax, ymax).

    Optional fields (owner, pose, truncated, difficult, ...) may be absent. Raises BadSample naming the
    file for unreadable XML, a missing <size> or <bndbox>, or an unknown class name.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise BadSample(f"{xml_path}: annotation file not found") from None
    except ET.ParseError as e:
        raise BadSample(f"{xml_path}: not valid XML ({e})") from None
    size = root.find("size")
    try:
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    except (AttributeError, TypeError, ValueError):
        raise BadSample(f"{xml_path}: no valid <size> with <width> and <height>") from None
    if width <= 0 or height <= 0:
        raise BadSample(f"{xml_path}: <size> is {width}x{height}")
    objects, excluded = [], 0
    for n, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in _INDEX:
            raise BadSample(f"{xml_path}: object {n} has unknown class name {name!r}")
        if exclude_difficult and (obj.findtext("difficult") or "0").strip() not in ("0", ""):
            excluded += 1
            continue
        box = obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise BadSample(f"{xml_path}: object {n} ({name}) has no valid <bndbox>") from None
        objects.append((_INDEX[name], *coords))
    return width, height, objects, excluded


def load(record: Record, size: int) -> Sample:
    """Decode, resize and annotate one VOC image."""
    item: VocItem = record.payload
    width, height, objects, excluded = parse_annotation(item.xml, item.exclude_difficult)
    im = read_rgb(item.image)
    boxes, stats = scale_boxes(np.array(objects, dtype=np.float64), width, height, size)
    if item.exclude_difficult:
        stats["difficult_excluded"] = excluded
    if im.size != (width, height):
        stats["xml_size_mismatch"] = 1  # boxes still follow the XML size, as in the reference
    seg = _read_segmentation(item.segmentation, size) if item.segmentation else None
    labels = multi_hot([o[0] for o in objects], len(CLASSES))
    return Sample(id=record.id, image=resize_rgb(im, size), labels=labels, boxes=boxes, segmentation=seg,
                  stats=dict(stats))


def _read_segmentation(path: str, size: int) -> np.ndarray:
    """Class-index map of a palette (or grayscale) PNG, nearest-neighbour resized."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise BadSample(f"{path}: segmentation PNG has mode {im.mode}, expected a palette (P) image")
            return resize_labels(im, size)
    except (OSError, SyntaxError, ValueError) as e:
        raise BadSample(f"{path}: unreadable segmentation PNG ({e})") from None
