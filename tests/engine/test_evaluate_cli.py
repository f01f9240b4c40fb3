"""`mgkit evaluate` and `mgkit shift` end to end on tiny runs: records, threshold protocol, baseline,
Pareto merge, shift sections and one-line refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mgkit.cli import app
from mgkit.config import build_config
from mgkit.engine import trainer as T
from mgkit.data.facts import DataFacts
from mgkit.engine.evaluate_stage import EvalOptions, Evaluator, merged_front
from mgkit.engine.shift import shift_splits
from mgkit.errors import MgkitError
from mgkit.results import read_records

runner = CliRunner()
FAST = dict(batch_size=8, eval_batch_size=16, lr=1e-3, workers=0, quiet=True, device="cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_data, tiny_birds, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    T.fit(build_config("train", {"data": str(tiny_data), "out": str(root / "base"), "model": "resnet18",
                                 "epochs": 1, **FAST}, None))
    T.fit(build_config("guide", {"data": str(tiny_data), "out": str(root / "g"), "loss": "l1", "layer": "mid3",
                                 "lam": 1.0, "init_from": str(root / "base/checkpoints/best_f1.pt"), "epochs": 2,
                                 **FAST}, None))
    T.fit(build_config("train", {"data": str(tiny_birds), "out": str(root / "birds"), "model": "resnet18",
                                 "epochs": 1, **FAST}, None))
    return {"root": root, "base": root / "base/checkpoints/best_f1.pt", "g": root / "g/checkpoints/best_f1.pt",
            "g_run": root / "g", "birds": root / "birds/checkpoints/best_f1.pt"}


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_evaluate_record_with_threshold_protocol_and_baseline(runs, tiny_data, tmp_path):
    out = tmp_path / "results/e/g.json"
    r = _invoke("evaluate", runs["g"], "--data", tiny_data, "--split", "test", "--threshold-split", "val",
                "--attribution", "ixg", "--layer", "final", "--experiment", "e", "--baseline", runs["base"],
                "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (rec,) = read_records([out])
    assert rec["kind"] == "evaluation" and rec["experiment"] == "e"
    ev = rec["evaluation"]
    assert (ev["split"], ev["attribution"], ev["layer"], ev["maps"], ev["threshold_split"]) == \
        ("test", "ixg", "final", "raw", "val")
    # the chosen threshold is the argmax of the val sweep, and iou_chosen is test IoU at it
    val = Evaluator(EvalOptions(data=str(tiny_data), split="val", threshold_split="val", attribution="ixg",
                                layer="final", quiet=True, device="cpu"))
    model, info = val.load(runs["g"])
    vsec = val.sections(model, info)
    sweep = vsec["iou_sweep"]
    assert ev["chosen_threshold"] == pytest.approx(float(max(sweep, key=lambda t: (sweep[t], -float(t)))))
    assert rec["metrics"]["iou_chosen"] == pytest.approx(rec["iou_sweep"][f"{ev['chosen_threshold']:.2f}"])
    assert vsec["metrics"]["iou_chosen"] == pytest.approx(max(sweep.values()))
    # baseline scored the same way; delta = model - baseline
    base = rec["baseline"]
    assert (base["evaluation"]["attribution"], base["evaluation"]["layer"]) == ("ixg", "final")
    assert base["identity"]["stage"] == "train" and rec["identity"]["stage"] == "guide"
    for k in ("f1", "epg", "iou", "mAP"):
        assert rec["delta"][k] == pytest.approx(rec["metrics"][k] - base["metrics"][k])
    assert set(rec["per_class"]) == set(rec["identity"]["classes"])
    assert rec["metrics"]["pairs"] > 0 and rec["per_size"]


def test_maps_reference_differs_for_l1_at_a_hidden_layer(runs, tiny_data):
    common = dict(data=str(tiny_data), threshold_split=None, quiet=True, device="cpu")
    raw = Evaluator(EvalOptions(maps="raw", **common))
    ref = Evaluator(EvalOptions(maps="reference", **common))
    m_raw = raw.record(runs["g"])["metrics"]
    m_ref = ref.record(runs["g"])["metrics"]
    assert m_raw["f1"] == m_ref["f1"]  # same logits
    assert m_raw["epg"] != pytest.approx(m_ref["epg"], abs=1e-6)  # clamp + normalise before upsampling


def test_pareto_merges_runs_and_front_is_non_dominated(runs, tiny_data, tmp_path):
    out = tmp_path / "p.json"
    r = _invoke("evaluate", "--pareto", runs["g_run"], runs["g_run"], "--data", tiny_data, "--split", "test",
                "--threshold-split", "val", "--attribution", "ixg", "--layer", "input", "--experiment", "e",
                "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (rec,) = read_records([out])
    listed = json.loads((runs["g_run"] / "pareto/pareto.json").read_text())["entries"]
    assert rec["kind"] == "pareto" and len(rec["entries"]) == 2 * len(listed)
    pts = [[e["metrics"][k] for k in ("f1", "epg", "iou")] for e in rec["entries"]]
    front = rec["front"]
    assert front and all(0 <= i < len(pts) for i in front)
    # brute force: nothing in the pool strictly dominates a front member (beyond the 0.005 binning)
    for i in front:
        assert not any(all(q >= p + 0.005 for p, q in zip(pts[i], pts[j])) for j in range(len(pts)))


def test_merged_front_hand_example():
    e = lambda f1, epg, iou: {"metrics": {"f1": f1, "epg": epg, "iou": iou}}  # noqa: E731
    entries = [e(0.8, 0.5, 0.2), e(0.7, 0.4, 0.1), e(0.6, 0.9, 0.1), e(0.9, None, 0.3)]
    assert merged_front(entries) == [0, 2]


def test_shift_multilabel_drop_and_baseline(runs, tiny_data, tmp_path):
    out = tmp_path / "s.json"
    r = _invoke("shift", runs["g"], "--data", tiny_data, "--baseline", runs["base"], "--experiment", "shift",
                "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (rec,) = read_records([out])
    assert rec["kind"] == "shift" and set(rec["splits"]) == {"test", "test_shifted"}
    for k in ("f1", "mAP", "epg"):
        assert rec["drop"][k] == pytest.approx(rec["splits"]["test"][k] - rec["splits"]["test_shifted"][k])
        assert rec["delta_drop"][k] == pytest.approx(rec["drop"][k] - rec["baseline"]["drop"][k])


def test_shift_groups(runs, tiny_birds):
    r = _invoke("shift", runs["birds"], "--data", tiny_birds, "--json", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    g = rec["groups"]
    accs = [v["accuracy"] for v in g.values() if v["accuracy"] is not None]
    assert rec["metrics"]["worst_group"] == pytest.approx(min(accs))
    assert rec["metrics"]["mean_group"] == pytest.approx(sum(accs) / len(accs))
    assert rec["group_gap"] == pytest.approx(rec["metrics"]["mean_group"] - rec["metrics"]["worst_group"])


@pytest.mark.parametrize("args,code,message", [
    (["--split", "nope"], 1, "has no split 'nope'"),
    (["--threshold-split", "nope"], 1, "--threshold-split"),
    (["--attribution", "captum:Nope"], 2, "captum"),
    (["--attribution", "captum:LayerGradCam", "--layer", "input"], 2, "layer method"),
    (["--attribution", "bcos"], 2, "not available for resnet18"),
    (["--layer", "mid9"], 2, "--layer"),
    (["--maps", "cooked"], 2, "--maps"),
])
def test_evaluate_refusals(runs, tiny_data, args, code, message):
    r = _invoke("evaluate", runs["base"], "--data", tiny_data, "--quiet", "--device", "cpu", *args)
    assert r.exit_code == code and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_mismatched_checkpoint_and_data_refused(runs, tiny_birds):
    r = _invoke("evaluate", runs["base"], "--data", tiny_birds, "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and "classes" in r.output and "the data has 2" in r.output


def test_shift_needs_groups_or_shifted_split(tiny_data):
    ctx = DataFacts("x.h5", ["a"], (32, 32), "f", ["train", "val", "test"], False, {"test": None}, {"test": 4},
                    source="synthetic", task="multilabel", bbox_frac=1.0, annotated={"test": 4})
    ev = Evaluator.__new__(Evaluator)
    ev.ctx = ctx
    with pytest.raises(MgkitError, match="no groups on its test split and no test_shifted"):
        shift_splits(ev)


def test_evaluate_with_a_captum_method(runs, tiny_data, tmp_path):
    """captum:LayerGradCam at the final layer scores the same maps as mgkit's own gradcam there."""
    recs = {}
    for name in ("gradcam", "captum:LayerGradCam"):
        out = tmp_path / f"{name.replace(':', '_')}.json"
        r = _invoke("evaluate", runs["g"], "--data", tiny_data, "--split", "test", "--threshold-split", "none",
                    "--attribution", name, "--layer", "final", "--out", out, "--quiet", "--device", "cpu")
        assert r.exit_code == 0, r.output
        (recs[name],) = read_records([out])
    assert recs["captum:LayerGradCam"]["evaluation"]["attribution"] == "captum:LayerGradCam"
    a, b = recs["captum:LayerGradCam"]["metrics"], recs["gradcam"]["metrics"]
    assert (a["f1"], a["pairs"]) == (b["f1"], b["pairs"])
    assert a["epg"] == pytest.approx(b["epg"], abs=1e-5)
    # IoU binarises at a threshold, where float rounding of the two code paths can flip a few pixels
    assert a["iou"] == pytest.approx(b["iou"], abs=0.01)
