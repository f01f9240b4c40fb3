"""`mgkit prepare waterbirds` on a small metadata.csv + images, with CUB's images.txt / bounding_boxes.txt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fixtures import (WATERBIRDS_ROWS, expected_boxes, make_waterbirds, pil_resized, prepare_json, run_cli,
                      stored_ids, truncate)
from mgkit.artifacts import file_sha256
from mgkit.data.format import open_dataset
from mgkit.data.sources import waterbirds

S = 24
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Read-only (waterbirds root, CUB root) shared by the tests that do not modify them."""
    return make_waterbirds(tmp_path_factory.mktemp("wb"))


def _rows(split: str) -> list[tuple]:
    return [r for r in WATERBIRDS_ROWS if SPLIT_NAMES[r[2]] == split]


def _check(f, root, task: str) -> None:
    """Every stored field against the fixture's rows."""
    for split in SPLIT_NAMES.values():
        g = f.split(split)
        rows = _rows(split)
        assert stored_ids(f, split) == [r[0] for r in rows]
        assert json.loads(g.attrs["group_names"]) == waterbirds.GROUP_NAMES
        for i, (name, y, _, place, w, h, box) in enumerate(rows):
            label = place if task == "place" else y
            assert g["labels"][i].tolist() == [1 - label, label]
            assert g["groups"][i] == 2 * y + place
            with Image.open(root / name) as im:
                assert im.size == (w, h)
            np.testing.assert_array_equal(g["images"][i], pil_resized(root / name, S))
            objects = [] if box is None else [(label, box[0], box[1], box[0] + box[2], box[1] + box[3])]
            np.testing.assert_array_equal(f.boxes_of(split, i), expected_boxes(objects, w, h, S), err_msg=name)


def test_waterbirds_bird_task(folders, tmp_path):
    root, cub = folders
    out = tmp_path / "wb.h5"
    summary = prepare_json("waterbirds", "--root", root, "--cub-root", cub, "--out", out, "--size", S)
    assert summary["splits"]["train"]["missing_cub_box"] == 1
    assert summary["splits"]["train"]["boxes_clipped"] == 1  # the second albatross' box is wider than its image
    with open_dataset(out) as f:
        assert f.source == "waterbirds" and f.task == "binary" and f.mask_mode == "inside"
        assert f.classes == ["landbird", "waterbird"]
        assert f.provenance["metadata_sha256"] == file_sha256(root / "metadata.csv")
        assert f.provenance["cub_bounding_boxes_sha256"] == file_sha256(cub / "bounding_boxes.txt")
        _check(f, root, "bird")


def test_waterbirds_place_task_masks_outside_the_bird(folders, tmp_path):
    root, cub = folders
    out = tmp_path / "wb.h5"
    prepare_json("waterbirds", "--root", root, "--cub-root", cub.parent, "--out", out, "--size", S,
                 "--task", "place")  # the CUB_200_2011 folder is also found from its parent
    with open_dataset(out) as f:
        assert f.mask_mode == "outside" and f.classes == ["land", "water"] and f.task == "binary"
        _check(f, root, "place")
    plan = waterbirds.plan(root, cub_root=cub, task="place")
    assert plan.mask_mode == "outside" and plan.has_boxes


def test_waterbirds_bbox_frac_on_train_only(folders, tmp_path):
    root, cub = folders
    out = tmp_path / "wb.h5"
    summary = prepare_json("waterbirds", "--root", root, "--cub-root", cub, "--out", out, "--size", S,
                           "--bbox-frac", 0.01, "--seed", 4)
    assert summary["splits"]["train"]["annotated"] == 1
    with open_dataset(out) as f:
        assert f.split("train")["annotated"][:].sum() == 1
        assert f.split("val")["annotated"][:].all() and f.split("test")["annotated"][:].all()


def test_waterbirds_without_cub_has_no_annotated_image(folders, tmp_path):
    root, _ = folders
    out = tmp_path / "wb.h5"
    summary = prepare_json("waterbirds", "--root", root, "--out", out, "--size", S)
    assert any("no bird boxes" in n and "no image is annotated" in n for n in summary["notes"])
    with open_dataset(out) as f:
        for split in SPLIT_NAMES.values():
            g = f.split(split)
            assert not g["annotated"][:].any() and g["boxes"].shape == (0, 5)
            assert g["groups"][:].tolist() == [2 * r[1] + r[3] for r in _rows(split)]
    assert not waterbirds.plan(root).has_boxes


@pytest.mark.parametrize("what", ["root", "metadata", "cub root", "cub boxes"])
def test_waterbirds_missing_paths_fail_naming_them(tmp_path, what):
    root, cub = make_waterbirds(tmp_path)
    args = ["--root", root, "--cub-root", cub]
    missing = {"root": tmp_path / "nowhere", "metadata": root / "metadata.csv", "cub root": tmp_path / "nocub",
               "cub boxes": cub / "bounding_boxes.txt"}[what]
    if what == "root":
        args[1] = missing
    elif what == "cub root":
        args[3] = missing
    else:
        missing.unlink()
    res = run_cli("prepare", "waterbirds", *args, "--out", tmp_path / "wb.h5", "-q")
    assert res.exit_code == 1 and str(missing) in res.stderr


@pytest.mark.parametrize("content, message", [
    ("img_id,img_filename,y,place\n1,a.jpg,0,0\n", "split"),
    ("img_id,img_filename,y,split,place\n1,a.jpg,0,7,0\n", "line 2"),
    ("img_id,img_filename,y,split,place\n1,a.jpg,bird,0,0\n", "line 2"),
])
def test_waterbirds_bad_metadata(tmp_path, content, message):
    (tmp_path / "metadata.csv").write_text(content)
    res = run_cli("prepare", "waterbirds", "--root", tmp_path, "--out", tmp_path / "wb.h5", "-q")
    assert res.exit_code == 1 and str(tmp_path / "metadata.csv") in res.stderr and message in res.stderr


def test_waterbirds_unknown_task_is_a_usage_error(folders, tmp_path):
    root, _ = folders
    res = run_cli("prepare", "waterbirds", "--root", root, "--task", "sky", "--out", tmp_path / "wb.h5", "-q")
    assert res.exit_code == 2 and "--task" in res.stderr


def test_waterbirds_truncated_image(tmp_path):
    root, cub = make_waterbirds(tmp_path)
    bad = root / WATERBIRDS_ROWS[0][0]
    truncate(bad)
    out = tmp_path / "wb.h5"
    res = run_cli("prepare", "waterbirds", "--root", root, "--cub-root", cub, "--out", out, "--size", S, "-q")
    assert res.exit_code == 1 and str(bad) in res.stderr and not out.exists()
    summary = prepare_json("waterbirds", "--root", root, "--cub-root", cub, "--out", out, "--size", S, "--skip-bad")
    assert summary["splits"]["train"]["skipped"] == 1
    assert summary["splits"]["train"]["skipped_files"][0].startswith(str(bad))
