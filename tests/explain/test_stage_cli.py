"""`mgkit explain` end to end: a real figure from tiny checkpoints, its described content, and refusals."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mgkit.cli import app
from mgkit.data.format import open_dataset
from mgkit.data.facts import data_fingerprint
from mgkit.engine.checkpoint import save_checkpoint
from mgkit.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SIZE = 32


def _save(path, model_name, classes, config, image_size=(SIZE, SIZE), seed=0):
    """A freshly initialised model saved as a checkpoint of `config`'s stage (no training needed)."""
    torch.manual_seed(seed)
    model = create_model(model_name, len(classes))
    save_checkpoint(path, model=model, model_name=model_name, classes=classes, config={"model": model_name, **config},
                    epoch=1, data={"image_size": list(image_size), "fingerprint": "0" * 16, "dataset": "synthetic"})
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data = root / "synth.h5"
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(data), "--size", str(SIZE), "--train", "4",
                            "--val", "2", "--test", "6", "--quiet"])
    assert r.exit_code == 0, r.output
    with open_dataset(data) as ds:
        classes = list(ds.classes)
        g = ds.split("test")
        ids = [str(s) for s in g["ids"].asstr()[...]]
        counts = np.diff(g["box_index"][...])
        labels = g["labels"][...]
    guide = {"stage": "guide", "loss": "energy", "attribution": "ixg", "layer": "mid1", "lam": 1e-3}
    ckpts = {
        "base": _save(root / "base.pt", "resnet18", classes, {"stage": "train", "attribution": "ixg"}),
        "guided": _save(root / "guided.pt", "resnet18", classes, guide, seed=1),
        "bcos": _save(root / "bcos.pt", "bcos-resnet18", classes, {"stage": "train", "attribution": "bcos"}),
        "wrong_classes": _save(root / "k2.pt", "resnet18", ["a", "b"], {"stage": "train"}),
        "wrong_size": _save(root / "s24.pt", "resnet18", classes, {"stage": "train"}, image_size=(24, 24)),
    }
    return dict(root=root, data=data, classes=classes, ids=ids, counts=counts, labels=labels, **ckpts)


def _explain(s, out, *extra):
    return runner.invoke(app, ["explain", str(s["base"]), "--data", str(s["data"]), "--out", str(out),
                               "--device", "cpu", "--quiet", *extra])


def test_compare_figure_content(setup):
    s = setup
    out = s["root"] / "figs" / "fig.png"
    r = _explain(s, out, "--compare", str(s["guided"]), "--compare", str(s["bcos"]), "--n", "2", "--pdf", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)

    # the first 2 images of the split that have a box, in file order
    rows = [int(i) for i in np.flatnonzero(s["counts"] > 0)[:2]]
    assert [im["row"] for im in d["images"]] == rows
    assert [im["id"] for im in d["images"]] == [s["ids"][i] for i in rows]
    assert d["figure"]["rows"] == 2
    explained = [(im["id"], c) for im in d["images"] for c in im["explained"]]
    for im, i in zip(d["images"], rows):
        assert im["classes"] == [s["classes"][k] for k in np.flatnonzero(s["labels"][i])]
        assert im["explained"] == im["classes"][:4]

    # labels tell the models apart; defaults: the guided run's own method, the same-family baseline
    # drawn like it, the B-cos baseline with its family default
    models = {m["label"]: m for m in d["models"]}
    assert list(models) == ["resnet18", "guided energy", "bcos-resnet18"]
    assert [(m["attribution"], m["layer"]) for m in d["models"]] == [("ixg", "mid1"), ("ixg", "mid1"),
                                                                      ("bcos", "input")]
    for label, m in models.items():
        panels = d["figure"]["panels"][label]
        assert panels["maps"] == len(explained)  # one heat map per (image, class) pair, counted on the figure
        assert panels["colour"] == (len(explained) if m["family"] == "bcos" else 0)
        assert [(p["id"], p["class"]) for p in m["pairs"]] == explained
        epg = np.array([p["epg"] for p in m["pairs"]], dtype=float)
        assert np.isfinite(epg).all() and (epg >= 0).all() and (epg <= 1).all()
        assert m["mean_epg"] == pytest.approx(epg.mean())
        assert m["identity"]["checkpoint"] == str(s["bcos" if label == "bcos-resnet18" else
                                                     "guided" if label == "guided energy" else "base"])
    assert models["guided energy"]["identity"]["loss"] == "energy"
    assert models["resnet18"]["identity"]["stage"] == "train"
    # two resnet18 models with different weights explain the same pairs differently
    assert [p["epg"] for p in models["resnet18"]["pairs"]] != [p["epg"] for p in models["guided energy"]["pairs"]]

    with open_dataset(s["data"]) as ds:
        assert d["data_hash"] == data_fingerprint(ds)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["models"] == d["models"] and sidecar["provenance"]["mgkit_version"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.json", "fig.pdf", "fig.png"]


def test_ids_pick_images_in_order(setup):
    s = setup
    out = s["root"] / "ids.pdf"
    r = _explain(s, out, "--ids", f"#4,{s['ids'][1]}", "--max-classes", "1", "--attribution", "captum:Saliency",
                 "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [im["id"] for im in d["images"]] == [s["ids"][4], s["ids"][1]]
    assert all(len(im["explained"]) == min(1, len(im["classes"])) for im in d["images"])
    assert d["models"][0]["attribution"] == "captum:Saliency" and d["models"][0]["layer"] == "input"
    assert d["figures"] == [str(out)] and out.read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("extra, code, words", [
    (["--split", "nope"], 2, ["--split nope", "test"]),
    (["--ids", "ghost-1,#99"], 2, ["ghost-1", "#99"]),
    (["--attribution", "bcos"], 2, ["bcos", "resnet18"]),
    (["--attribution", "captum:LayerGradCam", "--layer", "input"], 2, ["layer method"]),
    (["--layer", "mid7"], 2, ["mid7"]),
    (["--out-is-jpg"], 2, [".png or .pdf"]),
    (["--compare", "wrong_classes"], 1, ["2 classes", "the data has 6"]),
    (["--compare", "wrong_size"], 1, ["24x24", "32x32"]),
])
def test_refusals_are_one_line_and_write_nothing(setup, extra, code, words):
    s = setup
    out = s["root"] / "refused" / "fig.png"
    if extra == ["--out-is-jpg"]:
        out, extra = out.with_suffix(".jpg"), []
    if extra[:1] == ["--compare"]:
        extra = ["--compare", str(s[extra[1]])]
    r = _explain(s, out, *extra)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output
    for w in words:
        assert w in lines[0]
    assert not out.parent.exists() or not list(out.parent.iterdir())
