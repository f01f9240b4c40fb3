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
from mgkit.engine.evaluate_stage import EvalOptions, Evaluator, merged_front, pareto_record, select_on_validation
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
    assert val.opts.workers == 0  # no workers given: loader.default_workers of the CPU
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


def test_pareto_merges_runs_on_validation_and_scores_the_set_on_test(runs, tiny_data, tmp_path):
    out = tmp_path / "p.json"
    r = _invoke("evaluate", "--pareto", runs["g_run"], runs["g_run"], "--data", tiny_data, "--split", "test",
                "--threshold-split", "val", "--attribution", "ixg", "--layer", "input", "--experiment", "e",
                "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (rec,) = read_records([out])
    listed = json.loads((runs["g_run"] / "pareto/pareto.json").read_text())["entries"]
    assert rec["kind"] == "pareto" and rec["selection"]["split"] == "val"
    assert rec["selection"]["pool"] == 2 * len(listed) and rec["selection"]["selected"] == len(rec["entries"])
    assert rec["front"] == list(range(len(rec["entries"])))
    by_name = {e["checkpoint"]: {k: e[k] for k in ("f1", "epg", "iou")} for e in listed}
    val = [e["selection"]["metrics"] for e in rec["entries"]]
    for e in rec["entries"]:
        assert e["evaluation"]["split"] == "test"
        assert e["selection"]["metrics"] == by_name[e["identity"]["checkpoint"].rsplit("/", 1)[-1]]
    # brute force on the VALIDATION values: nothing in the pool beats a selected entry by a bin in all three
    pool = [[m[k] for k in ("f1", "epg", "iou")] for m in by_name.values()]
    for m in val:
        p = [m[k] for k in ("f1", "epg", "iou")]
        assert not any(all(q >= x + 0.005 for x, q in zip(p, other)) for other in pool)


def test_pareto_selection_uses_validation_not_test(tmp_path):
    """Val and test fronts differ: the record holds the val front, scored on test, whatever test says."""
    val = {"a1": (0.80, 0.50, 0.20), "a2": (0.70, 0.60, 0.10), "b1": (0.60, 0.90, 0.10), "b2": (0.75, 0.45, 0.15)}
    test = {"a1": (0.10, 0.10, 0.10), "a2": (0.20, 0.20, 0.20), "b1": (0.30, 0.30, 0.30), "b2": (0.95, 0.95, 0.95)}
    for run, names in (("A", ("a1", "a2")), ("B", ("b1", "b2"))):
        folder = tmp_path / run / "pareto"
        folder.mkdir(parents=True)
        entries = []
        for epoch, n in enumerate(names, 1):
            (folder / f"{n}.pt").write_bytes(b"")
            entries.append({"epoch": epoch, "checkpoint": f"{n}.pt", **dict(zip(("f1", "epg", "iou"), val[n]))})
        (folder / "pareto.json").write_text(json.dumps({"split": "val", "bin_width": 0.005, "entries": entries}))

    class Scorer:  # stands in for Evaluator: the "test" metrics of each checkpoint
        opts = EvalOptions(data="unused", experiment="main")
        scored: list[str] = []

        def record(self, path):
            name = path.stem
            self.scored.append(name)
            return {"identity": {"checkpoint": str(path), "stage": "guide"}, "evaluation": {"split": "test"},
                    "metrics": dict(zip(("f1", "epg", "iou"), test[name]))}

    scorer = Scorer()
    rec = pareto_record(scorer, [tmp_path / "A", tmp_path / "B"])
    names = [e["selection"]["run"][-1] + e["identity"]["checkpoint"][-5:-3] for e in rec["entries"]]
    # on val, b2 is dominated by a1 (all three lower by >= one bin): out, though it is the best on test;
    # a1, a2, b1 are mutually non-dominated on val: in, though b2 dominates all of them on test
    assert sorted(scorer.scored) == ["a1", "a2", "b1"] and sorted(names) == ["Aa1", "Aa2", "Bb1"]
    # selecting on test would have kept b2 alone
    assert merged_front([{"metrics": dict(zip(("f1", "epg", "iou"), test[n]))} for n in test]) == [3]
    assert rec["front"] == [0, 1, 2] and rec["selection"] == {
        "split": "val", "metrics": ["f1", "epg", "iou"], "bin_width": 0.005, "pool": 4, "selected": 3,
        "per_run": {str(tmp_path / "A"): 2, str(tmp_path / "B"): 1}}
    assert [e["selection"]["metrics"]["f1"] for e in rec["entries"]] == [val[n[1:]][0] for n in names]


def test_pareto_refuses_fronts_kept_on_different_splits(tmp_path):
    for run, split in (("A", "val"), ("B", "test")):
        folder = tmp_path / run / "pareto"
        folder.mkdir(parents=True)
        (folder / "x.pt").write_bytes(b"")
        (folder / "pareto.json").write_text(json.dumps({"split": split, "bin_width": 0.005, "entries": [
            {"epoch": 1, "checkpoint": "x.pt", "f1": 0.5, "epg": 0.5, "iou": 0.5}]}))
    with pytest.raises(MgkitError, match="different splits"):
        select_on_validation([tmp_path / "A", tmp_path / "B"])


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
    assert rec["kind"] == "shift" and set(rec["splits"]) == {"test", "test_decorrelated", "test_shifted"}
    for k in ("f1", "mAP", "epg"):
        assert rec["drop"][k] == pytest.approx(rec["splits"]["test"][k] - rec["splits"]["test_shifted"][k])
        assert rec["drops"]["test_decorrelated"][k] == pytest.approx(
            rec["splits"]["test"][k] - rec["splits"]["test_decorrelated"][k])
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
    m = rec["splits"]["test"]  # intervals over test images (mgkit.bootstrap.group_intervals)
    for k in ("worst_group", "mean_group", "overall"):
        assert m[f"{k}_lo"] <= m[k] <= m[f"{k}_hi"]


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


@pytest.mark.parametrize("command", ["evaluate", "shift"])
def test_a_baseline_that_does_not_fit_is_refused_before_the_first_pass(runs, tiny_data, monkeypatch, command):
    from mgkit.engine.evaluate_stage import Evaluator as E

    def no_pass(*a, **k):
        raise AssertionError("a pass ran before the baseline was checked")

    monkeypatch.setattr(E, "pass_over", no_pass)
    r = _invoke(command, runs["g"], "--data", tiny_data, "--baseline", runs["birds"], "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and "classes" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_out_jsonl_is_one_line_that_tables_reads(runs, tiny_data, tmp_path):
    out = tmp_path / "r.jsonl"
    r = _invoke("evaluate", runs["base"], "--data", tiny_data, "--threshold-split", "none", "--layer", "final",
                "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 1
    (rec,) = read_records([out])
    assert rec["kind"] == "evaluation" and rec["evaluation"]["layer"] == "final"


def test_pareto_checkpoints_are_all_checked_before_the_first_pass(runs, tiny_data, tmp_path, monkeypatch):
    import shutil

    from mgkit.engine.evaluate_stage import Evaluator as E

    from mgkit.engine.evaluate_stage import select_on_validation

    copies = [tmp_path / "g1", tmp_path / "g2"]
    for run in copies:
        shutil.copytree(runs["g_run"], run)
    chosen, _ = select_on_validation(copies)
    assert len(chosen) >= 2, chosen
    shutil.copy(runs["birds"], chosen[-1].path)  # the last one evaluated: of other classes

    def no_pass(*a, **k):
        raise AssertionError("a pass ran before every checkpoint was checked")

    monkeypatch.setattr(E, "pass_over", no_pass)
    r = _invoke("evaluate", "--pareto", *copies, "--data", tiny_data, "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and "classes" in r.output and len(r.output.strip().splitlines()) == 1, r.output
