"""The HDF5 batch reader: row-by-row reads give the batches the fancy-index reader gave (images, labels,
boxes, segmentation, groups, order) for a fixed seed and epoch, on every rank, with workers too; the
default worker count."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mgkit.data.loader import H5Split, default_workers, make_loader, read_rows
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic

N_TRAIN = 37  # odd: a short last batch, and padding (a repeated row) when sharded over 2 ranks


@pytest.fixture(scope="module", params=["multilabel", "birds"])
def data(request, tmp_path_factory):
    """Multi-label (several boxes per image) and birds (groups, half the images annotated), 24 px."""
    path = tmp_path_factory.mktemp("loader") / f"{request.param}.h5"
    plan = synthetic.plan(task=request.param, num_classes=3 if request.param == "multilabel" else 2,
                          spurious=None, n_train=N_TRAIN, n_val=9, n_test=4, seed=0)
    run_prepare(plan, path, size=24, bbox_frac=0.5, seed=0, quiet=True)
    return path


def reference_order(n: int, batch: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """DistributedSampler's documented order written out: one permutation from seed + epoch, padded by
    wrapping to a multiple of the world size, rank r takes every world-th row from r."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    total = -(-n // world) * world
    perm = (perm * 2)[:total]
    mine = perm[rank:total:world]
    return [mine[i:i + batch] for i in range(0, len(mine), batch)]


def reference_batch(path, split: str, rows: list[int], segmentation: bool) -> dict[str, np.ndarray]:
    """What the fancy-index reader returned: sorted unique rows read with `d[rows]`, re-expanded; boxes
    gathered by a plain loop."""
    rows_a = np.asarray(rows)
    uniq, inv = np.unique(rows_a, return_inverse=True)
    with h5py.File(path, "r") as f:
        g = f[split]
        index, boxes = g["box_index"][:], g["boxes"][:]
        per_image = [boxes[index[r]:index[r + 1]] for r in rows]
        m = max(max(len(b) for b in per_image), 1)
        padded = np.zeros((len(rows), m, 5), np.float32)
        padded[:, :, 0] = -1
        for i, b in enumerate(per_image):
            padded[i, :len(b)] = b
        out = {"images": g["images"][list(uniq)][inv], "labels": g["labels"][:][rows_a].astype(np.float32),
               "boxes": padded, "annotated": g["annotated"][:][rows_a], "index": rows_a}
        if "groups" in g:
            out["groups"] = g["groups"][:][rows_a].astype(np.int64)
        if segmentation:
            out["segmentation"] = g["segmentation"][list(uniq)][inv]
            out["has_segmentation"] = g["has_segmentation"][:][rows_a]
    return out


def assert_same(batch, expected: dict[str, np.ndarray]) -> None:
    for name, want in expected.items():
        got = getattr(batch, name)
        assert got is not None, name
        assert got.numpy().dtype == want.dtype and np.array_equal(got.numpy(), want), name
    for name in ("groups", "segmentation", "has_segmentation"):
        if name not in expected:
            assert getattr(batch, name) is None, name


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_shuffled_batches_equal_the_fancy_index_reader(data, rank, world):
    seed, batch = 7, 8
    loader = make_loader(H5Split(data, "train"), batch, shuffle=True, seed=seed, workers=0, rank=rank, world=world)
    for epoch in (0, 3):
        loader.sampler.sampler.set_epoch(epoch)
        got = list(loader)
        want = reference_order(N_TRAIN, batch, seed, epoch, rank, world)
        assert [b.index.tolist() for b in got] == want
        for b, rows in zip(got, want):
            assert_same(b, reference_batch(data, "train", rows, segmentation=False))
    if world == 2:  # N_TRAIN is odd: rank 1's share ends with the padding, a row rank 0 also reads
        assert len(sum(want, [])) == (N_TRAIN + 1) // 2


def test_validation_batches_with_segmentation_equal_the_fancy_index_reader(data):
    loader = make_loader(H5Split(data, "val", segmentation=True), 4, shuffle=False, seed=0, workers=0)
    got = list(loader)
    assert [b.index.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    for b in got:
        assert_same(b, reference_batch(data, "val", b.index.tolist(), segmentation=True))


def test_a_worker_process_reads_the_same_batches(data):
    def batches(workers):
        loader = make_loader(H5Split(data, "val", segmentation=True), 4, shuffle=True, seed=1, workers=workers)
        loader.sampler.sampler.set_epoch(2)
        return list(loader)

    for a, b in zip(batches(0), batches(1), strict=True):
        for name in a.__dataclass_fields__:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), name


def test_each_process_opens_its_own_handle(data, monkeypatch):
    ds = H5Split(data, "train")
    ds[[0]]
    first = ds._file()
    assert ds._file() is first
    monkeypatch.setattr("os.getpid", lambda: -1)  # as in a worker forked after the parent read
    assert ds._file() is not first and first.id.valid
    assert torch.equal(ds[[3, 1]].images, H5Split(data, "train")[[3, 1]].images)


def test_read_rows_any_order_repeats_and_layout(tmp_path):
    """Unsorted rows with repeats, on the format's layout and on chunked, compressed ones."""
    values = np.random.default_rng(0).integers(0, 256, (11, 5, 4, 3), dtype=np.uint8)
    rows = np.array([9, 2, 2, 10, 0, 7])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        for name, kw in {"per_row": dict(chunks=(1, 5, 4, 3)), "contiguous": {},
                         "chunked_gzip": dict(chunks=(4, 5, 2, 3), compression="gzip")}.items():
            d = f.create_dataset(name, data=values, **kw)
            assert np.array_equal(read_rows(d, rows), values[rows]), name
            assert read_rows(d, rows[:0]).shape == (0, 5, 4, 3)
        seg = f.create_dataset("seg", data=values[..., 0], chunks=(1, 5, 4))
        assert np.array_equal(read_rows(seg, rows), values[rows, ..., 0])
        with pytest.raises(IndexError, match="rows must lie in"):
            read_rows(seg, np.array([3, 11]))


def test_default_workers_zero_off_cuda_and_bounded_on_it(monkeypatch):
    assert default_workers(torch.device("cpu")) == 0
    assert default_workers(torch.device("mps")) == 0
    cuda = torch.device("cuda", 0)
    for cores, local_world, want in [(64, "1", 8), (16, "1", 8), (16, "4", 3), (4, "1", 3), (2, "2", 1), (1, "1", 1)]:
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, c=cores: set(range(c)), raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
        assert default_workers(cuda) == want, (cores, local_world)
