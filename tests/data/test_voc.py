"""`mgkit prepare voc` on a small VOCdevkit tree written in the real on-disk format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fixtures import (VOC_IMAGES, VOC_SEGMENTED, VOC_SPLITS, expected_boxes, make_voc, pil_resized,
                      prepare_json, run_cli, stored_ids, truncate, voc_xml)
from mgkit.artifacts import file_sha256
from mgkit.data.format import open_dataset
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import voc

S = 32


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
    """A read-only VOCdevkit shared by the tests that do not modify it."""
    return make_voc(tmp_path_factory.mktemp("voc"))


def _expected(image_id: str, exclude_difficult: bool = False) -> tuple[np.ndarray, np.ndarray]:
    w, h, objects = VOC_IMAGES[image_id]
    kept = [(voc.CLASSES.index(name), *box) for name, box, difficult, _ in objects
            if not (exclude_difficult and difficult)]
    labels = np.zeros(20, np.uint8)
    for cls, *_ in kept:
        labels[cls] = 1
    return labels, expected_boxes(kept, w, h, S)


def test_voc_cli_stores_every_field(devkit, tmp_path):
    out = tmp_path / "voc.h5"
    summary = prepare_json("voc", "--root", devkit, "--out", out, "--size", S)
    assert summary["splits"]["train"]["boxes_clipped"] == 1  # 000003 reaches outside its image
    assert summary["splits"]["train"]["boxes_dropped"] == 1  # 000004's bird has xmin == xmax
    jpg = devkit / "VOC2007" / "JPEGImages"
    with open_dataset(out) as f:
        assert f.source == "voc" and f.task == "multilabel" and f.classes == voc.CLASSES
        assert f.image_size == (S, S) and f.mask_mode == "inside"
        assert sorted(f.splits) == ["test", "train", "val"]
        lists = devkit / "VOC2007" / "ImageSets" / "Main"
        assert f.provenance["split_files_sha256"] == {s: file_sha256(lists / f"{s}.txt") for s in VOC_SPLITS}
        assert f.provenance["num_annotation_files"] == len(VOC_IMAGES)
        for split, ids in VOC_SPLITS.items():
            g = f.split(split)
            assert stored_ids(f, split) == ids
            assert g["annotated"][:].all()
            for i, image_id in enumerate(ids):
                labels, boxes = _expected(image_id)
                np.testing.assert_array_equal(g["labels"][i], labels, err_msg=image_id)
                np.testing.assert_array_equal(f.boxes_of(split, i), boxes, err_msg=image_id)
                np.testing.assert_array_equal(g["images"][i], pil_resized(jpg / f"{image_id}.jpg", S))
                assert bool(g["has_segmentation"][i]) == (image_id in VOC_SEGMENTED)
                if image_id in VOC_SEGMENTED:
                    with Image.open(devkit / "VOC2007" / "SegmentationClass" / f"{image_id}.png") as png:
                        raw = np.asarray(png)
                        want = np.asarray(png.resize((S, S), Image.NEAREST))
                    np.testing.assert_array_equal(g["segmentation"][i], want)
                    assert set(np.unique(g["segmentation"][i])) <= set(np.unique(raw)) | {0}
                    assert 255 in g["segmentation"][i]  # void kept as 255, indices not palette colours
                else:
                    assert not g["segmentation"][i].any()
    # the box whose xmin == xmax is dropped but its object still labels the image
    labels, boxes = _expected("000004")
    assert labels[voc.CLASSES.index("bird")] == 1 and voc.CLASSES.index("bird") not in boxes[:, 0]


def test_voc_box_formula_uses_xml_size_and_1_based_coordinates_as_given(devkit):
    rec = next(r for r in voc.plan(devkit).splits["train"] if r.id == "000001")
    sample = voc.load(rec, 224)
    # dog (5, 4, 30, 25) on 40x30: int(5 * 224 / 40) = 28, int(4 * 224 / 30) = 29, ...
    assert sample.boxes[0].tolist() == [voc.CLASSES.index("dog"), 28, 29, 168, 186]
    # person (1, 1, 40, 30) covers the image: the max corner clamps to 223
    assert sample.boxes[1].tolist() == [voc.CLASSES.index("person"), 5, 7, 223, 223]


def test_voc_plan_in_worker_processes_matches_in_process(devkit, tmp_path):
    plan = voc.plan(devkit)
    run_prepare(plan, tmp_path / "a.h5", size=S, bbox_frac=0.5, seed=3, quiet=True)
    run_prepare(plan, tmp_path / "b.h5", size=S, bbox_frac=0.5, seed=3, workers=2, quiet=True)
    with open_dataset(tmp_path / "a.h5") as a, open_dataset(tmp_path / "b.h5") as b:
        for split in VOC_SPLITS:
            for name in ("images", "labels", "boxes", "box_index", "annotated", "segmentation"):
                np.testing.assert_array_equal(a.split(split)[name][:], b.split(split)[name][:])


def test_voc_bbox_frac_exact_count_and_seeded(devkit, tmp_path):
    masks = {}
    for frac, seed in ((0.5, 0), (0.5, 0), (0.01, 0), (0.5, 1), (0.5, 2), (0.5, 3)):
        out = tmp_path / f"{frac}-{seed}.h5"
        summary = prepare_json("voc", "--root", devkit, "--out", out, "--size", 16, "--bbox-frac", frac,
                               "--seed", seed, "--force")
        n = len(VOC_SPLITS["train"])
        expect = max(int(frac * n), 1)
        assert summary["splits"]["train"]["annotated"] == expect
        with open_dataset(out) as f:
            mask = f.split("train")["annotated"][:]
            assert mask.sum() == expect and f.bbox_frac == frac and f.seed == seed
            assert f.split("val")["annotated"][:].all() and f.split("test")["annotated"][:].all()
        want = np.zeros(n, bool)
        want[np.random.RandomState(seed).choice(n, expect, replace=False)] = True
        np.testing.assert_array_equal(mask, want)
        masks.setdefault((frac, seed), []).append(mask.tolist())
    assert masks[(0.5, 0)][0] == masks[(0.5, 0)][1]
    assert len({tuple(m[0]) for (frac, _), m in masks.items() if frac == 0.5}) > 1


def test_voc_exclude_difficult(devkit, tmp_path):
    out = tmp_path / "voc.h5"
    summary = prepare_json("voc", "--root", devkit, "--out", out, "--size", S, "--exclude-difficult")
    assert summary["splits"]["train"]["difficult_excluded"] == 2
    assert summary["splits"]["test"]["difficult_excluded"] == 1
    with open_dataset(out) as f:
        for split, ids in VOC_SPLITS.items():
            for i, image_id in enumerate(ids):
                labels, boxes = _expected(image_id, exclude_difficult=True)
                np.testing.assert_array_equal(f.split(split)["labels"][i], labels)
                np.testing.assert_array_equal(f.boxes_of(split, i), boxes)
        cat, horse = voc.CLASSES.index("cat"), voc.CLASSES.index("horse")
        assert f.split("train")["labels"][1, cat] == 0  # 000002's only cat is difficult
        assert not f.split("train")["labels"][5].any()  # 000006 holds only a difficult horse
        assert horse not in f.boxes_of("train", 5)[:, 0]


def test_voc_without_test_list_has_train_and_val_only(tmp_path):
    root = make_voc(tmp_path, year="2012", splits={s: VOC_SPLITS[s] for s in ("train", "val")})
    summary = prepare_json("voc", "--root", root, "--year", "2012", "--out", tmp_path / "v.h5", "--size", 16)
    assert set(summary["splits"]) == {"train", "val"}
    assert any("test.txt" in note for note in summary["notes"])


@pytest.mark.parametrize("what", ["root", "year folder", "val list", "annotations"])
def test_voc_missing_paths_fail_naming_them(tmp_path, what):
    root = make_voc(tmp_path)
    missing = {"root": tmp_path / "nowhere", "year folder": root / "VOC2007",
               "val list": root / "VOC2007" / "ImageSets" / "Main" / "val.txt",
               "annotations": root / "VOC2007" / "Annotations"}[what]
    if what in ("year folder", "annotations"):
        missing.rename(missing.with_name(missing.name + "_moved"))
    elif what == "val list":
        missing.unlink()
    res = run_cli("prepare", "voc", "--root", tmp_path / "nowhere" if what == "root" else root,
                  "--out", tmp_path / "v.h5", "-q")
    assert res.exit_code == 1
    assert str(missing) in res.stderr
    assert not (tmp_path / "v.h5").exists()


def _break_xml(root, image_id: str, how: str):
    """Damage one training image; returns the path the error must name."""
    base = root / "VOC2007"
    w, h, objects = VOC_IMAGES[image_id]
    xml = base / "Annotations" / f"{image_id}.xml"
    if how == "no size":
        xml.write_text(voc_xml(image_id, None, None, objects))
    elif how == "no bndbox":
        xml.write_text(voc_xml(image_id, w, h, [(objects[0][0], None, 0, 0)] + objects[1:]))
    elif how == "unknown class":
        xml.write_text(voc_xml(image_id, w, h, [("unicorn", (1, 1, 5, 5), 0, 0)] + objects))
    elif how == "truncated jpeg":
        truncate(base / "JPEGImages" / f"{image_id}.jpg")
        return base / "JPEGImages" / f"{image_id}.jpg"
    return xml


@pytest.mark.parametrize("how", ["no size", "no bndbox", "unknown class", "truncated jpeg"])
def test_voc_bad_sample_fails_or_is_skipped(tmp_path, how):
    root = make_voc(tmp_path)
    bad = _break_xml(root, "000002", how)
    out = tmp_path / "v.h5"
    res = run_cli("prepare", "voc", "--root", root, "--out", out, "--size", 16, "-q")
    assert res.exit_code == 1 and str(bad) in res.stderr
    assert not out.exists()
    summary = prepare_json("voc", "--root", root, "--out", out, "--size", 16, "--skip-bad")
    train = summary["splits"]["train"]
    assert train["skipped"] == 1 and train["images"] == len(VOC_SPLITS["train"]) - 1
    assert train["skipped_files"][0].startswith(str(bad))
    with open_dataset(out) as f:
        assert stored_ids(f, "train") == [i for i in VOC_SPLITS["train"] if i != "000002"]
        np.testing.assert_array_equal(f.split("train")["labels"][1], _expected("000003")[0])


def test_voc_existing_output_needs_force(devkit, tmp_path):
    out = tmp_path / "v.h5"
    out.write_bytes(b"precious")
    res = run_cli("prepare", "voc", "--root", devkit, "--out", out, "--size", 16, "-q")
    assert res.exit_code == 1 and "--force" in res.stderr and str(out) in res.stderr
    assert out.read_bytes() == b"precious"
    prepare_json("voc", "--root", devkit, "--out", out, "--size", 16, "--force")
    with open_dataset(out) as f:
        assert json.loads(f.h5.attrs["options"])["exclude_difficult"] is False
