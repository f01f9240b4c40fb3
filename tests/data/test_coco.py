"""`mgkit prepare coco` on small instances JSONs that pycocotools loads, with real JPEGs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures import (COCO_CATEGORIES, COCO_TEST_ANNS, COCO_TEST_IMAGES, COCO_TRAIN_ANNS, COCO_TRAIN_IMAGES,
                      coco_expected, coco_instances, make_coco, pil_resized, prepare_json, run_cli,
                      stored_ids, truncate)
from mgkit.artifacts import file_sha256
from mgkit.data.format import open_dataset
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import coco

S = 24
TRAIN_IDS = sorted(COCO_TRAIN_IMAGES)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A read-only COCO root shared by the tests that do not modify it."""
    return make_coco(tmp_path_factory.mktemp("coco"))


def _ids(f, split: str) -> list[int]:
    return [int(i) for i in stored_ids(f, split)]


def _check_split(f, root, split: str, include_crowd: bool = True) -> None:
    """Every stored field of a split against the fixture's specification."""
    test = split == "test"
    folder = root / ("val2014" if test else "train2014")
    images = COCO_TEST_IMAGES if test else COCO_TRAIN_IMAGES
    g = f.split(split)
    for i, image_id in enumerate(_ids(f, split)):
        labels, boxes = coco_expected(image_id, S, include_crowd=include_crowd, test=test)
        np.testing.assert_array_equal(g["labels"][i], labels, err_msg=str(image_id))
        np.testing.assert_array_equal(f.boxes_of(split, i), boxes, err_msg=str(image_id))
        np.testing.assert_array_equal(g["images"][i], pil_resized(folder / images[image_id][0], S))


def test_coco_cli_seeded_split_stores_every_field(root, tmp_path):
    out = tmp_path / "c.h5"
    summary = prepare_json("coco", "--root", root, "--out", out, "--size", S, "--val-frac", 0.3, "--seed", 5)
    order = np.random.RandomState(5).permutation(len(TRAIN_IDS))
    want_val = sorted(TRAIN_IDS[k] for k in order[:3])
    with open_dataset(out) as f:
        assert f.classes == ["person", "car", "dog"]  # ascending category id, names from the JSON
        assert _ids(f, "val") == want_val
        assert _ids(f, "train") == sorted(set(TRAIN_IDS) - set(want_val))
        assert _ids(f, "test") == sorted(COCO_TEST_IMAGES)
        for split in ("train", "val", "test"):
            _check_split(f, root, split)
        files = f.provenance["files_sha256"]
        assert files["train"] == file_sha256(root / "annotations" / "instances_train2014.json")
        assert files["test"] == file_sha256(root / "annotations" / "instances_val2014.json")
        assert f.provenance["split_mode"] == "seeded"
    assert summary["splits"]["test"]["images"] == 3
    counts = {s: summary["splits"][s]["boxes_dropped"] for s in ("train", "val")}
    assert sum(counts.values()) == 1  # image 42's zero-width box


def test_coco_special_images(root):
    plan = coco.plan(root, val_frac=0.0)
    by_id = {int(r.id): r for r in plan.splits["train"]}
    assert "val" not in plan.splits and any("no val split" in n for n in plan.notes)
    empty = coco.load(by_id[34], S)  # no annotations: kept, all negative
    assert not empty.labels.any() and empty.boxes.shape == (0, 5)
    for image_id in (25, 30):  # grayscale and CMYK decode to RGB
        s = coco.load(by_id[image_id], S)
        assert s.image.shape == (S, S, 3)
        np.testing.assert_array_equal(s.image, pil_resized(root / "train2014" / COCO_TRAIN_IMAGES[image_id][0], S))
    crowd = coco.load(by_id[36], S)
    assert crowd.labels.tolist() == [1, 0, 1] and len(crowd.boxes) == 2
    zero = coco.load(by_id[42], S)  # the zero-width box is dropped, its label stays
    assert zero.labels.tolist() == [0, 1, 0] and len(zero.boxes) == 0 and zero.stats["boxes_dropped"] == 1
    # (x, y, w, h) -> (x, y, x + w, y + h) then the reference formula, on image 9 (40x30)
    s = coco.load(by_id[9], 224)
    # (scale first, as the reference: 22.5 * (224 / 40) = 125.99999999999999 -> 125)
    sx, sy = 224 / 40, 224 / 30
    assert s.boxes.tolist() == [[0, int(2.5 * sx), int(3 * sy), int(22.5 * sx), int(18 * sy)], [2, 56, 37, 196, 186]]
    assert s.boxes[0, 3] == 125


def test_coco_seed_determinism(root):
    a = coco.plan(root, val_frac=0.5, seed=0).splits["val"]
    b = coco.plan(root, val_frac=0.5, seed=0).splits["val"]
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 5
    others = {tuple(r.id for r in coco.plan(root, val_frac=0.5, seed=s).splits["val"]) for s in range(1, 5)}
    assert len(others | {tuple(r.id for r in a)}) > 1


def test_coco_exclude_crowd(root, tmp_path):
    out = tmp_path / "c.h5"
    summary = prepare_json("coco", "--root", root, "--out", out, "--size", S, "--exclude-crowd", "--val-frac", 0)
    assert summary["splits"]["train"]["crowd_excluded"] == 1
    assert summary["splits"]["test"]["crowd_excluded"] == 1
    with open_dataset(out) as f:
        for split in ("train", "test"):
            _check_split(f, root, split, include_crowd=False)
        i = _ids(f, "train").index(36)
        assert f.split("train")["labels"][i].tolist() == [0, 0, 1]  # the crowd person no longer labels


def test_coco_workers_match_in_process(root, tmp_path):
    plan = coco.plan(root, val_frac=0.2)
    run_prepare(plan, tmp_path / "a.h5", size=S, bbox_frac=1.0, seed=0, quiet=True)
    run_prepare(plan, tmp_path / "b.h5", size=S, bbox_frac=1.0, seed=0, workers=2, quiet=True)
    with open_dataset(tmp_path / "a.h5") as a, open_dataset(tmp_path / "b.h5") as b:
        for split in a.splits:
            for name in ("images", "labels", "boxes", "box_index"):
                np.testing.assert_array_equal(a.split(split)[name][:], b.split(split)[name][:])


VAL = [25, 49, 71]


@pytest.mark.parametrize("form", ["ids", "digit strings", "file names", "dict of image dicts", "dict of ids"])
def test_coco_split_files_select_train_images(root, tmp_path, form):
    names = {i: COCO_TRAIN_IMAGES[i][0] for i in TRAIN_IDS}
    encode = {"ids": lambda ids: list(ids), "digit strings": lambda ids: [str(i) for i in ids],
              "file names": lambda ids: [f"train2014/{names[i]}" for i in ids],
              "dict of image dicts": lambda ids: {"images": [{"id": i} for i in ids]},
              "dict of ids": lambda ids: {"ids": list(ids)}}[form]
    train = [i for i in TRAIN_IDS if i not in VAL]
    (tmp_path / "t.json").write_text(json.dumps(encode(train[::-1])))  # file order does not matter
    (tmp_path / "v.json").write_text(json.dumps(encode(VAL)))
    out = tmp_path / "c.h5"
    prepare_json("coco", "--root", root, "--out", out, "--size", S, "--train-split-file", tmp_path / "t.json",
                 "--val-split-file", tmp_path / "v.json")
    with open_dataset(out) as f:
        assert _ids(f, "train") == train and _ids(f, "val") == VAL
        _check_split(f, root, "val")
        assert f.provenance["split_mode"] == "split files"
        assert f.provenance["files_sha256"]["val_split"] == file_sha256(tmp_path / "v.json")


def test_coco_instances_split_files_need_no_train_json(tmp_path):
    """The NN-Explainer split files are instances JSONs: used directly, like the reference's COCO(file)."""
    root = make_coco(tmp_path)
    (root / "annotations" / "instances_train2014.json").unlink()
    for name, ids in (("train", [i for i in TRAIN_IDS if i not in VAL]), ("val", VAL)):
        images = {i: COCO_TRAIN_IMAGES[i] for i in ids}
        anns = [a for a in COCO_TRAIN_ANNS if a[1] in ids]
        (root / "annotations" / f"train2014_{name}_split.json").write_text(json.dumps(coco_instances(images, anns)))
    out = tmp_path / "c.h5"
    prepare_json("coco", "--root", root, "--out", out, "--size", S,
                 "--train-split-file", root / "annotations" / "train2014_train_split.json",
                 "--val-split-file", root / "annotations" / "train2014_val_split.json")
    with open_dataset(out) as f:
        assert _ids(f, "val") == VAL and len(_ids(f, "train")) == len(TRAIN_IDS) - len(VAL)
        for split in ("train", "val", "test"):
            _check_split(f, root, split)


def test_coco_one_split_file_leaves_the_rest_to_the_other_split(root, tmp_path):
    (tmp_path / "v.json").write_text(json.dumps(VAL))
    plan = coco.plan(root, val_split_file=tmp_path / "v.json")
    assert [int(r.id) for r in plan.splits["val"]] == VAL
    assert [int(r.id) for r in plan.splits["train"]] == [i for i in TRAIN_IDS if i not in VAL]


@pytest.mark.parametrize("problem", ["overlap", "unknown id", "not json", "no list"])
def test_coco_bad_split_files_fail_naming_them(root, tmp_path, problem):
    t, v = tmp_path / "t.json", tmp_path / "v.json"
    t.write_text(json.dumps([9, 25, 30]))
    v.write_text({"overlap": "[30, 34]", "unknown id": "[34, 123456]", "not json": "[34,",
                  "no list": '{"something": 1}'}[problem])
    res = run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "c.h5", "--train-split-file", t,
                  "--val-split-file", v, "-q")
    assert res.exit_code == 1
    assert ("both the train and the val split" in res.stderr) if problem == "overlap" else (str(v) in res.stderr)


def test_coco_explicit_annotation_files_without_root(root, tmp_path):
    ann = root / "annotations"
    out = tmp_path / "c.h5"
    summary = prepare_json("coco", "--out", out, "--size", S,
                           "--train-ann-file", ann / "instances_train2014.json",
                           "--train-image-dir", root / "train2014",
                           "--val-ann-file", ann / "instances_val2014.json", "--val-image-dir", root / "val2014",
                           "--test-ann-file", ann / "instances_val2014.json", "--test-image-dir", root / "val2014")
    assert {s: c["images"] for s, c in summary["splits"].items()} == {"train": 10, "val": 3, "test": 3}
    with open_dataset(out) as f:
        assert _ids(f, "train") == TRAIN_IDS and f.provenance["split_mode"] == "val annotation file"
        _check_split(f, root, "train")
        _check_split(f, root, "test")
    # no test annotations and no root: train and val only, with a note
    summary = prepare_json("coco", "--out", tmp_path / "d.h5", "--size", S, "--val-frac", 0.2,
                           "--train-ann-file", ann / "instances_train2014.json",
                           "--train-image-dir", root / "train2014")
    assert set(summary["splits"]) == {"train", "val"} and any("no test split" in n for n in summary["notes"])


def test_coco_usage_and_missing_paths(root, tmp_path):
    out = tmp_path / "c.h5"
    res = run_cli("prepare", "coco", "--out", out, "-q")  # neither --root nor --train-ann-file
    assert res.exit_code == 2 and "--train-ann-file" in res.stderr
    res = run_cli("prepare", "coco", "--out", out,
                  "--train-ann-file", root / "annotations" / "instances_train2014.json", "-q")
    assert res.exit_code == 2 and "--train-image-dir" in res.stderr
    res = run_cli("prepare", "coco", "--root", tmp_path / "nowhere", "--out", out, "-q")
    assert res.exit_code == 1 and str(tmp_path / "nowhere") in res.stderr
    res = run_cli("prepare", "coco", "--root", root, "--year", "2017", "--out", out, "-q")
    assert res.exit_code == 1 and str(root / "annotations" / "instances_train2017.json") in res.stderr
    assert not out.exists()


def test_coco_categories_must_agree_across_splits(tmp_path):
    root = make_coco(tmp_path)
    test_json = root / "annotations" / "instances_val2014.json"
    other = [(c, n.upper()) for c, n in COCO_CATEGORIES]
    test_json.write_text(json.dumps(coco_instances(COCO_TEST_IMAGES, COCO_TEST_ANNS, other)))
    res = run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "c.h5", "-q")
    assert res.exit_code == 1 and str(test_json) in res.stderr and "categories" in res.stderr


@pytest.mark.parametrize("how", ["truncated jpeg", "unknown category"])
def test_coco_bad_sample_fails_or_is_skipped(tmp_path, how):
    root = make_coco(tmp_path)
    image = root / "train2014" / COCO_TRAIN_IMAGES[9][0]
    if how == "truncated jpeg":
        truncate(image)
    else:
        anns = COCO_TRAIN_ANNS + [(99, 9, 77, [1.0, 1.0, 2.0, 2.0], 0)]
        (root / "annotations" / "instances_train2014.json").write_text(
            json.dumps(coco_instances(COCO_TRAIN_IMAGES, anns)))
    out = tmp_path / "c.h5"
    res = run_cli("prepare", "coco", "--root", root, "--out", out, "--val-frac", 0, "--size", S, "-q")
    assert res.exit_code == 1 and str(image) in res.stderr and not out.exists()
    summary = prepare_json("coco", "--root", root, "--out", out, "--val-frac", 0, "--size", S, "--skip-bad")
    train = summary["splits"]["train"]
    assert train["skipped"] == 1 and train["images"] == len(TRAIN_IDS) - 1
    assert train["skipped_files"][0].startswith(str(image))
