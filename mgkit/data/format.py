"""The mgkit HDF5 data set: one file per prepared data set (format version 1).

Layout (see README "Data format"):

    /                 attrs: format, format_version, source, task, classes (JSON), image_size [H, W],
                             bbox_frac, seed, mask_mode, options (JSON), provenance (JSON), mgkit_version
    /<split>/images        uint8 [N, H, W, 3], one image per chunk
    /<split>/labels        uint8 [N, K] multi-hot (one-hot for binary tasks)
    /<split>/boxes         float32 [M, 5] rows (class, x0, y0, x1, y1), half-open on the H x W grid
    /<split>/box_index     int64 [N + 1]: boxes of image i are rows box_index[i]:box_index[i+1]
    /<split>/annotated     bool [N]: whether image i's boxes may be used for guidance
    /<split>/ids           variable-length str [N]
    /<split>/segmentation  uint8 [N, H, W] class-index map (0 background, 255 void), optional,
    /<split>/has_segmentation  bool [N], present with segmentation
    /<split>/groups        int8 [N], attr group_names (JSON), optional
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mgkit import __version__
from mgkit.artifacts import atomic_path
from mgkit.errors import FormatError

FORMAT = "mgkit-dataset"
FORMAT_VERSION = 1
TASKS = ("multilabel", "binary")
MASK_MODES = ("inside", "outside")
REQUIRED = ("images", "labels", "boxes", "box_index", "annotated", "ids")
_FLUSH = 64  # images buffered before a write; bounds memory independently of N


@dataclass
class Sample:
    """One prepared image with everything stored about it."""

    id: str
    image: np.ndarray  # uint8 [H, W, 3]
    labels: np.ndarray  # uint8 [K]
    boxes: np.ndarray  # float32 [m, 5]
    segmentation: np.ndarray | None = None  # uint8 [H, W]
    group: int | None = None
    stats: dict[str, int] = field(default_factory=dict)  # e.g. boxes dropped or clipped


def select_annotated(n: int, frac: float, seed: int, count: int | None = None) -> np.ndarray:
    """The `--bbox-frac` subsample: exactly int(frac * n) images (at least 1 when frac > 0), or exactly
    min(count, n) images with `--bbox-count` (an absolute budget: the paper's 1 % of VOC is about 25
    images, which 1 % of a small demo set is not).

    Uses numpy's legacy RandomState so that, for the same image order and seed, the subset equals
    the reference's `np.random.seed(seed); np.random.choice(n, int(frac * n), replace=False)`.
    """
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"bbox_frac must lie in [0, 1], got {frac}")
    if count is not None and count < 0:
        raise ValueError(f"bbox_count must be non-negative, got {count}")
    k = int(frac * n)
    if frac > 0 and n > 0:
        k = max(k, 1)
    if count is not None:
        k = min(count, n)
    mask = np.zeros(n, dtype=bool)
    if k:
        mask[np.random.RandomState(seed).choice(n, k, replace=False)] = True
    return mask


class SplitWriter:
    """Appends samples of one split in order, flushing every few images."""

    def __init__(self, group: h5py.Group, capacity: int, size: tuple[int, int], num_classes: int,
                 segmentation: bool, group_names: list[str] | None):
        h, w = size
        cap = max(capacity, 1)
        self._g = group
        self._k = num_classes
        self.n = 0
        self.n_boxes = 0
        self._buf: list[Sample] = []
        group.create_dataset("images", (cap, h, w, 3), np.uint8, maxshape=(None, h, w, 3), chunks=(1, h, w, 3))
        group.create_dataset("labels", (cap, num_classes), np.uint8, maxshape=(None, num_classes))
        group.create_dataset("boxes", (0, 5), np.float32, maxshape=(None, 5), chunks=(4096, 5))
        group.create_dataset("box_index", (cap + 1,), np.int64, maxshape=(None,))
        group.create_dataset("ids", (cap,), h5py.string_dtype(), maxshape=(None,))
        self._seg = segmentation
        if segmentation:
            group.create_dataset("segmentation", (cap, h, w), np.uint8, maxshape=(None, h, w), chunks=(1, h, w))
            group.create_dataset("has_segmentation", (cap,), bool, maxshape=(None,))
        self._groups = group_names is not None
        if group_names is not None:
            group.create_dataset("groups", (cap,), np.int8, maxshape=(None,))
            group.attrs["group_names"] = json.dumps(list(group_names))
        group["box_index"][0] = 0

    def append(self, sample: Sample) -> None:
        self._buf.append(sample)
        if len(self._buf) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        g, a, b = self._g, self.n, self.n + len(self._buf)
        if b > g["images"].shape[0]:
            for name in ("images", "labels", "ids", "segmentation", "has_segmentation", "groups"):
                if name in g:
                    g[name].resize(b, axis=0)
            g["box_index"].resize(b + 1, axis=0)
        g["images"][a:b] = np.stack([s.image for s in self._buf])
        g["labels"][a:b] = np.stack([s.labels for s in self._buf]).astype(np.uint8)
        g["ids"][a:b] = [s.id for s in self._buf]
        counts = np.array([len(s.boxes) for s in self._buf], dtype=np.int64)
        g["box_index"][a + 1:b + 1] = self.n_boxes + np.cumsum(counts)
        if counts.sum():
            new = np.concatenate([s.boxes.reshape(-1, 5) for s in self._buf]).astype(np.float32)
            g["boxes"].resize(self.n_boxes + len(new), axis=0)
            g["boxes"][self.n_boxes:] = new
            self.n_boxes += len(new)
        if self._seg:
            has = np.array([s.segmentation is not None for s in self._buf])
            seg = np.stack([s.segmentation if s.segmentation is not None
                            else np.zeros(s.image.shape[:2], np.uint8) for s in self._buf])
            g["segmentation"][a:b] = seg
            g["has_segmentation"][a:b] = has
        if self._groups:
            g["groups"][a:b] = [-1 if s.group is None else s.group for s in self._buf]
        self.n = b
        self._buf.clear()

    def finish(self, annotated: np.ndarray) -> None:
        """Flush, shrink to the images actually written and store the `annotated` flags."""
        self.flush()
        g = self._g
        for name in ("images", "labels", "ids", "segmentation", "has_segmentation", "groups"):
            if name in g:
                g[name].resize(self.n, axis=0)
        g["box_index"].resize(self.n + 1, axis=0)
        if annotated.shape != (self.n,):
            raise ValueError(f"annotated has shape {annotated.shape}, expected ({self.n},)")
        g.create_dataset("annotated", data=annotated.astype(bool))
        g.attrs["num_images"] = self.n


class DatasetWriter:
    """Writes a data set to a temporary file that is renamed to `path` only when complete."""

    def __init__(self, path: str | Path, *, source: str, task: str, classes: list[str],
                 image_size: tuple[int, int], bbox_frac: float, seed: int, options: dict[str, Any],
                 provenance: dict[str, Any], mask_mode: str = "inside", force: bool = False):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}")
        self.path = Path(path)
        self.classes = list(classes)
        self.size = tuple(image_size)
        self._attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": source,
            "task": task,
            "classes": json.dumps(self.classes),
            "image_size": np.array(self.size, dtype=np.int64),
            "bbox_frac": float(bbox_frac),
            "seed": int(seed),
            "mask_mode": mask_mode,
            "options": json.dumps(options, sort_keys=True, default=str),
            "provenance": json.dumps(provenance, sort_keys=True, default=str),
            "mgkit_version": __version__,
        }
        self._force = force
        self._ctx = None
        self._file: h5py.File | None = None

    def __enter__(self) -> "DatasetWriter":
        self._ctx = atomic_path(self.path, force=self._force)
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w", track_order=True)  # splits keep the source's order
        self._file.attrs.update(self._attrs)
        return self

    def add_split(self, name: str, capacity: int, *, segmentation: bool = False,
                  group_names: list[str] | None = None) -> SplitWriter:
        assert self._file is not None
        return SplitWriter(self._file.create_group(name), capacity, self.size, len(self.classes),
                           segmentation, group_names)

    def set_attr(self, key: str, value: Any) -> None:
        assert self._file is not None
        self._file.attrs[key] = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._file is not None and self._ctx is not None
        self._file.close()
        return bool(self._ctx.__exit__(exc_type, exc, tb))


# --------------------------------------------------------------------------------------------- reading


@dataclass
class SplitInfo:
    name: str
    num_images: int
    num_boxes: int
    has_segmentation: bool
    group_names: list[str] | None


class DatasetFile:
    """Read access to a prepared data set, validated on open. Use as a context manager or close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._checked: set[str] = set()
        self.h5 = _open_h5(self.path)
        try:
            problem = _first_problem(self.h5)
        except Exception as e:  # a damaged file can fail anywhere inside h5py
            problem = f"damaged file ({type(e).__name__}: {_first_line(e)})"
        if problem:
            self.h5.close()
            raise FormatError(f"{self.path}: {problem}")
        a = self.h5.attrs
        try:
            self.source: str = str(a["source"])
            self.task: str = str(a["task"])
            self.classes: list[str] = json.loads(a["classes"])
            self.image_size: tuple[int, int] = tuple(int(v) for v in a["image_size"])
            self.bbox_frac: float = float(a["bbox_frac"])
            self.seed: int = int(a["seed"])
            self.mask_mode: str = str(a.get("mask_mode", "inside"))
            self.options: dict[str, Any] = json.loads(a["options"])
            self.provenance: dict[str, Any] = json.loads(a["provenance"])
            self.splits: list[str] = [k for k in self.h5.keys() if isinstance(self.h5[k], h5py.Group)]
        except Exception as e:  # attributes of the wrong type or not JSON
            self.h5.close()
            raise FormatError(f"{self.path}: unreadable root attributes ({type(e).__name__}: {_first_line(e)})") from None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> h5py.Group:
        """The group of split `name`, its values checked on first access (see `split_problem`)."""
        if name not in self.splits:
            raise FormatError(f"{self.path}: no split '{name}' (has {', '.join(self.splits)})")
        g = self.h5[name]
        if name not in self._checked:
            try:
                problem = split_problem(g, name, self.num_classes, self.image_size)
            except Exception as e:  # a damaged file can fail anywhere inside h5py
                problem = f"split '{name}' cannot be read ({type(e).__name__}: {_first_line(e)})"
            if problem:
                raise FormatError(f"{self.path}: {problem}")
            self._checked.add(name)
        return g

    def split_info(self, name: str) -> SplitInfo:
        g = self.split(name)
        names = json.loads(g.attrs["group_names"]) if "groups" in g else None
        return SplitInfo(name, g["images"].shape[0], g["boxes"].shape[0], "segmentation" in g, names)

    def boxes_of(self, split: str, i: int) -> np.ndarray:
        g = self.split(split)
        a, b = g["box_index"][i], g["box_index"][i + 1]
        return g["boxes"][a:b]

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> "DatasetFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _open_h5(path: Path) -> h5py.File:
    """Open `path` read-only, with one-line errors for the usual wrong paths."""
    if not path.exists():
        raise FormatError(f"{path}: no such data file (make one with `mgkit prepare`)")
    if path.is_dir():
        raise FormatError(f"{path}: is a directory, not a data file (give the .h5 file made by `mgkit prepare`)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({(e.strerror or type(e).__name__).lower()})") from None
    if head != b"\x89HDF\r\n\x1a\n":
        raise FormatError(f"{path}: not a readable HDF5 file (not an mgkit data file; make one with `mgkit prepare`)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise FormatError(f"{path}: not a readable HDF5 file (damaged or truncated: {_first_line(e)})") from None


def split_problem(g: h5py.Group, split: str, num_classes: int, image_size: tuple[int, int]) -> str | None:
    """The first wrong value in a split's small arrays, or None; what `inspect` and every reader check.

    Reads labels, box_index, boxes and groups (small next to the images, which are not read): labels
    are 0/1, box_index runs non-decreasing from 0 to the number of boxes, box class ids are integers
    in 0..K-1 among their image's labels, boxes are non-empty and inside the H x W grid.
    """
    h, w = image_size
    labels = g["labels"][:]
    if labels.size and labels.max() > 1:
        return f"'{split}/labels' holds values other than 0 and 1"
    index = g["box_index"][:]
    boxes = g["boxes"][:]
    if len(index) and index[0] != 0:
        return f"'{split}/box_index' starts at {index[0]}, expected 0"
    step = np.diff(index)
    if np.any(step < 0):
        i = int(np.flatnonzero(step < 0)[0])
        return f"'{split}/box_index' decreases at image {i} ({index[i]} -> {index[i + 1]}); it must be non-decreasing"
    if len(index) and index[-1] != len(boxes):
        return f"'{split}/box_index' ends at {index[-1]}, but '{split}/boxes' has {len(boxes)} rows"
    if len(boxes):
        if not np.all(np.isfinite(boxes)):
            return f"'{split}/boxes' holds NaN or infinite values"
        cls = boxes[:, 0]
        if np.any(cls < 0) or np.any(cls >= num_classes) or np.any(cls != np.round(cls)):
            return f"'{split}/boxes' has class ids outside 0..{num_classes - 1}"
        x0, y0, x1, y1 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
        if np.any(x0 < 0) or np.any(y0 < 0) or np.any(x1 > w) or np.any(y1 > h):
            return f"'{split}/boxes' has coordinates outside the {w}x{h} grid"
        if np.any(x0 >= x1) or np.any(y0 >= y1):
            return f"'{split}/boxes' has empty boxes (x0 >= x1 or y0 >= y1)"
        owner = np.repeat(np.arange(len(index) - 1), step)
        if np.any(labels[owner, cls.astype(np.int64)] == 0):
            return f"'{split}/boxes' has a box whose class is not among its image's labels"
    if "groups" in g:
        names = g.attrs.get("group_names")
        try:
            count = len(json.loads(names))
        except (TypeError, ValueError):
            return f"'{split}' attribute group_names is not a JSON list"
        groups = g["groups"][:]
        if len(groups) and (groups.min() < -1 or groups.max() >= count):
            return f"'{split}/groups' has values outside -1..{count - 1}"
    return None


def _first_problem(h5: h5py.File) -> str | None:
    """The first thing wrong with a file's layout, or None. Cheap: shapes and a few values only."""
    a = h5.attrs
    if a.get("format") != FORMAT:
        return f"not an mgkit data set (attribute 'format' is {a.get('format')!r}, expected {FORMAT!r})"
    version = a.get("format_version")
    if version != FORMAT_VERSION:
        return (f"format version {version} is not supported by mgkit {__version__} (expects {FORMAT_VERSION}); "
                "prepare the data set again")
    for key in ("source", "task", "classes", "image_size", "bbox_frac", "seed", "options", "provenance"):
        if key not in a:
            return f"missing root attribute '{key}'"
    if a["task"] not in TASKS:
        return f"unknown task {a['task']!r}"
    try:
        classes = json.loads(a["classes"])
    except (TypeError, ValueError):
        return "attribute 'classes' is not a JSON list"
    k = len(classes)
    h, w = (int(v) for v in a["image_size"])
    splits = [name for name in h5.keys() if isinstance(h5[name], h5py.Group)]
    if not splits:
        return "no splits"
    for s in splits:
        g = h5[s]
        for name in REQUIRED:
            if name not in g:
                return f"split '{s}' is missing dataset '{name}'"
        n = g["images"].shape[0]
        expect = {"images": (n, h, w, 3), "labels": (n, k), "box_index": (n + 1,), "annotated": (n,), "ids": (n,)}
        for name, shape in expect.items():
            if g[name].shape != shape:
                return f"'{s}/{name}' has shape {g[name].shape}, expected {shape}"
        if g["boxes"].ndim != 2 or g["boxes"].shape[1] != 5:
            return f"'{s}/boxes' has shape {g['boxes'].shape}, expected (M, 5)"
        idx = g["box_index"]
        if n and (idx[0] != 0 or idx[-1] != g["boxes"].shape[0]):
            return f"'{s}/box_index' does not span '{s}/boxes'"
        if "segmentation" in g and g["segmentation"].shape != (n, h, w):
            return f"'{s}/segmentation' has shape {g['segmentation'].shape}, expected {(n, h, w)}"
        if "groups" in g and (g["groups"].shape != (n,) or "group_names" not in g["groups"].parent.attrs):
            return f"'{s}/groups' must have shape ({n},) and attribute group_names"
    return None


def open_dataset(path: str | Path) -> DatasetFile:
    """Open and validate a prepared data set; raises FormatError naming the first problem."""
    return DatasetFile(path)
