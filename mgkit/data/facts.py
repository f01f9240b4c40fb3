"""The facts of a prepared data file that the stages need (classes, size, identity, splits, groups),
read once when a stage starts: training, `mgkit evaluate`/`shift` and `mgkit explain` use this one reader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgkit.data.format import open_dataset
from mgkit.errors import MgkitError

__all__ = ["DataFacts", "data_fingerprint", "read_facts"]


def data_fingerprint(ds) -> str:
    """A cheap identity of a prepared data file: its root attributes and dataset shapes.

    The attributes include the creation time and every preparation option, so two different
    preparations never share a fingerprint, while hashing gigabytes of pixels is avoided.
    """
    h = hashlib.sha256()
    for key in sorted(ds.h5.attrs.keys()):
        h.update(f"{key}={ds.h5.attrs[key]!r};".encode())
    for split in ds.splits:
        for name, item in sorted(ds.h5[split].items()):
            h.update(f"{split}/{name}{item.shape};".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class DataFacts:
    """What the stages know about a data file without reading its images."""

    path: str
    classes: list[str]
    image_size: tuple[int, int]
    fingerprint: str
    splits: list[str]
    outside: bool  # mask mode "outside": the evidence lies outside the boxes (Waterbirds 'place')
    group_names: dict[str, list[str] | None]
    num_images: dict[str, int]
    source: str
    task: str
    bbox_frac: float
    annotated: dict[str, int]  # images with boxes usable for guidance, per split

    def require(self, split: str, flag: str = "--split") -> None:
        """Refuse (one line naming `flag`) a split the file lacks or that is empty."""
        if split not in self.splits:
            raise MgkitError(f"{self.path} has no split {split!r} ({flag}); it has {', '.join(self.splits)}")
        if self.num_images[split] == 0:
            raise MgkitError(f"{self.path}: the {split} split is empty ({flag})")

    def checkpoint_entry(self) -> dict[str, Any]:
        """What a checkpoint records about its training data."""
        return {"path": self.path, "fingerprint": self.fingerprint, "image_size": list(self.image_size),
                "dataset": self.source, "task": self.task, "bbox_frac": self.bbox_frac}


def read_facts(path: str | Path) -> DataFacts:
    """Open and validate the data file once and read its facts (FormatError for a foreign or damaged file)."""
    with open_dataset(path) as ds:
        infos = {s: ds.split_info(s) for s in ds.splits}
        return DataFacts(
            path=str(path), classes=list(ds.classes), image_size=tuple(ds.image_size), fingerprint=data_fingerprint(ds),
            splits=list(ds.splits), outside=ds.mask_mode == "outside",
            group_names={s: i.group_names for s, i in infos.items()},
            num_images={s: i.num_images for s, i in infos.items()}, source=ds.source, task=ds.task,
            bbox_frac=float(ds.bbox_frac), annotated={s: int(ds.split(s)["annotated"][:].sum()) for s in ds.splits})
