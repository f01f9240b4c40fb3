"""The built-in synthetic generator: determinism, exact boxes/masks, cue statistics, birds groups, the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from mgkit.cli import app
from mgkit.data.format import open_dataset
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic as S


def _scenes(split: str, n: int, size: int, **kw) -> list[S.Scene]:
    plan = S.plan(n_train=n, n_val=n, n_test=n, **kw)
    return [S.render(r, size) for r in plan.splits[split]]


def _datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of a file by path, for byte-level comparison."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _assert_same_files(a, b) -> None:
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        assert da[name].dtype == db[name].dtype, name
        assert np.array_equal(da[name], db[name]), name


def _detect_cues(image: np.ndarray, k_max: int) -> np.ndarray:
    """Which cues an image shows, read from its pixels: a slot mostly made of the cue's exact colour."""
    lay = S.layout(image.shape[0])
    found = np.zeros(k_max, bool)
    for k in range(k_max):
        x0, y0, x1, y1 = lay.slot(k)
        patch = image[y0:y1, x0:x1].reshape(-1, 3)
        found[k] = (patch == np.array(S.CUE_COLOURS[k], np.uint8)).all(1).mean() >= 0.4
    return found


def _tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    for i, seed in enumerate((0, 0, 1)):
        for task in S.TASKS:
            plan = S.plan(task=task, n_train=12, n_val=4, n_test=4, seed=seed)
            run_prepare(plan, tmp_path / f"{task}{i}.h5", size=32, bbox_frac=0.5, seed=seed, quiet=True)
    for task in S.TASKS:
        _assert_same_files(tmp_path / f"{task}0.h5", tmp_path / f"{task}1.h5")
        a, c = _datasets(tmp_path / f"{task}0.h5"), _datasets(tmp_path / f"{task}2.h5")
        assert not np.array_equal(a["train/images"], c["train/images"])
    # load() directly, in a fresh plan: nothing depends on state outside the record.
    r1, r2 = S.plan(seed=5).splits["val"][7], S.plan(seed=5).splits["val"][7]
    s1, s2 = S.load(r1, 48), S.load(r2, 48)
    for field in ("image", "labels", "boxes", "segmentation"):
        assert np.array_equal(getattr(s1, field), getattr(s2, field))
    assert not np.array_equal(s1.image, S.load(S.plan(seed=6).splits["val"][7], 48).image)


def test_plan_order_ids_and_provenance():
    plan = S.plan(n_train=3, n_val=2, n_test=4)
    assert list(plan.splits) == ["train", "val", "test", "test_decorrelated", "test_shifted"]
    assert [len(v) for v in plan.splits.values()] == [3, 2, 4, 4, 4]
    assert plan.classes == list(S.SHAPES[:6]) and plan.segmentation_splits == set(plan.splits)
    prov = plan.provenance
    assert prov["generator_version"] == S.GENERATOR_VERSION and prov["spurious"] == 0.9
    assert [c["class"] for c in prov["cues"]] == plan.classes and "red" in prov["cues"][0]["description"]
    birds = S.plan(task="birds", n_train=3, n_val=2, n_test=4)
    assert list(birds.splits) == ["train", "val", "test"] and birds.task == "binary"
    assert birds.provenance["spurious"] == 1.0 and birds.group_names == S.BIRD_GROUPS


@pytest.mark.parametrize("kw", [dict(task="nope"), dict(spurious=1.5), dict(num_classes=13), dict(seed=-1)])
def test_plan_rejects_bad_parameters(kw):
    with pytest.raises(S.UsageError):
        S.plan(**kw)


# --------------------------------------------------------------------------------------- boxes / masks


@pytest.mark.parametrize("size", [16, 32, 64, 128, 224])
def test_boxes_and_labels_match_segmentation(size):
    n = {16: 40, 32: 60, 64: 60, 128: 30, 224: 8}[size]
    occluded = 0
    for scene in _scenes("train", n, size, num_classes=12, seed=size):
        img, seg, boxes = scene.image, scene.segmentation, scene.boxes
        assert img.shape == (size, size, 3) and img.dtype == np.uint8 and seg.shape == (size, size)
        present = sorted(set(np.unique(seg)) - {0})
        assert present, "every image shows at least one object"
        assert list(np.flatnonzero(scene.labels) + 1) == present
        assert boxes.dtype == np.float32 and set(boxes[:, 0].astype(int) + 1) == set(present)
        for c in present:
            cls_mask = seg == c
            rows = boxes[boxes[:, 0] == c - 1][:, 1:].astype(int)
            covered = np.zeros_like(cls_mask)
            for x0, y0, x1, y1 in rows:
                covered[y0:y1, x0:x1] = True
                # tight: every edge row/column of the box holds a pixel of the class
                inside = cls_mask[y0:y1, x0:x1]
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert covered[cls_mask].all(), "every mask pixel lies in a box of its class"
            union = (rows[:, 0].min(), rows[:, 1].min(), rows[:, 2].max(), rows[:, 3].max())
            assert union == _tight(cls_mask)
        # Occlusion semantics: later objects hide earlier ones, each box is tight on its own visible
        # pixels, and every object keeps at least half of the pixels it had when drawn.
        for i, cls in enumerate(scene.classes):
            own = scene.instances == i + 1
            assert (seg[own] == cls + 1).all()
            assert tuple(boxes[i, 1:].astype(int)) == _tight(own)
            assert own.sum() >= S.MIN_VISIBLE * scene.full_pixels[i]
            occluded += own.sum() < scene.full_pixels[i]
    if size >= 64:
        assert occluded, "some objects should be partly hidden, so occlusion is exercised"


def test_cues_never_overlap_boxes():
    for size in (32, 128):
        lay = S.layout(size)
        slots = [lay.slot(k) for k in range(S.MAX_CLASSES)]
        for a in range(len(slots)):  # slots are disjoint and inside the border band
            x0, y0, x1, y1 = slots[a]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert min(x0, y0) < lay.band or max(x1, y1) > size - lay.band
            for b in range(a):
                bx0, by0, bx1, by1 = slots[b]
                assert x1 <= bx0 or bx1 <= x0 or y1 <= by0 or by1 <= y0
        for scene in _scenes("test_shifted", 40, size, num_classes=12):
            for _, bx0, by0, bx1, by1 in scene.boxes.astype(int):
                assert lay.band <= bx0 and lay.band <= by0 and bx1 <= size - lay.band and by1 <= size - lay.band
                for x0, y0, x1, y1 in slots:
                    assert bx1 <= x0 or x1 <= bx0 or by1 <= y0 or y1 <= by0


# ------------------------------------------------------------------------------------ spurious cues


def test_cue_statistics_per_split():
    k, n, size = 6, 500, 32
    stats = {}
    for split in ("train", "test", "test_decorrelated", "test_shifted"):
        labels, cues = [], []
        for scene in _scenes(split, n, size, num_classes=k):
            found = _detect_cues(scene.image, k)
            assert np.array_equal(found, scene.cues), "pixel detection agrees with the generator's decisions"
            labels.append(scene.labels.astype(bool))
            cues.append(found)
        y, c = np.array(labels), np.array(cues)
        stats[split] = (c[y].mean(), c[~y].mean())
    m = S.cue_rates("test_decorrelated", k, 0.9)[0]
    for split in ("train", "test"):  # test is drawn like the training data (the paper's F1)
        present, absent = stats[split]
        assert abs(present - 0.9) < 0.04 and 0.01 < absent < 0.05  # strong but imperfect predictor
    present, absent = stats["test_decorrelated"]
    assert abs(present - absent) < 0.06 and abs(present - m) < 0.05 and abs(absent - m) < 0.05  # independent
    present, absent = stats["test_shifted"]
    assert present == 0.0 and abs(absent - S.cue_rates("test_shifted", k, 0.9)[1]) < 0.05  # inverted


def test_shifted_splits_show_the_test_scenes():
    for split in ("test_decorrelated", "test_shifted"):
        for a, b in zip(_scenes("test", 20, 48), _scenes(split, 20, 48)):
            assert np.array_equal(a.segmentation, b.segmentation) and np.array_equal(a.boxes, b.boxes)
            inner = S.layout(48).band
            assert np.array_equal(a.image[inner:-inner, inner:-inner], b.image[inner:-inner, inner:-inner])


def test_pretrain_task_has_no_cues_and_scenes_of_its_own():
    plan = S.plan(task="pretrain", n_train=30, n_val=2, n_test=2)
    assert list(plan.splits) == ["train", "val", "test"] and plan.task == "multilabel"
    assert plan.provenance["cues"] == [] and plan.provenance["generator_version"] == S.GENERATOR_VERSION
    scenes = [S.render(r, 32) for r in plan.splits["train"]]
    assert not any(sc.cues.any() for sc in scenes)
    assert not any(_detect_cues(sc.image, 6).any() for sc in scenes)
    other = S.render(S.plan(n_train=1, n_val=1, n_test=1).splits["train"][0], 32)
    assert not np.array_equal(scenes[0].image, other.image)


def test_spurious_changes_only_cues():
    for a, b in zip(_scenes("train", 20, 48, spurious=0.9), _scenes("train", 20, 48, spurious=0.2)):
        assert np.array_equal(a.segmentation, b.segmentation)


# -------------------------------------------------------------------------------------------- birds


def test_birds_groups_labels_and_boxes():
    train = _scenes("train", 200, 32, task="birds")
    groups = np.array([s.group for s in train])
    assert set(groups) == {0, 3}  # spurious 1.0: landbirds on land, waterbirds on water only
    assert 80 <= (groups == 0).sum() <= 120
    # val and test balanced over the four groups, as Waterbirds' (checkpoints chosen on val must not pay
    # the shortcut)
    for split in ("val", "test"):
        held_out = _scenes(split, 200, 32, task="birds")
        assert np.bincount([s.group for s in held_out], minlength=4).tolist() == [50, 50, 50, 50], split
    test = held_out
    for s in train + test:
        y = s.group // 2
        assert s.labels.tolist() == [1 - y, y]
        assert len(s.boxes) == 1 and s.boxes[0, 0] == y
        assert set(np.unique(s.segmentation)) == {0, y + 1}
        assert tuple(s.boxes[0, 1:].astype(int)) == _tight(s.segmentation > 0)
    mixed = _scenes("train", 100, 32, task="birds", spurious=0.5)
    assert set(s.group for s in mixed) == {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------- CLI


def _cli(*args: str):
    return CliRunner().invoke(app, ["prepare", "synthetic", *args])


def test_cli_multilabel_json_and_bbox_frac(tmp_path):
    out = tmp_path / "s.h5"
    res = _cli("--out", str(out), "--train", "40", "--val", "10", "--test", "10", "--size", "64", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert {s: v["images"] for s, v in summary["splits"].items()} == {"train": 40, "val": 10, "test": 10,
                                                                     "test_decorrelated": 10, "test_shifted": 10}
    with open_dataset(out) as ds:
        assert ds.classes == list(S.SHAPES[:6]) and ds.image_size == (64, 64) and ds.task == "multilabel"
        assert all("segmentation" in ds.split(s) for s in ds.splits)
        assert ds.provenance["generator"] == S.GENERATOR
    sets = {}
    for frac, name, seed in ((0.25, "a", "0"), (0.25, "b", "0"), (0.01, "c", "0"), (0.25, "d", "3"), (0.0, "e", "0")):
        path = tmp_path / f"{name}.h5"
        res = _cli("--out", str(path), "--train", "40", "--val", "10", "--test", "10", "--size", "32",
                   "--bbox-frac", str(frac), "--seed", seed, "--quiet")
        assert res.exit_code == 0, res.output
        with h5py.File(path, "r") as f:
            sets[name] = f["train/annotated"][()]
            assert f["val/annotated"][()].all() and f["test_shifted/annotated"][()].all()
    assert sets["a"].sum() == 10 and sets["c"].sum() == 1 and sets["e"].sum() == 0  # int(F * N), >= 1 if F > 0
    assert np.array_equal(sets["a"], sets["b"]) and not np.array_equal(sets["a"], sets["d"])


def test_cli_bbox_count_is_an_absolute_budget(tmp_path):
    path = tmp_path / "n.h5"
    res = _cli("--out", str(path), "--train", "40", "--val", "4", "--test", "4", "--size", "32", "--bbox-frac", "0.01",
               "--bbox-count", "7", "--quiet", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["splits"]["train"]["annotated"] == 7
    with open_dataset(path) as ds:
        assert ds.bbox_frac == 0.01  # the condition the budget stands for (1 % of the paper's data set)
    with h5py.File(path, "r") as f:
        assert f["train/annotated"][()].sum() == 7 and f["val/annotated"][()].all()
    res = _cli("--out", str(tmp_path / "m.h5"), "--train", "40", "--val", "4", "--test", "4", "--size", "32",
               "--bbox-count", "41")
    assert res.exit_code == 2 and "--bbox-count 41" in res.output and res.output.strip().count("\n") == 0
    assert not (tmp_path / "m.h5").exists()


def test_birds_place_is_the_reversed_task_on_the_same_images():
    birds = _scenes("test", 24, 32, task="birds")
    place = _scenes("test", 24, 32, task="birds-place")
    plan = S.plan(task="birds-place", n_train=2, n_val=2, n_test=2)
    assert plan.mask_mode == "outside" and plan.classes == ["land", "water"]
    assert S.plan(task="birds", n_train=2, n_val=2, n_test=2).mask_mode == "inside"
    for b, p in zip(birds, place):
        assert np.array_equal(b.image, p.image) and b.group == p.group
        y, where = divmod(p.group, 2)
        assert b.labels.argmax() == y and p.labels.argmax() == where  # label: bird type vs place
        assert np.array_equal(b.boxes[:, 1:], p.boxes[:, 1:]) and p.boxes[0, 0] == where
        on_bird = b.instances > 0
        assert (p.segmentation[on_bird] == 0).all() and (p.segmentation[~on_bird] == where + 1).all()


def test_cli_birds_and_workers(tmp_path):
    res = _cli("--out", str(tmp_path / "b.h5"), "--task", "birds", "--train", "40", "--val", "10", "--test", "12",
               "--size", "64", "--quiet")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "b.h5") as ds:
        assert ds.task == "binary" and ds.classes == S.BIRD_CLASSES and set(ds.splits) == {"train", "val", "test"}
        assert ds.split_info("test").group_names == S.BIRD_GROUPS
        assert np.bincount(ds.split("test")["groups"][()], minlength=4).tolist() == [3, 3, 3, 3]
    for workers in ("0", "2"):
        res = _cli("--out", str(tmp_path / f"w{workers}.h5"), "--train", "70", "--val", "5", "--test", "5",
                   "--size", "32", "--workers", workers, "--quiet")
        assert res.exit_code == 0, res.output
    _assert_same_files(tmp_path / "w0.h5", tmp_path / "w2.h5")


def test_cli_bad_usage_exit_2(tmp_path):
    assert _cli("--out", str(tmp_path / "x.h5"), "--task", "cats").exit_code == 2
    assert _cli("--out", str(tmp_path / "x.h5"), "--seed", "-1", "--train", "2").exit_code == 2
    assert not (tmp_path / "x.h5").exists()
