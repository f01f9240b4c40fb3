"""`mgkit prepare reference`: converting the reference implementation's {train,val,test}.pt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures import make_reference, prepare_json, run_cli
from mgkit.data.format import open_dataset
from mgkit.data.sources import reference
from mgkit.data.sources.classes import COCO_CLASSES, VOC_CLASSES


def _check(out, saved, classes) -> None:
    with open_dataset(out) as f:
        assert f.source == "reference" and f.classes == classes and f.image_size == (32, 32)
        assert sorted(f.splits) == sorted(saved)
        for split, obj in saved.items():
            g = f.split(split)
            want = np.clip(np.round(obj["data"].numpy() * np.float32(255)), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(g["images"][:], want.transpose(0, 2, 3, 1))
            np.testing.assert_array_equal(g["labels"][:], obj["labels"].numpy().astype(np.uint8))
            for i, rows in enumerate(obj["bbs"]):
                kept = [r for r in (rows or []) if r[1] < r[3] and r[2] < r[4]]
                np.testing.assert_array_equal(f.boxes_of(split, i), np.array(kept, np.float32).reshape(-1, 5))
        first = f.split("train")["images"][0, 0, :4, 0]
        assert first.tolist() == [0, 255, 0, 2]  # round(0.5) = 0 and round(1.5) = 2 (half to even), as torch


def test_reference_voc_files(tmp_path):
    root, saved = make_reference(tmp_path)
    out = tmp_path / "r.h5"
    summary = prepare_json("reference", "--root", root, "--dataset", "voc", "--out", out, "--bbox-frac", 0.5)
    for split in saved:
        assert summary["splits"][split]["boxes_dropped"] == 1  # the [0, 10, 4, 10, 9] row
    assert summary["splits"]["train"]["annotated"] == 2
    _check(out, saved, VOC_CLASSES)
    with open_dataset(out) as f:
        assert f.provenance["dataset"] == "voc"
        assert f.provenance["files"]["train"]["bytes"] == (root / "train.pt").stat().st_size


def test_reference_coco_and_legacy_format(tmp_path):
    root, saved = make_reference(tmp_path, num_classes=80, legacy=True, counts={"train": 3, "val": 2, "test": 2})
    out = tmp_path / "r.h5"
    prepare_json("reference", "--root", root, "--dataset", "coco", "--out", out)
    _check(out, saved, COCO_CLASSES)


def test_reference_plan_is_in_process_at_native_size(tmp_path):
    root, _ = make_reference(tmp_path, counts={"train": 2, "val": 2})
    plan = reference.plan(root, dataset="voc")
    assert plan.native_size == 32 and plan.workers_ok is False
    assert set(plan.splits) == {"train", "val"} and any("test.pt" in n for n in plan.notes)
    data = reference._CACHE[str(root / "train.pt")]["data"]
    assert isinstance(data, torch.Tensor)
    with pytest.raises(Exception, match="keep their size"):
        reference.load(plan.splits["train"][0], 64)


@pytest.mark.parametrize("problem", ["class count", "not torch", "wrong layout"])
def test_reference_bad_files_fail_naming_them(tmp_path, problem):
    root, _ = make_reference(tmp_path, num_classes=20)
    bad = root / "val.pt"
    if problem == "not torch":
        bad.write_bytes(b"this is not a torch file")
    elif problem == "wrong layout":
        torch.save({"data": torch.zeros(2, 32, 32), "labels": torch.zeros(2, 80)}, bad)
    res = run_cli("prepare", "reference", "--root", root, "--dataset", "coco" if problem == "class count" else "voc",
                  "--out", tmp_path / "r.h5", "-q")
    assert res.exit_code == 1
    named = root / "train.pt" if problem == "class count" else bad
    assert str(named) in res.stderr
    if problem == "class count":
        assert "20 classes" in res.stderr and "80" in res.stderr


def test_reference_missing_folder_or_files_and_bad_dataset(tmp_path):
    res = run_cli("prepare", "reference", "--root", tmp_path / "nowhere", "--dataset", "voc",
                  "--out", tmp_path / "r.h5")
    assert res.exit_code == 1 and str(tmp_path / "nowhere") in res.stderr
    res = run_cli("prepare", "reference", "--root", tmp_path, "--dataset", "voc", "--out", tmp_path / "r.h5")
    assert res.exit_code == 1 and str(tmp_path) in res.stderr and "train.pt" in res.stderr
    res = run_cli("prepare", "reference", "--root", tmp_path, "--dataset", "imagenet", "--out", tmp_path / "r.h5")
    assert res.exit_code == 2 and "--dataset" in res.stderr
