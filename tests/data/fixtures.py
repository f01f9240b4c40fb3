"""Builders of small on-disk data sets in the real formats (VOC, COCO, Waterbirds + CUB, reference .pt),
plus independent expectations (box formula, PIL resize) for the source tests.

Each builder writes under a folder and returns the specification it wrote, so a test can recompute
every stored field without going through mgkit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mgkit.cli import app

# ------------------------------------------------------------------------------------------------- helpers


def run_cli(*args: Any) -> Any:
    """Invoke `mgkit` in-process; returns typer's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def prepare_json(*args: Any) -> dict[str, Any]:
    """`mgkit prepare ... --json -q`; asserts success and returns the parsed summary."""
    res = run_cli("prepare", *args, "--json", "-q")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    return json.loads(res.stdout)


def expected_boxes(objects: list[tuple[int, float, float, float, float]], width: float, height: float,
                   size: int) -> np.ndarray:
    """The reference's formula, written out: int(min(max(v * scale, 0), size - 1)); empty boxes dropped."""
    out = []
    for cls, *xy in objects:
        sx, sy = size / width, size / height
        x0, y0, x1, y1 = (int(min(max(v * s, 0), size - 1)) for v, s in zip(xy, (sx, sy, sx, sy)))
        if x0 < x1 and y0 < y1:
            out.append([cls, x0, y0, x1, y1])
    return np.array(out, dtype=np.float32).reshape(-1, 5)


def stored_ids(f: Any, split: str) -> list[str]:
    """The `ids` of a split of an open data set, as str."""
    return list(f.split(split)["ids"].asstr()[:])


def pil_resized(path: Path, size: int) -> np.ndarray:
    """What an image should look like after preparation: PIL RGB conversion and bilinear square resize."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


def write_jpeg(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    """A smooth random JPEG (gradients plus noise) of the given size and mode."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1),
                     np.full_like(xx, rng.integers(0, 256), dtype=float)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, quality=90)
    return path


def truncate(path: Path) -> None:
    """Cut a file to half its bytes (a truncated JPEG)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------------------------------- VOC

# id: (width, height, objects as (name, (xmin, ymin, xmax, ymax), difficult, truncated))
VOC_IMAGES: dict[str, tuple[int, int, list[tuple[str, tuple[float, ...], int, int]]]] = {
    "000001": (40, 30, [("dog", (5, 4, 30, 25), 0, 0), ("person", (1, 1, 40, 30), 0, 1)]),
    "000002": (50, 60, [("cat", (10, 10, 45, 55), 1, 0), ("dog", (3, 5, 20, 30), 0, 0)]),
    "000003": (64, 48, [("car", (-5, 2, 70, 40), 0, 0)]),  # reaches outside: clipped
    "000004": (33, 45, [("bird", (10, 5, 10, 30), 0, 0), ("bottle", (2, 3, 30, 44), 0, 1)]),  # x0 == x1
    "000005": (48, 48, [("sofa", (4, 6, 40, 44), 0, 0)]),  # written without optional fields
    "000006": (70, 35, [("horse", (1, 1, 69, 34), 1, 0)]),  # only a difficult object
    "000007": (41, 29, [("train", (3.5, 2, 38, 27), 0, 0)]),
    "000008": (30, 40, [("bus", (2, 2, 28, 38), 0, 0), ("person", (5, 5, 9, 9), 0, 0)]),
    "000009": (36, 36, [("tvmonitor", (6, 6, 30, 30), 0, 0)]),
    "000010": (52, 39, [("chair", (1, 1, 20, 20), 1, 1), ("diningtable", (10, 10, 50, 38), 0, 0)]),
}
VOC_SPLITS = {"train": ["000001", "000002", "000003", "000004", "000005", "000006"],
              "val": ["000007", "000008"], "test": ["000009", "000010"]}
VOC_MINIMAL = {"000005"}
VOC_SEGMENTED = {"000001", "000007"}


def voc_xml(image_id: str, width: int | None, height: int | None, objects: list, minimal: bool = False) -> str:
    """A VOC annotation XML; `minimal` leaves out every optional field, width None leaves out <size>."""
    parts = ["<annotation>"]
    if not minimal:
        parts += ["<folder>VOC2007</folder>", f"<filename>{image_id}.jpg</filename>",
                  "<source><database>The VOC2007 Database</database></source>",
                  "<owner><flickrid>someone</flickrid></owner>"]
    if width is not None:
        parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    if not minimal:
        parts.append("<segmented>0</segmented>")
    for name, box, difficult, truncated in objects:
        parts.append(f"<object><name>{name}</name>")
        if not minimal:
            parts.append(f"<pose>Unspecified</pose><truncated>{truncated}</truncated>"
                         f"<difficult>{difficult}</difficult>")
        if box is not None:
            parts.append("<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
                         + "</bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc(base: Path, year: str = "2007", splits: dict[str, list[str]] | None = None) -> Path:
    """Write a VOCdevkit tree (JPEGs, XMLs, split lists, two palette segmentation PNGs); returns its root."""
    splits = VOC_SPLITS if splits is None else splits
    root = base / "VOCdevkit"
    voc = root / f"VOC{year}"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main", "SegmentationClass"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    for n, (image_id, (w, h, objects)) in enumerate(VOC_IMAGES.items()):
        write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", w, h, seed=n)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(image_id, w, h, objects, minimal=image_id in VOC_MINIMAL))
        if image_id in VOC_SEGMENTED:
            voc_segmentation(w, h, n).save(voc / "SegmentationClass" / f"{image_id}.png")
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def voc_segmentation(width: int, height: int, seed: int) -> Image.Image:
    """A palette PNG class map: background 0, a block of class 1..20, a void (255) border."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((height, width), np.uint8)
    seg[height // 4: 3 * height // 4, width // 5: 4 * width // 5] = rng.integers(1, 21)
    seg[height // 3: height // 2, width // 3: width // 2] = rng.integers(1, 21)
    seg[0, :] = 255
    seg[:, -1] = 255
    im = Image.fromarray(seg).convert("P")  # keeps the indices; the palette below gives them colours
    im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
    return im


# ---------------------------------------------------------------------------------------------------- COCO

COCO_CATEGORIES = [(18, "dog"), (1, "person"), (3, "car")]  # written out of id order on purpose
# image id: (file name, width, height, mode)
COCO_TRAIN_IMAGES = {
    9: ("COCO_train2014_000000000009.jpg", 40, 30, "RGB"),
    25: ("COCO_train2014_000000000025.jpg", 50, 60, "L"),  # grayscale
    30: ("COCO_train2014_000000000030.jpg", 45, 35, "CMYK"),
    34: ("COCO_train2014_000000000034.jpg", 60, 40, "RGB"),  # no annotations
    36: ("COCO_train2014_000000000036.jpg", 32, 48, "RGB"),  # a crowd annotation
    42: ("COCO_train2014_000000000042.jpg", 64, 64, "RGB"),
    49: ("COCO_train2014_000000000049.jpg", 38, 50, "RGB"),
    61: ("COCO_train2014_000000000061.jpg", 44, 33, "RGB"),
    64: ("COCO_train2014_000000000064.jpg", 30, 30, "RGB"),
    71: ("COCO_train2014_000000000071.jpg", 55, 41, "RGB"),
}
# (annotation id, image id, category id, [x, y, w, h], iscrowd)
COCO_TRAIN_ANNS = [
    (1, 9, 1, [2.5, 3.0, 20.0, 15.0], 0),
    (2, 9, 18, [10.0, 5.0, 25.0, 20.0], 0),
    (3, 25, 3, [0.0, 0.0, 50.0, 60.0], 0),
    (4, 30, 1, [30.0, 20.0, 30.0, 30.0], 0),  # reaches outside: clipped
    (5, 36, 1, [1.0, 1.0, 30.0, 40.0], 1),  # crowd
    (6, 36, 18, [4.0, 4.0, 10.0, 10.0], 0),
    (7, 42, 3, [10.0, 10.0, 0.0, 20.0], 0),  # zero width: dropped, still labels
    (8, 49, 18, [5.0, 6.0, 20.0, 30.0], 0),
    (9, 61, 1, [0.0, 0.0, 10.0, 10.0], 0),
    (10, 64, 3, [3.0, 3.0, 20.0, 20.0], 0),
    (11, 71, 18, [8.0, 8.0, 30.0, 20.0], 0),
    (12, 71, 1, [1.0, 2.0, 5.0, 6.0], 0),
]
COCO_TEST_IMAGES = {
    101: ("COCO_val2014_000000000101.jpg", 40, 40, "RGB"),
    102: ("COCO_val2014_000000000102.jpg", 36, 52, "RGB"),
    103: ("COCO_val2014_000000000103.jpg", 50, 30, "L"),
}
COCO_TEST_ANNS = [
    (101, 101, 18, [1.0, 1.0, 30.0, 30.0], 0),
    (102, 102, 1, [3.0, 4.0, 20.0, 30.0], 0),
    (103, 102, 3, [10.0, 10.0, 20.0, 15.0], 1),
]


def coco_instances(images: dict, anns: list, categories: list = COCO_CATEGORIES) -> dict[str, Any]:
    """An instances JSON dict that pycocotools loads."""
    return {
        "info": {"description": "mgkit test"},
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, (f, w, h, _) in images.items()],
        "annotations": [{"id": a, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": z,
                         "segmentation": ({"counts": [0, 1], "size": [1, 1]} if z else [[0, 0, 1, 0, 1, 1]])}
                        for a, i, c, b, z in anns],
        "categories": [{"id": c, "name": n, "supercategory": "thing"} for c, n in categories],
    }


def make_coco(base: Path, year: str = "2014") -> Path:
    """Write a COCO root: annotations/instances_{train,val}{year}.json and the two image folders."""
    root = base / "coco"
    (root / "annotations").mkdir(parents=True)
    for folder, images, anns in ((f"train{year}", COCO_TRAIN_IMAGES, COCO_TRAIN_ANNS),
                                 (f"val{year}", COCO_TEST_IMAGES, COCO_TEST_ANNS)):
        for image_id, (name, w, h, mode) in images.items():
            write_jpeg(root / folder / name, w, h, seed=image_id, mode=mode)
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(coco_instances(images, anns)))
    return root


def coco_expected(image_id: int, size: int, include_crowd: bool = True, test: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, boxes) an image of the fixture should get; classes ordered by category id."""
    index = {cid: k for k, (cid, _) in enumerate(sorted(COCO_CATEGORIES))}
    images, anns = (COCO_TEST_IMAGES, COCO_TEST_ANNS) if test else (COCO_TRAIN_IMAGES, COCO_TRAIN_ANNS)
    _, w, h, _ = images[image_id]
    labels = np.zeros(len(index), np.uint8)
    objects = []
    for _, i, c, (x, y, bw, bh), crowd in anns:
        if i != image_id or (crowd and not include_crowd):
            continue
        labels[index[c]] = 1
        objects.append((index[c], x, y, x + bw, y + bh))
    return labels, expected_boxes(objects, w, h, size)


# ---------------------------------------------------------------------------------------------- Waterbirds

# (img_filename, y, split, place, width, height, CUB box (x, y, w, h) or None when absent from CUB)
WATERBIRDS_ROWS = [
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1, 0, 1, 50, 40, (5.0, 4.0, 30.0, 25.5)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1, 0, 1, 44, 52, (0.0, 10.0, 50.0, 30.0)),
    ("014.Indigo_Bunting/Indigo_Bunting_0001_12469.jpg", 0, 0, 0, 60, 45, (12.0, 8.0, 20.0, 22.0)),
    ("014.Indigo_Bunting/Indigo_Bunting_0002_11111.jpg", 0, 0, 0, 40, 40, None),  # missing from CUB
    ("014.Indigo_Bunting/Indigo_Bunting_0003_22222.jpg", 0, 0, 0, 36, 48, (3.0, 3.0, 25.0, 30.0)),
    ("014.Indigo_Bunting/Indigo_Bunting_0004_33333.jpg", 0, 1, 1, 48, 36, (10.0, 10.0, 15.0, 15.0)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0010_55.jpg", 1, 1, 0, 52, 44, (2.0, 2.0, 40.0, 30.0)),
    ("014.Indigo_Bunting/Indigo_Bunting_0005_44444.jpg", 0, 2, 1, 40, 30, (4.0, 4.0, 20.0, 20.0)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0011_66.jpg", 1, 2, 0, 30, 40, (1.0, 1.0, 25.0, 35.0)),
]


def make_waterbirds(base: Path) -> tuple[Path, Path]:
    """Write a Waterbirds folder (metadata.csv + images) and a CUB_200_2011 folder; returns both roots."""
    root, cub = base / "waterbirds", base / "CUB_200_2011"
    root.mkdir(parents=True)
    cub.mkdir(parents=True)
    meta = ["img_id,img_filename,y,split,place,place_filename"]
    images, boxes = [], []
    for n, (name, y, split, place, w, h, box) in enumerate(WATERBIRDS_ROWS, start=1):
        write_jpeg(root / name, w, h, seed=n)
        meta.append(f"{n},{name},{y},{split},{place},/b/bamboo_forest/00000{n}.jpg")
        cub_id = 100 + n  # CUB's ids differ from Waterbirds' img_id: the join is by path
        if box is not None:
            images.append(f"{cub_id} {name}")
            boxes.append(f"{cub_id} " + " ".join(str(v) for v in box))
    images.append("999 200.Common_Yellowthroat/Common_Yellowthroat_0001_1.jpg")  # a CUB image not in Waterbirds
    boxes.append("999 1.0 1.0 5.0 5.0")
    (root / "metadata.csv").write_text("\n".join(meta) + "\n")
    (cub / "images.txt").write_text("\n".join(images) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes[::-1]) + "\n")  # order must not matter
    return root, cub


# ---------------------------------------------------------------------------------------------- reference


def make_reference(base: Path, num_classes: int = 20, size: int = 32, counts: dict[str, int] | None = None,
                   seed: int = 0, legacy: bool = False) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Write the reference's {train,val,test}.pt files; returns the folder and the dicts saved."""
    import torch

    counts = counts or {"train": 4, "val": 2, "test": 3}
    root = base / "processed"
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    saved = {}
    for split, n in counts.items():
        data = torch.rand(n, 3, size, size, generator=g)
        data[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 1.5 / 255])  # exact ends and rounding ties
        labels = (torch.rand(n, num_classes, generator=g) < 0.2).float()
        labels[:, 0] = 1.0
        bbs: list[Any] = [[[0, 2, 3, 20, 25], [0, 5, 5, size - 1, size - 1]] for _ in range(n)]
        bbs[0].append([0, 10, 4, 10, 9])  # x0 == x1: dropped
        if n > 1:
            bbs[1] = None
        if n > 2:
            bbs[2] = []
        obj = {"data": data, "labels": labels, "bbs": bbs, "mask": None}
        torch.save(obj, root / f"{split}.pt", _use_new_zipfile_serialization=not legacy)
        saved[split] = obj
    return root, saved
