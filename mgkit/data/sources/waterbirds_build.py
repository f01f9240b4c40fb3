"""Build Waterbirds (Waterbirds-100, or any train correlation) from CUB-200-2011 and Places.

The paper's Table 1 data set (Waterbirds-100, GALS) was never released; this rebuilds it with the
published recipe of Sagawa et al. (ICLR 2020, repository kohpangwei/group_DRO,
dataset_scripts/generate_waterbirds.py). Written from its description, not from its code.

Facts taken from the recipe:

* label y = 1 (waterbird) when the CUB class name (the part after "NNN." of the image folder, lower-case)
  contains one of: albatross, auklet, cormorant, frigatebird, fulmar, gull, jaeger, kittiwake, pelican,
  puffin, tern (seabirds), gadwall, grebe, mallard, merganser, guillemot, pacific_loon (waterfowl);
  a substring match, so 021.Eastern_Towhee, 088.Western_Meadowlark and 102.Western_Wood_Pewee ("tern")
  are waterbirds too: 46 of the 200 classes, which fits the published waterbird counts (2663 images);
* splits: CUB's test images (train_test_split.txt is_train = 0) are the test split; a random
  round(0.2 × N_train) of CUB's training images become val (`val_frac` 0.2), the rest train;
* place (1 = water): per split and bird type, a random round(f × n) of the images get water, where
  f = correlation for waterbirds and 1 − correlation for landbirds in train, and f = 0.5 in val and test
  (so val and test are balanced over place *within* each bird type, not over the four groups). GALS'
  Waterbirds-100 counts (landbird-land, landbird-water, waterbird-land, waterbird-water) are train
  3694 / 0 / 0 / 1101, val 461 / 460 / 139 / 139, test 2255 / 2255 / 642 / 642: the 100 % correlation
  holds in train only, as here. With CUB's 5994 / 5794 images the split sizes (4795 / 1199 / 5794) and
  the test counts come out identical; train and val per bird type depend on the random val draw;
* backgrounds: land from Places' bamboo_forest and forest/broadleaf, water from ocean and lake/natural
  (folders data_large/<first letter>/<category>/); each class's files are pooled, shuffled and handed out
  without repetition to the images of that place class, in CUB image-id order; too few files is an error;
* pasting: the bird keeps the CUB image's size; the background is centre-cropped to the bird image's
  aspect ratio and resized (Lanczos) to its size; the CUB segmentation (grey 0..255, read as alpha
  m = value / 255, not thresholded) blends them: out = bird · m + background · (1 − m);
* metadata.csv columns img_id, img_filename, y, split (0/1/2 = train/val/test), place, place_filename
  ("/<letter>/<category>/<file>").

Choices where the recipe is silent or that differ on purpose:

* every draw comes from one numpy Generator seeded with --seed (the recipe is unseeded), in the order
  val split, places (train, val, test; landbirds then waterbirds), backgrounds (land then water);
  folder listings are sorted first, so the same inputs and seed give the same data set;
* the background crop and resize is one Lanczos resample of the centred crop box (the recipe upsizes
  small backgrounds first, then crops and resizes again: up to two resamples);
* the blend is rounded once, to the nearest integer (the recipe rounds bird and background parts
  separately and adds them as uint8, which can be off by one or wrap at 255); the composite is not
  JPEG-compressed before the resize to --size (the recipe saves JPEGs); --export writes JPEG quality 95;
* the bird box is the bounding box of the pixels with m > 0 (every pixel the pasted bird touches), as a
  half-open box in CUB pixels, then scaled to --size with the same formula as every source; an image
  whose mask is empty gets no box (counted as `empty_mask`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mgkit.artifacts import atomic_path, file_sha256
from mgkit.data.format import Sample, open_dataset
from mgkit.data.prepare import BadSample, Record, SourcePlan, read_rgb, resize_rgb, scale_boxes
from mgkit.data.sources.classes import multi_hot
from mgkit.data.sources.waterbirds import CLASSES, GROUP_NAMES, MASK_MODES, SPLITS, TASKS
from mgkit.errors import MgkitError, UsageError

WATERBIRD_NAMES = ("albatross", "auklet", "cormorant", "frigatebird", "fulmar", "gull", "jaeger", "kittiwake",
                   "pelican", "puffin", "tern", "gadwall", "grebe", "mallard", "merganser", "guillemot",
                   "pacific_loon")
LAND_CATEGORIES = ("bamboo_forest", "forest/broadleaf")
WATER_CATEGORIES = ("ocean", "lake/natural")
PLACES_LAYOUTS = ("data_large", "data_256")
VAL_FRAC = 0.2
METADATA_COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class BuildItem:
    """Payload of one record: the three input files and what to store."""

    image: str
    segmentation: str
    background: str
    label: int  # under the chosen task
    group: int  # 2 * y + place
    export: str | None  # where to save the full-size composite, if exporting


@dataclass
class Cub:
    """CUB-200-2011's image list: ids, relative paths, train flags (CUB id order)."""

    root: Path
    ids: np.ndarray  # int64 [N]
    paths: list[str]
    is_train: np.ndarray  # bool [N]
    images_txt: Path
    split_txt: Path


def is_waterbird(relative_path: str) -> bool:
    """Whether a CUB image path (e.g. 001.Black_footed_Albatross/x.jpg) shows a waterbird, by the recipe's list."""
    species = relative_path.split("/")[0].split(".", 1)[-1].lower()
    return any(name in species for name in WATERBIRD_NAMES)


# ------------------------------------------------------------------------------------------------ reading


def _cub_base(cub_root: Path) -> Path:
    """The folder holding images.txt: cub_root itself or its CUB_200_2011 subfolder."""
    if not cub_root.is_dir():
        raise MgkitError(f"{cub_root}: CUB root not found")
    if not (cub_root / "images.txt").exists() and (cub_root / "CUB_200_2011").is_dir():
        return cub_root / "CUB_200_2011"
    return cub_root


def _read_pairs(path: Path, what: str) -> dict[int, str]:
    """`id value` lines of a CUB text file, as {id: value}."""
    if not path.is_file():
        raise MgkitError(f"{path}: not found (--cub-root must be the CUB_200_2011 folder)")
    out: dict[int, str] = {}
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise MgkitError(f"{path}, line {line}: expected '{what}'")
        out[int(parts[0])] = parts[1]
    if not out:
        raise MgkitError(f"{path}: no entries")
    return out


def read_cub(cub_root: Path) -> Cub:
    """images.txt joined with train_test_split.txt by image id."""
    base = _cub_base(Path(cub_root))
    images_txt, split_txt = base / "images.txt", base / "train_test_split.txt"
    paths = _read_pairs(images_txt, "image_id relative/path.jpg")
    flags = _read_pairs(split_txt, "image_id is_training_image")
    ids = np.array(sorted(paths), dtype=np.int64)
    missing = [i for i in ids if i not in flags]
    if missing:
        raise MgkitError(f"{split_txt}: no entry for image id {missing[0]} ({len(missing)} ids missing)")
    bad = [i for i in ids if flags[i] not in ("0", "1")]
    if bad:
        raise MgkitError(f"{split_txt}: image id {bad[0]} has is_training_image {flags[bad[0]]!r}, expected 0 or 1")
    return Cub(base, ids, [paths[i] for i in ids], np.array([flags[i] == "1" for i in ids]), images_txt, split_txt)


def _segmentations_root(cub: Cub, given: Path | None) -> Path:
    """CUB's segmentations come as a separate download: given, or beside images/ or beside CUB_200_2011."""
    if given is not None:
        if not Path(given).is_dir():
            raise MgkitError(f"{given}: segmentations folder not found")
        return Path(given)
    for folder in (cub.root / "segmentations", cub.root.parent / "segmentations"):
        if folder.is_dir():
            return folder
    raise MgkitError(f"{cub.root / 'segmentations'}: CUB segmentations folder not found (download "
                     "segmentations.tgz from the CUB-200-2011 page, or pass --segmentations)")


def places_folders(places_root: Path | None, categories: Sequence[str], dirs: Sequence[Path], kind: str
                   ) -> list[tuple[Path, str]]:
    """(folder, place_filename prefix) per background folder of one place class.

    Explicit `dirs` win; otherwise each category (e.g. "forest/broadleaf") is looked up as
    <letter>/<category> under data_large/, else data_256/, else the --places-root itself.
    """
    if dirs:
        out = []
        for d in dirs:
            if not Path(d).is_dir():
                raise MgkitError(f"{d}: {kind} background folder not found")
            out.append((Path(d), str(Path(d).resolve())))
        return out
    if places_root is None:
        raise UsageError(f"--places-root is required unless every background folder is given (--{kind}-dir)")
    root = Path(places_root)
    if not root.is_dir():
        raise MgkitError(f"{root}: Places root not found")
    base = next((root / name for name in PLACES_LAYOUTS if (root / name).is_dir()), root)
    out = []
    for category in categories:
        category = category.strip("/")
        folder = base / category[0] / category
        if not folder.is_dir():
            raise MgkitError(f"{folder}: Places category folder not found ({kind} category '{category}'; "
                             f"--places-root must hold {' or '.join(PLACES_LAYOUTS)}/<letter>/<category>/, "
                             f"or give the folders with --{kind}-dir)")
        out.append((folder, f"/{category[0]}/{category}"))
    return out


def _list_images(folder: Path) -> list[str]:
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise MgkitError(f"{folder}: no images in this background folder")
    return names


# --------------------------------------------------------------------------------------------- assignment


def assign_splits(is_train: np.ndarray, val_frac: float, rng: np.random.Generator) -> np.ndarray:
    """0/1/2 (train/val/test) per image: CUB test is test, a random round(val_frac × N_train) of CUB train is val."""
    split = np.where(is_train, 0, 2).astype(np.int64)
    train = np.flatnonzero(is_train)
    split[rng.choice(train, int(np.round(val_frac * len(train))), replace=False)] = 1
    return split


def assign_places(y: np.ndarray, split: np.ndarray, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """place (1 = water) per image: in train, waterbirds get water with rate `correlation`, landbirds with
    1 − correlation; in val and test half of each bird type gets water. Counts are round(f × n) exactly."""
    place = np.zeros(len(y), dtype=np.int64)
    for s in (0, 1, 2):
        for label in (0, 1):
            members = np.flatnonzero((split == s) & (y == label))
            frac = (correlation if label else 1.0 - correlation) if s == 0 else 0.5
            place[rng.choice(members, int(np.round(frac * len(members))), replace=False)] = 1
    return place


def assign_backgrounds(place: np.ndarray, pools: list[list[tuple[Path, str, str]]], rng: np.random.Generator
                       ) -> list[tuple[Path, str, str]]:
    """One distinct background (folder, prefix, file name) per image, from the pool of its place class."""
    chosen: list[tuple[Path, str, str] | None] = [None] * len(place)
    for cls, pool in enumerate(pools):
        members = np.flatnonzero(place == cls)
        if len(pool) < len(members):
            kind = ("land", "water")[cls]
            folders = ", ".join(sorted({str(f) for f, _, _ in pool}))
            raise MgkitError(f"not enough {kind} backgrounds: {len(pool)} images in {folders} for "
                             f"{len(members)} birds on {kind}")
        order = rng.permutation(len(pool))[:len(members)]
        for i, k in zip(members, order):
            chosen[i] = pool[k]
    return chosen  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ planning


def plan(cub_root: Path, *, places_root: Path | None = None, segmentations: Path | None = None,
         correlation: float = 1.0, val_frac: float = VAL_FRAC, seed: int = 0, task: str = "bird",
         land_categories: Sequence[str] = LAND_CATEGORIES, water_categories: Sequence[str] = WATER_CATEGORIES,
         land_dirs: Sequence[Path] = (), water_dirs: Sequence[Path] = (), export: Path | None = None
         ) -> tuple[SourcePlan, list[tuple]]:
    """Describe the Waterbirds build: splits, places and backgrounds are drawn here, pixels in `load`.

    Returns the plan and the metadata.csv rows (img_id, img_filename, y, split, place, place_filename).
    """
    if task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 0.0 <= correlation <= 1.0:
        raise UsageError(f"--correlation must lie in [0, 1], got {correlation}")
    if not 0.0 <= val_frac < 1.0:
        raise UsageError(f"--val-frac must lie in [0, 1), got {val_frac}")
    cub = read_cub(Path(cub_root))
    images_dir = cub.root / "images"
    if not images_dir.is_dir():
        raise MgkitError(f"{images_dir}: CUB images folder not found")
    seg_root = _segmentations_root(cub, segmentations)
    folders = [places_folders(places_root, land_categories, land_dirs, "land"),
               places_folders(places_root, water_categories, water_dirs, "water")]
    pools = [[(folder, prefix, name) for folder, prefix in group for name in _list_images(folder)] for group in folders]

    rng = np.random.default_rng(seed)
    y = np.array([is_waterbird(p) for p in cub.paths], dtype=np.int64)
    split = assign_splits(cub.is_train, val_frac, rng)
    place = assign_places(y, split, correlation, rng)
    backgrounds = assign_backgrounds(place, pools, rng)

    rows = [(int(i), p, int(yy), int(s), int(pl), f"{prefix}/{name}")
            for i, p, yy, s, pl, (_, prefix, name) in zip(cub.ids, cub.paths, y, split, place, backgrounds)]
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS.values()}
    for (_, path, yy, s, pl, _), (folder, _, name) in zip(rows, backgrounds):
        seg = seg_root / (os.path.splitext(path)[0] + ".png")
        item = BuildItem(image=str(images_dir / path), segmentation=str(seg),
                         background=str(folder / name), label=pl if task == "place" else yy, group=2 * yy + pl,
                         export=str(Path(export) / path) if export is not None else None)
        splits[SPLITS[s]].append(Record(path, item))

    counts = {SPLITS[s]: [int(((split == s) & (2 * y + place == g)).sum()) for g in range(4)] for s in SPLITS}
    notes = [f"{name}: " + " / ".join(f"{GROUP_NAMES[g]} {c[g]}" for g in range(4)) for name, c in counts.items()]
    provenance = {
        "cub_root": str(cub.root), "segmentations": str(seg_root),
        "places_root": str(places_root) if places_root else None,
        "cub_images_sha256": file_sha256(cub.images_txt), "cub_train_test_split_sha256": file_sha256(cub.split_txt),
        "land_folders": [str(f) for f, _ in folders[0]], "water_folders": [str(f) for f, _ in folders[1]],
        "background_pool_sizes": [len(p) for p in pools], "correlation": correlation, "val_frac": val_frac,
        "build_seed": seed, "task": task, "group_counts": counts, "metadata_sha256": metadata_sha256(rows),
        "recipe": "Sagawa et al. 2020, kohpangwei/group_DRO dataset_scripts/generate_waterbirds.py",
    }
    source_plan = SourcePlan(source="waterbirds", task="binary", classes=list(CLASSES[task]), splits=splits,
                             load=load, provenance=provenance, group_names=list(GROUP_NAMES),
                             mask_mode=MASK_MODES[task], has_boxes=True, notes=notes)
    return source_plan, rows


def metadata_text(rows: Sequence[tuple]) -> str:
    """The standard Waterbirds metadata.csv for these rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def metadata_sha256(rows: Sequence[tuple]) -> str:
    """Hash of the whole assignment (splits, places, backgrounds): two builds agree iff this agrees."""
    return hashlib.sha256(metadata_text(rows).encode()).hexdigest()


def write_metadata(export: Path, rows: Sequence[tuple], written: set[str]) -> int:
    """Write export/metadata.csv (atomically, after the images) for the rows whose image was written
    (`written`: the ids stored in the data file; images skipped with --skip-bad are left out)."""
    kept = [r for r in rows if r[1] in written]
    with atomic_path(Path(export) / "metadata.csv") as tmp:
        tmp.write_text(metadata_text(kept))
    return len(kept)


def export_metadata(data_file: Path, export: Path, rows: Sequence[tuple]) -> int:
    """Write export/metadata.csv for the images the prepared `data_file` holds (see `write_metadata`)."""
    with open_dataset(data_file) as f:
        written = {i for s in f.splits for i in f.split(s)["ids"].asstr()[:]}
    return write_metadata(export, rows, written)


# ------------------------------------------------------------------------------------------------- pixels


def _read_mask(path: str, size: tuple[int, int]) -> Image.Image:
    """CUB segmentation as a grey image (0..255, alpha = value / 255); must match the bird image's size."""
    try:
        with Image.open(path) as im:
            im.load()
            grey = im.convert("L")
    except FileNotFoundError:
        raise BadSample(f"{path}: segmentation file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadSample(f"{path}: unreadable segmentation ({e})") from None
    if grey.size != size:
        raise BadSample(f"{path}: segmentation is {grey.size[0]}x{grey.size[1]}, its image {size[0]}x{size[1]}")
    return grey


def fit_background(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre crop of `background` with the aspect ratio of `size` (W, H), resized (Lanczos) to `size`."""
    w, h = background.size
    tw, th = size
    if w * th > h * tw:  # wider than the target: crop left and right
        cw = h * tw / th
        box = ((w - cw) / 2, 0.0, (w + cw) / 2, float(h))
    else:  # taller: crop top and bottom
        ch = w * th / tw
        box = (0.0, (h - ch) / 2, float(w), (h + ch) / 2)
    return background.resize(size, Image.LANCZOS, box=box)


def composite(bird: Image.Image, mask: Image.Image, background: Image.Image) -> Image.Image:
    """round((bird · m + background · (255 − m)) / 255) per channel for the grey mask m: the alpha blend.

    PIL's compositing computes exactly this nearest-integer blend, in C (tested against the formula).
    """
    return Image.composite(bird, background, mask)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open (x0, y0, x1, y1) box of the pixels with mask > 0, or None for an empty mask."""
    bird = mask > 0
    cols = np.flatnonzero(bird.any(axis=0))
    rows = np.flatnonzero(bird.any(axis=1))
    if not len(cols):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _save_export(path: str, image: Image.Image) -> None:
    """Write one composite JPEG via a temporary file, so an interrupted export leaves no truncated image."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=95)


def load(record: Record, size: int) -> Sample:
    """Paste one CUB bird onto its background; store the resized composite and the box of the pasted mask."""
    item: BuildItem = record.payload
    bird = read_rgb(item.image)
    mask = _read_mask(item.segmentation, bird.size)
    background = fit_background(read_rgb(item.background), bird.size)
    image = composite(bird, mask, background)
    if item.export is not None:
        _save_export(item.export, image)
    stats: dict[str, int] = {}
    box = mask_box(np.asarray(mask))
    rows = np.zeros((0, 5))
    if box is None:
        stats["empty_mask"] = 1
    else:
        rows = np.array([[item.label, *box]], dtype=np.float64)
    boxes, box_stats = scale_boxes(rows, bird.size[0], bird.size[1], size)
    stats.update(box_stats)
    return Sample(id=record.id, image=resize_rgb(image, size), labels=multi_hot([item.label], 2),
                  boxes=boxes, group=item.group, stats=stats)
