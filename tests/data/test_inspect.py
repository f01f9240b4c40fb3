"""`mgkit inspect`: summary numbers against the file's own arrays, validation errors, exit codes."""

import json

import h5py
import numpy as np
from typer.testing import CliRunner

from mgkit import __version__
from mgkit.cli import app
from mgkit.data.format import open_dataset
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic

runner = CliRunner()


def _data(tmp_path, task="multilabel"):
    path = tmp_path / f"{task}.h5"
    plan = synthetic.plan(task=task, num_classes=3, spurious=None, n_train=20, n_val=6, n_test=6, seed=1)
    run_prepare(plan, path, size=32, bbox_frac=0.25, seed=0, quiet=True)
    return path


def test_inspect_json_matches_arrays(tmp_path):
    path = _data(tmp_path)
    r = runner.invoke(app, ["inspect", str(path), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert set(s["splits"]) == {"train", "val", "test", "test_decorrelated", "test_shifted"}
    with open_dataset(path) as ds:
        assert ds.splits == ["train", "val", "test", "test_decorrelated", "test_shifted"]  # the source's order, not alphabetical
    with h5py.File(path) as f:
        for split, c in s["splits"].items():
            g = f[split]
            labels, boxes = g["labels"][:], g["boxes"][:]
            assert c["images"] == len(labels) and c["boxes"] == len(boxes)
            assert c["annotated"] == int(g["annotated"][:].sum())
            for k, name in enumerate(s["classes"]):
                assert c["classes"][name] == {"images": int(labels[:, k].sum()), "boxes": int((boxes[:, 0] == k).sum())}
            area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]) / 32**2
            assert np.isclose(c["box_area_fraction"]["median"], np.median(area))
    assert s["splits"]["train"]["annotated"] == 5  # int(0.25 * 20)
    assert s["provenance"]["mgkit_version"] == __version__


def test_inspect_groups_and_human_output(tmp_path):
    path = _data(tmp_path, "birds")
    s = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)
    assert set(s["splits"]["test"]["groups"]) == {"landbird_on_land", "landbird_on_water", "waterbird_on_land",
                                                  "waterbird_on_water"}
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 0 and "landbird" in r.output and "Splits" in r.output


def test_inspect_reports_first_problem(tmp_path):
    path = _data(tmp_path)
    with h5py.File(path, "a") as f:
        boxes = f["train/boxes"][:]
        boxes[0, 3] = 999
        f["train/boxes"][:] = boxes
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 1 and "coordinates outside the 32x32 grid" in r.output
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 7
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 1 and "format version 7" in r.output
    r = runner.invoke(app, ["inspect", str(tmp_path / "none.h5")])
    assert r.exit_code == 1 and "none.h5: no such data file" in r.output


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"mgkit {__version__}"
    for cmd in (["--help"], ["prepare", "--help"], ["train", "--help"], ["guide", "--help"], ["inspect", "--help"]):
        assert runner.invoke(app, cmd).exit_code == 0
    r = runner.invoke(app, ["prepare", "synthetic", "--out", "x.h5", "--bbox-frac", "2"])
    assert r.exit_code == 2
