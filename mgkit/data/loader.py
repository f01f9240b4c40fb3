"""Batches from a prepared HDF5 file for torch: images read row by row into one array, boxes padded
for vectorised masks.

Each DataLoader worker opens its own h5py handle (h5py handles must not cross a fork). Images stay
uint8 until they reach the device (`Batch.to`, then `images_to_float` there), which keeps host memory
and transfer small. `default_workers` is the worker count a run uses when `--workers` is not given.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from mgkit.data.format import open_dataset


@dataclass
class Batch:
    """One batch; `boxes` rows are (cls, x0, y0, x1, y1), padding rows have cls = -1."""

    images: torch.Tensor  # uint8 [B, H, W, 3]
    labels: torch.Tensor  # float [B, K]
    boxes: torch.Tensor  # float [B, M, 5]
    annotated: torch.Tensor  # bool [B]
    index: torch.Tensor  # long [B], row in the split
    groups: torch.Tensor | None = None  # long [B]
    segmentation: torch.Tensor | None = None  # uint8 [B, H, W]
    has_segmentation: torch.Tensor | None = None  # bool [B]

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))

    def take(self, rows: slice | torch.Tensor) -> "Batch":
        """The images `rows` selects (a slice or an index tensor) with their labels, boxes and the rest."""
        cut = lambda t: None if t is None else t[rows]  # noqa: E731
        return Batch(*(cut(getattr(self, f)) for f in self.__dataclass_fields__))

    def pin_memory(self) -> "Batch":
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(*(pin(getattr(self, f)) for f in self.__dataclass_fields__))


def images_to_float(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1], done on the device."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def pad_boxes(boxes: np.ndarray, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Gather the boxes of `rows` into a padded [B, M, 5] array (cls = -1 in padding)."""
    starts, ends = index[rows], index[rows + 1]
    counts = ends - starts
    m = max(int(counts.max()) if len(counts) else 0, 1)
    out = np.zeros((len(rows), m, 5), np.float32)
    out[:, :, 0] = -1
    if counts.sum():
        # Vectorised gather: flat positions of every box and the (image, slot) it goes to.
        img = np.repeat(np.arange(len(rows)), counts)
        slot = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        src = np.repeat(starts, counts) + slot
        out[img, slot] = boxes[src]
    return out


class H5Split(Dataset):
    """Map-style data set whose items are whole batches: `ds[list_of_rows] -> Batch`."""

    def __init__(self, path: str | Path, split: str, *, segmentation: bool = False):
        self.path = str(path)
        self.split = split
        with open_dataset(path) as ds:
            g = ds.split(split)
            self.n = g["images"].shape[0]
            # Small per-image metadata is read once; images are read per batch.
            self.box_index = g["box_index"][:]
            self.boxes = g["boxes"][:]
            self.labels = g["labels"][:]
            self.annotated = g["annotated"][:]
            self.groups = g["groups"][:].astype(np.int64) if "groups" in g else None
            self.has_seg = g["has_segmentation"][:] if "segmentation" in g and segmentation else None
        self._h5: h5py.File | None = None
        self._h5_pid = 0  # the process that opened _h5

    def __len__(self) -> int:
        return self.n

    def _file(self) -> h5py.File:
        # A forked worker inherits the parent's handle if the parent read before forking; HDF5 state must
        # not be shared across a fork, so each process opens its own.
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5, self._h5_pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __getstate__(self) -> dict:
        # Worker processes open their own handle.
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __getitem__(self, rows: Sequence[int]) -> Batch:
        rows = np.asarray(rows, dtype=np.int64)
        g = self._file()[self.split]
        seg = has = None
        if self.has_seg is not None:
            seg = torch.from_numpy(read_rows(g["segmentation"], rows))
            has = torch.from_numpy(self.has_seg[rows])
        return Batch(
            images=torch.from_numpy(read_rows(g["images"], rows)),
            labels=torch.from_numpy(self.labels[rows].astype(np.float32)),
            boxes=torch.from_numpy(pad_boxes(self.boxes, self.box_index, rows)),
            annotated=torch.from_numpy(self.annotated[rows]),
            index=torch.from_numpy(rows),
            groups=None if self.groups is None else torch.from_numpy(self.groups[rows]),
            segmentation=seg,
            has_segmentation=has,
        )


def read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """`dataset[rows]` for rows in any order, repeats included: one hyperslab read per row.

    h5py's fancy index `dataset[sorted_unique_rows]` hands HDF5 one selection of all the rows, which it
    reads about 100x slower than the same rows one at a time (findings.md, "h5py fancy indexing"). Rows
    are read in file order (kinder to a cold disk), each straight into its place in the batch; any
    chunking or compression is HDF5's business, so this works for every layout the format allows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n, item = dataset.shape[0], dataset.shape[1:]
    out = np.empty((len(rows), *item), dataset.dtype)
    if not len(rows):
        return out
    if rows.min() < 0 or rows.max() >= n:
        raise IndexError(f"{dataset.name}: rows must lie in [0, {n}), got {rows.min()}..{rows.max()}")
    file_space = dataset.id.get_space()
    one_row = h5py.h5s.create_simple((1, *item))
    count, rest = (1, *item), (0,) * len(item)
    for slot in np.argsort(rows, kind="stable"):
        file_space.select_hyperslab((int(rows[slot]), *rest), count)
        dataset.id.read(one_row, file_space, out[slot:slot + 1])
    return out


def default_workers(device: torch.device) -> int:
    """Loader worker processes when `--workers` is not given: 0 off CUDA, where the model, not the
    loader, sets the pace (reading is in-process at memory speed); on CUDA min(8, the cores this
    process may use, shared among the GPU processes of this node, less one for the process itself), at
    least 1, so that reading, batching and pinning overlap the step."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(1, min(8, per_process - 1))


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader worker_init_fn: workers ignore SIGTERM and SIGINT.

    When a whole process group is stopped (make interrupted, Ctrl-C) the signal reaches the workers too;
    a worker dying of it makes the main process fail with a long "DataLoader worker is killed" traceback
    instead of unwinding cleanly. The main process ends them when it exits (and they exit on their own
    when it is gone).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: H5Split, batch_size: int, *, shuffle: bool, seed: int, workers: int,
                rank: int = 0, world: int = 1, drop_last: bool = False, pin: bool = False) -> DataLoader:
    """A DataLoader yielding `Batch` objects; `loader.sampler.sampler.set_epoch(e)` reshuffles.

    The order depends only on (seed, epoch), so a resumed run sees the same batches as an
    uninterrupted one; with several processes each rank takes its shard of one global permutation.
    """
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=False)
    batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers, pin_memory=pin,
                      persistent_workers=workers > 0, worker_init_fn=ignore_stop_signals if workers > 0 else None)
