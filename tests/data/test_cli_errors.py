"""Bad input to `prepare` and `inspect`: one line naming the file / field / flag, the right exit code,
no traceback, and nothing left behind that blocks the corrected re-run.

One table: each case builds its inputs under tmp_path, runs the CLI in-process and checks
(exit code, a substring of the message, leftovers in the output folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import pytest
from typer.testing import CliRunner

from mgkit.cli import app
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic
from fixtures import make_coco, make_voc, make_waterbirds

REPO = Path(__file__).resolve().parents[2]


def _synthetic(path: Path) -> Path:
    plan = synthetic.plan(task="multilabel", num_classes=3, n_train=8, n_val=3, n_test=3, seed=0)
    run_prepare(plan, path, size=16, bbox_frac=1.0, seed=0, quiet=True)
    return path


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------- case setups
# Each takes (tmp_path, monkeypatch) and returns the argv; "OUT" in argv means tmp_path / "out" / "d.h5".


def voc_empty_val(tmp, mp):
    root = make_voc(tmp / "src")
    (root / "VOC2007" / "ImageSets" / "Main" / "val.txt").write_text("")
    return ["prepare", "voc", "--root", root, "--size", "16", "--out", "OUT"]


def voc_root_is_file(tmp, mp):
    (tmp / "notes.txt").write_text("x")
    return ["prepare", "voc", "--root", tmp / "notes.txt", "--size", "16", "--out", "OUT"]


def voc_missing_root(tmp, mp):
    return ["prepare", "voc", "--root", tmp / "nowhere", "--size", "16", "--out", "OUT"]


def voc_root_is_voc2007(tmp, mp):
    return ["prepare", "voc", "--root", make_voc(tmp / "src") / "VOC2007", "--size", "16", "--out", "OUT"]


def voc_wrong_year(tmp, mp):
    return ["prepare", "voc", "--root", make_voc(tmp / "src"), "--year", "2012", "--size", "16", "--out", "OUT"]


def coco_ann_file_is_folder(tmp, mp):
    root = make_coco(tmp / "src")
    return ["prepare", "coco", "--train-ann-file", root / "annotations", "--train-image-dir", root / "train2014",
            "--size", "16", "--out", "OUT"]


def waterbirds_binary_metadata(tmp, mp):
    root, _ = make_waterbirds(tmp / "src")
    (root / "metadata.csv").write_bytes(bytes(range(128, 256)) * 4)
    return ["prepare", "waterbirds", "--root", root, "--size", "16", "--out", "OUT"]


def waterbirds_root_is_file(tmp, mp):
    (tmp / "metadata.csv").write_text("img_filename,y,split,place\n")
    return ["prepare", "waterbirds", "--root", tmp / "metadata.csv", "--size", "16", "--out", "OUT"]


def reference_root_is_file(tmp, mp):
    (tmp / "train.pt").write_bytes(b"x")
    return ["prepare", "reference", "--root", tmp / "train.pt", "--dataset", "voc", "--out", "OUT"]


def coco_orphan_annotation(tmp, mp):
    root = make_coco(tmp / "src")
    _edit_json(root / "annotations" / "instances_train2014.json", lambda d: d["annotations"].append(
        {"id": 999, "image_id": 4242, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}))
    return ["prepare", "coco", "--root", root, "--size", "16", "--out", "OUT"]


def _no_file_name(tmp):
    root = make_coco(tmp / "src")
    _edit_json(root / "annotations" / "instances_train2014.json", lambda d: d["images"][1].pop("file_name"))
    return root


def coco_no_file_name(tmp, mp):
    return ["prepare", "coco", "--root", _no_file_name(tmp), "--size", "16", "--out", "OUT"]


def coco_no_file_name_skip(tmp, mp):
    return ["prepare", "coco", "--root", _no_file_name(tmp), "--size", "16", "--out", "OUT", "--skip-bad"]


def coco_2017_layout(tmp, mp):
    return ["prepare", "coco", "--root", make_coco(tmp / "src", year="2017"), "--size", "16", "--out", "OUT"]


def coco_no_annotations(tmp, mp):
    (tmp / "empty").mkdir()
    return ["prepare", "coco", "--root", tmp / "empty", "--size", "16", "--out", "OUT"]


def disk_full(tmp, mp):
    from mgkit.data import format as fmt

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    mp.setattr(fmt.SplitWriter, "flush", full)
    return ["prepare", "synthetic", "--size", "16", "--train", "2", "--val", "1", "--test", "1", "--out", "OUT", "-q"]


def no_disk_space(tmp, mp):
    import shutil

    mp.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    return ["prepare", "synthetic", "--size", "64", "--train", "20", "--val", "1", "--test", "1", "--out", "OUT"]


def synthetic_huge_count(tmp, mp):
    return ["prepare", "synthetic", "--size", "16", "--train", "100000000", "--out", "OUT"]


def synthetic_huge_size(tmp, mp):
    return ["prepare", "synthetic", "--size", "100000", "--out", "OUT"]


def out_read_only(tmp, mp):
    folder = tmp / "out"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the check see what a user would see
        real = os.access
        mp.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real(p, mode, **kw))
    return ["prepare", "synthetic", "--size", "16", "--train", "2", "--val", "1", "--test", "1", "--out", "OUT"]


def out_is_directory(tmp, mp):
    (tmp / "out" / "d.h5").mkdir(parents=True)
    return ["prepare", "synthetic", "--size", "16", "--out", "OUT", "--force"]


def out_under_a_file(tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "plain").write_text("x")
    return ["prepare", "synthetic", "--size", "16", "--out", tmp / "out" / "plain" / "d.h5"]


def reference_garbage(tmp, mp):
    (tmp / "ref").mkdir()
    (tmp / "ref" / "train.pt").write_bytes(bytes(range(256)) * 8)
    return ["prepare", "reference", "--root", tmp / "ref", "--dataset", "voc", "--out", "OUT"]


def reference_bad_pickle_string(tmp, mp):
    (tmp / "ref").mkdir()
    (tmp / "ref" / "train.pt").write_bytes(b"\x80\x02X\x02\x00\x00\x00\xff\xfe.")  # a str that is not UTF-8
    return ["prepare", "reference", "--root", tmp / "ref", "--dataset", "voc", "--out", "OUT"]


def inspect_folder(tmp, mp):
    (tmp / "out").mkdir()
    return ["inspect", tmp / "out"]


def inspect_text_file(tmp, mp):
    (tmp / "notes.h5").write_text("hello")
    return ["inspect", tmp / "notes.h5"]


def inspect_empty_file(tmp, mp):
    (tmp / "empty.h5").write_bytes(b"")
    return ["inspect", tmp / "empty.h5"]


def inspect_truncated(tmp, mp):
    data = _synthetic(tmp / "full.h5").read_bytes()
    (tmp / "cut.h5").write_bytes(data[: len(data) // 3])
    return ["inspect", tmp / "cut.h5"]


def _decreasing_box_index(tmp):
    path = _synthetic(tmp / "bad.h5")
    with h5py.File(path, "a") as f:
        idx = f["train/box_index"][:]
        idx[2] = 0
        f["train/box_index"][:] = idx
    return path


def inspect_decreasing_box_index(tmp, mp):
    return ["inspect", _decreasing_box_index(tmp)]


def train_decreasing_box_index(tmp, mp):
    return ["train", "--data", _decreasing_box_index(tmp), "--model", "resnet18", "--no-pretrained",
            "--epochs", "1", "--device", "cpu", "--out", tmp / "out" / "run", "-q"]


# (setup, exit code, substring of stderr, output file expected afterwards)
CASES: list[tuple[Callable, int, str, bool]] = [
    (voc_empty_val, 0, "ImageSets/Main/val.txt lists no images", True),
    (voc_empty_val, 0, "split 'val' is empty", True),
    (voc_root_is_file, 1, "notes.txt: is a file; --root must be the VOCdevkit folder", False),
    (voc_missing_root, 1, "nowhere: VOC root not found", False),
    (voc_root_is_voc2007, 1, "looks like the VOC2007 folder itself", False),
    (voc_wrong_year, 1, "VOC2012: not found; --root must be the VOCdevkit folder that holds VOC2012/; ", False),
    (voc_wrong_year, 1, "pass --year 2007", False),
    (coco_ann_file_is_folder, 1, "annotations: is a folder; the train annotation file must be a JSON file", False),
    (waterbirds_binary_metadata, 1, "metadata.csv: not a text file", False),
    (waterbirds_root_is_file, 1, "metadata.csv: is a file; --root must be the Waterbirds folder", False),
    (reference_root_is_file, 1, "train.pt: is a file; --root must be the folder holding", False),
    (coco_orphan_annotation, 0, "1 annotations name an image_id that is not in 'images' (e.g. 4242)", True),
    (coco_no_file_name, 1, "instances_train2014.json: image id 25 has no 'file_name'", False),
    (coco_no_file_name_skip, 0, "", True),
    (coco_2017_layout, 1, "pass --year 2017", False),
    (coco_no_annotations, 1, "--train-ann-file", False),
    (disk_full, 1, "d.h5: writing the data set failed (No space left on device); nothing was written", False),
    (no_disk_space, 1, "the images need about 0.0 GiB, but", False),
    (synthetic_huge_count, 2, "--train 100000000 is too large (at most 1,000,000 images per split)", False),
    (synthetic_huge_size, 2, "--size 100000 is too large (at most 2048", False),
    (out_read_only, 1, "cannot write in", False),
    (out_is_directory, 2, "d.h5 is a directory", False),
    (out_under_a_file, 2, "plain is a file, not a folder", False),
    (reference_garbage, 1, "train.pt: not a readable torch file", False),
    (reference_bad_pickle_string, 1, "train.pt: not a readable torch file (UnicodeDecodeError", False),
    (inspect_folder, 1, "is a directory, not a data file", False),
    (inspect_text_file, 1, "notes.h5: not a readable HDF5 file", False),
    (inspect_empty_file, 1, "empty.h5: not a readable HDF5 file", False),
    (inspect_truncated, 1, "cut.h5: not a readable HDF5 file (damaged or truncated", False),
    (inspect_decreasing_box_index, 1, "bad.h5: 'train/box_index' decreases at image 1", False),
    (train_decreasing_box_index, 1, "bad.h5: 'train/box_index' decreases at image 1", False),
]


@pytest.mark.parametrize("setup,code,message,written", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_one_line(tmp_path, monkeypatch, setup, code, message, written):
    argv = [str(tmp_path / "out" / "d.h5") if a == "OUT" else str(a) for a in setup(tmp_path, monkeypatch)]
    res = CliRunner().invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.output
    if code:
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert sum(line.startswith("error: ") for line in lines) == 1, res.stderr
        assert all(line.startswith(("error: ", "note: ", "warning: ")) for line in lines), res.stderr
    assert message in res.stderr, res.stderr
    out = tmp_path / "out"
    if out.is_dir():
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    if argv[0] == "prepare" and not (out / "d.h5").is_dir():
        assert (out / "d.h5").is_file() == written


def test_warnings_in_json_summary(tmp_path, monkeypatch):
    argv = [str(tmp_path / "out" / "d.h5") if a == "OUT" else str(a) for a in voc_empty_val(tmp_path, monkeypatch)]
    s = json.loads(CliRunner().invoke(app, [*argv, "--json", "-q"]).stdout)
    assert s["splits"]["val"]["images"] == 0
    assert any("val.txt lists no images" in w for w in s["warnings"])
    assert any("split 'val' is empty" in w for w in s["warnings"])
    assert not any("'train'" in w or "'test'" in w for w in s["warnings"])

    argv = [str(tmp_path / "o2" / "d.h5") if a == "OUT" else str(a)
            for a in coco_orphan_annotation(tmp_path / "c", monkeypatch)]
    s = json.loads(CliRunner().invoke(app, [*argv, "--json", "-q"]).stdout)
    assert s["source_stats"] == {"annotations_without_image": 1}
    assert len(s["warnings"]) == 1


def test_skip_bad_counts_image_without_file_name(tmp_path, monkeypatch):
    argv = [str(tmp_path / "out" / "d.h5") if a == "OUT" else str(a)
            for a in coco_no_file_name_skip(tmp_path, monkeypatch)]
    s = json.loads(CliRunner().invoke(app, [*argv, "--json", "-q"]).stdout)
    split = next(c for c in s["splits"].values() if c.get("skipped"))
    assert split["skipped"] == 1 and "image id 25 has no 'file_name'" in split["skipped_files"][0]
    assert sum(c["images"] for c in s["splits"].values()) == 12  # 13 images in the fixture, one skipped


def test_corrected_rerun_after_failure(tmp_path, monkeypatch):
    """After a refused --out (a folder), the same command with a file name works."""
    out_is_directory(tmp_path, monkeypatch)
    ok = CliRunner().invoke(app, ["prepare", "synthetic", "--size", "16", "--train", "2", "--val", "1", "--test",
                                  "1", "--out", str(tmp_path / "out" / "e.h5"), "-q"])
    assert ok.exit_code == 0, ok.output


def test_sigkill_leftover_removed_by_next_run(tmp_path):
    """SIGKILL gives the writer no chance to clean up; the next prepare of the same --out removes its temp file."""
    out = tmp_path / "d.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mgkit", "prepare", "synthetic", "--size", "64", "--train", "20000", "--out",
           str(out), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]:
            time.sleep(0.05)
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert leftovers, "the writer never created its temporary file"
        assert str(proc.pid) in leftovers[0].name
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert all(p.exists() for p in leftovers) and not out.exists()
    res = subprocess.run([*cmd[:6], "16", "--train", "2", "--val", "1", "--test", "1", "--out", str(out), "-q"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


# ------------------------------------------------------------------------------------------- interrupts
# A signal is only recorded by prepare's handler and acted on by its main loop: raising from the handler
# could land in a weakref callback, where Python swallows it and the run went on to exit 0.

_TARGET: dict[str, Any] = {}


def _load_and_signal(record, size):
    """synthetic.load; the first call of all (in a worker, or in-process) sends the configured signal to the
    preparing process once, as `kill` would."""
    try:
        os.close(os.open(_TARGET["once"], os.O_CREAT | os.O_EXCL))
        os.kill(_TARGET["pid"], _TARGET["signal"])
    except FileExistsError:
        pass
    return synthetic.load(record, size)


@pytest.mark.parametrize("workers,signum", [(2, signal.SIGTERM), (2, signal.SIGINT), (0, signal.SIGTERM)])
def test_prepare_interrupted_by_a_signal_writes_nothing(tmp_path, workers, signum):
    import dataclasses

    plan = synthetic.plan(task="multilabel", num_classes=3, n_train=40, n_val=3, n_test=3, seed=0)
    plan = dataclasses.replace(plan, load=_load_and_signal)
    _TARGET.update(pid=os.getpid(), signal=signum, once=str(tmp_path / "sent"))
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(plan, tmp_path / "out" / "d.h5", size=16, bbox_frac=1.0, seed=0, workers=workers, quiet=True)
    assert (tmp_path / "sent").exists() and list((tmp_path / "out").iterdir()) == []
    assert signal.getsignal(signum) is before  # the recording handler is gone again


def test_sigterm_with_workers_never_exits_0(tmp_path):
    out = tmp_path / "d.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mgkit", "prepare", "synthetic", "--size", "64", "--train", "20000", "--workers", "2",
           "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted; nothing was written at the output path", err
    assert list(tmp_path.iterdir()) == []
