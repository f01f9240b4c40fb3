"""The HDF5 layout: writer/reader round trip, the --bbox-frac subsample, validation errors."""

import json

import h5py
import numpy as np
import pytest

from mgkit.data.format import DatasetWriter, Sample, open_dataset, select_annotated
from mgkit.errors import FormatError, MgkitError


def _sample(i: int, k: int = 3, size: int = 8, seg: bool = False) -> Sample:
    rng = np.random.default_rng(i)
    nb = i % 3
    boxes = np.array([[j % k, 0, 1, 4, 5] for j in range(nb)], np.float32).reshape(-1, 5)
    labels = np.zeros(k, np.uint8)
    labels[boxes[:, 0].astype(int)] = 1
    return Sample(id=f"img{i}", image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), labels=labels,
                  boxes=boxes, segmentation=np.full((size, size), i, np.uint8) if seg and i % 2 else None,
                  group=i % 4)


def _write(path, n=150, **kw):
    w = DatasetWriter(path, source="test", task="multilabel", classes=["a", "b", "c"], image_size=(8, 8),
                      bbox_frac=0.5, seed=0, options={"x": 1}, provenance={"p": 2}, **kw)
    with w:
        sw = w.add_split("train", n, segmentation=True, group_names=["g0", "g1", "g2", "g3"])
        for i in range(n):
            sw.append(_sample(i, seg=True))
        sw.flush()
        sw.finish(select_annotated(sw.n, 0.5, 0))
    return w


def test_round_trip_every_field(tmp_path):
    path = tmp_path / "d.h5"
    _write(path)  # 150 images: more than one flush of 64
    with open_dataset(path) as ds:
        assert ds.classes == ["a", "b", "c"] and ds.image_size == (8, 8) and ds.splits == ["train"]
        assert ds.options == {"x": 1} and ds.provenance == {"p": 2}
        g = ds.split("train")
        for i in (0, 1, 63, 64, 65, 149):
            s = _sample(i, seg=True)
            np.testing.assert_array_equal(g["images"][i], s.image)
            np.testing.assert_array_equal(g["labels"][i], s.labels)
            np.testing.assert_array_equal(ds.boxes_of("train", i), s.boxes)
            assert g["ids"][i].decode() == s.id
            assert g["groups"][i] == i % 4
            assert bool(g["has_segmentation"][i]) == bool(i % 2)
            if i % 2:
                assert (g["segmentation"][i] == i).all()
        assert g["annotated"][:].sum() == 75
        assert json.loads(g.attrs["group_names"]) == ["g0", "g1", "g2", "g3"]
        assert g["images"].chunks == (1, 8, 8, 3)


@pytest.mark.parametrize("n,frac,k", [(2501, 0.01, 25), (10, 0.0, 0), (10, 0.01, 1), (10, 1.0, 10), (7, 0.5, 3)])
def test_select_annotated_count(n, frac, k):
    assert select_annotated(n, frac, 3).sum() == k


def test_select_annotated_absolute_count():
    assert select_annotated(100, 0.01, 3, count=25).sum() == 25 and select_annotated(10, 0.5, 3, count=25).sum() == 10
    assert select_annotated(100, 1.0, 3, count=0).sum() == 0


def test_select_annotated_matches_legacy_numpy_and_seed():
    np.random.seed(5)
    ref = np.random.choice(100, 10, replace=False)
    assert set(np.flatnonzero(select_annotated(100, 0.1, 5))) == set(ref)
    assert not np.array_equal(select_annotated(100, 0.1, 5), select_annotated(100, 0.1, 6))


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "d.h5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, source="t", task="multilabel", classes=["a"], image_size=(8, 8), bbox_frac=1,
                           seed=0, options={}, provenance={}) as w:
            w.add_split("train", 3).append(_sample(0, k=1))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_without_force(tmp_path):
    path = tmp_path / "d.h5"
    path.write_bytes(b"mine")
    with pytest.raises(MgkitError, match="--force"):
        _write(path)
    assert path.read_bytes() == b"mine"
    _write(path, force=True)
    open_dataset(path).close()


def _corrupt(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize("damage,message", [
    (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99"),
    (lambda f: f.attrs.__setitem__("format", "other"), "not an mgkit data set"),
    (lambda f: f["train"].__delitem__("labels"), "missing dataset 'labels'"),
    (lambda f: f["train"].__delitem__("annotated"), "missing dataset 'annotated'"),
    (lambda f: f.attrs.__delitem__("classes"), "missing root attribute 'classes'"),
])
def test_reader_names_the_problem(tmp_path, damage, message):
    path = tmp_path / "d.h5"
    _write(path, n=5)
    _corrupt(path, damage)
    with pytest.raises(FormatError, match=message):
        open_dataset(path)


def test_reader_missing_and_non_hdf5(tmp_path):
    with pytest.raises(FormatError, match="no such data file"):
        open_dataset(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        open_dataset(bad)


def _set(name, fn):
    def damage(f):
        a = f[name][:]
        fn(a)
        f[name][:] = a
    return damage


@pytest.mark.parametrize("damage,message", [
    (_set("train/box_index", lambda a: a.__setitem__(5, 0)), "'train/box_index' decreases at image 4"),
    (_set("train/box_index", lambda a: a.__setitem__(0, 1)), "'train/box_index' does not span 'train/boxes'"),
    (_set("train/labels", lambda a: a.__setitem__((0, 0), 2)), "'train/labels' holds values other than 0 and 1"),
    (_set("train/boxes", lambda a: a.__setitem__((0, 0), 3)), "'train/boxes' has class ids outside 0..2"),
    (_set("train/boxes", lambda a: a.__setitem__((0, 0), 0.5)), "'train/boxes' has class ids outside 0..2"),
    (_set("train/boxes", lambda a: a.__setitem__((0, 3), 9)), "'train/boxes' has coordinates outside the 8x8 grid"),
    (_set("train/boxes", lambda a: a.__setitem__((0, 1), 4)), "'train/boxes' has empty boxes"),
    (_set("train/boxes", lambda a: a.__setitem__((0, 2), np.nan)), "'train/boxes' holds NaN"),
    (_set("train/labels", lambda a: a.__setitem__(slice(None), 0)), "not among its image's labels"),
    (_set("train/groups", lambda a: a.__setitem__(0, 4)), "'train/groups' has values outside -1..3"),
])
def test_split_access_checks_values(tmp_path, damage, message):
    """Every reader (train, guide, evaluate, inspect) gets inspect's checks through DatasetFile.split."""
    path = tmp_path / "d.h5"
    _write(path, n=12)
    _corrupt(path, damage)
    with pytest.raises(FormatError) as e:  # at open (shapes, ends of box_index) or first access of the split
        with open_dataset(path) as ds:
            ds.split("train")
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_box_index_end_must_match_boxes(tmp_path):
    path = tmp_path / "d.h5"
    _write(path, n=12)
    with h5py.File(path, "a") as f:  # one more box than box_index spans
        b = f["train/boxes"]
        b.resize(b.shape[0] + 1, axis=0)
        b[-1] = [0, 0, 0, 1, 1]
    with pytest.raises(FormatError, match="'train/box_index' does not span 'train/boxes'"):
        open_dataset(path)


def test_reader_folder_empty_and_truncated(tmp_path):
    with pytest.raises(FormatError, match="is a directory, not a data file"):
        open_dataset(tmp_path)
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        open_dataset(tmp_path / "empty.h5")
    path = tmp_path / "d.h5"
    _write(path, n=12)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="damaged or truncated") as e:
        open_dataset(tmp_path / "cut.h5")
    assert "\n" not in str(e.value)
