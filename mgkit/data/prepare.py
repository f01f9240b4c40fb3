"""The common `mgkit prepare` engine: a source describes its images, this module streams them to HDF5.

A source module builds a `SourcePlan`: the class list and, per split, light `Record`s (ids and paths)
plus a top-level `load(record, size) -> Sample` function that decodes and resizes one image. Records are
decoded in parallel (`--workers`) in order and written in small batches, so peak memory does not grow
with the number of images.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing as mp
import signal
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image, ImageFile

from mgkit.artifacts import provenance as base_provenance
from mgkit.data.format import DatasetWriter, Sample, select_annotated
from mgkit.errors import MgkitError, UsageError
from mgkit.progress import Reporter

# Guidance subsample applies to this split only; val/test keep every box for evaluation.
GUIDANCE_SPLIT = "train"
# Splits `mgkit train` and `mgkit guide` read: an empty or missing one is worth a warning.
TRAINING_SPLITS = ("train", "val")
# Largest --size: 64 buffered images of 2048 x 2048 x 3 bytes are 800 MB; far larger sizes exhaust memory.
MAX_SIZE = 2048


class BadSample(MgkitError):
    """One image or annotation that cannot be used; skipped and counted with --skip-bad."""


@dataclass
class Record:
    """What a source knows about one image before decoding it (must be picklable)."""

    id: str
    payload: Any


@dataclass
class SourcePlan:
    """Everything `run_prepare` needs from a source."""

    source: str
    task: str  # "multilabel" or "binary"
    classes: list[str]
    splits: dict[str, list[Record]]
    load: Callable[[Record, int], Sample]  # top-level function, so worker processes can use it
    provenance: dict[str, Any] = field(default_factory=dict)
    segmentation_splits: set[str] = field(default_factory=set)
    group_names: list[str] | None = None
    mask_mode: str = "inside"
    has_boxes: bool = True  # False: no image may be marked annotated (e.g. Waterbirds without CUB)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # legal but surprising input (printed, in the summary)
    source_stats: dict[str, int] = field(default_factory=dict)  # e.g. annotations dropped while reading
    workers_ok: bool = True  # False when load() relies on in-process state
    native_size: int | None = None  # sources whose images are already resized (reference .pt files)


def read_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully to RGB; grayscale, palette and CMYK are converted.

    Raises BadSample naming the file when it is missing, unreadable or truncated.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()  # forces the full decode so truncation is detected here
            return im.convert("RGB")
    except FileNotFoundError:
        raise BadSample(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadSample(f"{path}: unreadable or truncated image ({e})") from None


def resize_rgb(im: Image.Image, size: int) -> np.ndarray:
    """Square resize ignoring the aspect ratio (as the reference's Resize((size, size)))."""
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def resize_labels(im: Image.Image, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a class-index map (segmentation)."""
    return np.asarray(im.resize((size, size), Image.NEAREST), dtype=np.uint8)


def scale_boxes(boxes: np.ndarray, width: float, height: float, size: int) -> tuple[np.ndarray, Counter]:
    """Scale (cls, x0, y0, x1, y1) boxes from a width x height image to the size x size grid.

    Coordinates map as the reference does: int(min(max(v * scale, 0), size - 1)). Boxes that
    reach outside the image are clipped (counted as `boxes_clipped`); boxes left with x0 >= x1 or
    y0 >= y1 are dropped (counted as `boxes_dropped`).
    """
    stats: Counter = Counter()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if not len(boxes):
        return np.zeros((0, 5), np.float32), stats
    outside = ((boxes[:, 1] < 0) | (boxes[:, 2] < 0) | (boxes[:, 3] > width) | (boxes[:, 4] > height))
    stats["boxes_clipped"] = int(outside.sum())
    scale = np.array([size / width, size / height, size / width, size / height])
    # Truncation towards zero after clamping, exactly as int(...) in the reference.
    coords = np.floor(np.clip(boxes[:, 1:] * scale, 0, size - 1))
    keep = (coords[:, 0] < coords[:, 2]) & (coords[:, 1] < coords[:, 3])
    stats["boxes_dropped"] = int((~keep).sum())
    out = np.concatenate([boxes[keep, :1], coords[keep]], axis=1).astype(np.float32)
    return out, stats


def _worker_signals() -> None:
    """Workers take the default SIGTERM (so the pool can stop them) and leave Ctrl-C to the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopRequests:
    """While active, SIGINT and SIGTERM are only recorded; `check()` in the main loop turns a recorded
    signal into KeyboardInterrupt. Raising from the handler itself could land inside a weakref callback
    (the pool's bookkeeping), where Python reports and swallows the exception and the run went on."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _safe_load(load: Callable[[Record, int], Sample], size: int, record: Record) -> Sample | BadSample:
    try:
        return load(record, size)
    except BadSample as e:
        return e


def estimated_bytes(plan: SourcePlan, size: int) -> int:
    """Bytes the images (and segmentation maps) of `plan` take in the file: stored uncompressed."""
    total = 0
    for split, records in plan.splits.items():
        per_image = size * size * (3 + (split in plan.segmentation_splits))
        total += len(records) * per_image
    return total


def _check_space(plan: SourcePlan, out: Path, size: int) -> None:
    """Refuse up front when the output folder cannot hold the file (instead of failing hours later)."""
    import shutil

    need = estimated_bytes(plan, size)
    folder = next((p for p in (out.parent, *out.parent.parents) if p.is_dir()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise MgkitError(f"{out}: the images need about {need / 2**30:.1f} GiB, but {folder} has "
                         f"{free / 2**30:.1f} GiB free (choose another --out, a smaller --size or fewer images)")


def empty_split_warning(split: str, records: int, skipped: int) -> str:
    """The warning for a split that ends up with no images."""
    why = f"all {skipped} images were skipped" if records else "the source lists no images for it"
    need = (f"; `mgkit train` and `mgkit guide` need images in {' and '.join(TRAINING_SPLITS)}"
            if split in TRAINING_SPLITS else "")
    return f"split '{split}' is empty ({why}){need}"


def _write_split(writer: DatasetWriter, plan: SourcePlan, split: str, results: Any, rep: Reporter,
                 stop: _StopRequests, *, skip_bad: bool, bbox_frac: float, seed: int,
                 bbox_count: int | None) -> tuple[dict[str, Any], int]:
    """Write one split from its loaded `results`; its summary entry and the number of images written."""
    records = plan.splits[split]
    sw = writer.add_split(split, len(records), segmentation=split in plan.segmentation_splits,
                          group_names=plan.group_names)
    stats: Counter = Counter()
    skipped: list[str] = []
    for res in rep.track(results, len(records), f"{plan.source} {split}"):
        stop.check()
        if isinstance(res, BadSample):
            if not skip_bad:
                raise res
            skipped.append(str(res))
            continue
        stats.update(res.stats)
        sw.append(res)
    sw.flush()
    if not plan.has_boxes:
        annotated = np.zeros(sw.n, dtype=bool)
    elif split == GUIDANCE_SPLIT:
        annotated = select_annotated(sw.n, bbox_frac, seed, bbox_count)
    else:
        annotated = np.ones(sw.n, dtype=bool)
    sw.finish(annotated)
    entry = {"images": sw.n, "boxes": sw.n_boxes, "annotated": int(annotated.sum()), "skipped": len(skipped),
             **dict(stats)}
    if skipped:
        entry["skipped_files"] = skipped[:20]
    return entry, len(skipped)


def run_prepare(plan: SourcePlan, out: str | Path, *, size: int, bbox_frac: float, seed: int,
                workers: int = 0, force: bool = False, skip_bad: bool = False,
                options: dict[str, Any] | None = None, quiet: bool = False,
                bbox_count: int | None = None) -> dict[str, Any]:
    """Write `plan` to `out` atomically and return a summary (counts per split, skipped files).

    `bbox_count` annotates exactly that many training images instead of int(bbox_frac * n); bbox_frac is
    then recorded as the condition the budget stands for (e.g. 0.01 for "1 % of VOC ~ 25 images")."""
    if not 0.0 <= bbox_frac <= 1.0:
        raise MgkitError(f"--bbox-frac must lie in [0, 1], got {bbox_frac}")
    n_guide = len(plan.splits.get(GUIDANCE_SPLIT, []))
    if bbox_count is not None and not 0 <= bbox_count <= n_guide:
        raise UsageError(f"--bbox-count {bbox_count} must lie in [0, {n_guide}] (the {GUIDANCE_SPLIT} split's images)")
    out = Path(out)
    if out.exists() and not force:
        raise MgkitError(f"{out} already exists; pass --force to overwrite it")
    _check_space(plan, out, size)
    summary: dict[str, Any] = {"out": str(out), "source": plan.source, "splits": {}, "notes": list(plan.notes),
                               "warnings": list(plan.warnings), "source_stats": dict(plan.source_stats)}
    prov = base_provenance(**plan.provenance)
    writer = DatasetWriter(out, source=plan.source, task=plan.task, classes=plan.classes,
                           image_size=(size, size), bbox_frac=bbox_frac, seed=seed, options=options or {},
                           provenance=prov, mask_mode=plan.mask_mode, force=force)
    load = functools.partial(_safe_load, plan.load, size)
    pool = (mp.get_context("fork").Pool(workers, initializer=_worker_signals)
            if workers > 1 and plan.workers_ok else None)
    stop = _StopRequests()
    try:
        with stop, writer, Reporter(quiet=quiet) as rep:
            for split, records in plan.splits.items():
                results = _loaded(pool, workers, load, records) if pool else map(load, records)
                entry, skipped = _write_split(writer, plan, split, results, rep, stop, skip_bad=skip_bad,
                                              bbox_frac=bbox_frac, seed=seed, bbox_count=bbox_count)
                summary["splits"][split] = entry
                if entry["images"] == 0:
                    summary["warnings"].append(empty_split_warning(split, len(records), skipped))
            for split in TRAINING_SPLITS:
                if split not in plan.splits:
                    summary["warnings"].append(f"no '{split}' split: `mgkit train` and `mgkit guide` need "
                                               f"{' and '.join(TRAINING_SPLITS)}")
            writer.set_attr("summary", summary["splits"])
            stop.check()  # the last chance before the file is renamed into place
        if stop.signum is not None:  # arrived while the file was renamed into place: an interrupted run
            out.unlink(missing_ok=True)
            raise KeyboardInterrupt
    finally:
        if pool is not None:
            _shut_down(pool)
    return summary


CHUNK = 8  # records per task: one pickled message per 8 images


def _load_chunk(load: Callable[[Record], Any], records: list[Record]) -> list[Any]:
    return [load(r) for r in records]


def _loaded(pool: Any, workers: int, load: Callable[[Record], Any], records: list[Record]) -> Iterator[Any]:
    """`load` of each record, in order, by the pool's workers, with at most 4 chunks per worker in flight:
    enough to keep them busy, few enough that an interrupted run stops in moments (`_shut_down`) and that
    results never pile up in memory ahead of the writer."""
    chunks = (records[i:i + CHUNK] for i in range(0, len(records), CHUNK))
    pending: deque = deque(pool.apply_async(_load_chunk, (load, c)) for c in itertools.islice(chunks, 4 * workers))
    while pending:
        done = pending.popleft().get()
        nxt = next(chunks, None)
        if nxt is not None:
            pending.append(pool.apply_async(_load_chunk, (load, nxt)))
        yield from done


def _shut_down(pool: Any, timeout: float = 60.0) -> None:
    """Stop the worker pool, on success and on errors or interrupts alike, without killing a worker.

    close() lets the workers finish the few chunks in flight (`_loaded`) and exit on their own. Pool.terminate()
    kills them at once, and a worker killed while it writes a result leaves the result queue's write lock
    held for good; the pool's task handler, which puts its own sentinel on that queue, then blocks on the
    lock and terminate() waits for it forever. That fits the hang seen in an interrupted run of the test
    suite (py-spy: the task handler blocked on a queue lock after the workers were gone), though it was
    not reproduced on demand. Only workers still busy after TIMEOUT seconds (a load that hangs) are
    terminated, in a thread of their own so that even then the caller returns.
    """
    pool.close()
    if _within(pool.join, timeout):
        return
    _within(pool.terminate, 10.0)


def _within(fn: Callable[[], None], timeout: float) -> bool:
    """Run FN in a daemon thread; whether it returned within TIMEOUT seconds."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()
